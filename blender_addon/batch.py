"""The Batch section: queue the selected movie strips, every movie clip of the file, or a folder of takes
through ``flamecap batch`` (one core subprocess, its JSON-lines ``shot`` events) and import each finished
result as a take (head, rig and action named after the shot) as soon as it is done. Failed shots are listed
with their one-line error; nothing is imported from them.

Loaded by the add-on as an optional section (``classes``, ``draw_panel``, ``register_extra``)."""
from __future__ import annotations

import logging
import os
import time

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import prefs, runner, scene

log = logging.getLogger(__name__)

_ACTIVE: dict = {"run": None, "cancel": False}


class BatchInputError(ValueError):
    pass


def batch_command(python: str, shots: list[str], outdir: str, *, model: str = "", quality: str = "fast",
                  device: str = "auto", workers: int = 0) -> list[str]:
    """argv for ``<python> -m flamecap batch SHOTS… -o OUTDIR --progress jsonl ...`` (``workers`` 0 = the
    core's default, one per core)."""
    argv = [python, "-m", "flamecap", "batch", *map(str, shots), "-o", str(outdir), "--progress", "jsonl",
            "--quality", quality, "--device", device]
    if model:
        argv += ["--model", str(model)]
    if workers:
        argv += ["--workers", str(int(workers))]
    return argv


class BatchRun(runner.CoreRun):
    """A core run that also follows the batch's ``shot`` events: ``shots`` maps name → the last event."""

    def __init__(self, argv: list[str], **kwargs):
        super().__init__(argv, expect_result=False, **kwargs)
        self.shots: dict[str, dict] = {}

    def _on_event(self, ev: dict) -> None:
        if ev["event"] == "shot" and ev.get("shot"):
            self.shots[str(ev["shot"])] = ev
            return
        super()._on_event(ev)


def _movie_strips(context) -> list:
    ed = context.scene.sequence_editor
    if ed is None:
        return []
    strips = getattr(ed, "strips_all", None)            # Blender 4.4+
    if strips is None:
        strips = ed.sequences_all                       # 4.2
    return [s for s in strips if s.type == "MOVIE" and s.select]


def selected_footage(context) -> list[str]:
    """Absolute footage paths of the batch's source (selected movie strips, every movie clip, or a folder)."""
    b = context.scene.flamecap_batch
    if b.source == "FOLDER":
        if not b.folder:
            raise BatchInputError("no folder: choose the folder with the takes in the Batch section")
        folder = os.path.normpath(bpy.path.abspath(b.folder))
        if not os.path.isdir(folder):
            raise BatchInputError(f"folder not found: {folder}; choose an existing folder of takes")
        return [folder]
    if b.source == "STRIPS":
        paths = [bpy.path.abspath(s.filepath) for s in _movie_strips(context)]
        what = "no movie strips are selected in the Video Sequencer; select the takes to track"
    else:
        paths = [bpy.path.abspath(c.filepath, library=c.library) for c in bpy.data.movieclips if c.source == "MOVIE"]
        what = "this file has no movie clips; open the takes in the Movie Clip editor"
    paths = list(dict.fromkeys(os.path.normpath(p) for p in paths))
    if not paths:
        raise BatchInputError(what)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise BatchInputError(f"footage not found: {missing[0]}; relink the clip or remove it from the selection")
    return paths


def build_batch_argv(context) -> tuple[list[str], str]:
    b = context.scene.flamecap_batch
    settings = context.scene.flamecap
    pr = prefs.get_prefs(context)
    footage = selected_footage(context)
    outdir = os.path.normpath(bpy.path.abspath(b.output_dir)) if b.output_dir else prefs.user_dir("batch")
    try:
        model, python = prefs.core_inputs(pr)
    except ValueError as e:
        raise BatchInputError(str(e)) from None
    return batch_command(python, footage, outdir, model=model, quality=settings.quality, device=pr.device,
                         workers=b.workers), outdir


def _sync(context, run: BatchRun) -> None:
    """Copy the run's state into the scene settings; import shots that finished since the last call."""
    b = context.scene.flamecap_batch
    s = run.state
    b.status, b.progress, b.message = s.status, s.fraction, s.message[:200]
    b.error = s.error[:400]
    rows = {r.name: r for r in b.shots}
    for name, ev in run.shots.items():
        row = rows.get(name)
        if row is None:
            row = b.shots.add()
            row.name = name
            rows[name] = row
        row.status = str(ev.get("status", ""))
        row.error = str(ev.get("error") or "")[:300]
        row.result = str(ev.get("result") or "")
        if b.import_results and row.status in ("done", "skipped") and row.result and not row.imported:
            try:
                scene.import_result(row.result, scene.ImportOptions(name=name, take=f"{name}_take",
                                                                    smoothing=context.scene.flamecap.smoothing()),
                                    context)
                row.imported = True
            except scene.ResultImportError as exc:
                row.error = f"import failed: {exc}"[:300]


class FLAMECAP_OT_batch_track(bpy.types.Operator):
    """Track the chosen takes with 'flamecap batch' and import each finished one as a take (Esc cancels)"""

    bl_idname = "flamecap.batch_track"
    bl_label = "Track Batch"
    bl_options = {"REGISTER"}

    blocking: BoolProperty(name="Blocking", default=False, options={"SKIP_SAVE"},
                           description="Wait for the core in this call (background mode and scripts)")
    timeout: FloatProperty(name="Timeout", default=0.0, min=0.0, options={"SKIP_SAVE"})

    _run = None
    _timer = None

    @classmethod
    def poll(cls, context):
        run = _ACTIVE["run"]
        return context.scene is not None and (run is None or run.state.finished)

    def _start(self, context) -> bool:
        b = context.scene.flamecap_batch
        try:
            argv, _ = build_batch_argv(context)
        except BatchInputError as exc:
            b.status, b.error = "failed", str(exc)
            self.report({"ERROR"}, str(exc))
            return False
        log.info("FlameCap: %s", " ".join(argv))
        b.shots.clear()
        b.error = ""
        _ACTIVE["cancel"] = False
        self._run = _ACTIVE["run"] = BatchRun(argv).start()
        _sync(context, self._run)
        return True

    def _finish(self, context) -> set:
        _sync(context, self._run)
        _ACTIVE["run"] = None
        b = context.scene.flamecap_batch
        done = sum(r.status in ("done", "skipped") for r in b.shots)
        failed = sum(r.status == "failed" for r in b.shots)
        if self._run.state.status == "cancelled":
            self.report({"WARNING"}, f"batch cancelled ({done} shots finished)")
            return {"CANCELLED"}
        if failed or self._run.state.status != "done":
            # finished takes are in the scene: a warning (an error would undo the operator's work in scripts)
            self.report({"WARNING"} if done else {"ERROR"}, f"batch: {done} done, {failed} failed: {b.error}")
            return {"FINISHED"} if done else {"CANCELLED"}
        self.report({"INFO"}, f"batch: {done} shots done")
        return {"FINISHED"}

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        t0 = time.monotonic()
        while not self._run.state.finished:
            time.sleep(0.05)
            self._run.poll()
            _sync(context, self._run)
            if _ACTIVE["cancel"] or (self.timeout and time.monotonic() - t0 > self.timeout):
                self._run.cancel()
        return self._finish(context)

    def invoke(self, context, event):
        if self.blocking or bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" or _ACTIVE["cancel"]:
            self._run.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        self._run.poll()
        _sync(context, self._run)
        for area in context.screen.areas if context.screen else []:
            if area.type in ("VIEW_3D", "CLIP_EDITOR", "SEQUENCE_EDITOR"):
                area.tag_redraw()
        if not self._run.state.finished:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context)


class FLAMECAP_OT_batch_cancel(bpy.types.Operator):
    """Stop the batch (finished shots stay imported; the shot being tracked leaves nothing)"""

    bl_idname = "flamecap.batch_cancel"
    bl_label = "Cancel Batch"

    @classmethod
    def poll(cls, context):
        run = _ACTIVE["run"]
        return run is not None and not run.state.finished

    def execute(self, context):
        _ACTIVE["cancel"] = True
        return {"FINISHED"}


class FlameCapBatchShot(bpy.types.PropertyGroup):
    name: StringProperty()
    status: StringProperty()
    error: StringProperty()
    result: StringProperty()
    imported: BoolProperty(default=False)


class FlameCapBatchSettings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Takes", items=(
        ("STRIPS", "Selected strips", "the selected movie strips of the Video Sequencer"),
        ("CLIPS", "All clips", "every movie clip of this file"),
        ("FOLDER", "Folder", "every video file in a folder")), default="STRIPS")
    folder: StringProperty(name="Folder", subtype="DIR_PATH")
    output_dir: StringProperty(name="Results", subtype="DIR_PATH",
                               description="folder for the results (default: FlameCap's results folder)")
    workers: IntProperty(name="Workers", default=0, min=0, max=256,
                         description="worker processes (0 = one per CPU core)")
    import_results: BoolProperty(name="Import finished takes", default=True)
    status: StringProperty(default="idle")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty()
    error: StringProperty()
    shots: CollectionProperty(type=FlameCapBatchShot)


ICONS = {"done": "CHECKMARK", "skipped": "CHECKMARK", "failed": "ERROR", "running": "PLAY", "queued": "TIME",
         "cancelled": "CANCEL"}


def draw_panel(layout, context) -> None:
    b = context.scene.flamecap_batch
    layout.prop(b, "source", expand=True)
    if b.source == "FOLDER":
        layout.prop(b, "folder", text="")
    layout.prop(b, "output_dir")
    row = layout.row(align=True)
    row.prop(b, "workers")
    row.prop(b, "import_results", text="Import")
    run = _ACTIVE["run"]
    if run is not None and not run.state.finished:
        box = layout.box()
        done = sum(r.status in ("done", "skipped", "failed") for r in b.shots)
        label = f"{done}/{len(b.shots)} shots {100 * b.progress:.0f}%"
        if hasattr(box, "progress"):
            box.progress(factor=b.progress, type="BAR", text=label)
        else:
            box.prop(b, "progress", text=label, slider=True)
        box.operator(FLAMECAP_OT_batch_cancel.bl_idname, icon="CANCEL")
    else:
        layout.operator(FLAMECAP_OT_batch_track.bl_idname, icon="SEQUENCE")
    col = layout.column(align=True)
    for r in b.shots:
        col.label(text=f"{r.name}: {r.status}" + (f" — {r.error}" if r.error else ""),
                  icon=ICONS.get(r.status, "DOT"))
    if b.error and b.status in ("failed", "cancelled"):
        layout.label(text=b.error, icon="ERROR")


classes = (FlameCapBatchShot, FlameCapBatchSettings, FLAMECAP_OT_batch_track, FLAMECAP_OT_batch_cancel)


def register_extra() -> None:
    bpy.types.Scene.flamecap_batch = PointerProperty(type=FlameCapBatchSettings)


def unregister_extra() -> None:
    run = _ACTIVE["run"]
    if run is not None and not run.state.finished:
        run.cancel()
    del bpy.types.Scene.flamecap_batch
