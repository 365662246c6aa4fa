"""Where the reference benches keep what they download and cache (outside the repository)."""
from __future__ import annotations

import os
from pathlib import Path

from ..bench import REPO_ROOT


def default_refdata() -> Path:
    """``$FLAMECAP_REFDATA``, else ``refdata/`` next to the repository (e.g. /work/refdata)."""
    env = os.environ.get("FLAMECAP_REFDATA")
    return Path(env) if env else REPO_ROOT.parent / "refdata"
