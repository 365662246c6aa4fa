"""Batch tracking: many shots through the same track run as ``flamecap track``, on local worker processes
(:mod:`.pool`) or as Ray tasks (:mod:`.ray_runner`). Per-shot status (queued → running → done / failed /
skipped), failure isolation, resume (:mod:`.state`), and one JSON report, ``OUTDIR/batch_report.json``.

``import flamecap.batch`` stays light: torch, MediaPipe and Ray are imported by the workers only.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..contract.npzio import check_output_path
from ..errors import InputError
from .shots import Shot, collect_shots
from .state import REPORT_FORMAT, STATE_VERSION, already_done, report_path, write_json

log = logging.getLogger(__name__)

EventCallback = Callable[..., None]     # on_event(kind, **fields): kind "shot" or "progress"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def plan_workers(n_shots: int, workers: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker): by default one worker per core (at most one per shot), and threads so
    that workers × threads ≤ cores."""
    cores = cores or available_cores()
    if workers is not None and workers < 1 or threads is not None and threads < 1:
        raise InputError(f"--workers and --threads must be >= 1 (got {workers}, {threads})")
    w = max(1, min(workers or cores, max(n_shots, 1)))
    t = threads or max(1, cores // w)
    if w * t > cores:
        log.warning("%d workers x %d threads exceed the %d cores; shots will compete for CPU", w, t, cores)
    return w, t


@dataclass
class ShotState:
    shot: Shot
    status: str = "queued"
    error: str = ""
    code: int | None = None
    attempts: int = 0
    seconds: float | None = None
    frames: int | None = None
    valid_frames: int | None = None
    worker: dict | None = None
    fraction: float = 0.0

    def row(self) -> dict[str, Any]:
        return {"name": self.shot.name, "footage": self.shot.footage, "output": self.shot.output,
                "status": self.status, "error": self.error or None, "code": self.code, "attempts": self.attempts,
                "seconds": self.seconds, "frames": self.frames, "valid_frames": self.valid_frames,
                "worker": self.worker, "options": self.shot.options.key()}


@dataclass
class BatchReport:
    path: str
    engine: str
    workers: int
    threads: int
    seconds: float
    shots: list[ShotState] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.shots)

    def as_dict(self) -> dict[str, Any]:
        from ..contract.events import SHOT_STATUSES
        return {"format": REPORT_FORMAT, "version": STATE_VERSION, "engine": self.engine, "workers": self.workers,
                "threads_per_worker": self.threads, "seconds": round(self.seconds, 3),
                "counts": {k: self.count(k) for k in SHOT_STATUSES}, "shots": [s.row() for s in self.shots]}


def run_batch(shots: list[Shot], outdir: str | os.PathLike, *, workers: int | None = None,
              threads: int | None = None, retries: int = 2, ray: str | None = None, resume: bool = True,
              on_event: EventCallback | None = None) -> BatchReport:
    """Track ``shots`` into ``outdir`` and write the report there (also when interrupted). ``ray``: a Ray
    address (``auto``, ``local``, ``ray://...``) to run them as Ray tasks instead of local workers.

    Local workers are spawned (fresh interpreters, as on every platform): a script calling this must guard
    its entry point with ``if __name__ == "__main__":``, as for any ``multiprocessing`` user."""
    t0 = time.perf_counter()
    report_file = check_output_path(report_path(outdir), what="batch report")
    if retries < 0:
        raise InputError(f"--retries must be >= 0, got {retries}")
    emit = on_event or (lambda kind, **f: None)
    states = {s.name: ShotState(s) for s in shots}
    for st in states.values():
        emit("shot", shot=st.shot.name, status="queued")
    model_memo: dict = {}
    todo = []
    for st in states.values():
        if resume and (rec := already_done(st.shot, model_memo)) is not None:
            st.status, st.frames, st.valid_frames = "skipped", rec.get("frames"), rec.get("valid_frames")
            emit("shot", shot=st.shot.name, status="skipped", result=st.shot.output)
        else:
            todo.append(st.shot)
    # Ray places the tasks (one CPU each); workers is then only the CPUs of a cluster started with --ray local
    w, t = ((workers or 0), 1) if ray else plan_workers(len(todo), workers, threads)
    report = BatchReport(str(report_file), "ray" if ray else "local", w, t, 0.0, list(states.values()))

    def progress(message: str = "") -> None:
        if not todo:
            return
        finished = sum(states[s.name].status in ("done", "failed") for s in todo)
        running = sum(states[s.name].fraction for s in todo if states[s.name].status == "running")
        emit("progress", fraction=(finished + running) / len(todo),
             message=message or f"{finished}/{len(todo)} shots finished")

    def on_message(msg: tuple) -> None:
        st = states[msg[1]]
        if msg[0] == "running":
            st.status, st.fraction, st.worker = "running", 0.0, {"pid": msg[2]}
            st.attempts += 1
            emit("shot", shot=st.shot.name, status="running", attempt=st.attempts, pid=msg[2])
        elif msg[0] == "progress" and st.status == "running":
            st.fraction = float(msg[2])
        progress()

    try:
        if todo:
            progress(f"tracking {len(todo)} shots ({len(states) - len(todo)} already done)")
            if ray:
                from .ray_runner import run_ray
                results = run_ray(todo, str(outdir), ray, retries, num_cpus=workers, on_message=on_message)
            else:
                from .pool import run_local
                results = run_local(todo, w, t, retries, on_message=on_message)
            for shot, outcome, attempts in results:
                st = states[shot.name]
                st.status, st.attempts, st.fraction = outcome["status"], max(attempts, st.attempts), 1.0
                st.error, st.code = outcome.get("error", ""), outcome.get("code")
                st.seconds, st.frames = outcome.get("seconds"), outcome.get("frames")
                st.valid_frames, st.worker = outcome.get("valid_frames"), outcome.get("worker", st.worker)
                fields = {"result": shot.output} if st.status == "done" else {"error": st.error}
                emit("shot", shot=shot.name, status=st.status, attempt=st.attempts, **fields)
                progress()
    finally:
        from .worker import cleanup
        for st in states.values():
            cleanup(st.shot)
            if st.status in ("queued", "running"):
                st.status, st.error = "cancelled", "the batch was stopped before this shot finished"
        report.seconds = time.perf_counter() - t0
        write_json(report_file, report.as_dict())
    return report


__all__ = ["Shot", "ShotState", "BatchReport", "collect_shots", "run_batch", "plan_workers", "available_cores"]
