"""Add-on preferences (keyed by the add-on's package) and per-scene settings."""
from __future__ import annotations

import json
import os
import sys
import tempfile

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import runner

ADDON_ID = __package__

QUALITY_ITEMS = [("fast", "Fast", "Few components, quick preview"),
                 ("production", "Production", "All components, joint refinement; slower")]
DEVICE_ITEMS = [("auto", "Auto", "CUDA when available, else CPU"), ("cpu", "CPU", ""), ("cuda", "CUDA", "")]


class _Defaults:
    """Preference values when the package is used without being enabled as an add-on (bpy scripts)."""

    python_path = runner.default_python()
    model_path = ""
    device = "auto"
    check_report = ""


def get_prefs(context=None):
    ctx = context or bpy.context
    addon = ctx.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else _Defaults()


def user_dir(sub: str = "") -> str:
    """A folder for the add-on's user data: the extension user folder when installed as an extension,
    else a temporary folder (scripts, tests)."""
    base = None
    try:
        base = bpy.utils.extension_path_user(ADDON_ID, create=True)
    except (ValueError, AttributeError, RuntimeError):
        base = None
    if not base:
        base = os.path.join(tempfile.gettempdir(), "flamecap")  # not bpy.app.tempdir: deleted on exit
    path = os.path.join(base, sub) if sub else base
    os.makedirs(path, exist_ok=True)
    return path


def venv_python(venv_dir: str) -> str:
    return os.path.join(venv_dir, "Scripts", "python.exe") if os.name == "nt" else os.path.join(venv_dir, "bin", "python")


def check_runtime(python: str, timeout_s: float = 120.0) -> tuple[bool, str]:
    """Run ``<python> -m flamecap env --json``; return (ok, one-line summary or error)."""
    import subprocess
    if not python:
        return False, "no Python set; point it at a Python that has flamecap installed"
    try:
        proc = subprocess.run(runner.python_check_command(python), capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, f"'{python}' was not found; set the path of a Python that has flamecap installed"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"'{python}' could not be run ({type(exc).__name__}); check the path"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"flamecap is not usable with '{python}': {last}"
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return False, f"'{python} -m flamecap env --json' printed no JSON; update flamecap"
    models = info.get("models") or []
    return True, (f"flamecap {info.get('flamecap')} · Python {info.get('python')} · torch {info.get('torch')} · "
                  f"device {info.get('device')} · {len(models)} model(s) registered")


class FLAMECAP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(name="Core Python", subtype="FILE_PATH", default=runner.default_python(),
                                description="Python interpreter that has the flamecap package installed")
    model_path: StringProperty(name="Head model", subtype="FILE_PATH", default="",
                               description="FLAME model (.npz/.pkl) or a registered model name; "
                                           "empty = the core's default registered model")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    check_report: StringProperty(name="Check", default="")
    check_ok: BoolProperty(default=False)

    def draw(self, context):
        layout = self.layout
        row = layout.row(align=True)
        row.prop(self, "python_path")
        row.operator("flamecap.check_runtime", text="Check", icon="CHECKMARK")
        if self.check_report:
            layout.label(text=self.check_report, icon="CHECKMARK" if self.check_ok else "ERROR")
        box = layout.box()
        box.label(text="Runtime: a private Python environment with flamecap (downloads packages)")
        sub = box.row()
        sub.operator("flamecap.setup_runtime", icon="IMPORT")
        if not bpy.app.online_access:
            box.label(text="Online access is off (Preferences > System > Network); set up the runtime yourself",
                      icon="INFO")
        layout.prop(self, "model_path")
        layout.prop(self, "device")


class FlameCapSettings(bpy.types.PropertyGroup):
    """Per-scene Track footage settings and the status of the current run (shown in the panel)."""

    footage_source: EnumProperty(name="Footage", items=[("FILE", "File", "A video file or image folder"),
                                                        ("CLIP", "Movie Clip", "The active movie clip")],
                                 default="FILE")
    footage_path: StringProperty(name="Footage file", subtype="FILE_PATH", default="")
    use_range: BoolProperty(name="Frame range", default=False,
                            description="Track only these frames (movie-clip frames, 1 = first frame)")
    frame_start: IntProperty(name="Start", default=1, min=1)
    frame_end: IntProperty(name="End", default=250, min=1)
    quality: EnumProperty(name="Quality", items=QUALITY_ITEMS, default="fast")
    model_path: StringProperty(name="Model", subtype="FILE_PATH", default="",
                               description="Overrides the model in the preferences (empty = preferences)")
    output_path: StringProperty(name="Result", subtype="FILE_PATH", default="",
                                description="Where the result .npz goes (empty = the add-on's user folder)")
    smoothing: FloatProperty(name="Smoothing", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                             description="Post-filter strength applied to imported keys (0 = raw)")
    bake_per_frame: BoolProperty(name="Per-frame shape keys", default=False,
                                 description="Also bake one shape key per frame (heavy; off by default)")
    # run status (written by the Track operator, read by the panel)
    status: StringProperty(default="idle")
    stage: StringProperty(default="")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    eta: StringProperty(default="")
    message: StringProperty(default="")
    error: StringProperty(default="")
    last_result: StringProperty(default="", subtype="FILE_PATH")


classes = (FLAMECAP_AddonPreferences, FlameCapSettings)


def register_props():
    bpy.types.Scene.flamecap = bpy.props.PointerProperty(type=FlameCapSettings)


def unregister_props():
    if hasattr(bpy.types.Scene, "flamecap"):
        del bpy.types.Scene.flamecap


def setup_runtime_argv(venv_dir: str, spec: str) -> list[list[str]]:
    """Commands that create a venv and install ``spec`` into it (run in order)."""
    py = venv_python(venv_dir)
    return [[sys.executable, "-m", "venv", venv_dir],
            [py, "-m", "pip", "install", "--upgrade", "pip"],
            [py, "-m", "pip", "install", spec]]
