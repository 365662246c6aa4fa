"""The weights manifest (``weights/manifest.toml``): every model / network file FlameCap can use, with file
names, sha256 where published, licence, URL and the stage that needs it (stdlib only)."""
from __future__ import annotations

import copy
import functools
import os
import tomllib
from pathlib import Path
from typing import Any

from .errors import WeightsError

MANIFEST_ENV = "FLAMECAP_WEIGHTS_MANIFEST"


def manifest_path() -> Path:
    """``$FLAMECAP_WEIGHTS_MANIFEST`` if set, else ``weights/manifest.toml`` of the source tree."""
    env = os.environ.get(MANIFEST_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "weights" / "manifest.toml"


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise WeightsError(f"weights manifest {path} cannot be read ({exc.strerror or exc}); reinstall "
                           f"FlameCap or set {MANIFEST_ENV}") from None
    except tomllib.TOMLDecodeError as exc:
        raise WeightsError(f"weights manifest {path} is not valid TOML ({exc})") from None
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def load_manifest() -> dict[str, dict[str, Any]]:
    """All entries, ``{name: {field: value}}``."""
    p = manifest_path()
    try:
        mtime = p.stat().st_mtime
    except OSError:
        raise WeightsError(f"weights manifest not found at {p}; reinstall FlameCap or set {MANIFEST_ENV}") from None
    return _load(str(p), mtime)


def manifest_entry(name: str) -> dict[str, Any]:
    """One entry (a copy), e.g. ``manifest_entry('flame2023-open')['sha256']``. Unknown name → WeightsError."""
    entries = load_manifest()
    if name not in entries:
        raise WeightsError(f"'{name}' is not in the weights manifest; known: {', '.join(sorted(entries))}")
    return copy.deepcopy(entries[name])
