"""``al-loop``: the command line. Each command lives in ``annotator_bridge.commands.<name>``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from al_loop.errors import AlLoopError

COMMAND_MODULES = ("simulate", "serve", "up", "status", "importer", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="al-loop",
        description="Active-learning annotation and training loop for transformer NER and text classification.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"annotator_bridge.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except AlLoopError as exc:
        print(f"al-loop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("al-loop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
