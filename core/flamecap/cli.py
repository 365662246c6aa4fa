"""The ``flamecap`` command line. Each command group lives in ``flamecap.commands.<name>`` and exposes
``register(subparsers)``; handlers return an exit code. Errors print one line and exit non-zero."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .contract.errors import ContractError
from .errors import FlameCapError

# Command modules, in help order. A module that is missing (not yet built) is skipped.
COMMAND_MODULES = ("info", "models", "landmarks", "track", "identity", "dense", "retarget", "export",
                   "synth", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flamecap", description="Facial performance capture for Blender.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"flamecap.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"flamecap.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", choices=("text", "jsonl", "none"), default="text",
                        help="progress on stdout: text, JSON lines (for the Blender add-on), or none")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    jsonl = getattr(args, "progress", None) == "jsonl"
    try:
        return int(args.handler(args) or 0)
    except (FlameCapError, ContractError) as exc:
        _report_error(str(exc), exc.exit_code, jsonl)
        return exc.exit_code
    except KeyboardInterrupt:
        _report_error("cancelled", 130, jsonl)
        return 130
    except MemoryError:
        _report_error("out of memory; use a shorter frame range or --quality fast", 9, jsonl)
        return 9


def _report_error(message: str, code: int, jsonl: bool) -> None:
    if jsonl:
        from .contract.events import encode_event
        print(encode_event("error", message=message, code=code), flush=True)
    print(f"error: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
