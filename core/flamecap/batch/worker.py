"""One shot, tracked inside a long-lived worker process (a local pool worker or a Ray worker): the same
:func:`flamecap.commands.track.run_track` as ``flamecap track``, with torch, OpenCV and MediaPipe imported
once per worker and the loaded model and its binding kept between shots."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable

from ..contract.npzio import remove_stale_temps
from .shots import Shot
from .state import input_fingerprint, model_fingerprint, sidecar_record, write_json

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_CACHE: dict = {}          # models and bindings of this worker (see run_track)
_MODEL_SHA: dict = {}
_READY = {"threads": None}


def setup_worker(threads: int) -> None:
    """Pin this process's math libraries to ``threads`` threads and import the heavy modules once (start-up
    paid per worker, not per shot). Safe to call again (a Ray worker calls it from each task)."""
    if _READY["threads"] == threads:
        return
    for var in THREAD_ENV:
        os.environ[var] = str(threads)
    import cv2
    import torch
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    import flamecap.fit.tracker  # noqa: F401  (torch and the fitter: MediaPipe loads with the first shot using it)
    _READY["threads"] = threads


def cleanup(shot: Shot) -> None:
    """Remove what a killed attempt at ``shot`` may have left (temp files of the atomic writer)."""
    remove_stale_temps(shot.output)
    remove_stale_temps(shot.sidecar)


def run_shot(shot: Shot, on_fraction: Callable[[float], None] | None = None) -> dict:
    """Track ``shot``; return its outcome ``{"status": "done"|"failed", ...}``. Errors become a failed outcome
    with the one line ``flamecap track`` would print: one shot never stops the batch."""
    from ..cli import describe_error
    from ..commands.track import run_track, track_progress
    t0 = time.perf_counter()
    worker = {"pid": os.getpid(), "host": socket.gethostname()}
    cleanup(shot)   # a previous attempt killed mid-write leaves temp files; nothing else writes this shot now
    try:
        fingerprint = input_fingerprint(shot.footage)
        prog = track_progress("none", shot.options.identity, on_fraction)
        run = run_track(shot.footage, shot.output, shot.options, prog, cache=_CACHE)
        record = sidecar_record(shot, fingerprint, model_fingerprint(shot.options.model, _MODEL_SHA),
                                run.frames, run.valid_frames, run.seconds)
        write_json(shot.sidecar, record)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:   # noqa: BLE001 — failure isolation: every error is this shot's outcome
        message, code = describe_error(exc)
        return {"status": "failed", "error": message, "code": code, "worker": worker,
                "seconds": round(time.perf_counter() - t0, 3)}
    return {"status": "done", "result": str(Path(shot.output)), "frames": run.frames,
            "valid_frames": run.valid_frames, "seconds": round(time.perf_counter() - t0, 3), "worker": worker}
