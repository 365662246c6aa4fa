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


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Every test gets its own FlameCap home (model registry, caches) so nothing touches the user's."""
    home = tmp_path_factory.mktemp("flamecap_home")
    monkeypatch.setenv("FLAMECAP_HOME", str(home))
