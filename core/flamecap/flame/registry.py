"""Known FLAME releases (by sha256) and the user's registry of converted models (numpy + stdlib only).

The registry is ``<FLAMECAP_HOME>/models/registry.json``::

    {"version": 1, "models": [{"name": "flame2023-open", "release": "flame2023-open", "file": "flame2023-open.npz",
      "source_name": "flame2023_Open.pkl", "source_sha256": "...", "npz_sha256": "...", "topology_hash": "...",
      "n_vertices": 5023, "n_shape": 300, "n_expr": 100, "has_eyelids": false, "default": true,
      "added_utc": "2025-01-01T00:00:00Z"}]}

It is rewritten atomically (temp file + ``os.replace``); converted models live beside it as ``<name>.npz``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from .. import paths

try:
    import fcntl
except ImportError:  # Windows: byte-range locking instead
    fcntl = None
    import msvcrt
from ..contract.npzio import atomic_output
from ..errors import ModelError

REGISTRY_VERSION = 1
REGISTRY_FILE = "registry.json"
LOCK_SUFFIX = ".lock"      # <models>.lock beside the models folder (the folder itself may be removed)

FLAME_WEBSITE = "https://flame.is.tue.mpg.de"


@dataclass(frozen=True)
class KnownRelease:
    release: str
    file_name: str
    licence: str
    sha256: str | None = None


# Releases FlameCap knows. Only FLAME 2023 Open publishes a sha256; the others are identified by structure
# and file name ("flame2020-like"). Keep in sync with the weights manifest, flamecap/_data/weights_manifest.toml (a test checks it).
KNOWN_RELEASES: tuple[KnownRelease, ...] = (
    KnownRelease("flame2023-open", "flame2023_Open.pkl", "CC-BY-4.0",
                 "e75a0990728ba038c7da2a420ae4396f7ddd7781366c13026066c5b24f127623"),
    KnownRelease("flame2023", "flame2023.pkl", "FLAME licence (non-commercial)"),
    KnownRelease("flame2023-no-jaw", "flame2023_no_jaw.pkl", "FLAME licence (non-commercial)"),
    KnownRelease("flame2020", "generic_model.pkl", "FLAME licence (non-commercial)"),
    KnownRelease("flame2020-female", "female_model.pkl", "FLAME licence (non-commercial)"),
    KnownRelease("flame2020-male", "male_model.pkl", "FLAME licence (non-commercial)"),
)
KNOWN_SHA256 = {r.sha256: r for r in KNOWN_RELEASES if r.sha256}


@dataclass(frozen=True)
class ReleaseId:
    """What a FLAME file is: ``release`` (e.g. ``flame2023-open``, ``flame2020-like``, ``custom``),
    whether a published sha256 confirmed it, and its licence as far as known."""

    release: str
    verified: bool
    licence: str


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def identify_release(sha256: str, file_name: str, n_vertices: int, n_faces: int) -> ReleaseId:
    """Known sha256 → that release (verified). Otherwise FLAME topology (5023 vertices, 9976 faces) plus a
    release file name → ``<release>-like``; FLAME topology alone → ``flame-like``; anything else ``custom``."""
    known = KNOWN_SHA256.get(sha256)
    if known is not None:
        return ReleaseId(known.release, True, known.licence)
    flame_topology = (n_vertices, n_faces) == (5023, 9976)
    if flame_topology:
        by_name = {r.file_name.lower(): r for r in KNOWN_RELEASES}
        hint = by_name.get(Path(file_name).name.lower())
        if hint is not None:
            return ReleaseId(f"{hint.release}-like", False, hint.licence)
        return ReleaseId("flame-like", False, "unknown (check the FLAME licence)")
    return ReleaseId("custom", False, "unknown")


@dataclass
class RegistryEntry:
    name: str
    release: str
    file: str                      # .npz file name inside the models folder
    source_name: str
    source_sha256: str | None
    npz_sha256: str
    topology_hash: str
    n_vertices: int
    n_shape: int
    n_expr: int
    has_eyelids: bool = False
    default: bool = False
    added_utc: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RegistryEntry":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def path(self, root: Path | None = None) -> Path:
        """The model file, always inside the models folder: a registry entry naming anything else
        (``../x``, an absolute path, a sub-folder) is refused, so neither loading nor ``models remove``
        can reach outside it."""
        root = Path(root) if root is not None else paths.models_dir()
        f = str(self.file)
        if not f or f != Path(f).name or f in (".", "..") or "\\" in f or not f.endswith(".npz"):
            raise ModelError(f"registry entry '{self.name}' names the file '{f}', which is not a .npz inside the "
                             f"models folder {root}; remove the entry ('flamecap models remove {self.name}') and "
                             f"add the model again")
        return root / f


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or "") or name.endswith(".npz") or name.endswith(".pkl"):
        raise ModelError(f"model name '{name}' is not allowed; use letters, digits, '.', '_' or '-' "
                         f"(e.g. 'flame2023-open')")
    return name


class Registry:
    """The user's registered models. ``Registry.load()`` reads; :meth:`save` writes atomically."""

    def __init__(self, entries: list[RegistryEntry] | None = None, root: Path | None = None):
        self.entries = list(entries or [])
        self.root = Path(root) if root is not None else paths.models_dir()

    @property
    def path(self) -> Path:
        return self.root / REGISTRY_FILE

    @classmethod
    def load(cls, root: str | os.PathLike | None = None) -> "Registry":
        root = Path(root) if root is not None else paths.models_dir()
        p = root / REGISTRY_FILE
        if not p.is_file():
            return cls([], root)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
            if int(raw.get("version", 0)) > REGISTRY_VERSION:
                raise ModelError(f"model registry {p} was written by a newer FlameCap; update FlameCap")
            entries = [RegistryEntry.from_dict(d) for d in raw.get("models", [])]
        except ModelError:
            raise
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ModelError(f"model registry {p} is unreadable ({type(exc).__name__}); delete it and add the "
                             f"models again with 'flamecap models add'") from None
        return cls(entries, root)

    @classmethod
    @contextlib.contextmanager
    def locked(cls, root: str | os.PathLike | None = None) -> Iterator["Registry"]:
        """Read-modify-write under an exclusive ``fcntl`` lock on ``<models>/.registry.lock``: yields the
        registry as it is now; concurrent ``models add`` / ``remove`` wait for each other, so no update is
        lost. Call :meth:`save` inside the block. The lock file sits beside the folder (``models.lock``)."""
        root = Path(root) if root is not None else paths.models_dir()
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(root.with_name(root.name + LOCK_SUFFIX), "a+b") as fh:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            else:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield cls.load(root)
            finally:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                else:
                    fh.seek(0)
                    msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)

    def save(self) -> Path:
        payload = {"version": REGISTRY_VERSION, "models": [asdict(e) for e in self.entries]}
        with atomic_output(self.path) as tmp:
            tmp.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
        return self.path

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def get(self, name: str) -> RegistryEntry | None:
        for e in self.entries:
            if e.name == name:
                return e
        return None

    def find_source(self, sha256: str | None) -> RegistryEntry | None:
        return next(iter(self.find_sources(sha256)), None)

    def find_sources(self, sha256: str | None) -> list[RegistryEntry]:
        """Every entry converted from the file with this sha256 (one per --n-shape/--n-expr choice)."""
        return [e for e in self.entries if sha256 and e.source_sha256 == sha256]

    def default(self) -> RegistryEntry | None:
        for e in self.entries:
            if e.default:
                return e
        return self.entries[0] if self.entries else None

    def set_default(self, name: str) -> None:
        if self.get(name) is None:
            raise ModelError(f"no registered model named '{name}'; registered: {', '.join(self.names()) or 'none'}")
        for e in self.entries:
            e.default = e.name == name

    def add(self, entry: RegistryEntry, make_default: bool = False) -> None:
        check_name(entry.name)
        if self.get(entry.name) is not None:
            raise ModelError(f"a model named '{entry.name}' is already registered; pass --name to pick another "
                             f"or 'flamecap models remove {entry.name}' first")
        self.entries.append(entry)
        if make_default or len(self.entries) == 1:
            self.set_default(entry.name)

    def remove(self, name: str) -> RegistryEntry:
        e = self.get(name)
        if e is None:
            raise ModelError(f"no registered model named '{name}'; registered: {', '.join(self.names()) or 'none'}")
        self.entries.remove(e)
        if e.default and self.entries:
            self.entries[0].default = True
        return e

    def unique_name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "model"
        base = base[:56]
        if self.get(base) is None:
            return base
        i = 2
        while self.get(f"{base}-{i}") is not None:
            i += 1
        return f"{base}-{i}"


def registered_models_summary() -> list[dict]:
    """One dict per registered model (name, release, n_shape, n_expr, n_vertices, default, file, present),
    for ``flamecap env``. Never raises: an unreadable registry gives one entry with an ``error``."""
    try:
        reg = Registry.load()
    except ModelError as exc:
        return [{"error": str(exc)}]
    rows = []
    for e in reg.entries:
        row = {"name": e.name, "release": e.release, "n_shape": e.n_shape, "n_expr": e.n_expr,
               "n_vertices": e.n_vertices, "has_eyelids": e.has_eyelids, "default": e.default}
        try:
            row.update(file=str(e.path()), present=e.path().is_file())
        except ModelError as exc:
            row.update(file=str(e.file), present=False, error=str(exc))
        rows.append(row)
    return rows
