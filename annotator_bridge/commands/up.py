"""``al-loop up``: the whole loop on this machine with one command (see ``annotator_bridge.stack``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "up",
        help="start the local stack: Label Studio, broker, workers, web server and a demo NER project",
        description="Start everything on loopback: redis-server (or a filesystem queue when Redis is not installed), "
        "Label Studio from its own venv (installed on first run), a default and a training Celery worker, the al-loop "
        "web server, and the NCBI-disease demo project with round-0 predictions. Prints the URLs and credentials; "
        "Ctrl-C stops everything. State lives in AL_LOOP_HOME (default ./.al-loop).",
    )
    p.add_argument("--home", type=Path, default=None, help="state folder (default: AL_LOOP_HOME or ./.al-loop)")
    p.add_argument("--port", type=int, default=None,
                   help="al-loop web server port (default: the previous start's, else 8000; 0 = any free port)")
    p.add_argument("--ls-port", type=int, default=None,
                   help="Label Studio port (default: the previous start's, else 8080; 0 = any free port)")
    p.add_argument("--broker", choices=("auto", "redis", "filesystem"), default="auto",
                   help="auto: redis-server when installed, else a filesystem queue")
    p.add_argument("--no-demo", dest="demo", action="store_false", help="do not create the demo project")
    p.add_argument("--demo-file", type=Path, default=None,
                   help="CoNLL/BIO file for the demo NER project (default: the shipped NCBI-disease sample)")
    p.add_argument("--ls-venv", type=Path, default=None, help="Label Studio's own venv (default <repo>/.ls-venv)")
    p.set_defaults(func=run_up)


def run_up(args: argparse.Namespace) -> int:
    from annotator_bridge.settings import DEFAULT_HOME, StackEnvironment
    from annotator_bridge.stack.demo import DEMO_SAMPLE
    from annotator_bridge.stack.local import StackConfig, run

    environment = StackEnvironment.from_env()
    home = args.home or environment.home or Path(DEFAULT_HOME)
    config = StackConfig(
        environment=environment,
        home=home.expanduser().absolute(),
        api_port=args.port,
        ls_port=args.ls_port,
        broker=args.broker,
        demo=args.demo,
        demo_file=args.demo_file or DEMO_SAMPLE,
        demo_test_file=None if args.demo_file else StackConfig.demo_test_file,
        ls_venv=args.ls_venv,
    )
    return run(config)
