"""The subprocess runner shared by the modal operator and the blocking path (no Blender scene needed)."""
from __future__ import annotations

import os
import sys
import time

import pytest

from blender_addon import runner

pytestmark = pytest.mark.blender


def _fake_argv(fake_python, footage, out, **kw):
    return runner.track_command(str(fake_python), str(footage), str(out), **kw)


def test_track_command_flags():
    argv = runner.track_command("py", "in.mp4", "o.npz", model="m.npz", quality="production", frame_start=4,
                                frame_end=12, device="cpu")
    assert argv[:8] == ["py", "-m", "flamecap", "track", "in.mp4", "-o", "o.npz", "--progress"]
    assert argv[8] == "jsonl"
    for flag, val in (("--quality", "production"), ("--device", "cpu"), ("--model", "m.npz"), ("--start", "4"),
                      ("--end", "12")):
        assert argv[argv.index(flag) + 1] == val


def test_core_arguments_parse_with_the_real_flamecap_parser(tmp_path):
    """Every argv the add-on builds is accepted by the core's own parser (flamecap.cli, torch-free), with the
    values the add-on meant."""
    from flamecap.cli import build_parser
    parse = lambda argv: build_parser().parse_args(argv[3:])  # noqa: E731  (drop "python -m flamecap")
    a = parse(runner.track_command("py", "in.mp4", "o.npz", model="m.npz", quality="production", frame_start=4,
                                   frame_end=12, device="cpu", focal_px=1234.5))
    assert (a.command, a.footage, a.output, a.model, a.quality, a.start, a.end, a.device, a.progress) == (
        "track", "in.mp4", "o.npz", "m.npz", "production", 4, 12, "cpu", "jsonl")
    assert a.focal == 1234.5
    a = parse(runner.track_command("py", "in.mp4", "o.npz"))
    assert a.model is None and a.start == 0 and a.end is None and a.focal is None
    a = parse(runner.demo_command("py", str(tmp_path / "demo"), frames=30))
    assert (a.command, a.out, a.frames, a.no_blender, a.progress) == ("demo", str(tmp_path / "demo"), 30, True, "jsonl")
    a = parse(runner.models_add_command("py", "flame2023_Open.pkl"))
    assert (a.command, a.file, a.default) == ("models", "flame2023_Open.pkl", True)
    a = parse(runner.models_download_command("py", "flame2023-open", "me@example.org"))
    assert (a.release, a.username, a.password_stdin, a.default, a.progress) == (
        "flame2023-open", "me@example.org", True, True, "jsonl")
    a = parse(runner.python_check_command("py"))
    assert a.command == "env" and a.json


def test_error_line_is_the_error_not_a_log_line():
    assert runner.error_line(["INFO flamecap.fit: fitting 75 frames", "error: out of memory; use --quality fast",
                              "INFO flamecap: bye"], 9) == "out of memory; use --quality fast"
    tb = ["INFO flamecap.fit: fitting", "Traceback (most recent call last):", '  File "x.py", line 1',
          "RuntimeError: CUDA driver too old"]
    assert runner.error_line(tb, 1) == "RuntimeError: CUDA driver too old"
    assert runner.error_line(["INFO flamecap.fit: fitting 75 frames"], -9) == (
        "the core exited with code -9 (last log: INFO flamecap.fit: fitting 75 frames)")


def test_blocking_run_follows_progress_and_ignores_chatter(tmp_path, fake_python):
    footage = tmp_path / "f.mp4"
    footage.write_bytes(b"\0" * 100)
    seen = []
    state = runner.run_blocking(_fake_argv(fake_python, footage, tmp_path / "o.npz"),
                                on_update=lambda s: seen.append((s.stage, s.fraction)))
    assert state.status == "done", state
    assert state.result_path == str((tmp_path / "o.npz").resolve())
    assert state.fraction == 1.0 and state.error == ""
    fr = [f for _, f in seen]
    assert fr == sorted(fr)                           # monotone progress
    assert {"load", "landmarks", "fit", "write"} <= {s for s, _ in seen}
    assert any("chatter" in ln for ln in state.log_tail)


def test_cancel_terminates_and_reports(tmp_path, fake_python):
    footage = tmp_path / "f.mp4"
    footage.write_bytes(b"\0" * 100)
    env = dict(os.environ, FAKE_CORE_STEP_S="0.5")
    run = runner.CoreRun(_fake_argv(fake_python, footage, tmp_path / "o.npz"), env=env).start()
    t0 = time.monotonic()
    while run.poll().fraction == 0 and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    run.cancel()
    assert run.state.status == "cancelled" and run.state.returncode is not None
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "o.npz").exists()


def test_error_without_event_uses_last_stderr_line():
    code = "import sys; print('noise'); sys.stderr.write('Traceback\\nerror: the thing broke\\n'); sys.exit(3)"
    state = runner.run_blocking([sys.executable, "-c", code])
    assert state.status == "failed" and state.returncode == 3
    assert state.error == "the thing broke"


def test_success_exit_without_result_is_a_failure():
    state = runner.run_blocking([sys.executable, "-c", "pass"])
    assert state.status == "failed" and "without writing a result" in state.error


def test_missing_executable():
    state = runner.run_blocking(["/nonexistent/python3", "-m", "flamecap"])
    assert state.status == "failed" and "Python path" in state.error


def test_eta_format():
    assert runner.format_eta(None) == "" and runner.format_eta(5.2) == "5 s left"
    assert runner.format_eta(125) == "2:05 left"
