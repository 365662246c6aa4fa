"""Add-on preferences (keyed by the add-on's package) and per-scene settings."""
from __future__ import annotations

import json
import os
import tempfile

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import runner
from .runtime import venv_python

ADDON_ID = __package__

QUALITY_ITEMS = [("fast", "Fast", "Few components, quick preview"),
                 ("production", "Production", "All components, joint refinement; slower")]
DEVICE_ITEMS = [("auto", "Auto", "CUDA when available, else CPU"), ("cpu", "CPU", ""), ("cuda", "CUDA", "")]


class _Defaults:
    """Preference values when the package is used without being enabled as an add-on (bpy scripts)."""

    python_path = runner.default_python()
    base_python = ""
    model_path = ""
    device = "auto"
    check_report = ""
    check_ok = False
    n_models = 0


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


def core_inputs(pr) -> tuple[str, str]:
    """(model, core Python) every core command gets from the preferences, paths made absolute; raises
    ValueError with the user's fix when the model file or the Python is missing."""
    model = pr.model_path
    if model and (os.sep in model or "/" in model or model.lower().endswith((".npz", ".pkl"))):
        model = os.path.normpath(bpy.path.abspath(model))
        if not os.path.isfile(model):
            raise ValueError(f"head model not found: {model}; set it in the FlameCap preferences")
    python = bpy.path.abspath(pr.python_path) if pr.python_path else ""
    if not python:
        raise ValueError("no core Python set: Preferences > Add-ons > FlameCap > Core Python, then Check")
    return model, python


def check_runtime(python: str, timeout_s: float = 120.0) -> tuple[bool, str]:
    """Run ``<python> -m flamecap env --json``; return (ok, one-line summary or error)."""
    ok, text, _ = check_runtime_info(python, timeout_s)
    return ok, text


def check_runtime_info(python: str, timeout_s: float = 120.0) -> tuple[bool, str, dict]:
    """:func:`check_runtime` plus the core's ``env`` report (``{}`` when it failed)."""
    import subprocess
    if not python:
        return False, "no core Python set: press Set Up Runtime, or set Core Python to a Python with flamecap", {}
    try:
        proc = subprocess.run(runner.python_check_command(python), capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, f"'{python}' was not found; set the path of a Python that has flamecap installed", {}
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"'{python}' could not be run ({type(exc).__name__}); check the path", {}
    if proc.returncode != 0:
        last = runner.error_line(proc.stderr.splitlines(), proc.returncode)
        return False, f"flamecap is not usable with '{python}': {last}", {}
    try:
        info = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return False, f"'{python} -m flamecap env --json' printed no JSON; update flamecap", {}
    models = info.get("models") or []
    return True, (f"flamecap {info.get('flamecap')} · Python {info.get('python')} · torch {info.get('torch')} · "
                  f"device {info.get('device')} · {len(models)} model(s) registered"), info


def runtime_dir() -> str:
    """The private runtime venv made by Set Up Runtime (in the add-on's user folder)."""
    return os.path.join(user_dir(), "runtime")


def default_core_python() -> str:
    """The Core Python field's first value: the private runtime when Set Up Runtime made one, else the
    interpreter running bpy as a module (scripts, tests), else empty (the first-run checklist says what to do)."""
    py = venv_python(runtime_dir())
    return py if os.path.isfile(py) else runner.default_python()


def _after_check(pr, ok: bool, text: str, info: dict) -> None:
    pr.check_report, pr.check_ok = text, ok
    pr.n_models = len(info.get("models") or []) if ok else 0


def run_check(pr) -> tuple[bool, str]:
    """Check the Core Python of preferences ``pr`` and store the outcome on it (shown in the checklist)."""
    ok, text, info = check_runtime_info(bpy.path.abspath(pr.python_path) if pr.python_path else "")
    if hasattr(pr, "bl_rna"):
        _after_check(pr, ok, text, info)
    return ok, text


class FLAMECAP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(name="Core Python", subtype="FILE_PATH", default=default_core_python(),
                                description="Python interpreter that has the flamecap package (Set Up Runtime "
                                            "fills this in)")
    base_python: StringProperty(name="Base Python", subtype="FILE_PATH", default="",
                                description="Set Up Runtime: the Python to build the runtime from (empty = find "
                                            "one the core supports)")
    model_path: StringProperty(name="Head model", subtype="FILE_PATH", default="",
                               description="FLAME model (.npz/.pkl) or a registered model name; "
                                           "empty = the core's default registered model")
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto")
    check_report: StringProperty(name="Check", default="")
    check_ok: BoolProperty(default=False)
    n_models: IntProperty(default=0)

    def draw(self, context):
        from . import ui
        layout = self.layout
        row = layout.row(align=True)
        row.prop(self, "python_path")
        row.operator("flamecap.check_runtime", text="Check", icon="CHECKMARK")
        if self.check_report:
            ui.wrapped(layout, self.check_report, context, icon="CHECKMARK" if self.check_ok else "ERROR")
        box = layout.box()
        ui.wrapped(box, "Runtime: a private Python environment with the FlameCap core bundled in this add-on "
                        "(downloads its dependencies: CPU-only PyTorch when there is no NVIDIA GPU)", context)
        box.prop(self, "base_python")
        box.operator("flamecap.setup_runtime", icon="IMPORT")
        if not bpy.app.online_access:
            ui.wrapped(box, "Online access is off (Preferences > System > Network); set up the runtime yourself",
                       context, icon="INFO")
        layout.prop(self, "model_path")
        row = layout.row(align=True)
        row.operator("flamecap.add_flame_file", icon="FILE_NEW")
        row.operator("flamecap.download_flame", icon="URL")
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
    output_path: StringProperty(name="Save tracking to", subtype="FILE_PATH", default="",
                                description="Where the tracking result (.npz) is saved (empty = the add-on's "
                                            "user folder)")
    lens: EnumProperty(name="Lens", items=[("ESTIMATE", "Estimate", "Estimate the focal length from the face"),
                                           ("KNOWN", "Known", "The focal length and sensor width of the camera")],
                       default="ESTIMATE")
    focal_mm: FloatProperty(name="Focal length", default=50.0, min=1.0, max=5000.0, unit="CAMERA",
                            description="Lens focal length in millimetres")
    sensor_mm: FloatProperty(name="Sensor width", default=36.0, min=1.0, max=200.0, unit="CAMERA",
                             description="Camera sensor width in millimetres (36 = full frame)")
    smoothing_head: FloatProperty(name="Head", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                  description="Smoothing of head rotation, position and neck (0 = raw)")
    smoothing_jaw: FloatProperty(name="Jaw", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                 description="Smoothing of the jaw (0 = raw)")
    smoothing_expression: FloatProperty(name="Expression", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                        description="Smoothing of the expression shape keys (0 = raw)")
    smoothing_eyes: FloatProperty(name="Eyes", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                  description="Smoothing of eye rotations and eyelids (0 = raw)")
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
    view_warning: StringProperty(default="")  # other objects in the tracking camera's view

    def smoothing(self) -> dict:
        return {c: float(getattr(self, f"smoothing_{c}")) for c in ("head", "jaw", "expression", "eyes")}


classes = (FLAMECAP_AddonPreferences, FlameCapSettings)


def register_props():
    bpy.types.Scene.flamecap = bpy.props.PointerProperty(type=FlameCapSettings)


def unregister_props():
    if hasattr(bpy.types.Scene, "flamecap"):
        del bpy.types.Scene.flamecap
