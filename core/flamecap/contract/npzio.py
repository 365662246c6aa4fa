"""Atomic, pickle-free ``.npz`` I/O with JSON metadata (numpy + stdlib only)."""
from __future__ import annotations

import contextlib
import json
from glob import escape as glob_escape
import mmap
import os
import re
import stat
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from .errors import ContractError, OutputPathError

META_KEY = "__meta__"


def _file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_output_path(path: str | os.PathLike, what: str = "output",
                      inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """The one output-path rule, checked before any work is done (and again at write time).

    Refuses (:class:`OutputPathError`, one line): an empty name; a folder; a path under a file; an existing
    file that is not a regular file (a device node such as ``/dev/null``, a FIFO, a socket: ``os.replace``
    would swap it for a plain file); a path that is, or resolves to (symlinks, ``..``, hard links), any of
    ``inputs`` (the run's footage, caches, models, other outputs: writing there would destroy them); a
    folder that does not accept new files. Missing parent folders are created. Returns ``path``."""
    raw = os.fspath(path)
    path = Path(raw)
    if not raw.strip() or path.name in ("", ".", ".."):
        raise OutputPathError(f"no {what} file name given ('{raw}'); give a file path such as out/result.npz")
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file path inside it, e.g. "
                              f"{path / ('result' + (path.suffix or '.npz'))}")
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"{what} {path} exists and is not a regular file (a device, FIFO or socket); "
                              f"writing would replace it; choose a file path")
    real = os.path.realpath(path)
    for src in inputs:
        if src is None or not os.fspath(src):
            continue
        same_inode = st is not None and _file_id(src) == (st.st_dev, st.st_ino)
        if same_inode or os.path.realpath(src) == real:
            raise OutputPathError(f"{what} {path} is the same file as {src}, which this run also reads or "
                                  f"writes; writing it would destroy that file; choose another output name")
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


# The temporary files this module makes: ".<name>.<8 mkstemp characters>.tmp" / ".probe". A write killed
# between mkstemp and os.replace (SIGKILL, power loss) leaves one behind; the next write into the same
# folder removes those older than STALE_TMP_S (no live write takes that long between creating its
# temporary file and renaming it).
_TMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|probe)$")
STALE_TMP_S = 3600.0


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float = STALE_TMP_S) -> list[Path]:
    """Delete this module's own temporary files in ``folder`` older than ``older_than_s`` (regular files
    matching its naming pattern only). Returns what was removed."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not _TMP_RE.match(e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > older_than_s:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


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
    remove_stale_temporaries(path.parent)
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
                        _write_array(member, arr)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def mapping_of(arr: np.ndarray) -> mmap.mmap | None:
    """The shared file mapping ``arr`` is a view of (``np.frombuffer`` over an ``mmap``), else None."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def release_pages(*arrays: np.ndarray) -> None:
    """Drop the pages of file-mapped arrays from this process's resident set. Their data stay in the file
    (a shared mapping; the kernel writes dirty pages back) and come back on the next read, so an hour of
    spilled landmarks (:class:`flamecap.landmarks.base.TrackRows`) is resident only while it is read."""
    if not hasattr(mmap, "MADV_DONTNEED"):    # Windows: the working set is trimmed by the system instead
        return
    for arr in arrays:
        mm = mapping_of(arr)
        if mm is not None and not mm.closed:
            mm.madvise(mmap.MADV_DONTNEED)


def _write_array(fp, arr: np.ndarray, block_bytes: int = 16 << 20) -> None:
    """``np.lib.format.write_array`` (no pickles); a file-mapped array is written in row blocks with its
    pages dropped after each, so saving a spilled track does not make it resident whole."""
    if mapping_of(arr) is None or arr.ndim == 0 or not arr.flags.c_contiguous:
        np.lib.format.write_array(fp, arr, allow_pickle=False)
        return
    np.lib.format.write_array_header_1_0(fp, np.lib.format.header_data_from_array_1_0(arr))
    step = max(1, block_bytes // max(1, arr[:1].nbytes))
    for a in range(0, len(arr), step):
        fp.write(arr[a:a + step].tobytes())
        release_pages(arr)


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
