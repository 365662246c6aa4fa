"""The add-on's FBX writer follows the one output rule (flamecap.contract.check_output_path): it never
replaces a device node / FIFO or the open .blend file, and the FBX it writes gets the usual umask
permissions (0644 under umask 022; mkstemp alone makes 0600 files) with no temporary file left."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from conftest import run_scenario

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytestmark = pytest.mark.blender


def test_fbx_output_rule_and_permissions(tmp_path):
    fifo = tmp_path / "pipe.fbx"
    os.mkfifo(fifo)
    out = run_scenario("rule", {"dir": str(tmp_path)}, tmp_path, script=Path(__file__))
    assert "not a regular file" in out["fifo"], out
    assert "same file as" in out["blend"], out
    assert stat.S_ISFIFO(fifo.lstat().st_mode)                       # the FIFO is still a FIFO
    assert out["mode"] == 0o644, oct(out["mode"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def s_rule(a: dict) -> dict:
    sys.path.insert(0, str(REPO))
    import bpy
    from blender_addon import export_fbx
    bpy.ops.wm.read_factory_settings(use_empty=True)
    d = Path(a["dir"])
    me = bpy.data.meshes.new("m")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("m", me)
    bpy.context.scene.collection.objects.link(obj)
    blend = d / "scene.fbx"           # a .blend saved under an .fbx name: exporting onto it must be refused
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    out = {}
    for key, target in (("fifo", d / "pipe.fbx"), ("blend", blend)):
        try:
            export_fbx.export_fbx(str(target), [obj])
            out[key] = "no error"
        except export_fbx.FbxExportError as exc:
            out[key] = str(exc)
    os.umask(0o022)
    good = d / "good.fbx"
    export_fbx.export_fbx(str(good), [obj])
    out["mode"] = stat.S_IMODE(good.stat().st_mode)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "core"))
    name, args = sys.argv[1], json.loads(sys.argv[2])
    res = {"rule": s_rule}[name](args)
    print("RESULT " + json.dumps(res, default=float), flush=True)
