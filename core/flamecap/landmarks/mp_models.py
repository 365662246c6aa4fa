"""MediaPipe's face model files for the ``litert`` aligner: where they live, how they are checked, how
they are fetched.

The files are Google's (Apache-2.0), shipped inside the ``mediapipe==0.10.21`` wheel, the last release
that carries the legacy face models. ``flamecap models fetch-mediapipe`` downloads that wheel with pip
(``pip download --no-deps --only-binary=:all:``, any Python can do it) or takes a wheel file you already
have (``--wheel``) or, offline, the installed legacy package (``--from-installed``: its package directory holds
the same files), reads the files out, checks each against the sha256 in
the weights manifest (entry ``mediapipe-face``) and writes them, with the wheel's licence text, to
``$FLAMECAP_HOME/weights/mediapipe/``. Nothing is ever downloaded while tracking: a missing file is an
error that names the command.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .. import paths
from ..errors import InputError, WeightsError
from ..flame.registry import sha256_bytes, sha256_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "mediapipe-face"
WHEEL_VERSION = "0.10.21"
FETCH_COMMAND = "flamecap models fetch-mediapipe"
DIR_ENV = "FLAMECAP_MEDIAPIPE_MODELS"

SHORT_RANGE = "face_detection_short_range.tflite"
FULL_RANGE = "face_detection_full_range_sparse.tflite"
LANDMARKS = "face_landmark_with_attention.tflite"
CONNECTIONS = "face_mesh_connections.py"       # the mesh topology the σ model needs (data only, parsed)
LICENCE_FILE = "LICENSE.mediapipe.txt"


def _entry() -> dict:
    from ..weights import manifest_entry
    return manifest_entry(MANIFEST_NAME)


def models_dir() -> Path:
    """``$FLAMECAP_MEDIAPIPE_MODELS`` if set, else ``$FLAMECAP_HOME/weights/mediapipe``."""
    env = os.environ.get(DIR_ENV)
    return Path(env) if env else paths.home() / "weights" / "mediapipe"


_CHECKED: dict[tuple[str, float, int], bool] = {}


def model_file(name: str, directory: Path | None = None) -> Path:
    """The checked path of one MediaPipe file; a missing or altered file → WeightsError naming the fix."""
    entry = _entry()
    if name not in entry["files"]:
        raise WeightsError(f"'{name}' is not one of the MediaPipe face files ({', '.join(entry['files'])})")
    d = Path(directory) if directory is not None else models_dir()
    p = d / name
    if not p.is_file():
        raise WeightsError(f"MediaPipe model file {p} is missing; run '{FETCH_COMMAND}' (it takes the files out "
                           f"of the mediapipe {WHEEL_VERSION} wheel on PyPI)")
    st = p.stat()
    key = (str(p), st.st_mtime, st.st_size)
    if key not in _CHECKED:
        if sha256_file(p) != entry["sha256"][name]:
            raise WeightsError(f"{p} does not match its sha256 in the weights manifest (damaged or another "
                               f"version); run '{FETCH_COMMAND} --force'")
        _CHECKED[key] = True
    return p


def missing_files(directory: Path | None = None) -> list[str]:
    """The MediaPipe face files not in ``directory`` (default :func:`models_dir`) or not intact there."""
    d = Path(directory) if directory is not None else models_dir()
    entry = _entry()
    return [f for f in entry["files"] if not ((d / f).is_file() and sha256_file(d / f) == entry["sha256"][f])]


def _extract(read, has, source: str, dest: Path, licence: bytes | None) -> list[Path]:
    """Copy every manifest file from a source (``read(member) → bytes``, ``has(member) → bool``) into
    ``dest``, each checked against the manifest's sha256 before it is written (atomically)."""
    entry = _entry()
    datas = {}
    for fname in entry["files"]:           # check everything first: a bad source writes nothing
        member = entry["members"][fname]
        if not has(member):
            raise InputError(f"{source} has no {member}; it is not mediapipe {WHEEL_VERSION} (later releases "
                             f"ship no face models)")
        data = read(member)
        if sha256_bytes(data) != entry["sha256"][fname]:
            raise WeightsError(f"{member} in {source} does not match its sha256 in the weights manifest; "
                               f"run '{FETCH_COMMAND}' to download the {WHEEL_VERSION} wheel again")
        datas[fname] = data
    dest.mkdir(parents=True, exist_ok=True)
    written = [_write_atomic(dest / f, d) for f, d in datas.items()]
    if licence is not None:
        written.append(_write_atomic(dest / LICENCE_FILE, licence))
    return written


def extract_from_wheel(wheel: Path, dest: Path) -> list[Path]:
    """Read the face files (and the licence) out of a mediapipe wheel into ``dest``."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{wheel} is not a readable wheel ({exc}); pass the mediapipe-{WHEEL_VERSION}-*.whl "
                         f"file, or run '{FETCH_COMMAND}' without --wheel") from None
    with zf:
        names = set(zf.namelist())
        lic = sorted(n for n in names if n.endswith(".dist-info/LICENSE"))
        return _extract(zf.read, names.__contains__, Path(wheel).name, dest, zf.read(lic[0]) if lic else None)


def extract_from_installed(dest: Path) -> list[Path]:
    """Copy the face files out of the installed legacy ``mediapipe`` package (not imported: only its
    directory is looked up) into ``dest``; no network."""
    import importlib.metadata
    import importlib.util
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the mediapipe package is not installed here; run '{FETCH_COMMAND}' without "
                         f"--from-installed (it downloads the wheel)")
    root = Path(list(spec.submodule_search_locations)[0]).parent       # site-packages: members are relative to it
    try:
        version = importlib.metadata.version("mediapipe")
        lic = importlib.metadata.distribution("mediapipe").read_text("LICENSE")
    except importlib.metadata.PackageNotFoundError:
        version, lic = "?", None
    return _extract(lambda m: (root / m).read_bytes(), lambda m: (root / m).is_file(),
                    f"the installed mediapipe {version}", dest, lic.encode() if lic else None)


def _write_atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def download_wheel(directory: Path, timeout: float = 300.0) -> Path:
    """``pip download`` the mediapipe 0.10.21 wheel (no dependencies, binary only, for CPython 3.11 on
    manylinux: the face files are the same in every platform's wheel) into ``directory``."""
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={WHEEL_VERSION}", "--no-deps",
           "--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
           "-d", str(directory), "--quiet"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WeightsError(f"pip download of mediapipe {WHEEL_VERSION} took over {timeout:.0f} s; check the network "
                           f"or download the wheel yourself and pass it with --wheel") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise WeightsError(f"pip download of mediapipe {WHEEL_VERSION} failed: {last}; check the network or "
                           f"pass a downloaded wheel with --wheel")
    wheels = sorted(Path(directory).glob(f"mediapipe-{WHEEL_VERSION}-*.whl"))
    if not wheels:
        raise WeightsError(f"pip download left no mediapipe-{WHEEL_VERSION} wheel in {directory}")
    return wheels[0]


def fetch(dest: Path | None = None, wheel: Path | None = None, force: bool = False,
          from_installed: bool = False) -> list[Path]:
    """Put the MediaPipe face files into ``dest`` (default :func:`models_dir`) from a wheel (downloaded, or
    ``wheel``) or the installed package (``from_installed``); files already there and intact are kept
    unless ``force``. Returns the files written."""
    d = Path(dest) if dest is not None else models_dir()
    if not force and not missing_files(d):
        log.info("MediaPipe face files already in %s", d)
        return []
    if from_installed:
        return extract_from_installed(d)
    if wheel is not None:
        if not Path(wheel).is_file():
            raise InputError(f"wheel {wheel} not found; pass the path of a mediapipe-{WHEEL_VERSION}-*.whl")
        return extract_from_wheel(Path(wheel), d)
    with tempfile.TemporaryDirectory(prefix="flamecap-mp-") as tmp:
        return extract_from_wheel(download_wheel(Path(tmp)), d)
