"""Where FlameCap keeps user data: ``$FLAMECAP_HOME`` or ``~/.flamecap`` (models/, cache/)."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("FLAMECAP_HOME") or Path.home() / ".flamecap")


def models_dir() -> Path:
    return home() / "models"


def cache_dir(kind: str) -> Path:
    """A cache folder, e.g. ``cache_dir('embeddings')``; created on demand."""
    d = home() / "cache" / kind
    d.mkdir(parents=True, exist_ok=True)
    return d
