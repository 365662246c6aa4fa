"""Shots as Ray tasks (Ray is the engine: it places, runs and retries them). One task per shot, one CPU
each; a task whose worker dies (killed, out of memory, node lost) is retried by Ray up to ``retries`` times;
errors of the shot itself are its outcome (not retried: the same input fails the same way). Results are
written by the tasks straight into the output folder, which must be shared by every node.

Each attempt leaves a claim ``<OUTDIR>/.flamecap-batch/<shot>.<pid>.json`` (host, pid): the driver shows the
shot as running from it and counts attempts; the folder is removed when the batch ends.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import InputError
from .shots import Shot
from .state import write_json

CLAIMS = ".flamecap-batch"


def ray_shot(shot: Shot, claims: str) -> dict:
    """The Ray task: claim, then :func:`flamecap.batch.worker.run_shot` in this (reused) Ray worker."""
    from . import worker
    worker.setup_worker(1)    # one CPU per task
    write_json(Path(claims) / f"{shot.name}.{os.getpid()}.json",
               {"shot": shot.name, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    return worker.run_shot(shot)


def import_ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise InputError("--ray needs Ray, which is not installed; install it with pip install 'flamecap[ray]'") \
            from None
    return ray


def connect(address: str, num_cpus: int | None = None):
    """Use the Ray already initialised in this process, or connect: ``auto`` = the running cluster,
    ``local`` = start one on this machine (``num_cpus``), else a cluster address such as ``ray://head:10001``."""
    ray = import_ray()
    if not ray.is_initialized():
        kwargs = {"num_cpus": num_cpus} if address == "local" else {"address": address}
        try:
            ray.init(logging_level="WARNING", log_to_driver=False, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot connect to Ray at '{address}' ({' '.join(str(exc).split())[:200]}); start "
                             f"the cluster with 'ray start --head' or use --ray local") from None
    return ray


def run_ray(shots: list[Shot], outdir: str, address: str, retries: int, num_cpus: int | None = None,
            on_message: Callable[[tuple], None] | None = None) -> Iterator[tuple[Shot, dict, int]]:
    """Track ``shots`` as Ray tasks; yield ``(shot, outcome, attempts)`` as each finishes. ``on_message``
    receives ``("running", name, pid)`` when an attempt starts."""
    ray = connect(address, num_cpus)
    claims = Path(outdir).resolve() / CLAIMS
    claims.mkdir(parents=True, exist_ok=True)
    task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(ray_shot)
    pending = {task.remote(shot, str(claims)): shot for shot in shots}
    seen: dict[str, set[int]] = {s.name: set() for s in shots}

    def scan() -> None:
        for f in claims.glob("*.json"):
            try:
                c = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if c.get("shot") in seen and c.get("pid") not in seen[c["shot"]]:
                seen[c["shot"]].add(c["pid"])
                if on_message is not None:
                    on_message(("running", c["shot"], c["pid"]))

    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            scan()
            for ref in done:
                shot = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:   # the worker died more than `retries` times, ...
                    from .worker import cleanup
                    cleanup(shot)
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    outcome = {"status": "failed", "code": 1, "error": (
                        f"Ray could not run it ({type(exc).__name__}: {first[:200]}); check the cluster's "
                        f"memory and the footage, then run the batch again")}
                yield shot, outcome, max(1, len(seen[shot.name]))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        shutil.rmtree(claims, ignore_errors=True)
