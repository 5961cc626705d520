"""Dispatchers: how the web process and the loop hand work to whatever runs it.

A dispatcher takes ids (and a webhook payload) and makes the matching ``LoopWork`` method
(``annotator_bridge.loop.LoopService`` implements them) run somewhere: ``InlineDispatcher``
runs it now, in the caller's thread (unit tests, the simulated server); ``ThreadDispatcher``
runs another dispatcher's calls in order on one background thread (a single-process server
without workers); the Celery dispatcher
(``annotator_bridge.worker``) sends tasks to the ``default`` / ``train`` queues.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)


class LoopWork(Protocol):
    """The loop methods a dispatcher runs (``LoopService`` has them; this module does not import it)."""

    def handle_event(self, project_id: int, payload: Mapping[str, Any]) -> Any: ...

    def execute_round(self, round_id: int) -> Any: ...

    def push_round(self, round_id: int) -> Any: ...

    def reconcile(self, project_id: int) -> Any: ...

    def execute_import(self, import_id: int) -> Any: ...

    def execute_adaptation(self, adaptation_id: int) -> Any: ...


@runtime_checkable
class Dispatcher(Protocol):
    """Where loop work goes. Every method returns quickly for queue-backed implementations."""

    def ingest_event(self, project_id: int, payload: dict[str, Any]) -> None:
        """Handle one Label Studio webhook body for al-loop project ``project_id``."""

    def run_round(self, project_id: int, round_id: int) -> None:
        """Run round ``round_id`` (database id) of ``project_id`` (reconcile, train, score, push)."""

    def push_round(self, round_id: int) -> None:
        """Push round ``round_id``'s predictions and ordering to Label Studio."""

    def reconcile(self, project_id: int) -> None:
        """Re-read every annotation of the project's Label Studio project."""

    def run_import(self, import_id: int) -> None:
        """Run import job ``import_id`` (a large file read in batches)."""

    def run_adaptation(self, adaptation_id: int) -> None:
        """Run adaptation ``adaptation_id`` (a project's pool-adaptive pretraining; a training worker's job)."""


class InlineDispatcher:
    """Runs each call synchronously through ``loop`` (a ``LoopWork``; exceptions reach the caller).

    ``loop`` may be bound later with ``bind`` (``LoopService`` binds itself when it is
    given an unbound inline dispatcher). ``calls`` records what was dispatched, in order.
    """

    def __init__(self, loop: LoopWork | None = None) -> None:
        self.loop = loop
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def bind(self, loop: LoopWork) -> InlineDispatcher:
        self.loop = loop
        return self

    def _loop(self) -> LoopWork:
        if self.loop is None:
            raise RuntimeError("InlineDispatcher is not bound to a loop")
        return self.loop

    def ingest_event(self, project_id: int, payload: dict[str, Any]) -> None:
        self.calls.append(("ingest_event", (project_id,)))
        self._loop().handle_event(project_id, payload)

    def run_round(self, project_id: int, round_id: int) -> None:
        self.calls.append(("run_round", (project_id, round_id)))
        self._loop().execute_round(round_id)

    def push_round(self, round_id: int) -> None:
        self.calls.append(("push_round", (round_id,)))
        self._loop().push_round(round_id)

    def reconcile(self, project_id: int) -> None:
        self.calls.append(("reconcile", (project_id,)))
        self._loop().reconcile(project_id)

    def run_import(self, import_id: int) -> None:
        self.calls.append(("run_import", (import_id,)))
        self._loop().execute_import(import_id)

    def run_adaptation(self, adaptation_id: int) -> None:
        self.calls.append(("run_adaptation", (adaptation_id,)))
        self._loop().execute_adaptation(adaptation_id)


class ThreadDispatcher:
    """Runs ``inner``'s calls on one daemon thread, first in first out; errors are logged, never raised.

    For a single process serving webhooks without Celery workers: the webhook is answered
    at once and the work (ingest, rounds, pushes) happens behind it, one call at a time.
    ``join()`` waits until the queue is empty (tests, shutdown).
    """

    def __init__(self, inner: Dispatcher, name: str = "al-loop-dispatch") -> None:
        self.inner = inner
        self.name = name
        self._queue: queue.Queue[tuple[str, Callable[..., None], tuple[Any, ...]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _submit(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put((what, fn, args))

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                what, fn, args = job
                try:
                    fn(*args)
                except Exception:
                    # ids only: never the webhook payload
                    ids = [a for a in args if isinstance(a, int)]
                    log.exception("background %s %s failed", what, ids)
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Block until every submitted call has finished."""
        self._queue.join()

    def close(self) -> None:
        """Finish queued calls, then stop the thread."""
        with self._lock:
            thread = self._thread
            self._thread = None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join()

    def ingest_event(self, project_id: int, payload: dict[str, Any]) -> None:
        self._submit("ingest_event", self.inner.ingest_event, project_id, payload)

    def run_round(self, project_id: int, round_id: int) -> None:
        self._submit("run_round", self.inner.run_round, project_id, round_id)

    def push_round(self, round_id: int) -> None:
        self._submit("push_round", self.inner.push_round, round_id)

    def reconcile(self, project_id: int) -> None:
        self._submit("reconcile", self.inner.reconcile, project_id)

    def run_import(self, import_id: int) -> None:
        self._submit("run_import", self.inner.run_import, import_id)

    def run_adaptation(self, adaptation_id: int) -> None:
        self._submit("run_adaptation", self.inner.run_adaptation, adaptation_id)
