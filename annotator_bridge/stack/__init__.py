"""The local stack behind ``al-loop up``: every service on this machine, on loopback, one command.

- ``local``: ``StackConfig``, ``LocalStack`` (start the broker, Label Studio, workers and web server
  in order, recover unfinished work, report, stop) and ``run`` (what ``al-loop up`` calls);
- ``processes``: ``Child`` processes in their own process group, waits, the ``al-loop`` command lines;
- ``demo``: the demo NER project, made through al-loop's HTTP API.

This package is the entry point of ``al-loop up`` and the benchmarks: the names below are its API.
"""

from __future__ import annotations

from .demo import DEMO_PROJECT_NAME, DEMO_SAMPLE, DEMO_SPEC, DEMO_TEST_SAMPLE
from .local import READY_LINE, LocalStack, StackConfig, run
from .processes import SERVE_ARGS, WORKER_DEFAULT_ARGS, WORKER_TRAIN_ARGS, StackError

__all__ = ["DEMO_PROJECT_NAME", "DEMO_SAMPLE", "DEMO_SPEC", "DEMO_TEST_SAMPLE", "READY_LINE", "SERVE_ARGS",
           "WORKER_DEFAULT_ARGS", "WORKER_TRAIN_ARGS", "LocalStack", "StackConfig", "StackError", "run"]
