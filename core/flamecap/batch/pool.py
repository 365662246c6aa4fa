"""Shots on this machine: ``workers`` long-lived processes (spawned, so nothing of the parent's state is
shared), each with ``threads`` math threads, each tracking one shot at a time through a pipe of its own. The
parent always knows which worker holds which shot, so a worker that dies (killed, crashed in native code)
costs only its shot: that shot is retried (up to ``retries`` times) on a fresh worker, the others go on.

Messages from a worker: ``("ready", pid)``, ``("running", name, pid)``, ``("progress", name, fraction)``,
``("outcome", name, outcome)``.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Callable, Iterator

from .shots import Shot

PROGRESS_STEP = 0.02     # a worker reports its shot's progress in steps of this much


def _worker_main(conn, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle (it stops the workers)
    from . import worker
    worker.setup_worker(threads)
    conn.send(("ready", mp.current_process().pid))
    while True:
        try:
            shot = conn.recv()
        except EOFError:
            return
        if shot is None:
            return
        conn.send(("running", shot.name, mp.current_process().pid))
        last = [-1.0]

        def forward(fraction: float, name=shot.name) -> None:
            if fraction - last[0] >= PROGRESS_STEP:
                last[0] = fraction
                conn.send(("progress", name, fraction))
        conn.send(("outcome", shot.name, worker.run_shot(shot, forward)))


@dataclass
class _Worker:
    proc: mp.Process
    conn: object
    shot: Shot | None = None
    attempt: int = 0


def run_local(shots: list[Shot], workers: int, threads: int, retries: int,
              on_message: Callable[[tuple], None] | None = None) -> Iterator[tuple[Shot, dict, int]]:
    """Track ``shots`` on ``workers`` processes; yield ``(shot, outcome, attempts)`` as each finishes.
    ``on_message`` sees the workers' ``running`` / ``progress`` messages."""
    ctx = mp.get_context("spawn")
    queue: deque[tuple[Shot, int]] = deque((s, 1) for s in shots)
    pool: list[_Worker] = []

    def start() -> None:
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(there, threads), daemon=True, name="flamecap-batch")
        proc.start()
        there.close()
        pool.append(_Worker(proc, here))

    try:
        for _ in range(min(workers, len(shots))):
            start()
        while queue or any(w.shot is not None for w in pool):
            for w in pool:
                if w.shot is None and queue and w.proc.is_alive():
                    w.shot, w.attempt = queue.popleft()
                    try:
                        w.conn.send(w.shot)
                    except OSError:     # it died just now: its sentinel fires and the shot is retried
                        pass
            ready = wait([w.conn for w in pool] + [w.proc.sentinel for w in pool], timeout=1.0)
            for w in list(pool):
                died = False
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        died = True
                    else:
                        if msg[0] == "outcome" and w.shot is not None:
                            shot, attempt = w.shot, w.attempt
                            w.shot = None
                            yield shot, msg[2], attempt
                        elif on_message is not None and msg[0] in ("running", "progress"):
                            on_message(msg)
                if died or (w.proc.sentinel in ready and not w.conn.poll()):
                    w.proc.join(timeout=5)
                    pool.remove(w)
                    if w.shot is not None:
                        from .worker import cleanup
                        cleanup(w.shot)
                        if w.attempt <= retries:
                            queue.appendleft((w.shot, w.attempt + 1))
                        else:
                            yield w.shot, {"status": "failed", "code": 1, "error": (
                                f"the worker tracking it died {w.attempt} time(s) (last exit code "
                                f"{w.proc.exitcode}); check memory and the footage, then run the batch again")}, \
                                w.attempt
                    if queue and len(pool) < workers:
                        start()
    finally:
        # idle workers stop when told; busy ones (the batch was interrupted) are terminated: the atomic writer
        # leaves at most temp files, which the caller removes
        for w in pool:
            try:
                w.conn.send(None) if w.shot is None else w.proc.terminate()
            except (OSError, ValueError):
                pass
        for w in pool:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
