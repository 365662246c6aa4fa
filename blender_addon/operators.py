"""Operators: Track footage (modal with progress, or blocking in background / scripts), Cancel, Import result,
Re-apply smoothing, Check runtime and Set up runtime."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import prefs, runner, scene

log = logging.getLogger(__name__)

# the one tracking run of this Blender session (the modal operator owns it; Cancel flags it)
_ACTIVE: dict = {"run": None, "cancel": False}


class TrackInputError(ValueError):
    pass


def _footage_path(context, settings) -> str:
    if settings.footage_source == "CLIP":
        clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
        if clip is None:
            raise TrackInputError("no movie clip: open one in the Movie Clip editor or choose Footage: File")
        path = bpy.path.abspath(clip.filepath, library=clip.library)
    else:
        if not settings.footage_path:
            raise TrackInputError("no footage: choose a video file or image folder in the FlameCap panel")
        path = bpy.path.abspath(settings.footage_path)
    path = os.path.normpath(path)
    if not os.path.exists(path):
        raise TrackInputError(f"footage not found: {path}; choose an existing video file or image folder")
    return path


def build_track_argv(context) -> tuple[list[str], str]:
    """argv of the core run for the scene's settings, and the result path it will write."""
    settings = context.scene.flamecap
    pr = prefs.get_prefs(context)
    footage = _footage_path(context, settings)
    if settings.use_range and settings.frame_end < settings.frame_start:
        raise TrackInputError(f"frame range {settings.frame_start}-{settings.frame_end} is empty; "
                              f"set End ≥ Start")
    if settings.output_path:
        out = os.path.normpath(bpy.path.abspath(settings.output_path))
        if not out.lower().endswith(".npz"):
            out += ".npz"
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = os.path.join(prefs.user_dir("results"), f"{Path(footage).stem}-{stamp}.npz")
    model = settings.model_path or pr.model_path
    if model and (os.sep in model or "/" in model or model.lower().endswith((".npz", ".pkl"))):
        model = os.path.normpath(bpy.path.abspath(model))
        if not os.path.isfile(model):
            raise TrackInputError(f"head model not found: {model}; set it in the FlameCap preferences")
    python = bpy.path.abspath(pr.python_path) if pr.python_path else ""
    if not python:
        raise TrackInputError("no core Python set: Preferences > Add-ons > FlameCap > Core Python, then Check")
    argv = runner.track_command(
        python, footage, out, model=model, quality=settings.quality,
        frame_start=(settings.frame_start - 1) if settings.use_range else None,
        frame_end=settings.frame_end if settings.use_range else None, device=pr.device)
    return argv, out


def _set_status(settings, state: runner.RunState) -> None:
    settings.status = state.status
    settings.stage = state.stage
    settings.progress = state.fraction
    settings.eta = runner.format_eta(state.eta_s)
    settings.message = state.message[:200]
    settings.error = state.error[:400]


def _redraw(context) -> None:
    screen = getattr(context, "screen", None)
    for area in (screen.areas if screen else []):
        if area.type in ("VIEW_3D", "CLIP_EDITOR", "PREFERENCES"):
            area.tag_redraw()


def _import_options(settings) -> scene.ImportOptions:
    return scene.ImportOptions(smoothing=settings.smoothing, bake_per_frame=settings.bake_per_frame)


class FLAMECAP_OT_track_footage(bpy.types.Operator):
    """Track the footage with the FlameCap core and import the result (Esc cancels)"""

    bl_idname = "flamecap.track_footage"
    bl_label = "Track Footage"
    bl_options = {"REGISTER"}

    blocking: BoolProperty(name="Blocking", default=False, options={"SKIP_SAVE"},
                           description="Wait for the core in this call (background mode and scripts)")
    timeout: FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE"},
                           description="Blocking mode: cancel after this many seconds (0 = never)")

    _run = None
    _timer = None
    _out = ""

    @classmethod
    def poll(cls, context):
        run = _ACTIVE["run"]
        return context.scene is not None and (run is None or run.state.finished)

    def _start(self, context):
        try:
            argv, self._out = build_track_argv(context)
        except TrackInputError as exc:
            context.scene.flamecap.error = str(exc)
            context.scene.flamecap.status = "failed"
            self.report({"ERROR"}, str(exc))
            return False
        log.info("FlameCap: %s", " ".join(argv))
        _ACTIVE["cancel"] = False
        self._run = runner.CoreRun(argv)
        _ACTIVE["run"] = self._run
        settings = context.scene.flamecap
        settings.error = ""
        self._run.start()
        _set_status(settings, self._run.state)
        return True

    def _finish(self, context) -> set:
        settings = context.scene.flamecap
        state = self._run.state
        _set_status(settings, state)
        _ACTIVE["run"] = None
        if state.status != "done":
            # nothing is imported from a cancelled or failed run
            msg = "tracking cancelled" if state.status == "cancelled" else f"tracking failed: {state.error}"
            self.report({"WARNING"} if state.status == "cancelled" else {"ERROR"}, msg)
            return {"CANCELLED"}
        try:
            imported = scene.import_result(state.result_path, _import_options(settings), context)
        except scene.ResultImportError as exc:
            settings.status, settings.error = "failed", str(exc)
            self.report({"ERROR"}, f"import failed: {exc}")
            return {"CANCELLED"}
        settings.last_result = state.result_path
        settings.message = f"imported {imported.rig.name}"
        self.report({"INFO"}, f"FlameCap: imported {state.result_path}")
        return {"FINISHED"}

    def execute(self, context):
        # background mode and scripts: the same runner, polled until it finishes
        if not self._start(context):
            return {"CANCELLED"}
        settings = context.scene.flamecap
        t0 = time.monotonic()
        while not self._run.state.finished:
            time.sleep(0.05)
            _set_status(settings, self._run.poll())
            if _ACTIVE["cancel"] or (self.timeout and time.monotonic() - t0 > self.timeout):
                self._run.cancel()
        return self._finish(context)

    def invoke(self, context, event):
        if self.blocking or bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" or _ACTIVE["cancel"]:
            self._run.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        state = self._run.poll()
        settings = context.scene.flamecap
        _set_status(settings, state)
        wm = context.window_manager
        wm.progress_update(int(100 * state.fraction))
        eta = runner.format_eta(state.eta_s)
        context.workspace.status_text_set(
            f"FlameCap: {state.stage or state.message} {100 * state.fraction:.0f}% {eta}  (Esc to cancel)")
        _redraw(context)
        if not state.finished:
            return {"RUNNING_MODAL"}
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        context.workspace.status_text_set(None)
        result = self._finish(context)
        _redraw(context)
        return result


class FLAMECAP_OT_cancel_track(bpy.types.Operator):
    """Stop the running tracking (nothing is imported)"""

    bl_idname = "flamecap.cancel_track"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        run = _ACTIVE["run"]
        return run is not None and not run.state.finished

    def execute(self, context):
        _ACTIVE["cancel"] = True
        return {"FINISHED"}


class FLAMECAP_OT_import_result(bpy.types.Operator, ImportHelper):
    """Import a FlameCap result (.npz): head with shape keys, rig, animation and camera"""

    bl_idname = "flamecap.import_result"
    bl_label = "Import FlameCap Result"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    smoothing: FloatProperty(name="Smoothing", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    bake_per_frame: BoolProperty(name="Per-frame shape keys", default=False)
    camera: BoolProperty(name="Camera", default=True)
    background: BoolProperty(name="Footage as background", default=True)

    def execute(self, context):
        opts = scene.ImportOptions(smoothing=self.smoothing, bake_per_frame=self.bake_per_frame,
                                   camera=self.camera, background=self.background)
        try:
            imported = scene.import_result(self.filepath, opts, context)
        except scene.ResultImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"FlameCap: imported {imported.rig.name} "
                              f"(frames {imported.frame_start}-{imported.frame_end})")
        return {"FINISHED"}


class FLAMECAP_OT_apply_smoothing(bpy.types.Operator):
    """Rebuild the take of the selected FlameCap head with the smoothing strength (no re-tracking)"""

    bl_idname = "flamecap.apply_smoothing"
    bl_label = "Apply Smoothing"
    bl_options = {"REGISTER", "UNDO"}

    strength: FloatProperty(name="Strength", default=-1.0, options={"SKIP_SAVE"},
                            description="-1 = the scene's Smoothing setting")

    @classmethod
    def poll(cls, context):
        return scene.find_rig(context) is not None

    def execute(self, context):
        rig = scene.find_rig(context)
        strength = self.strength if self.strength >= 0 else context.scene.flamecap.smoothing
        try:
            scene.reapply_smoothing(rig, strength)
        except scene.ResultImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"FlameCap: smoothing {strength:.2f} applied to {rig.name}")
        return {"FINISHED"}


class FLAMECAP_OT_check_runtime(bpy.types.Operator):
    """Run '<python> -m flamecap env --json' and show what it found"""

    bl_idname = "flamecap.check_runtime"
    bl_label = "Check"

    def execute(self, context):
        pr = prefs.get_prefs(context)
        ok, text = prefs.check_runtime(bpy.path.abspath(pr.python_path))
        if hasattr(pr, "bl_rna"):
            pr.check_report, pr.check_ok = text, ok
        self.report({"INFO"} if ok else {"ERROR"}, text)
        return {"FINISHED"} if ok else {"CANCELLED"}


class FLAMECAP_OT_setup_runtime(bpy.types.Operator):
    """Create a private Python environment in the add-on's user folder and install flamecap into it
    (needs online access)"""

    bl_idname = "flamecap.setup_runtime"
    bl_label = "Set Up Runtime"

    package: StringProperty(name="Package", default="flamecap",
                            description="pip requirement or a local path to the flamecap source")
    _steps: list = []
    _run = None
    _timer = None

    def _refuse_offline(self) -> bool:
        if bpy.app.online_access:
            return False
        self.report({"ERROR"}, "online access is off: enable Preferences > System > Network > Allow "
                               "Online Access, or install flamecap yourself and set Core Python")
        return True

    def _prepare(self):
        self._venv = os.path.join(prefs.user_dir(), "runtime")
        self._steps = prefs.setup_runtime_argv(self._venv, self.package)

    def execute(self, context):  # blocking (background mode, scripts)
        if self._refuse_offline():
            return {"CANCELLED"}
        self._prepare()
        for argv in self._steps:
            state = runner.run_blocking(argv, expect_result=False)
            if state.status != "done":
                self.report({"ERROR"}, f"runtime setup failed: {state.error}")
                return {"CANCELLED"}
        return self._done(context)

    def _done(self, context):
        pr = prefs.get_prefs(context)
        if hasattr(pr, "bl_rna"):
            pr.python_path = prefs.venv_python(self._venv)
            ok, text = prefs.check_runtime(pr.python_path)
            pr.check_report, pr.check_ok = text, ok
        self.report({"INFO"}, "FlameCap runtime ready")
        return {"FINISHED"}

    def invoke(self, context, event):
        if self._refuse_offline():
            return {"CANCELLED"}
        if bpy.app.background or context.window is None:
            return self.execute(context)
        self._prepare()
        self._next()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        self.report({"INFO"}, f"FlameCap: setting up the runtime in {self._venv}")
        return {"RUNNING_MODAL"}

    def _next(self):
        argv = self._steps.pop(0)
        self._run = runner.CoreRun(argv, expect_result=False).start()

    def modal(self, context, event):
        if event.type == "ESC":
            self._run.cancel()
        if event.type not in ("TIMER", "ESC"):
            return {"PASS_THROUGH"}
        state = self._run.poll()
        if not state.finished:
            return {"RUNNING_MODAL"}
        if state.status == "done" and self._steps:
            self._next()
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        if state.status != "done":
            self.report({"ERROR"}, f"runtime setup failed: {state.error}")
            return {"CANCELLED"}
        return self._done(context)


def menu_import(self, context):
    self.layout.operator(FLAMECAP_OT_import_result.bl_idname, text="FlameCap Result (.npz)")


classes = (FLAMECAP_OT_track_footage, FLAMECAP_OT_cancel_track, FLAMECAP_OT_import_result,
           FLAMECAP_OT_apply_smoothing, FLAMECAP_OT_check_runtime, FLAMECAP_OT_setup_runtime)
