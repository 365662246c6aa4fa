"""Operators: Track footage and Try the demo (the core as a subprocess: modal with progress, or blocking in
background / scripts), Cancel, Import result, Re-apply smoothing, overlay, jump to a frame, Check runtime,
Set up runtime, Add FLAME file and Download FLAME."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import prefs, runner, runtime, scene

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
    try:
        model, python = prefs.core_inputs(pr)
    except ValueError as e:
        raise TrackInputError(str(e)) from None
    focal_px = None
    if settings.lens == "KNOWN":
        focal_px = settings.focal_mm / settings.sensor_mm * footage_width(context, settings, footage)
    argv = runner.track_command(
        python, footage, out, model=model, quality=settings.quality,
        frame_start=(settings.frame_start - 1) if settings.use_range else None,
        frame_end=settings.frame_end if settings.use_range else None, device=pr.device, focal_px=focal_px)
    return argv, out


def footage_width(context, settings, path: str) -> int:
    """Width in pixels of the footage (a known lens in mm becomes the core's ``--focal`` in pixels:
    focal_mm / sensor_mm × width)."""
    if settings.footage_source == "CLIP":
        clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
        return int(clip.size[0])
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith((".png", ".jpg", ".jpeg", ".exr", ".tif",
                                                                           ".tiff", ".bmp")))
        if not files:
            raise TrackInputError(f"no images in {path}; choose a video file or a folder of frames")
        path = os.path.join(path, files[0])
    before = set(bpy.data.movieclips)
    try:
        clip = bpy.data.movieclips.load(path, check_existing=True)
    except RuntimeError:
        raise TrackInputError(f"Blender cannot read {path} to get its width; set Lens to Estimate") from None
    width = int(clip.size[0])
    if clip not in before:
        bpy.data.movieclips.remove(clip)
    if width <= 0:
        raise TrackInputError(f"{path} has no readable frames; choose another clip or set Lens to Estimate")
    return width


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


def _import_options(settings, **kw) -> scene.ImportOptions:
    return scene.ImportOptions(smoothing=settings.smoothing(), bake_per_frame=settings.bake_per_frame, **kw)


def _import_into_scene(op, context, path: str, **kw):
    """Import a finished run's result with the scene's settings; note objects in the camera's view."""
    settings = context.scene.flamecap
    try:
        imported = scene.import_result(path, _import_options(settings, **kw), context)
    except scene.ResultImportError as exc:
        settings.status, settings.error = "failed", str(exc)
        op.report({"ERROR"}, f"import failed: {exc}")
        return None
    settings.last_result = path
    settings.message = f"imported {imported.rig.name}"
    settings.view_warning = view_warning(imported)
    if settings.view_warning:
        op.report({"WARNING"}, settings.view_warning)
    return imported


def view_warning(imported) -> str:
    if not imported.blocking:
        return ""
    names = ", ".join(imported.blocking[:4]) + (" …" if len(imported.blocking) > 4 else "")
    return (f"{names} {'is' if len(imported.blocking) == 1 else 'are'} in the tracking camera's view and may hide "
            f"the footage: hide {'it' if len(imported.blocking) == 1 else 'them'} (H) or move "
            f"{'it' if len(imported.blocking) == 1 else 'them'} away")


class _CoreJob:
    """A core subprocess run from an operator: modal with progress in the UI (Esc cancels), blocking in
    background mode and scripts; the scene's FlameCap status shows it. Subclasses give ``_argv(context)``
    (raising TrackInputError for bad input) and ``_on_done(context, state)``."""

    blocking: BoolProperty(name="Blocking", default=False, options={"SKIP_SAVE"},
                           description="Wait for the core in this call (background mode and scripts)")
    timeout: FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE"},
                           description="Blocking mode: cancel after this many seconds (0 = never)")

    _run = None
    _timer = None
    expect_result = True
    what = "the core"

    @classmethod
    def poll(cls, context):
        run = _ACTIVE["run"]
        return context.scene is not None and (run is None or run.state.finished)

    def _stdin(self) -> str | None:
        return None

    def _start(self, context):
        settings = context.scene.flamecap
        try:
            argv = self._argv(context)
        except TrackInputError as exc:
            settings.error = str(exc)
            settings.status = "failed"
            self.report({"ERROR"}, str(exc))
            return False
        log.info("FlameCap: %s", " ".join(argv))
        _ACTIVE["cancel"] = False
        self._run = runner.CoreRun(argv, expect_result=self.expect_result, stdin_text=self._stdin())
        _ACTIVE["run"] = self._run
        settings.error = ""
        settings.view_warning = ""
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
            msg = f"{self.what} cancelled" if state.status == "cancelled" else f"{self.what} failed: {state.error}"
            self.report({"WARNING"} if state.status == "cancelled" else {"ERROR"}, msg)
            return {"CANCELLED"}
        return self._on_done(context, state)

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        if self.blocking or bpy.app.background or context.window is None:
            return self._wait(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _wait(self, context):
        """Background mode and scripts: the same runner, polled until it finishes."""
        settings = context.scene.flamecap
        t0 = time.monotonic()
        while not self._run.state.finished:
            time.sleep(0.05)
            _set_status(settings, self._run.poll())
            if _ACTIVE["cancel"] or (self.timeout and time.monotonic() - t0 > self.timeout):
                self._run.cancel()
        return self._finish(context)

    def invoke(self, context, event):
        return self.execute(context)

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


class FLAMECAP_OT_track_footage(_CoreJob, bpy.types.Operator):
    """Track the footage with the FlameCap core and import the result (Esc cancels)"""

    bl_idname = "flamecap.track_footage"
    bl_label = "Track Footage"
    bl_options = {"REGISTER"}
    what = "tracking"

    def _argv(self, context):
        argv, self._out = build_track_argv(context)
        return argv

    def _on_done(self, context, state):
        imported = _import_into_scene(self, context, state.result_path)
        if imported is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"FlameCap: imported {state.result_path}")
        return {"FINISHED"}


class FLAMECAP_OT_try_demo(_CoreJob, bpy.types.Operator):
    """Render FlameCap's own synthetic head into a short clip, track it and import it over its footage
    (no FLAME file, no network; about a minute)"""

    bl_idname = "flamecap.try_demo"
    bl_label = "Try the Demo"
    bl_options = {"REGISTER"}
    what = "the demo"

    frames: bpy.props.IntProperty(name="Frames", default=50, min=3, max=2000, options={"SKIP_SAVE"})

    def _argv(self, context):
        pr = prefs.get_prefs(context)
        python = bpy.path.abspath(pr.python_path) if pr.python_path else ""
        if not python:
            raise TrackInputError("no core Python set: press Set Up Runtime in the FlameCap preferences, then "
                                  "Try the demo")
        out = os.path.join(prefs.user_dir("demo"), time.strftime("%Y%m%d-%H%M%S"))
        return runner.demo_command(python, out, frames=self.frames)

    def _on_done(self, context, state):
        imported = _import_into_scene(self, context, state.result_path, name="demo")
        if imported is None:
            return {"CANCELLED"}
        self.report({"INFO"}, "FlameCap demo: the tracked head plays over its footage in the camera view "
                              "(Numpad 0, then Space)")
        return {"FINISHED"}


class FLAMECAP_OT_download_flame(_CoreJob, bpy.types.Operator):
    """Sign in with your FLAME website account (free: flame.is.tue.mpg.de) and download, convert and register
    a FLAME release as the default head model"""

    bl_idname = "flamecap.download_flame"
    bl_label = "Download FLAME…"
    bl_options = {"REGISTER"}
    what = "the FLAME download"

    release: bpy.props.EnumProperty(name="Release", items=[
        ("flame2023-open", "FLAME 2023 Open", "CC-BY-4.0, free for any use"),
        ("flame2023", "FLAME 2023", "FLAME licence (non-commercial research)"),
        ("flame2020", "FLAME 2020", "FLAME licence (non-commercial research)")], default="flame2023-open")
    username: StringProperty(name="E-mail", default="", options={"SKIP_SAVE"},
                             description="Your account on the FLAME website")
    password: StringProperty(name="Password", default="", subtype="PASSWORD", options={"SKIP_SAVE", "HIDDEN"})

    def _stdin(self):
        return self.password + "\n"

    def _argv(self, context):
        pr = prefs.get_prefs(context)
        if not pr.python_path:
            raise TrackInputError("no core Python set: press Set Up Runtime first")
        if not self.username or not self.password:
            raise TrackInputError("enter the e-mail and password of your FLAME website account "
                                  "(free sign-up at https://flame.is.tue.mpg.de)")
        if not bpy.app.online_access:
            raise TrackInputError("online access is off: enable Preferences > System > Network > Allow Online "
                                  "Access, or download the FLAME file yourself and use Add FLAME File")
        return runner.models_download_command(bpy.path.abspath(pr.python_path), self.release, self.username)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None or self.blocking:
            return self.execute(context)
        return context.window_manager.invoke_props_dialog(self, width=360)  # OK → execute → modal

    def draw(self, context):
        from . import ui
        ui.wrapped(self.layout, "Free account: https://flame.is.tue.mpg.de (register, accept the licence). "
                                "The password goes to the FlameCap core only and is not stored.", context)
        self.layout.prop(self, "release")
        self.layout.prop(self, "username")
        self.layout.prop(self, "password")

    def _on_done(self, context, state):
        self.password = ""
        pr = prefs.get_prefs(context)
        prefs.run_check(pr)
        self.report({"INFO"}, f"FLAME model registered: {state.result_path}")
        return {"FINISHED"}


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
        context.scene.flamecap.view_warning = ""
        try:
            imported = scene.import_result(self.filepath, opts, context)
        except scene.ResultImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"FlameCap: imported {imported.rig.name} "
                              f"(frames {imported.frame_start}-{imported.frame_end})")
        context.scene.flamecap.view_warning = view_warning(imported)
        if imported.blocking:
            self.report({"WARNING"}, context.scene.flamecap.view_warning)
        return {"FINISHED"}


class FLAMECAP_OT_apply_smoothing(bpy.types.Operator):
    """Rebuild the take of the FlameCap head with the per-channel smoothing (head, jaw, expression, eyes) from
    its result file (no re-tracking)"""

    bl_idname = "flamecap.apply_smoothing"
    bl_label = "Apply Smoothing"
    bl_options = {"REGISTER", "UNDO"}

    strength: FloatProperty(name="Strength", default=-1.0, options={"SKIP_SAVE"},
                            description="One strength for every channel; -1 = the scene's per-channel settings")

    @classmethod
    def poll(cls, context):
        return scene.shown_rig(context) is not None

    def execute(self, context):
        rig = scene.shown_rig(context)
        strength = self.strength if self.strength >= 0 else context.scene.flamecap.smoothing()
        try:
            scene.reapply_smoothing(rig, strength)
        except scene.ResultImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"FlameCap: smoothing {scene.smoothing_strengths(strength)} applied to {rig.name}")
        return {"FINISHED"}


class FLAMECAP_OT_overlay(bpy.types.Operator):
    """Show the tracked head as a wireframe over the footage (camera view), or as the solid head"""

    bl_idname = "flamecap.overlay"
    bl_label = "Overlay on Footage"
    bl_options = {"REGISTER", "UNDO"}

    on: BoolProperty(name="On", default=True)

    @classmethod
    def poll(cls, context):
        return scene.shown_rig(context) is not None

    def execute(self, context):
        scene.set_overlay(scene.shown_rig(context), self.on)
        return {"FINISHED"}


class FLAMECAP_OT_jump_to_frame(bpy.types.Operator):
    """Go to this frame (one of the frames the fit matches worst)"""

    bl_idname = "flamecap.jump_to_frame"
    bl_label = "Jump to Frame"

    frame: bpy.props.IntProperty(name="Frame", default=1)

    def execute(self, context):
        context.scene.frame_set(self.frame)
        return {"FINISHED"}


class FLAMECAP_OT_check_runtime(bpy.types.Operator):
    """Run '<python> -m flamecap env --json' and show what it found"""

    bl_idname = "flamecap.check_runtime"
    bl_label = "Check"

    def execute(self, context):
        ok, text = prefs.run_check(prefs.get_prefs(context))
        self.report({"INFO"} if ok else {"ERROR"}, text)
        return {"FINISHED"} if ok else {"CANCELLED"}


class FLAMECAP_OT_setup_runtime(bpy.types.Operator):
    """Create a private Python environment in the add-on's user folder from a Python the core supports and
    install the FlameCap core bundled with the add-on into it, with its dependencies (downloads; CPU-only
    PyTorch when there is no NVIDIA GPU), then Check"""

    bl_idname = "flamecap.setup_runtime"
    bl_label = "Set Up Runtime"

    wheel: StringProperty(name="Core wheel", default="", options={"SKIP_SAVE"},
                          description="The flamecap wheel to install (empty = the one bundled with the add-on)")
    _steps: list = []
    _run = None
    _timer = None
    _what = ""

    def _refuse_offline(self) -> bool:
        if bpy.app.online_access:
            return False
        self.report({"ERROR"}, "online access is off: enable Preferences > System > Network > Allow "
                               "Online Access, or install flamecap yourself and set Core Python")
        return True

    def _prepare(self, context) -> bool:
        """Find the wheel and a supported Python; build the step list. False (reported) when impossible."""
        wheel = self.wheel or runtime.bundled_wheel()
        if not wheel or not os.path.isfile(wheel):
            self.report({"ERROR"}, "this add-on build has no bundled FlameCap core (core_wheel/flamecap-*.whl); "
                                   "install an add-on zip made by build_addon.py")
            return False
        spec = runtime.wheel_requires_python(wheel)
        try:
            base = runtime.find_base_python(spec, bpy.path.abspath(prefs.get_prefs(context).base_python)
                                          if prefs.get_prefs(context).base_python else "")
        except RuntimeError as exc:
            self.report({"ERROR"}, str(exc))
            return False
        self._venv = prefs.runtime_dir()
        self._steps = runtime.setup_runtime_steps(self._venv, base, wheel, runtime.nvidia_gpu_present())
        self._t0 = time.monotonic()
        log.info("FlameCap runtime: %s from %s into %s", os.path.basename(wheel), base, self._venv)
        return True

    def execute(self, context):  # blocking (background mode, scripts)
        if self._refuse_offline() or not self._prepare(context):
            return {"CANCELLED"}
        for what, argv in self._steps:
            print(f"FlameCap runtime: {what}", flush=True)
            state = runner.run_blocking(argv, expect_result=False)
            if state.status != "done":
                self.report({"ERROR"}, f"runtime setup failed while {what}: {state.error}")
                return {"CANCELLED"}
        return self._done(context)

    def _done(self, context):
        pr = prefs.get_prefs(context)
        py = prefs.venv_python(self._venv)
        if hasattr(pr, "bl_rna"):
            pr.python_path = py
        ok, text = prefs.run_check(pr) if hasattr(pr, "bl_rna") else prefs.check_runtime(py)
        secs = time.monotonic() - self._t0
        if not ok:
            self.report({"ERROR"}, f"runtime installed but Check failed: {text}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"FlameCap runtime ready in {secs:.0f} s: {text}")
        return {"FINISHED"}

    def invoke(self, context, event):
        if self._refuse_offline():
            return {"CANCELLED"}
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._prepare(context):
            return {"CANCELLED"}
        self._n = len(self._steps)
        self._next(context)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _next(self, context):
        self._what, argv = self._steps.pop(0)
        step = self._n - len(self._steps)
        context.workspace.status_text_set(f"FlameCap runtime, step {step}/{self._n}: {self._what}  (Esc cancels)")
        self.report({"INFO"}, f"FlameCap runtime {step}/{self._n}: {self._what}")
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
            self._next(context)
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        if state.status != "done":
            self.report({"ERROR"}, f"runtime setup failed while {self._what}: {state.error}")
            return {"CANCELLED"}
        return self._done(context)


class FLAMECAP_OT_add_flame_file(bpy.types.Operator, ImportHelper):
    """Convert and register a FLAME model file you downloaded (flame2023_Open.pkl, generic_model.pkl, a .npz
    or the release .zip) as the default head model"""

    bl_idname = "flamecap.add_flame_file"
    bl_label = "Add FLAME File…"

    filter_glob: StringProperty(default="*.pkl;*.npz;*.zip", options={"HIDDEN"})

    def execute(self, context):
        pr = prefs.get_prefs(context)
        if not pr.python_path:
            self.report({"ERROR"}, "no core Python set: press Set Up Runtime first")
            return {"CANCELLED"}
        path = bpy.path.abspath(self.filepath)
        if not os.path.isfile(path):
            self.report({"ERROR"}, f"not a file: {path}; pick flame2023_Open.pkl (or another FLAME .pkl/.npz/.zip)")
            return {"CANCELLED"}
        state = runner.run_blocking(runner.models_add_command(bpy.path.abspath(pr.python_path), path),
                                    expect_result=False)
        if state.status != "done":
            self.report({"ERROR"}, f"could not add {os.path.basename(path)}: {state.error}")
            return {"CANCELLED"}
        ok, text = prefs.run_check(pr)
        self.report({"INFO"}, f"FLAME model added from {os.path.basename(path)}" + ("" if ok else f"; {text}"))
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(FLAMECAP_OT_import_result.bl_idname, text="FlameCap Result (.npz)")


classes = (FLAMECAP_OT_track_footage, FLAMECAP_OT_try_demo, FLAMECAP_OT_cancel_track, FLAMECAP_OT_import_result,
           FLAMECAP_OT_apply_smoothing, FLAMECAP_OT_overlay, FLAMECAP_OT_jump_to_frame, FLAMECAP_OT_check_runtime,
           FLAMECAP_OT_setup_runtime, FLAMECAP_OT_add_flame_file, FLAMECAP_OT_download_flame)
