"""Retarget panel section (bpy + numpy; the heavy solve runs in the core, ``flamecap retarget shapekeys``).

- FLAME character: the FlameCap take (bone rotations + expression/pose-corrective keys) on another
  FlameCap FLAME head: identity swap in the scene (the target keeps its own neutral mesh and joints).
- Shape-key character: export the mesh (neutral, triangles, key deltas) to a character ``.npz``, run the
  core's registration + bounded solve, key the returned values on the character's own keys.
- Armature: copy jaw / neck / eye rotations onto picked bones (axis map, Rigify preset).
- Live Link Face CSV → shape keys (ARKit names matched across naming variants).
"""
from __future__ import annotations

import csv
import logging
import os
import re
import tempfile

import bpy
import numpy as np

from . import anim_compat
from ._contract import contract
from .operators import TrackInputError, _CoreJob

log = logging.getLogger(__name__)

FLAME_BONES = ("neck", "jaw", "eye_l", "eye_r")
rot = contract.rotations
PRESET_ITEMS = [("auto", "Auto", "the preset that finds the most bones"), ("rigify", "Rigify", ""),
                ("mixamo", "Mixamo", ""), ("head_neck", "Head/Neck/Jaw/LeftEye/RightEye", "Ready Player Me, VRM"),
                ("flame", "Same names", "FlameCap's own rig names")]
# object property: the last solve (animation file with the raw values); the mapping table and neutral frame
# are registered properties (Object.flamecap_channels, Object.flamecap_neutral_frame)
PROP_ANIM = "flamecap_anim"


class RetargetError(ValueError):
    """One line, actionable."""


# ------------------------------------------------------------------------------------------------
# numpy helpers (quaternions, axis maps, ARKit names: flamecap.contract)
# ------------------------------------------------------------------------------------------------
def axis_map_matrix(spec: str) -> np.ndarray:
    try:
        return rot.axis_map_matrix(spec or "X,Y,Z")
    except contract.ContractError as exc:
        raise RetargetError(str(exc)) from None


def retarget_rotation(R_src_local: np.ndarray, src_rest_world: np.ndarray, dst_rest_world: np.ndarray,
                      axis_map: np.ndarray) -> np.ndarray:
    """Source pose-bone rotations (T, 3, 3) (in the source bone's rest frame) → target pose-bone rotations:
    the same world-space rotation (after the axis map), expressed in the target bone's rest frame."""
    Rw = src_rest_world @ R_src_local @ src_rest_world.T
    Rw = axis_map @ Rw @ axis_map.T
    return dst_rest_world.T @ Rw @ dst_rest_world


# ------------------------------------------------------------------------------------------------
# scene operations
# ------------------------------------------------------------------------------------------------
def _rest_world(arm_obj, bone_name: str) -> np.ndarray:
    m = np.array(arm_obj.matrix_world)[:3, :3] @ np.array(arm_obj.data.bones[bone_name].matrix_local)[:3, :3]
    U, _, Vt = np.linalg.svd(m)
    return U @ Vt


def _sample_quaternions(rig, bone: str, frames: np.ndarray) -> np.ndarray:
    ad = rig.animation_data
    if ad is None or ad.action is None:
        raise RetargetError(f"'{rig.name}' has no animation; import a FlameCap result first")
    slot = getattr(ad, "action_slot", None)
    q = np.zeros((len(frames), 4))
    q[:, 0] = 1.0
    for i in range(4):
        fc = anim_compat.find_fcurve(ad.action, slot, f'pose.bones["{bone}"].rotation_quaternion', i)
        if fc is not None:
            q[:, i] = [fc.evaluate(float(f)) for f in frames]
    return q


def copy_bone_rotations(source_rig, target_arm, bone_map: dict[str, str], axis_map: str = "X,Y,Z",
                        frames: np.ndarray | None = None, action_name: str = "") -> int:
    """Key the FlameCap rig's neck/jaw/eye rotations onto ``target_arm``'s bones
    (``bone_map``: FLAME bone → target bone; missing target bones are skipped). Returns bones keyed."""
    if target_arm is None or target_arm.type != "ARMATURE":
        raise RetargetError("pick an armature object as the target")
    M = axis_map_matrix(axis_map)
    scene = bpy.context.scene
    frames = np.arange(scene.frame_start, scene.frame_end + 1) if frames is None else np.asarray(frames)
    have = set(target_arm.data.bones.keys())
    pairs = [(s, d) for s, d in bone_map.items() if d and d in have and s in source_rig.data.bones]
    if not pairs:
        raise RetargetError(f"none of the bones {sorted(v for v in bone_map.values() if v)} is in "
                            f"'{target_arm.name}'; pick the bones or another preset")
    act = anim_compat.new_action(action_name or f"{target_arm.name}_flamecap")
    slot = anim_compat.assign(target_arm, act, target_arm.name)
    for s, d in pairs:
        R = rot.quaternion_to_matrix(_sample_quaternions(source_rig, s, frames))
        Rt = retarget_rotation(R, _rest_world(source_rig, s), _rest_world(target_arm, d), M)
        q = rot.matrix_to_quaternion(Rt)
        target_arm.pose.bones[d].rotation_mode = "QUATERNION"
        anim_compat.write_channels(act, slot, [(f'pose.bones["{d}"].rotation_quaternion', i, q[:, i])
                                               for i in range(4)], frames.astype(np.float64), group=d)
    return len(pairs)


def copy_flame_take(source_rig, target_rig) -> None:
    """Identity swap in the scene: the source take's action on another FlameCap FLAME head (same key and
    bone names); the target keeps its own neutral mesh and joints."""
    if target_rig is None or not target_rig.get("flamecap_mesh"):
        raise RetargetError("the target is not a FlameCap FLAME head; import one, or use the shape-key or "
                            "armature retarget")
    if source_rig is None or not source_rig.get("flamecap_mesh"):
        raise RetargetError("the source is not a FlameCap FLAME head; pick the rig of an imported take")
    sad = source_rig.animation_data
    if sad is None or sad.action is None:
        raise RetargetError(f"'{source_rig.name}' has no take to copy")
    missing_bones = [b.name for b in source_rig.data.bones if b.name not in target_rig.data.bones]
    if missing_bones:
        raise RetargetError(f"the target head lacks bones {missing_bones[:4]}; both heads must come from FlameCap")
    src_key = source_rig["flamecap_mesh"].data.shape_keys
    dst_key = target_rig["flamecap_mesh"].data.shape_keys
    names = {kb.name for kb in dst_key.key_blocks}
    missing = [kb.name for kb in src_key.key_blocks if kb.name not in names]
    if missing:
        raise RetargetError(f"the target head lacks keys {missing[:4]}; both heads must come from the same model")
    kad = src_key.animation_data
    if kad is None or kad.action is None:
        raise RetargetError(f"'{source_rig.name}' has no shape-key take to copy; re-import the result")
    act = sad.action
    if anim_compat.SLOTTED:
        anim_compat.assign(target_rig, act, sad.action_slot.name_display)
        anim_compat.assign(dst_key, kad.action, kad.action_slot.name_display)
    else:
        anim_compat.assign(target_rig, act)
        anim_compat.assign(dst_key, src_key.animation_data.action)


def mesh_arrays(obj) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(neutral vertices (N, 3) world space, triangles (M, 3), key names, key deltas (K, N, 3) world space).

    World space, so that a character whose object is rotated (e.g. an FBX import's 90° about X) still
    faces the way the automatic landmark detection expects (+Z up, facing -Y); key values do not depend on
    the frame."""
    if obj is None or obj.type != "MESH":
        raise RetargetError("pick the character's mesh object (with shape keys) as the target")
    me = obj.data
    keys = me.shape_keys
    if keys is None or len(keys.key_blocks) < 2:
        raise RetargetError(f"'{obj.name}' has no shape keys; add shape keys (e.g. ARKit-52) or use the "
                            f"armature retarget")
    n = len(me.vertices)
    me.calc_loop_triangles()
    tris = np.empty(len(me.loop_triangles) * 3, np.int32)
    me.loop_triangles.foreach_get("vertices", tris)
    if tris.size == 0:
        raise RetargetError(f"'{obj.name}' has no faces")
    basis = np.empty(n * 3, np.float32)
    keys.reference_key.data.foreach_get("co", basis)
    names, deltas = [], []
    for kb in keys.key_blocks:
        if kb == keys.reference_key:
            continue
        co = np.empty(n * 3, np.float32)
        kb.data.foreach_get("co", co)
        names.append(kb.name)
        deltas.append((co - basis).reshape(n, 3))
    mw = np.array(obj.matrix_world, dtype=np.float64)
    lin = mw[:3, :3]
    if abs(np.linalg.det(lin)) < 1e-12:
        raise RetargetError(f"'{obj.name}' has a zero scale; apply a valid scale to the object")
    verts = basis.reshape(n, 3).astype(np.float64) @ lin.T + mw[:3, 3]
    d = np.asarray(deltas, np.float64).reshape(len(names), n, 3) @ lin.T
    return verts, tris.reshape(-1, 3), names, d


# custom properties on a character mesh holding user-picked correspondences (vertex indices, in pairs)
PROP_PAIRS_FLAME = "flamecap_flame_vertices"
PROP_PAIRS_TARGET = "flamecap_target_vertices"


def stored_pairs(obj) -> tuple | None:
    """(FLAME vertex ids, target vertex ids) stored on ``obj``, or None (automatic landmarks)."""
    fv, tv = obj.get(PROP_PAIRS_FLAME), obj.get(PROP_PAIRS_TARGET)
    if fv is None and tv is None:
        return None
    try:
        fv, tv = [int(i) for i in fv], [int(i) for i in tv]
    except (TypeError, ValueError):
        raise RetargetError(f"'{obj.name}': the properties {PROP_PAIRS_FLAME} / {PROP_PAIRS_TARGET} must be "
                            f"lists of vertex indices; fix or delete them") from None
    if len(fv) != len(tv) or len(fv) < 4:
        raise RetargetError(f"'{obj.name}': {len(fv)} FLAME and {len(tv)} target correspondence vertices; give "
                            f"at least 4 pairs, or delete both properties for automatic landmarks")
    if max(tv) >= len(obj.data.vertices) or min(tv) < 0:
        raise RetargetError(f"'{obj.name}': a correspondence vertex index is outside 0..{len(obj.data.vertices) - 1}")
    return fv, tv


def export_character(obj, path: str, pairs: tuple | None = None) -> str:
    """Write ``obj`` as a character ``.npz`` for ``flamecap retarget shapekeys`` (pairs: given, else the
    ones stored on the object, else none → automatic landmarks)."""
    v, f, names, d = mesh_arrays(obj)
    pairs = pairs if pairs is not None else stored_pairs(obj)
    contract.save_character(path, v, f, names, d, obj.name, pairs)
    return path


def apply_key_animation(obj, names: list[str], weights: np.ndarray, frames: np.ndarray, action_name: str = "") -> int:
    """Key ``weights`` (T, K) on ``obj``'s shape keys named ``names`` at ``frames``. Returns keys written."""
    key = obj.data.shape_keys
    have = {kb.name for kb in key.key_blocks}
    chans = [(f'key_blocks["{n}"].value', 0, np.asarray(weights)[:, k]) for k, n in enumerate(names) if n in have]
    if not chans:
        raise RetargetError(f"none of the channels match shape keys of '{obj.name}'")
    act = anim_compat.new_action(action_name or f"{obj.name}_flamecap")
    slot = anim_compat.assign(key, act, key.name)
    anim_compat.write_channels(act, slot, chans, np.asarray(frames, np.float64), group="FlameCap")
    return len(chans)


def import_live_link_csv(obj, path: str, fps: float = 60.0, frame_start: int = 1) -> int:
    """Key a Live Link Face CSV's blendshape columns onto ``obj``'s ARKit-named keys (naming variants
    matched), resampled to the scene fps by time."""
    if obj is None or obj.type != "MESH" or obj.data.shape_keys is None:
        raise RetargetError("pick a mesh with ARKit-named shape keys")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except OSError as exc:
        raise RetargetError(f"cannot read {path}: {exc}") from None
    if not rows or rows[0][0].strip().lower() != "timecode":
        raise RetargetError(f"{os.path.basename(path)} is not a Live Link Face CSV (no 'Timecode' column)")
    header = rows[0]
    by_key = {v: k for k, v in contract.match_arkit_names(kb.name for kb in obj.data.shape_keys.key_blocks[1:]).items()}
    cols = [(c, by_key[contract.canonical_arkit_name(h)]) for c, h in enumerate(header)
            if c >= 2 and contract.canonical_arkit_name(h) in by_key]
    if not cols:
        raise RetargetError(f"no CSV column matches a shape key of '{obj.name}' (ARKit names like eyeBlinkLeft)")
    if len(rows) < 2:
        raise RetargetError(f"{os.path.basename(path)} has no data rows")
    t = []
    try:
        for r in rows[1:]:
            h, m, s, rest = r[0].split(":")
            t.append(int(h) * 3600 + int(m) * 60 + int(s) + float(rest) / fps)
        W = np.array([[float(r[c]) for c, _ in cols] for r in rows[1:]])
    except (ValueError, IndexError):
        raise RetargetError(f"{os.path.basename(path)} line {len(t) + 2}: bad timecode or value (expected "
                            f"HH:MM:SS:FF.fff and numbers); re-export it from Live Link Face") from None
    t = np.asarray(t) - t[0]
    if np.any(np.diff(t) < 0):
        raise RetargetError(f"{os.path.basename(path)}: timecodes do not increase; is the take fps "
                            f"({fps:g}) right?")
    scene_fps = bpy.context.scene.render.fps / bpy.context.scene.render.fps_base
    frames = np.arange(int(np.floor(t[-1] * scene_fps)) + 1)
    Wr = np.stack([np.interp(frames / scene_fps, t, W[:, k]) for k in range(W.shape[1])], 1)
    return apply_key_animation(obj, [n for _, n in cols], Wr, frames + frame_start, "LiveLinkFace")


# ------------------------------------------------------------------------------------------------
# operators + panel
# ------------------------------------------------------------------------------------------------
def _source_rig(context):
    from .scene import find_rig
    rig = find_rig(context)
    if rig is None:
        for o in context.scene.objects:
            if o.get("flamecap_result"):
                return o
    return rig


def bone_map_for(target_arm, preset: str, picked: dict[str, str]) -> dict[str, str]:
    """FLAME bone → target bone: the preset's bones found in the armature (naming variants matched), with
    the picked bones (non-empty entries of ``picked``) taking precedence."""
    have = list(target_arm.data.bones.keys()) if target_arm is not None and target_arm.type == "ARMATURE" else []
    if preset == "auto":
        _, bm = rot.best_bone_preset(have)
    elif preset == "flame":
        bm = rot.resolve_bones({b: b for b in FLAME_BONES}, have)
    else:
        bm = rot.resolve_bones(rot.BONE_PRESETS[preset], have)
    bm = {k: v for k, v in bm.items() if k in FLAME_BONES}
    bm.update({k: v for k, v in picked.items() if v})
    return bm


class FLAMECAP_OT_retarget_bones(bpy.types.Operator):
    """Copy the FlameCap rig's neck, jaw and eye rotations onto the active armature's bones"""

    bl_idname = "flamecap.retarget_bones"
    bl_label = "Retarget onto Armature"
    bl_options = {"REGISTER", "UNDO"}

    preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default="auto")
    neck_bone: bpy.props.StringProperty(name="Head/neck", description="bone that takes the neck rotation "
                                        "(empty: the preset's)")
    jaw_bone: bpy.props.StringProperty(name="Jaw", description="empty: the preset's")
    eye_l_bone: bpy.props.StringProperty(name="Left eye", description="empty: the preset's")
    eye_r_bone: bpy.props.StringProperty(name="Right eye", description="empty: the preset's")
    axis_map: bpy.props.StringProperty(name="Axis map", default="X,Y,Z")

    def draw(self, context):
        col = self.layout.column()
        col.prop(self, "preset")
        arm = context.active_object
        for p in ("neck_bone", "jaw_bone", "eye_l_bone", "eye_r_bone"):
            if arm is not None and arm.type == "ARMATURE":
                col.prop_search(self, p, arm.data, "bones")
            else:
                col.prop(self, p)
        col.prop(self, "axis_map")

    def execute(self, context):
        src = _source_rig(context)
        if src is None:
            self.report({"ERROR"}, "no FlameCap rig in the scene; import a result first")
            return {"CANCELLED"}
        arm = context.active_object
        picked = {"neck": self.neck_bone, "jaw": self.jaw_bone, "eye_l": self.eye_l_bone, "eye_r": self.eye_r_bone}
        try:
            if arm is not None and arm.type == "ARMATURE":
                bad = [b for b in picked.values() if b and b not in arm.data.bones]
                if bad:
                    raise RetargetError(f"'{arm.name}' has no bone {bad[0]!r}; pick one of its bones")
            bm = bone_map_for(arm, self.preset, picked)
            if arm is not None and arm.type == "ARMATURE" and not bm:
                wanted = sorted(rot.BONE_PRESETS.get(self.preset, rot.BONE_PRESETS["head_neck"]).values())
                raise RetargetError(f"none of the bones {wanted} is in '{arm.name}'; pick the bones or another preset")
            n = copy_bone_rotations(src, arm, bm, self.axis_map)
        except RetargetError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"keyed {n} bones")
        return {"FINISHED"}


class FLAMECAP_OT_retarget_shapekeys(_CoreJob, bpy.types.Operator):
    """Solve the active mesh's own shape-key values for the FlameCap take in the FlameCap core (progress in
    the panel, Esc cancels; nothing is keyed unless the solve finishes)"""

    bl_idname = "flamecap.retarget_shapekeys"
    bl_label = "Retarget onto Shape Keys"
    bl_options = {"REGISTER"}
    what = "the retarget"

    smooth: bpy.props.FloatProperty(name="Smoothness", default=0.05, min=0.0,
                                    description="temporal term of the solve (per-channel smoothing: mapping table)")

    _tmp = None
    _out = ""
    _target = ""

    def _argv(self, context):
        src = _source_rig(context)
        obj = context.active_object
        try:
            if src is None:
                raise RetargetError("no FlameCap rig in the scene; import a result first")
            if obj is not None and (obj == src or obj == src.get("flamecap_mesh")):
                raise RetargetError("the active object is the FlameCap head itself; select the character's mesh")
            mesh_arrays(obj)          # checks the target (mesh, shape keys) before anything runs
            python = _core_python(context)
            self._tmp = tempfile.mkdtemp(prefix="flamecap_rt_")
            char = export_character(obj, os.path.join(self._tmp, "character.npz"))
        except (RetargetError, contract.ContractError) as exc:
            self._cleanup()
            raise TrackInputError(" ".join(str(exc).split())) from None
        from .prefs import user_dir
        self._target = obj.name
        self._out = os.path.join(user_dir("retarget"), f"{re.sub(r'[^A-Za-z0-9_.-]', '_', obj.name)}.npz")
        return [python, "-m", "flamecap", "retarget", "shapekeys", src["flamecap_result"], "--target", char,
                "-o", self._out, "--smooth", str(self.smooth), "--progress", "jsonl"]

    def _cleanup(self):
        if self._tmp is not None:
            import shutil
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _finish(self, context) -> set:
        try:
            return super()._finish(context)
        finally:
            self._cleanup()

    def _on_done(self, context, state):
        obj = bpy.data.objects.get(self._target)
        try:
            if obj is None:
                raise RetargetError(f"the character '{self._target}' was removed while the solve ran")
            contract.load_animation(self._out)     # validated before anything is keyed
            obj[PROP_ANIM] = self._out
            n = rekey(obj)
        except (RetargetError, contract.ContractError) as exc:
            self.report({"ERROR"}, " ".join(str(exc).split()))
            return {"CANCELLED"}
        self.report({"INFO"}, f"keyed {n} shape keys")
        return {"FINISHED"}


def _core_python(context) -> str:
    from . import runner
    prefs = context.preferences.addons.get(__package__)
    python = getattr(getattr(prefs, "preferences", None), "python_path", "") or runner.default_python()
    if not python:
        raise RetargetError("no core Python set: press Set Up Runtime in the FlameCap preferences")
    return bpy.path.abspath(python)


class FlameCapChannel(bpy.types.PropertyGroup):
    """One row of a character's mapping table: a solved channel (the character's own key, or a FlameCap
    channel) → the shape key it drives, with gain, offset, clamp and smoothing (saved with the object)."""

    source: bpy.props.StringProperty(name="Channel", description="the solved channel")
    target: bpy.props.StringProperty(name="Key", description="the shape key this channel drives")
    enabled: bpy.props.BoolProperty(name="On", default=True)
    gain: bpy.props.FloatProperty(name="Gain", default=contract.MAPPING_DEFAULT["gain"], soft_min=0.0, soft_max=3.0)
    offset: bpy.props.FloatProperty(name="Offset", default=contract.MAPPING_DEFAULT["offset"], soft_min=-1.0,
                                    soft_max=1.0)
    lower: bpy.props.FloatProperty(name="Min", default=contract.MAPPING_DEFAULT["lower"])
    upper: bpy.props.FloatProperty(name="Max", default=contract.MAPPING_DEFAULT["upper"])
    smooth: bpy.props.FloatProperty(name="Smoothing", default=contract.MAPPING_DEFAULT["smooth"], min=0.0,
                                    soft_max=3.0, description="zero-lag smoothing (0 = none, 1 = the default)")


def sync_channels(obj, names: list[str]) -> None:
    """One mapping row per solved channel: rows the artist already edited are kept, new channels get the
    defaults (driving the key of their own name), rows of channels the solve no longer has are removed."""
    rows = obj.flamecap_channels
    for i in reversed(range(len(rows))):
        if rows[i].source not in names:
            rows.remove(i)
    have = {r.source for r in rows}
    for n in names:
        if n not in have:
            r = rows.add()
            r.source, r.target = n, n


def mapping_of(obj) -> dict:
    """The object's mapping table as ``flamecap.contract.apply_mapping`` reads it."""
    return {r.source: {"target": r.target or r.source, "enabled": r.enabled, "gain": r.gain, "offset": r.offset,
                       "lower": r.lower, "upper": r.upper, "smooth": r.smooth} for r in obj.flamecap_channels}


def rekey(obj) -> int:
    """Key ``obj``'s shape keys from its last solve's raw values (the animation file on the object) through
    its mapping table and neutral frame; no solve runs. Returns the number of keys written."""
    path = obj.get(PROP_ANIM) if obj is not None else None
    if not path or not os.path.isfile(path):
        raise RetargetError(f"'{getattr(obj, 'name', '')}' has no solved take to re-key; run Retarget onto Shape "
                            f"Keys first")
    arrays, meta = contract.load_animation(path)
    names = list(meta["names"])
    sync_channels(obj, names)
    frames = arrays["frame_index"] + 1
    neutral = None
    nf = obj.flamecap_neutral_frame
    if nf >= 0:
        hit = np.flatnonzero(frames == nf)
        if hit.size == 0:
            raise RetargetError(f"neutral frame {nf} is outside the take ({frames[0]}..{frames[-1]}); pick a "
                                f"frame of the take or clear it")
        neutral = arrays["raw"][hit[0]]
    targets, values = contract.apply_mapping(names, arrays["raw"], mapping_of(obj), float(meta["fps"]), neutral)
    return apply_key_animation(obj, targets, values, frames)


class FLAMECAP_OT_rekey_shapekeys(bpy.types.Operator):
    """Re-key the active character from its last solve with its mapping table (gain, offset, clamp, smoothing,
    neutral frame) — no solve runs"""

    bl_idname = "flamecap.rekey_shapekeys"
    bl_label = "Re-key from Last Solve"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            n = rekey(context.active_object)
        except (RetargetError, contract.ContractError) as exc:
            self.report({"ERROR"}, " ".join(str(exc).split()))
            return {"CANCELLED"}
        self.report({"INFO"}, f"keyed {n} shape keys")
        return {"FINISHED"}


class FLAMECAP_OT_set_neutral_frame(bpy.types.Operator):
    """Make the current frame the character's neutral (its solved values there key to the offsets), or clear
    it, then re-key"""

    bl_idname = "flamecap.set_neutral_frame"
    bl_label = "Neutral from Current Frame"
    bl_options = {"REGISTER", "UNDO"}

    clear: bpy.props.BoolProperty(name="Clear", default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        obj = context.active_object
        if obj is None or not obj.get(PROP_ANIM):
            self.report({"ERROR"}, "select a character with a solved take (Retarget onto Shape Keys first)")
            return {"CANCELLED"}
        old = obj.flamecap_neutral_frame
        obj.flamecap_neutral_frame = -1 if self.clear else context.scene.frame_current
        try:
            n = rekey(obj)
        except (RetargetError, contract.ContractError) as exc:
            obj.flamecap_neutral_frame = old
            self.report({"ERROR"}, " ".join(str(exc).split()))
            return {"CANCELLED"}
        self.report({"INFO"}, f"keyed {n} shape keys")
        return {"FINISHED"}


class FLAMECAP_UL_channels(bpy.types.UIList):
    """The mapping table: on, channel → key, gain, offset (the selected row shows clamp and smoothing)."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.label(text=item.source)
        keys = data.data.shape_keys if data.type == "MESH" else None
        if keys is not None:
            row.prop_search(item, "target", keys, "key_blocks", text="")
        else:
            row.prop(item, "target", text="")
        row.prop(item, "gain", text="")
        row.prop(item, "offset", text="")


def _flame_rigs(context) -> list:
    return [o for o in context.scene.objects if o.type == "ARMATURE" and o.get("flamecap_mesh")]


class FLAMECAP_OT_retarget_flame_head(bpy.types.Operator):
    """Play another FlameCap head's take on the active FlameCap head (identity swap: the active head keeps its
    own neutral mesh and joints)"""

    bl_idname = "flamecap.retarget_flame_head"
    bl_label = "Copy Take onto FLAME Head"
    bl_options = {"REGISTER", "UNDO"}

    source: bpy.props.StringProperty(name="Source rig", description="the FlameCap rig whose take to copy "
                                     "(default: the only other FlameCap head in the scene)")

    def execute(self, context):
        from .scene import find_rig
        try:
            target = find_rig(context)
            if target is None:
                raise RetargetError("select the FlameCap head (or its rig) that should play the take")
            if self.source:
                src = bpy.data.objects.get(self.source)
                if src is None:
                    raise RetargetError(f"no object named '{self.source}'")
            else:
                others = [o for o in _flame_rigs(context) if o != target and o.animation_data
                          and o.animation_data.action]
                if len(others) != 1:
                    raise RetargetError(f"{len(others)} other FlameCap heads with a take in the scene; name the "
                                        f"source rig")
                src = others[0]
            if src == target:
                raise RetargetError("source and target are the same head")
            copy_flame_take(src, target)
        except RetargetError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"'{target.name}' plays the take of '{src.name}'")
        return {"FINISHED"}


class FLAMECAP_OT_import_live_link(bpy.types.Operator):
    """Key a Live Link Face CSV onto the active mesh's ARKit shape keys"""

    bl_idname = "flamecap.import_live_link"
    bl_label = "Import Live Link Face CSV"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")
    fps: bpy.props.FloatProperty(name="Take fps", default=60.0, min=1.0)

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            n = import_live_link_csv(context.active_object, self.filepath, self.fps)
        except (RetargetError, ValueError) as exc:
            self.report({"ERROR"}, " ".join(str(exc).split()))
            return {"CANCELLED"}
        self.report({"INFO"}, f"keyed {n} shape keys")
        return {"FINISHED"}


classes = (FlameCapChannel, FLAMECAP_UL_channels, FLAMECAP_OT_retarget_bones, FLAMECAP_OT_retarget_shapekeys,
           FLAMECAP_OT_rekey_shapekeys, FLAMECAP_OT_set_neutral_frame, FLAMECAP_OT_retarget_flame_head,
           FLAMECAP_OT_import_live_link)


def register_extra():
    bpy.types.Object.flamecap_channels = bpy.props.CollectionProperty(type=FlameCapChannel)
    bpy.types.Object.flamecap_channel_index = bpy.props.IntProperty(default=0)
    bpy.types.Object.flamecap_neutral_frame = bpy.props.IntProperty(
        name="Neutral frame", default=-1, min=-1, description="frame whose solved values key to the offsets "
        "(-1: none)")


def unregister_extra():
    for name in ("flamecap_channels", "flamecap_channel_index", "flamecap_neutral_frame"):
        delattr(bpy.types.Object, name)


def draw_panel(layout, context):
    box = layout.box()
    box.label(text="Retarget", icon="MOD_DATA_TRANSFER")
    obj = context.active_object
    col = box.column(align=True)
    col.enabled = obj is not None
    col.operator(FLAMECAP_OT_retarget_shapekeys.bl_idname, icon="SHAPEKEY_DATA")
    if obj is not None and obj.get(PROP_ANIM):
        draw_mapping(box, obj)
    col.operator(FLAMECAP_OT_retarget_bones.bl_idname, icon="ARMATURE_DATA")
    col.operator(FLAMECAP_OT_retarget_flame_head.bl_idname, icon="MESH_MONKEY")
    col.operator(FLAMECAP_OT_import_live_link.bl_idname, icon="IMPORT")


def draw_mapping(layout, obj) -> None:
    """The character's mapping table, the selected row's clamp and smoothing, the neutral frame, re-key."""
    layout.label(text="Mapping (channel → key, gain, offset)")
    layout.template_list("FLAMECAP_UL_channels", "", obj, "flamecap_channels", obj, "flamecap_channel_index", rows=6)
    rows = obj.flamecap_channels
    if 0 <= obj.flamecap_channel_index < len(rows):
        r = rows[obj.flamecap_channel_index]
        sub = layout.row(align=True)
        sub.prop(r, "lower")
        sub.prop(r, "upper")
        sub.prop(r, "smooth")
    row = layout.row(align=True)
    nf = obj.flamecap_neutral_frame
    row.operator(FLAMECAP_OT_set_neutral_frame.bl_idname, icon="KEYFRAME")
    if nf >= 0:
        row.operator(FLAMECAP_OT_set_neutral_frame.bl_idname, text=f"Clear ({nf})", icon="X").clear = True
    layout.operator(FLAMECAP_OT_rekey_shapekeys.bl_idname, icon="FILE_REFRESH")
