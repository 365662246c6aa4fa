"""The two worlds stay apart: the core imports without Blender, and the add-on imports (and registers)
without torch / cv2 / mediapipe. Each side is checked in a clean subprocess with the other side's modules
blocked by a ``sys.meta_path`` finder that raises ImportError."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent("""
    import sys
    class _Block:
        def __init__(self, names): self.names = set(names)
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ImportError(f"{name} is blocked in this world")
            return None
    sys.meta_path.insert(0, _Block(BLOCKED))
""")


def _run(blocked: tuple[str, ...], body: str) -> dict:
    code = f"BLOCKED = {blocked!r}\n" + BLOCKER + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("OUT ")), None)
    assert proc.returncode == 0 and line, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(line[4:])


def test_blocker_really_blocks():
    out = _run(("json_not_used", "bpy"), """
        import json
        try:
            import bpy
            ok = False
        except ImportError as exc:
            ok = "blocked" in str(exc)
        print("OUT " + json.dumps({"blocked": ok}))
    """)
    assert out["blocked"]


def test_core_imports_without_blender():
    out = _run(("bpy", "mathutils", "bmesh"), """
        import json, sys
        import flamecap, flamecap.contract, flamecap.cli
        from flamecap.contract import load_result, save_result, blender_camera_matrix_world, JsonlEmitter
        flamecap.cli.build_parser()   # every registered command module imports without bpy
        heavy = sorted(m for m in ("torch", "cv2", "mediapipe", "bpy") if m in sys.modules)
        print("OUT " + json.dumps({"version": flamecap.__version__, "heavy_after_import": heavy}))
    """)
    assert out["version"]
    assert "bpy" not in out["heavy_after_import"]


def test_plain_import_flamecap_stays_light():
    out = _run(("bpy",), """
        import json, sys
        import flamecap, flamecap.contract
        print("OUT " + json.dumps(sorted(m for m in ("torch", "cv2", "mediapipe") if m in sys.modules)))
    """)
    assert out == []


@pytest.mark.blender
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy (headless Blender) is not installed")
def test_addon_imports_and_registers_without_torch_cv2_mediapipe():
    out = _run(("torch", "cv2", "mediapipe", "flamecap"), """
        import importlib, json, pkgutil, sys
        import bpy
        import blender_addon
        names = sorted(m.name for m in pkgutil.iter_modules(blender_addon.__path__))
        for n in names:
            importlib.import_module("blender_addon." + n)
        blender_addon.register()
        ops = [hasattr(bpy.types, "FLAMECAP_OT_" + o) for o in ("track_footage", "import_result")]
        extra = [m.__name__ for m in blender_addon.SECTIONS]
        blender_addon.unregister()
        contract = sys.modules["blender_addon._vendor.flamecap_contract"]
        print("OUT " + json.dumps({"modules": names, "ops": ops, "optional": extra,
                                   "contract_file": contract.__file__,
                                   "flamecap_loaded": "flamecap" in sys.modules}))
    """)
    assert {"scene", "runner", "operators", "anim_compat", "prefs", "ui", "_contract"} <= set(out["modules"])
    assert out["ops"] == [True, True]
    assert not out["flamecap_loaded"]        # the add-on uses the contract via its own vendored name
    assert out["contract_file"].endswith("contract/__init__.py")
