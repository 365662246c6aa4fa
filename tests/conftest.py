"""Shared test fixtures. Tests are CPU-only and use synthetic data; tests that need ../shared/data skip
with a reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GRID_DIR = SHARED_DATA / "footage" / "grid"
FLAME_REFERENCE_DIR = SHARED_DATA / "flame_reference"

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def grid_dir() -> Path:
    if not GRID_DIR.is_dir():
        pytest.skip(f"real footage not present at {GRID_DIR}")
    return GRID_DIR


@pytest.fixture(scope="session")
def flame_reference_dir() -> Path:
    if not FLAME_REFERENCE_DIR.is_dir():
        pytest.skip(f"FLAME reference data not present at {FLAME_REFERENCE_DIR}")
    return FLAME_REFERENCE_DIR


@pytest.fixture(scope="session", autouse=True)
def _mediapipe_models(tmp_path_factory):
    """MediaPipe's face model files (the default aligner's), looked up once, before each test's own FlameCap
    home hides the user's: ``$FLAMECAP_MEDIAPIPE_MODELS`` or the user's fetched files, else copied out of the
    installed legacy ``mediapipe`` package (no network). The session points ``$FLAMECAP_MEDIAPIPE_MODELS`` at
    them (read-only, sha256-checked; set for the session so module fixtures and worker processes see it too).
    None when neither is there: tests that track then fail with the one-line fix ('flamecap models
    fetch-mediapipe'), as a user would."""
    from flamecap.errors import FlameCapError
    from flamecap.landmarks import mp_models
    found: Path | None = None
    try:
        for f in mp_models._entry()["files"]:
            mp_models.model_file(f)
        found = mp_models.models_dir()
    except FlameCapError:
        try:
            d = tmp_path_factory.mktemp("mediapipe_models")
            mp_models.extract_from_installed(d)
            found = d
        except FlameCapError:
            found = None
    old = os.environ.get(mp_models.DIR_ENV)
    if found is not None:
        os.environ[mp_models.DIR_ENV] = str(found)
    yield found
    if old is None:
        os.environ.pop(mp_models.DIR_ENV, None)
    else:
        os.environ[mp_models.DIR_ENV] = old


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Every test gets its own FlameCap home (model registry, caches) so nothing touches the user's."""
    home = tmp_path_factory.mktemp("flamecap_home")
    monkeypatch.setenv("FLAMECAP_HOME", str(home))
