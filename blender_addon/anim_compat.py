"""One place for the Action API differences between Blender versions (4.2 LTS to 5.3; each is tested by
``tests/blender/run_versions.py``).

- 4.2 / 4.3: legacy actions, ``action.fcurves.new(data_path, index=, action_group=)``; one action animates
  one ID, so a take needs an object action and a shape-key action.
- 4.4+: slotted actions: ``action.slots.new(id_type, name)``, F-curves live in a channelbag per slot, in the
  action's first layer's keyframe strip (``strip.channelbag(slot, ensure=True)``; the helper
  ``bpy_extras.anim_utils.action_ensure_channelbag_for_slot`` only exists from 5.0, so it is not used); one
  action can animate several IDs (the armature object and the mesh's shape-key datablock), each through its
  own slot. ``channelbag.fcurves.new`` takes ``group_name`` only from 5.0; on 4.4/4.5 the group is made with
  ``channelbag.groups.new`` and assigned to the F-curve.
- 5.0: ``Action.fcurves`` (the 4.4 compatibility shim) is gone; only the channelbag path works.

All keys are written in bulk: ``keyframe_points.add(n)`` + ``foreach_set`` (no per-key Python loops).
"""
from __future__ import annotations

import bpy
import numpy as np

SLOTTED = bpy.app.version >= (4, 4, 0)
# ActionChannelbagFCurves.new(group_name=) exists from 5.0 on
NEW_TAKES_GROUP_NAME = SLOTTED and "group_name" in bpy.types.ActionChannelbagFCurves.bl_rna.functions["new"].parameters
_LINEAR = 1  # enum index of 'LINEAR' in Keyframe.interpolation


def new_action(name: str):
    act = bpy.data.actions.new(name)
    act.use_fake_user = True  # keep takes that are not assigned
    return act


def assign(id_block, action, slot_name: str | None = None):
    """Assign ``action`` to ``id_block`` (creating animation data); on 4.4+ also create/pick the slot
    named ``slot_name`` for that ID type. Returns the slot (``None`` on legacy versions)."""
    ad = id_block.animation_data or id_block.animation_data_create()
    if not SLOTTED:
        ad.action = action
        return None
    id_type = id_block.id_type
    slot = None
    for s in action.slots:
        if s.target_id_type == id_type and (slot_name is None or s.name_display == slot_name):
            slot = s
            break
    if slot is None:
        slot = action.slots.new(id_type=id_type, name=slot_name or id_block.name)
    ad.action = action
    ad.action_slot = slot
    return slot


def channelbag(action, slot, create: bool = True):
    """The channelbag of ``slot`` in ``action``'s first layer / keyframe strip (4.4+), creating the layer,
    strip and channelbag when ``create``; ``None`` when there is none and ``create`` is False."""
    if not action.layers:
        if not create:
            return None
        action.layers.new("Layer")
    layer = action.layers[0]
    if not layer.strips:
        if not create:
            return None
        layer.strips.new(type="KEYFRAME")
    return layer.strips[0].channelbag(slot, ensure=create)


def fcurve_collection(action, slot, create: bool = True):
    """The F-curve collection for ``slot`` of ``action`` (``action.fcurves`` on legacy versions)."""
    if not SLOTTED:
        return action.fcurves
    bag = channelbag(action, slot, create)
    return None if bag is None else bag.fcurves


def fcurves(action, slot=None) -> list:
    """All F-curves of ``action`` (of one slot when given, else of every slot)."""
    if not SLOTTED:
        return list(action.fcurves)
    slots = [slot] if slot is not None else list(action.slots)
    out = []
    for s in slots:
        coll = fcurve_collection(action, s, create=False)
        if coll is not None:
            out.extend(coll)
    return out


def find_fcurve(action, slot, data_path: str, index: int = 0):
    for fc in fcurves(action, slot):
        if fc.data_path == data_path and fc.array_index == index:
            return fc
    return None


def new_fcurve(action, slot, data_path: str, index: int = 0, group: str = ""):
    """Create (or replace) the F-curve ``data_path[index]`` in the slot's channels, in channel group ``group``."""
    coll = fcurve_collection(action, slot, create=True)
    old = find_fcurve(action, slot, data_path, index)
    if old is not None:
        coll.remove(old)
    if not SLOTTED:
        return coll.new(data_path, index=index, action_group=group)
    if NEW_TAKES_GROUP_NAME:
        return coll.new(data_path, index=index, group_name=group)
    fc = coll.new(data_path, index=index)
    if group:
        bag = channelbag(action, slot, create=True)
        fc.group = bag.groups.get(group) or bag.groups.new(group)
    return fc


def set_keys(fcurve, frames: np.ndarray, values: np.ndarray, interpolation: int = _LINEAR) -> None:
    """Replace the keys of ``fcurve`` with ``(frames[i], values[i])`` in bulk, linear interpolation."""
    frames = np.asarray(frames, dtype=np.float32).reshape(-1)
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    kp = fcurve.keyframe_points
    if len(kp):
        kp.clear()
    n = frames.shape[0]
    kp.add(n)
    co = np.empty(2 * n, dtype=np.float32)
    co[0::2] = frames
    co[1::2] = values
    kp.foreach_set("co", co)
    kp.foreach_set("interpolation", np.full(n, interpolation, dtype=np.int32))
    fcurve.update()


def write_channels(action, slot, channels: list[tuple[str, int, np.ndarray]], frames: np.ndarray,
                   group: str = "") -> None:
    """Write many channels ``(data_path, index, values (T,))`` sampled at ``frames`` (T,)."""
    for data_path, index, values in channels:
        set_keys(new_fcurve(action, slot, data_path, index, group), frames, values)
