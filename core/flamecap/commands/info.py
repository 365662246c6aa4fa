"""``flamecap env``, ``flamecap info RESULT``, ``flamecap validate RESULT``."""
from __future__ import annotations

import argparse
import json
import platform


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="versions, device and registered models (JSON with --json)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_env)
    p = sub.add_parser("info", help="summarise a result file")
    p.add_argument("result")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)
    p = sub.add_parser("validate", help="check a result file against the contract")
    p.add_argument("result")
    p.set_defaults(handler=cmd_validate)


# distributions reported by 'flamecap info': the base install's, then the optional extras' (flamecap.optional)
_DISTRIBUTIONS = ("torch", "opencv-python-headless", "ai-edge-litert", "av", "smplx", "trimesh", "scipy",
                  "mediapipe", "opencv-contrib-python", "safetensors", "matplotlib", "bpy", "ray")


def environment() -> dict:
    from importlib import metadata

    import numpy
    import torch

    import flamecap
    info = {"flamecap": flamecap.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "numpy": numpy.__version__}
    for dist in _DISTRIBUTIONS:       # versions from the installed metadata: nothing heavy is imported
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    info["cuda"] = bool(torch.cuda.is_available())
    info["device"] = torch.cuda.get_device_name(0) if info["cuda"] else "cpu"
    from ..flame.registry import registered_models_summary
    info["models"] = registered_models_summary()
    return info


def cmd_env(args) -> int:
    info = environment()
    if args.json:
        print(json.dumps(info, indent=1, sort_keys=True, default=str))
    else:
        for k, v in info.items():
            print(f"{k:10s} {v}")
    return 0


def _summary(path: str) -> dict:
    import numpy as np
    from ..contract.result import load_result
    r = load_result(path)
    valid = r["valid"]
    err = r["landmark_residual_px"][valid]
    return {"path": str(path), "frames": r.n_frames, "valid_frames": int(valid.sum()), "fps": r.fps,
            "image_size": list(r.image_size), "focal_px": float(r["K"][0, 0]),
            "focal_source": r.meta.get("focal_source"),
            "focal_observable": (r.meta.get("fit") or {}).get("focal_observable"),
            "n_shape": int(r["shape"].shape[0]), "n_expr": int(r["expr"].shape[1]),
            "n_vertices": int(r["head_vertices"].shape[0]), "has_offsets": "vertex_offsets" in r,
            "mean_landmark_residual_px": float(np.mean(err)) if err.size else None,
            "model": r.meta.get("model"), "source": r.meta.get("source"),
            "aligner": r.meta.get("aligner"), "identity": r.meta.get("identity"),
            "quality": r.meta.get("quality")}


def cmd_info(args) -> int:
    s = _summary(args.result)
    if args.json:
        print(json.dumps(s, indent=1, default=str))
    else:
        for k, v in s.items():
            print(f"{k:18s} {v}")
    return 0


def cmd_validate(args) -> int:
    s = _summary(args.result)
    print(f"ok: {s['path']} ({s['frames']} frames, {s['valid_frames']} valid)")
    return 0
