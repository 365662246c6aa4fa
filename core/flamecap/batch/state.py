"""What makes a batch resumable: each finished shot leaves a sidecar ``OUTDIR/<name>.batch.json`` beside its
result, written (atomically) after the result, recording the input (size + sha256), the options that decide
the result, the model and the result file (size + sha256). A shot is skipped when all of them still match.

Every file a batch writes besides the results (sidecars, the report) goes through :func:`write_json`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..contract.npzio import atomic_output
from ..errors import FootageError
from ..flame.registry import sha256_file
from ..video import IMAGE_EXTS
from .shots import Shot

SIDECAR_FORMAT = "flamecap.batch-shot"
REPORT_FORMAT = "flamecap.batch-report"
STATE_VERSION = 1


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON at ``path`` atomically (the project's atomic writer)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return Path(path)


def _footage_files(path: Path) -> list[Path]:
    """The files a footage path reads: the file, a folder's images, or a printf pattern's folder's images."""
    if path.is_file():
        return [path]
    if "%" in path.name:
        folder, suffix = path.parent, path.suffix.lower()
        files = [q for q in folder.iterdir() if q.is_file() and q.suffix.lower() == suffix] if folder.is_dir() else []
    elif path.is_dir():
        files = [q for q in path.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS]
    else:
        files = []
    if not files:
        raise FootageError(f"footage not found: {path}; give a video file, an image folder or a pattern like "
                           f"frames/%04d.png")
    return sorted(files)


def input_size(path: str | os.PathLike) -> int:
    return sum(q.stat().st_size for q in _footage_files(Path(path)))


def input_fingerprint(path: str | os.PathLike) -> dict:
    """``{"size": bytes, "sha256": hex}`` of the footage (for image sequences: over names and contents)."""
    files = _footage_files(Path(path))
    if len(files) == 1 and Path(path).is_file():
        return {"size": files[0].stat().st_size, "sha256": sha256_file(files[0])}
    import hashlib
    h = hashlib.sha256()
    for q in files:
        h.update(q.name.encode("utf-8") + b"\0" + sha256_file(q).encode("ascii"))
    return {"size": sum(q.stat().st_size for q in files), "sha256": h.hexdigest()}


def model_fingerprint(spec: str | None, memo: dict | None = None) -> str | None:
    """The sha256 of the model a spec names (a file, a registered name, ``None`` = the default); ``None`` when
    it names none (that shot then fails with the loader's message)."""
    memo = {} if memo is None else memo
    if spec in memo:
        return memo[spec]
    from ..flame.registry import Registry
    value = None
    if spec is not None and Path(spec).is_file():
        value = sha256_file(spec)
    else:
        reg = Registry.load()
        entry = reg.default() if spec is None else reg.get(spec)
        value = entry.npz_sha256 if entry is not None else None
    memo[spec] = value
    return value


def sidecar_record(shot: Shot, input_fp: dict, model_fp: str | None, frames: int, valid_frames: int,
                   seconds: float) -> dict:
    out = Path(shot.output)
    return {"format": SIDECAR_FORMAT, "version": STATE_VERSION, "shot": shot.name,
            "input": {"path": shot.footage, **input_fp}, "options": shot.options.key(), "model_sha256": model_fp,
            "result": {"file": out.name, "size": out.stat().st_size, "sha256": sha256_file(out)},
            "frames": frames, "valid_frames": valid_frames, "seconds": round(seconds, 3),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def read_sidecar(shot: Shot) -> dict | None:
    try:
        rec = json.loads(Path(shot.sidecar).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(rec, dict) or rec.get("format") != SIDECAR_FORMAT or rec.get("version") != STATE_VERSION:
        return None
    return rec


def already_done(shot: Shot, model_memo: dict | None = None) -> dict | None:
    """The sidecar of ``shot`` when its result is valid for the same input, options and model (cheap checks
    first: the input is hashed only when its size still matches); ``None`` when it must be tracked."""
    rec = read_sidecar(shot)
    if rec is None:
        return None
    try:
        inp, res = rec["input"], rec["result"]
        if rec["options"] != json.loads(json.dumps(shot.options.key())):
            return None
        out = Path(shot.output)
        if res["file"] != out.name or not out.is_file() or out.stat().st_size != res["size"]:
            return None
        if input_size(shot.footage) != inp["size"]:
            return None
        if rec["model_sha256"] != model_fingerprint(shot.options.model, model_memo):
            return None
        if sha256_file(out) != res["sha256"] or input_fingerprint(shot.footage)["sha256"] != inp["sha256"]:
            return None
    except (KeyError, TypeError, OSError, FootageError):
        return None
    return rec


def report_path(outdir: str | os.PathLike) -> Path:
    return Path(outdir) / "batch_report.json"
