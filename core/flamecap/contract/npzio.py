"""Atomic, pickle-free ``.npz`` I/O with JSON metadata (numpy + stdlib only)."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import ContractError

META_KEY = "__meta__"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path`` (``os.replace``),
    when it fails it is deleted. A crash or error never leaves a partial file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write ``arrays`` plus ``meta`` (JSON) to ``path`` atomically (see :func:`atomic_output`)."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in payload.items():
        if v.dtype == object:
            raise ContractError(f"array '{k}' has dtype object; only plain numeric/bool arrays can be saved")
    payload[META_KEY] = np.frombuffer(json.dumps(dict(meta), sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def read_npz(path: str | os.PathLike, what: str = "file") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an ``.npz`` written by :func:`write_npz_atomic` (never unpickles). Returns (arrays, meta)."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{what} not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ContractError(f"{what} {path} is not a readable .npz ({type(exc).__name__}: {exc}); "
                            f"re-create it") from None
    raw = arrays.pop(META_KEY, None)
    if raw is None:
        raise ContractError(f"{what} {path} has no metadata ('{META_KEY}'); it was not written by FlameCap")
    try:
        meta = json.loads(bytes(raw.astype(np.uint8)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{what} {path} has corrupt metadata ({exc}); re-create it") from None
    return arrays, meta
