"""Export a glTF character's shape-key head as a FlameCap character file, through the add-on's own export
(run with a Python that has ``bpy``): ``python benchmarks/export_glb_character.py IN.glb OUT.npz [MESH]``.
MESH defaults to the mesh with the most ARKit-named shape keys."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(glb: str, out: str, mesh: str = "") -> None:
    import bpy
    from blender_addon import retarget
    from blender_addon._contract import contract
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys is not None]
    if mesh:
        obj = bpy.data.objects.get(mesh)
    else:
        obj = max(meshes, key=lambda o: len(contract.match_arkit_names(kb.name for kb in o.data.shape_keys.key_blocks)),
                  default=None)
    if obj is None:
        raise SystemExit(f"error: no mesh '{mesh}' with shape keys in {glb}; meshes: {[o.name for o in meshes]}")
    retarget.export_character(obj, out)
    print(f"exported '{obj.name}' ({len(obj.data.vertices)} vertices, {len(obj.data.shape_keys.key_blocks) - 1} keys)"
          f" to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
