"""Synthetic inputs for the add-on tests, built with the contract only (numpy): a tiny FLAME-format head
(a squashed UV sphere with a jaw region, eyes and known bases) and a result file for it.

Used from the tests (plain python) and from the Blender scenario scripts (run in a clean subprocess)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "core") not in sys.path:
    sys.path.insert(0, str(REPO / "core"))

from flamecap.contract import TrackingResult, default_meta, intrinsics_from_fov, save_result  # noqa: E402
from flamecap.contract.model_format import FlameModelData, model_meta, save_model_npz  # noqa: E402


def tiny_head(n_lat: int = 10, n_lon: int = 16, n_expr: int = 6, seed: int = 0) -> dict:
    """A head-sized (≈0.2 m) closed mesh in FLAME axes (+Y up, +Z forward) with FLAME-like arrays:
    vertices, faces, exprdirs (V,3,E), posedirs (V,3,36), weights (V,5), joints (5,3), parents."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(0.0, np.pi, n_lat + 1)[1:-1]
    lon = np.linspace(0.0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ring = np.stack([np.sin(la) * np.sin(lo), np.cos(la), np.sin(la) * np.cos(lo)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * np.array([0.08, 0.11, 0.09])
    verts = verts + np.array([0.0, 0.02, 0.0])
    faces = []
    nr = n_lat - 1
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, idx(0, j + 1), idx(0, j)])
        faces.append([len(verts) - 1, idx(nr - 1, j), idx(nr - 1, j + 1)])
    for i in range(nr - 1):
        for j in range(n_lon):
            faces.append([idx(i, j), idx(i, j + 1), idx(i + 1, j + 1)])
            faces.append([idx(i, j), idx(i + 1, j + 1), idx(i + 1, j)])
    faces = np.asarray(faces, dtype=np.int32)
    V = verts.shape[0]
    joints = np.array([[0.0, -0.05, -0.02], [0.0, -0.06, -0.03], [0.0, -0.02, 0.0],
                       [0.03, 0.04, 0.07], [-0.03, 0.04, 0.07]])
    weights = np.zeros((V, 5))
    y, z = verts[:, 1], verts[:, 2]
    jaw = np.clip((0.0 - y) / 0.04, 0, 1) * (z > 0.0)          # lower front: jaw
    neck = np.clip((-0.06 - y) / 0.04, 0, 1) * (1 - jaw)
    weights[:, 2] = jaw
    weights[:, 1] = neck
    eye_l = np.linalg.norm(verts - joints[3], axis=1) < 0.025
    eye_r = np.linalg.norm(verts - joints[4], axis=1) < 0.025
    weights[eye_l] = 0
    weights[eye_r] = 0
    weights[eye_l, 3] = 1
    weights[eye_r, 4] = 1
    weights[:, 0] = 1 - weights[:, 1:].sum(1)
    exprdirs = rng.normal(0, 0.004, (V, 3, n_expr))
    posedirs = rng.normal(0, 0.002, (V, 3, 36))
    return {"vertices": verts, "faces": faces, "exprdirs": exprdirs, "posedirs": posedirs,
            "weights": weights, "joints": joints, "parents": np.array([-1, 0, 1, 1, 1], np.int32)}


def make_result(path, n_frames: int = 12, source_path: str = "", image_size=(360, 288), fps: float = 25.0,
                invalid=(), seed: int = 1, head: dict | None = None, frame_offset: int = 0,
                focal_px: float | None = None) -> TrackingResult:
    """Write a valid result with smooth known motion; rows in ``invalid`` are marked invalid (NaN params);
    ``focal_px`` = the camera's focal length (default: a 30° field of view)."""
    head = head or tiny_head()
    rng = np.random.default_rng(seed)
    T, E = n_frames, head["exprdirs"].shape[2]
    t = np.arange(T) / fps
    w, h = image_size
    s = np.sin(2 * np.pi * 0.7 * t)[:, None]
    arrays = {
        "expr": (s * rng.normal(0, 1.0, (1, E))).astype(np.float32),
        "jaw_pose": np.stack([0.15 + 0.1 * s[:, 0], 0 * t, 0 * t], 1).astype(np.float32),
        "neck_pose": np.stack([0.05 * s[:, 0], 0.1 * s[:, 0], 0 * t], 1).astype(np.float32),
        "eye_pose": np.tile([0.05, 0.1, 0.0, 0.05, 0.1, 0.0], (T, 1)).astype(np.float32) * (1 + s),
        "global_rot": np.stack([0.1 * s[:, 0], 0.3 * s[:, 0], 0.05 + 0 * t], 1).astype(np.float32),
        "transl": np.stack([0.01 * s[:, 0], 0.0 * t, -0.6 + 0.02 * s[:, 0]], 1).astype(np.float32),
        "valid": np.ones(T, bool),
        "landmark_residual_px": np.full(T, 1.5, np.float32),
        "time_s": t.astype(np.float32),
        "frame_index": (np.arange(T) + frame_offset).astype(np.int32),
        "shape": np.zeros(10, np.float32),
        "K": (intrinsics_from_fov(w, h, 30.0) if focal_px is None else
              np.array([[focal_px, 0, w / 2], [0, focal_px, h / 2], [0, 0, 1]])).astype(np.float32),
        "cam_R": np.diag([1.0, -1.0, -1.0]).astype(np.float32),
        "cam_t": np.zeros(3, np.float32),
        "image_size": np.array([w, h], np.int32),
        "head_vertices": head["vertices"].astype(np.float32),
        "head_faces": head["faces"],
        "head_exprdirs": head["exprdirs"].astype(np.float32),
        "head_posedirs": head["posedirs"].astype(np.float32),
        "head_weights": head["weights"].astype(np.float32),
        "head_joints": head["joints"].astype(np.float32),
        "head_parents": head["parents"],
    }
    for i in invalid:
        arrays["valid"][i] = False
        for k in ("expr", "jaw_pose", "neck_pose", "eye_pose", "global_rot", "transl"):
            arrays[k][i] = np.nan
    meta = default_meta(fps, {"path": str(source_path), "kind": "video", "n_frames": T},
                        {"release": "flamecap-test", "n_vertices": int(head["vertices"].shape[0])})
    res = TrackingResult(arrays=arrays, meta=meta)
    save_result(path, res)
    return res


def make_model(path, seed: int = 0) -> Path:
    """A FLAME-format model ``.npz`` of the tiny head (for a core that wants ``--model``)."""
    head = tiny_head(seed=seed)
    V = head["vertices"].shape[0]
    jreg = np.zeros((5, V))
    for j in range(5):
        d = np.linalg.norm(head["vertices"] - head["joints"][j], axis=1)
        jreg[j, np.argsort(d)[:4]] = 0.25
    arrays = {"v_template": head["vertices"], "faces": head["faces"],
              "shapedirs": np.random.default_rng(seed).normal(0, 0.003, (V, 3, 10)),
              "exprdirs": head["exprdirs"], "posedirs": head["posedirs"], "J_regressor": jreg,
              "weights": head["weights"], "parents": head["parents"]}
    return save_model_npz(path, FlameModelData(arrays=arrays, meta=model_meta("flamecap-test")))


def reference_vertices(result: TrackingResult, t: int) -> np.ndarray:
    """FLAME linear blend skinning of row ``t`` in numpy (FLAME world): the ground truth the Blender
    scene must reproduce."""
    from flamecap.contract import axis_angle_to_matrix
    a = result.arrays
    v = a["head_vertices"].astype(np.float64) + a["head_exprdirs"].astype(np.float64) @ a["expr"][t].astype(np.float64)
    eye = a["eye_pose"][t].reshape(2, 3)
    rv = np.stack([a["global_rot"][t], a["neck_pose"][t], a["jaw_pose"][t], eye[0], eye[1]]).astype(np.float64)
    R = axis_angle_to_matrix(rv)
    feat = (R[1:] - np.eye(3)).reshape(-1)
    v = v + a["head_posedirs"].astype(np.float64) @ feat
    J = a["head_joints"].astype(np.float64)
    par = a["head_parents"]
    G = np.zeros((5, 4, 4))
    for j in range(5):
        L = np.eye(4)
        L[:3, :3] = R[j]
        L[:3, 3] = J[j] - (J[par[j]] if par[j] >= 0 else 0)
        G[j] = L if par[j] < 0 else G[par[j]] @ L
    A = G.copy()
    A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    T_v = np.einsum("vj,jab->vab", a["head_weights"].astype(np.float64), A)
    out = np.einsum("vab,vb->va", T_v[:, :3, :3], v) + T_v[:, :3, 3]
    return out + a["transl"][t].astype(np.float64)
