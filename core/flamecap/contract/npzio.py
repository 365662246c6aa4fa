"""Atomic, pickle-free ``.npz`` I/O with JSON metadata (numpy + stdlib only)."""
from __future__ import annotations

import contextlib
import json
from glob import escape as glob_escape
import os
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import ContractError, OutputPathError

META_KEY = "__meta__"


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """Make sure a file can be written at ``path`` before any work is done: the name is not empty, it is not
    a folder, no parent is a file, and the (created if missing) folder accepts a new file. Returns ``path``;
    raises :class:`OutputPathError` (one line) otherwise. Missing parent folders are created."""
    raw = os.fspath(path)
    path = Path(raw)
    if not raw.strip() or path.name in ("", ".", ".."):
        raise OutputPathError(f"no {what} file name given ('{raw}'); give a file path such as out/result.npz")
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file path inside it, e.g. "
                              f"{path / ('result' + (path.suffix or '.npz'))}")
    for anc in path.parents:
        if anc.exists() or anc.is_symlink():
            if not anc.is_dir():
                raise OutputPathError(f"cannot write {what} {path}: {anc} is a file, not a folder; "
                                      f"choose another location")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create the folder {path.parent} for {what} {path} "
                              f"({exc.strerror or exc}); choose a folder you can write to") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=str(path.parent))
    except OSError as exc:
        raise OutputPathError(f"cannot write {what} {path}: the folder {path.parent} does not accept new files "
                              f"({exc.strerror or exc}); choose a folder you can write to") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path


def _new_file_mode(path: Path) -> int:
    """The permission bits a plainly created file would get (or the existing file's, when replacing one):
    ``mkstemp`` makes 0600 files, which other users or programs (e.g. Blender as another user) cannot read."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path`` (``os.replace``),
    when it fails it is deleted. A crash or error never leaves a partial file at ``path``, and an existing
    file there stays untouched until the new one is complete. An unwritable location (folder, read-only,
    disk full...) raises :class:`OutputPathError` naming ``path``."""
    path = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as exc:
        raise OutputPathError(f"cannot write {path} ({exc.strerror or exc}); choose a folder you can write "
                              f"to") from None
    os.close(fd)
    try:
        yield Path(tmp)
        with contextlib.suppress(OSError):
            os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, ContractError):
            raise OutputPathError(f"could not write {path} ({exc.strerror or exc}); check free disk space and "
                                  f"that the location is writable; nothing was written") from None
        raise


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_output` left beside ``path`` when its process was killed
    (SIGKILL, power loss: no ``finally`` ran). Only call it when no other process is writing ``path``.
    Returns the files removed."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def write_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write ``arrays`` plus ``meta`` (JSON) to ``path`` atomically (see :func:`atomic_output`)."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in payload.items():
        if v.dtype == object:
            raise ContractError(f"array '{k}' has dtype object; only plain numeric/bool arrays can be saved")
    payload[META_KEY] = np.frombuffer(json.dumps(dict(meta), sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            # np.savez_compressed's layout (one .npy per key, deflated) at zlib level 3: the same size as
            # its level 6 on FlameCap's arrays in half the time
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=3) as zf:
                for key, arr in payload.items():
                    with zf.open(key + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def read_npz(path: str | os.PathLike, what: str = "file") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an ``.npz`` written by :func:`write_npz_atomic` (never unpickles). Returns (arrays, meta)."""
    path = Path(path)
    if path.is_dir():
        raise ContractError(f"{what} {path} is a folder, not a file; give the .npz file inside it")
    if not path.is_file():
        raise ContractError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ContractError(f"cannot read {what} {path} ({exc.strerror or exc})") from None
    if magic[:2] != b"PK":
        kind = "an empty file" if not magic else "not a zip archive"
        raise ContractError(f"{what} {path} is not a readable .npz ({kind}); give the .npz FlameCap wrote, "
                            f"or re-create it if it was damaged")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
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
