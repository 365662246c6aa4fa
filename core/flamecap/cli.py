"""The ``flamecap`` command line. Each command group lives in ``flamecap.commands.<name>`` and exposes
``register(subparsers)``; handlers return an exit code. Errors print one line and exit non-zero."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .contract.errors import ContractError
from .errors import FlameCapError

# Command modules, in help order. A module that is missing (not yet built) is skipped.
COMMAND_MODULES = ("info", "models", "landmarks", "track", "batch", "identity", "dense", "retarget", "export",
                   "synth", "bench", "demo")


class _ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line, ``error: <prog>: <message>; see '<prog> --help'``, exit 2 (subparsers
    inherit the class), and as a JSON ``error`` event on stdout when ``--progress jsonl`` was asked for."""

    def error(self, message: str):  # type: ignore[override]
        text = " ".join(f"{self.prog}: {message}; see '{self.prog} --help'".split())
        _report_error(text, 2, _jsonl_requested(sys.argv[1:] if _ARGV is None else _ARGV))
        self.exit(2)


_ARGV: list[str] | None = None


def _jsonl_requested(argv: list[str]) -> bool:
    return any(a == "--progress=jsonl" for a in argv) or any(
        a == "--progress" and b == "jsonl" for a, b in zip(argv, argv[1:]))


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="flamecap", description="Facial performance capture for Blender.")
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


def progress_reporter(mode: str, command: str | None = None, stream=None):
    """What ``--progress MODE`` asks for, as ``(emitter, callback)``: ``jsonl`` → a JsonlEmitter on stdout (with a
    ``start`` event when ``command`` is given) and its ``progress``; ``text`` → ``(None, printer)`` writing
    ``[stage  42.0%] message`` to ``stream`` (stdout) at each new message or 10 % step; ``none`` → ``(None, None)``."""
    if mode == "jsonl":
        from .contract.events import JsonlEmitter
        em = JsonlEmitter(sys.stdout)
        if command:
            em.emit("start", command=command)
        return em, em.progress
    if mode != "text":
        return None, None
    last = {"key": None}

    def text(stage: str, fraction: float, message: str = "") -> None:
        key = (stage, message, int(float(fraction) * 10))
        if key != last["key"]:
            last["key"] = key
            print(f"[{stage} {float(fraction) * 100:5.1f}%] {message}", file=stream or sys.stdout, flush=True)
    return None, text


def main(argv: list[str] | None = None) -> int:
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    jsonl = getattr(args, "progress", None) == "jsonl"
    try:
        from .paths import check_run_paths
        check_run_paths(args)   # the one output rule, for every command, before any work
        return int(args.handler(args) or 0)
    except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - the CLI's one place that turns any error into one line
        message, code = describe_error(exc)
        _report_error(message, code, jsonl)
        return code


def describe_error(exc: BaseException) -> tuple[str, int]:
    """The one line and exit code the user sees for ``exc`` (a command's error, or a batch shot's)."""
    if isinstance(exc, (FlameCapError, ContractError)):
        return str(exc), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled", 130
    if isinstance(exc, MemoryError):
        return "out of memory; use a shorter frame range or --quality fast", 9
    if isinstance(exc, OSError):  # a file problem no command turned into a FlameCapError: still one line
        logging.getLogger("flamecap").debug("file error", exc_info=exc)
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return (f"{exc.strerror or exc}{where}; check the path exists, is the right kind (file or folder) and "
                f"that you may read/write it"), 2
    # a bug: one line for the user (and the add-on), the traceback with -v
    logging.getLogger("flamecap").debug("internal error", exc_info=exc)
    return (f"internal error ({type(exc).__name__}: {exc}); re-run with -v for the traceback and please "
            f"report it"), 1


def _report_error(message: str, code: int, jsonl: bool) -> None:
    message = " ".join(str(message).split())  # always one line
    if jsonl:
        from .contract.events import encode_event
        print(encode_event("error", message=message, code=code), flush=True)
    print(f"error: {message}", file=sys.stderr, flush=True)


def run() -> None:
    """Console entry point (``flamecap``, ``python -m flamecap``): :func:`main`, then exit without the
    interpreter's teardown of torch and MediaPipe (0.6 s on 2 cores). Every output is written atomically and
    closed before ``main`` returns; only the standard streams and logging need flushing."""
    rc = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # reader gone / closed: nothing left to deliver
            pass
    logging.shutdown()
    os._exit(rc)


if __name__ == "__main__":
    run()
