"""Run the FlameCap core as a subprocess and follow its JSON-lines progress (stdlib only, no bpy).

The same :class:`CoreRun` serves the modal operator (``poll()`` from a timer) and the blocking path
(:func:`run_blocking`, for ``blender -b``, bpy scripts and tests). Cancel = terminate the process (its
whole process group); the core writes outputs atomically, so a cancelled or failed run leaves nothing.
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from ._contract import contract

log = logging.getLogger(__name__)

QUALITIES = ("fast", "production")
DEVICES = ("auto", "cpu", "cuda")


def track_command(python: str, footage: str, output: str, *, model: str = "", quality: str = "fast",
                  frame_start: int | None = None, frame_end: int | None = None, device: str = "auto",
                  focal_px: float | None = None, extra: list[str] | None = None) -> list[str]:
    """argv for ``<python> -m flamecap track FOOTAGE -o OUTPUT --progress jsonl ...``.
    ``frame_start``/``frame_end`` are source frame numbers (0-based, end exclusive), ``None`` = whole clip."""
    argv = [python, "-m", "flamecap", "track", str(footage), "-o", str(output), "--progress", "jsonl",
            "--quality", quality, "--device", device]
    if model:
        argv += ["--model", str(model)]
    if frame_start is not None:
        argv += ["--start", str(int(frame_start))]
    if frame_end is not None:
        argv += ["--end", str(int(frame_end))]
    if focal_px is not None:
        argv += ["--focal", f"{float(focal_px):.3f}"]
    return argv + list(extra or [])


def demo_command(python: str, out_dir: str, frames: int = 50) -> list[str]:
    """argv of ``flamecap demo`` without its Blender part: FlameCap's synthetic head rendered into a clip and
    tracked (no FLAME file, no network); the add-on imports ``result.npz`` into the open scene itself."""
    return [python, "-m", "flamecap", "demo", "-o", str(out_dir), "--frames", str(int(frames)), "--no-blender",
            "--progress", "jsonl"]


def models_add_command(python: str, path: str, make_default: bool = True) -> list[str]:
    """argv of ``flamecap models add FILE [--default]`` (convert and register a FLAME .pkl/.npz/.zip)."""
    return [python, "-m", "flamecap", "models", "add", str(path)] + (["--default"] if make_default else [])


def models_download_command(python: str, release: str, username: str) -> list[str]:
    """argv of ``flamecap models download``; the password goes to its stdin (``--password-stdin``), never argv."""
    return [python, "-m", "flamecap", "models", "download", release, "--username", username, "--password-stdin",
            "--default", "--progress", "jsonl"]


# prefixes of the core's logging lines on stderr (``LEVEL name: message``): progress chatter, not the error
_LOG_PREFIXES = ("DEBUG ", "INFO ", "WARNING ")


def error_line(stderr_lines: list[str], returncode: int | None) -> str:
    """The line that says why the core died: its ``error: ...`` line, else the last line that is not a
    logging line (a traceback's exception), else the exit code."""
    lines = [ln.strip() for ln in stderr_lines if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error: "):
            return ln.removeprefix("error: ")
    for ln in reversed(lines):
        if not ln.startswith(_LOG_PREFIXES):
            return ln
    return f"the core exited with code {returncode}" + (f" (last log: {lines[-1]})" if lines else "")


@dataclass
class RunState:
    """What the UI shows. ``status``: idle, running, done, failed, cancelled."""

    status: str = "idle"
    stage: str = ""
    fraction: float = 0.0
    eta_s: float | None = None
    message: str = ""
    error: str = ""
    result_path: str = ""
    returncode: int | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


class CoreRun:
    """One core subprocess. ``start()``, then ``poll()`` repeatedly (non-blocking) until
    ``state.finished``; ``cancel()`` at any time."""

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None,
                 expect_result: bool = True, stdin_text: str | None = None):
        self.argv = [str(a) for a in argv]
        self.stdin_text = stdin_text  # written to the core's stdin then closed (a password, never argv)
        self.expect_result = expect_result
        self.env = env
        self.cwd = cwd
        self.state = RunState()
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._cancelled = False
        self._stderr_tail: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "CoreRun":
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into the core's Python
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True
        try:
            self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL if self.stdin_text is None else subprocess.PIPE,
                                          env=env, cwd=self.cwd, text=True,
                                          encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            self.state.status = "failed"
            self.state.error = (f"cannot start the FlameCap core '{self.argv[0]}' ({exc.strerror or exc}); "
                                f"set the Python path in the add-on preferences and press Check")
            return self
        if self.stdin_text is not None:
            try:
                self._proc.stdin.write(self.stdin_text)
                self._proc.stdin.close()
            except OSError:  # the core exited at once; its error line says why
                pass
        self.state.status = "running"
        self.state.message = "starting"
        for stream, tag in ((self._proc.stdout, "out"), (self._proc.stderr, "err")):
            t = threading.Thread(target=self._pump, args=(stream, tag), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _pump(self, stream, tag: str) -> None:
        try:
            for line in stream:
                self._lines.put((tag, line.rstrip("\r\n")))
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put((tag, None))

    def cancel(self, grace_s: float = 3.0) -> None:
        """Terminate the core (and its children); waits up to ``grace_s`` then kills."""
        self._cancelled = True
        p = self._proc
        if p is None or p.poll() is not None:
            if not self.state.finished:
                self._finish()
            return
        try:
            if os.name == "nt":
                p.terminate()
            else:
                os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError, OSError):
            pass
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                if os.name == "nt":
                    p.kill()
                else:
                    os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError):
                pass
            p.wait()
        for t in self._threads:  # the pipes close with the process; let the readers hand over the last lines
            t.join(timeout=grace_s)
        self.poll()

    # -- progress ----------------------------------------------------------------------------------
    def poll(self) -> RunState:
        """Consume available output lines; update and return :attr:`state`. Never blocks long."""
        if self.state.finished or self._proc is None:
            return self.state
        while True:
            try:
                tag, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            if tag == "err":
                self._stderr_tail = (self._stderr_tail + [line])[-200:]
                continue
            ev = contract.parse_event(line)
            if ev is None:
                self.state.log_tail = (self.state.log_tail + [line])[-20:]
            else:
                self._on_event(ev)
        if self._proc.poll() is not None and all(not t.is_alive() for t in self._threads) and self._lines.empty():
            self._finish()
        return self.state

    def _on_event(self, ev: dict) -> None:
        kind = ev["event"]
        s = self.state
        if kind == "progress":
            s.stage = str(ev.get("stage", s.stage))
            try:
                s.fraction = min(max(float(ev.get("fraction", s.fraction)), 0.0), 1.0)
            except (TypeError, ValueError):
                pass
            s.eta_s = ev.get("eta_s")
            s.message = str(ev.get("message", "") or s.stage)
        elif kind == "log":
            s.log_tail = (s.log_tail + [f"{ev.get('level', 'info')}: {ev.get('message', '')}"])[-20:]
        elif kind == "error":
            s.error = " ".join(str(ev.get("message", "unknown error")).split())
        elif kind == "done":
            s.result_path = str(ev.get("result", ""))
            s.fraction = 1.0
        elif kind == "start":
            s.message = "started"

    def _finish(self) -> None:
        s = self.state
        s.returncode = None if self._proc is None else self._proc.poll()
        if self._cancelled:
            s.status = "cancelled"
            s.error = s.error or "cancelled"
        elif s.returncode == 0 and (not self.expect_result or (s.result_path and os.path.isfile(s.result_path))):
            s.status = "done"
        else:
            s.status = "failed"
            if not s.error:
                s.error = ("the core finished without writing a result file" if s.returncode == 0 else
                           " ".join(error_line(self._stderr_tail, s.returncode).split()))

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._stderr_tail)


def format_eta(eta_s) -> str:
    if eta_s is None:
        return ""
    eta = int(round(float(eta_s)))
    return f"{eta // 60}:{eta % 60:02d} left" if eta >= 60 else f"{eta} s left"


def run_blocking(argv: list[str], *, on_update=None, should_cancel=None, timeout_s: float | None = None,
                 env: dict | None = None, interval_s: float = 0.05, expect_result: bool = True,
                 stdin_text: str | None = None) -> RunState:
    """Run the core to completion with the same :class:`CoreRun` the modal operator uses.
    ``on_update(state)`` after each poll; ``should_cancel()`` → True cancels; ``timeout_s`` cancels too."""
    run = CoreRun(argv, env=env, expect_result=expect_result, stdin_text=stdin_text).start()
    t0 = time.monotonic()
    while not run.state.finished:
        time.sleep(interval_s)
        state = run.poll()
        if on_update is not None:
            on_update(state)
        if state.finished:
            break
        if (should_cancel is not None and should_cancel()) or (
                timeout_s is not None and time.monotonic() - t0 > timeout_s):
            run.cancel()
    return run.state


def python_check_command(python: str) -> list[str]:
    return [python, "-m", "flamecap", "env", "--json"]


def default_python() -> str:
    """The interpreter running bpy as a module (scripts, tests: a real Python), or '' inside Blender, whose own
    Python never has the core (Set Up Runtime makes one that has)."""
    exe = sys.executable
    return "" if "blender" in os.path.basename(exe).lower() else exe
