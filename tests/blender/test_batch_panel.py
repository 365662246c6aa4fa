"""The Batch section headless: a folder of takes through the batch command (a stand-in core speaking its
protocol), finished shots imported as takes, the failed one listed with its error; selected movie strips as
the source."""
from __future__ import annotations

import stat
import sys

import pytest

from conftest import HERE, REPO, run_scenario

SHARED_GRID = REPO.parent / "shared" / "data" / "footage" / "grid"

pytestmark = pytest.mark.blender


@pytest.fixture()
def fake_batch_python(tmp_path):
    stub = tmp_path / "fake_batch_python"
    stub.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_batch_core.py'} \"$@\"\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return stub


def test_batch_section_imports_finished_takes(tmp_path, addon_zip, fake_batch_python):
    takes = tmp_path / "takes"
    takes.mkdir()
    for n in ("take_a.mp4", "take_b.mov", "bad_take.mp4", "notes.txt"):
        (takes / n).write_bytes(b"\0" * 64)
    args = {"zip": str(addon_zip), "python": str(fake_batch_python), "folder": str(takes),
            "output": str(tmp_path / "results")}
    clips = sorted(SHARED_GRID.glob("*.mpg")) if SHARED_GRID.is_dir() else []
    if len(clips) >= 2:
        args.update(clip=str(clips[0]), clip2=str(clips[1]))
    out = run_scenario("batch", args, tmp_path, script=HERE / "batch_scenarios.py")
    assert out["op"] == ["FINISHED"], out                     # some takes done: the batch counts as run
    assert out["shots"] == {"bad_take": ["failed", False, out["shots"]["bad_take"][2]],
                            "take_a": ["done", True, ""], "take_b": ["done", True, ""]}
    assert "not a video" in out["shots"]["bad_take"][2]
    assert out["status"] == "failed" and "1 of 3 shots failed" in out["error"]
    assert out["results"] == {"take_a_rig": "take_a.npz", "take_b_rig": "take_b.npz"}
    assert out["takes"] == {"take_a_rig": "take_a_take", "take_b_rig": "take_b_take"}
    assert set(out["after"]["actions"]) - set(out["before"]["actions"]) >= {"take_a_take", "take_b_take"}
    assert ["operator", "flamecap.batch_track"] in out["panel"]
    assert any(x[0] == "label" and "bad_take: failed" in x[1] for x in out["panel"])
    assert "no movie strips are selected" in out["strips_empty"]
    if "strips" in out:
        assert out["strips"] == [args["clip"]]
        assert out["argv"][:5] == ["-m", "flamecap", "batch", args["clip"], "-o"]
    assert out["unregistered"]
