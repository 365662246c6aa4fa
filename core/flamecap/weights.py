"""The weights manifest (``flamecap/_data/weights_manifest.toml``, package data): every model / network file
FlameCap can use, with file names, sha256 where published, licence, URL and the stage that needs it (stdlib
only)."""
from __future__ import annotations

import copy
import functools
import os
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from .errors import WeightsError

MANIFEST_ENV = "FLAMECAP_WEIGHTS_MANIFEST"
MANIFEST_FILE = ("_data", "weights_manifest.toml")


def manifest_path() -> Path | Traversable:
    """``$FLAMECAP_WEIGHTS_MANIFEST`` if set, else the manifest shipped inside the package."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    from .resources import package_file
    return package_file(*MANIFEST_FILE)


@functools.lru_cache(maxsize=4)
def _load(where: str, data: bytes) -> dict[str, dict[str, Any]]:
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"weights manifest {where} is not valid TOML ({exc})") from None
    return {k: v for k, v in parsed.items() if isinstance(v, dict)}


def load_manifest() -> dict[str, dict[str, Any]]:
    """All entries, ``{name: {field: value}}``."""
    p = manifest_path()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"weights manifest not found at {p}; reinstall FlameCap or set {MANIFEST_ENV}") from None
    except OSError as exc:
        raise WeightsError(f"weights manifest {p} cannot be read ({exc.strerror or exc}); reinstall "
                           f"FlameCap or set {MANIFEST_ENV}") from None
    return _load(str(p), data)


def manifest_entry(name: str) -> dict[str, Any]:
    """One entry (a copy), e.g. ``manifest_entry('flame2023-open')['sha256']``. Unknown name → WeightsError."""
    entries = load_manifest()
    if name not in entries:
        raise WeightsError(f"'{name}' is not in the weights manifest; known: {', '.join(sorted(entries))}")
    return copy.deepcopy(entries[name])
