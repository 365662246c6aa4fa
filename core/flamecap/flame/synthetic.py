"""Synthetic FLAME-format heads for tests and demos (numpy / scipy / trimesh, deterministic, no data).

- :func:`make_synthetic_model`: a small head (skin + two eyeballs, ~3–4k vertices) built from an
  implicit surface (smooth union of ellipsoids and capsules, carved eye sockets) in FLAME's frame and
  scale, with identity and expression bases, skinning, pose correctives, eyelids, UVs, a face mask, a
  68-point embedding and a skin-like albedo so MediaPipe finds a face in its renders.
- :func:`flame_reference_head`: the FLAME-topology test head: the real FLAME template, its first 60
  identity components, joint regressor and landmark embeddings from ``../shared/data/flame_reference``,
  rigged (expressions, skinning, correctives, eyelids, mask, albedo) by the same functions
  (:mod:`flamecap.flame.face_regions`).

Both are cached per process; every call returns fresh copies of the arrays.
"""
from __future__ import annotations

import functools
import logging
import pickle
from pathlib import Path

import numpy as np

from ..contract.model_format import FlameModelData, model_meta
from ..errors import InputError, ModelError, UnsafeFileError
from . import face_regions as fr
from .face_regions import SEMANTIC_EXPRESSIONS, HeadAnchors

log = logging.getLogger(__name__)

SYNTHETIC_RELEASE = "flamecap-synthetic"
TEST_HEAD_RELEASE = "flame-topology-test-head"

#: Meaning of each expression component of both generated heads: the named, localised components,
#: then localised random modes ``random_k`` of decreasing amplitude.
SYNTHETIC_EXPRESSION_NAMES: tuple[str, ...] = SEMANTIC_EXPRESSIONS + tuple(f"random_{k}" for k in range(300))

PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int32)

# ----------------------------------------------------------------------------------------------- design
# All in metres, FLAME frame. Proportions follow an average adult head (FLAME-like placement: eyes at
# y ≈ 0.02, nose tip z ≈ 0.075, chin y ≈ −0.09, neck down to y ≈ −0.19).
EYE_X, EYE_Y, EYE_Z, EYE_R = 0.032, 0.021, 0.023, 0.0125
JOINT_TARGETS = np.array([[0.0, -0.15, -0.06],     # root (base of the neck)
                          [0.0, -0.01, -0.05],     # neck (head pivot)
                          [0.0, -0.016, -0.052],   # jaw
                          [EYE_X, EYE_Y, EYE_Z],   # left eye (+X)
                          [-EYE_X, EYE_Y, EYE_Z]])
_RAY_ORIGIN = np.array([0.0, -0.005, -0.03])


def _ellipsoid(p, c, r):
    r = np.asarray(r)
    q = (p - np.asarray(c)) / r
    k0 = np.sqrt(np.einsum("...i,...i->...", q, q))
    q = q / r
    k1 = np.sqrt(np.einsum("...i,...i->...", q, q))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _super_ellipsoid(p, c, r, n):
    """Superellipsoid with exponent n in the horizontal (x, z) plane, approximate distance."""
    q = np.abs((p - np.asarray(c)) / np.asarray(r))
    h = (q[..., 0] ** n + q[..., 2] ** n) ** (2.0 / n)
    k = np.sqrt(h + q[..., 1] ** 2)
    return (k - 1.0) * min(r)


def _capsule(p, a, b, radius):
    a, b = np.asarray(a), np.asarray(b)
    ab = b - a
    t = np.clip(np.sum((p - a) * ab, -1) / np.dot(ab, ab), 0.0, 1.0)
    return np.linalg.norm(p - a - t[..., None] * ab, axis=-1) - radius


def _smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


def _neck(p):
    q = p - np.array([0.0, 0.0, -0.058])
    rad = np.sqrt((q[..., 0] / 0.056) ** 2 + (q[..., 2] / 0.062) ** 2) * 0.056 - 0.056
    return np.maximum(rad, np.maximum(-0.19 - p[..., 1], p[..., 1] - 0.0))


def head_sdf(p: np.ndarray) -> np.ndarray:
    """Signed (approximate) distance of points (..., 3) m to the synthetic skin, negative inside."""
    d = _ellipsoid(p, (0.0, 0.026, -0.052), (0.074, 0.105, 0.102))                      # cranium
    d = _smin(d, _ellipsoid(p, (0.0, -0.036, -0.014), (0.060, 0.058, 0.066)), 0.02)    # lower face
    d = _smin(d, _ellipsoid(p, (0.0, -0.073, 0.024), (0.024, 0.019, 0.022)), 0.012)    # chin
    for s in (-1, 1):
        d = _smin(d, _ellipsoid(p, (s * 0.042, -0.008, 0.014), (0.021, 0.015, 0.021)), 0.012)  # cheekbones
        d = _smin(d, _ellipsoid(p, (s * 0.03, -0.045, 0.02), (0.022, 0.02, 0.02)), 0.012)      # lower cheeks
        d = _smin(d, _capsule(p, (s * 0.012, 0.042, 0.043), (s * 0.05, 0.036, 0.024), 0.007), 0.01)  # brow ridge
    d = _smin(d, _neck(p), 0.025)
    # nose: dorsum capsule, tip, wings
    d = _smin(d, _capsule(p, (0.0, 0.028, 0.043), (0.0, -0.003, 0.064), 0.0072), 0.008)
    d = _smin(d, _ellipsoid(p, (0.0, -0.008, 0.065), (0.0105, 0.0095, 0.0105)), 0.005)
    for s in (-1, 1):
        d = _smin(d, _ellipsoid(p, (s * 0.0125, -0.016, 0.053), (0.0075, 0.0065, 0.0075)), 0.005)
    # lips
    d = _smin(d, _ellipsoid(p, (0.0, -0.0385, 0.053), (0.024, 0.0068, 0.0095)), 0.005)
    d = _smin(d, _ellipsoid(p, (0.0, -0.0495, 0.051), (0.021, 0.0072, 0.0105)), 0.005)
    # eye sockets: soft orbit hollow, then the almond opening carved down to the eyeball's centre plane
    for s in (-1, 1):
        c = np.array([s * EYE_X, EYE_Y, EYE_Z])
        d = _smax(d, -_ellipsoid(p, c + [0.0, 0.002, 0.004], (0.019, 0.015, 0.011)), 0.006)
        d = _smin(d, np.sqrt(np.sum((p - c) ** 2, -1)) - (EYE_R + 0.0016), 0.004)        # lids over the eye
        d = np.maximum(d, -_ellipsoid(p, c + [0.0, 0.0, 0.014], (0.0145, 0.0055, 0.016)))
    return d


@functools.lru_cache(maxsize=8)
def _icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    t = (1.0 + 5 ** 0.5) / 2.0
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                  [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                  [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
                  [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=np.int64)
    for _ in range(subdivisions):
        e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(e, axis=0, return_inverse=True)
        mid = len(v) + inv.reshape(3, -1).T                     # (F, 3): midpoints of edges 01, 12, 20
        v = np.concatenate([v, 0.5 * (v[uniq[:, 0]] + v[uniq[:, 1]])])
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        ab, bc, ca = mid[:, 0], mid[:, 1], mid[:, 2]
        f = np.concatenate([np.stack([a, ab, ca], 1), np.stack([b, bc, ab], 1), np.stack([c, ca, bc], 1),
                            np.stack([ab, bc, ca], 1)])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, f


def icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: vertices (10·4^s + 2, 3), counter-clockwise (outward) triangles (20·4^s, 3)."""
    v, f = _icosphere(int(subdivisions))
    return v.copy(), f.copy()


def _sphere_directions(subdivisions: int, front_density: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere directions warped toward +Z (polar angle β → β(a + (1 − a)β/π), a = front_density):
    unit directions (N, 3) and triangles (M, 3)."""
    d, faces = icosphere(subdivisions)
    beta = np.arccos(np.clip(d[:, 2], -1, 1))
    az = np.arctan2(d[:, 1], d[:, 0])
    a = front_density
    b2 = beta * (a + (1 - a) * beta / np.pi)
    out = np.stack([np.sin(b2) * np.cos(az), np.sin(b2) * np.sin(az), np.cos(b2)], 1)
    return out, faces


def _skin_mesh(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Star-shaped skin from the ray origin: outermost zero crossing of :func:`head_sdf` per direction."""
    dirs, faces = _sphere_directions(subdivisions)
    n_steps, r_max = 90, 0.28
    ts = np.linspace(r_max, 0.0, n_steps)
    pts = _RAY_ORIGIN[None, None] + ts[None, :, None] * dirs[:, None, :]
    f = head_sdf(pts)                                       # (N, steps), outside → inside
    inside = f < 0
    first = np.argmax(inside, axis=1)                       # first inside sample marching inward
    lo = ts[first]                                          # inside
    hi = ts[np.maximum(first - 1, 0)]                       # outside
    for _ in range(22):
        mid = 0.5 * (lo + hi)
        m_in = head_sdf(_RAY_ORIGIN[None] + mid[:, None] * dirs) < 0
        lo = np.where(m_in, mid, lo)
        hi = np.where(m_in, hi, mid)
    verts = _RAY_ORIGIN[None] + (0.5 * (lo + hi))[:, None] * dirs
    return verts, faces


def _eyeball(centre: np.ndarray, subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    v, f = icosphere(subdivisions)
    return v * EYE_R + centre[None], f


def _landmark_targets() -> np.ndarray:
    """The 68 iBUG landmark design positions (68, 3) near the synthetic surface (snapped afterwards)."""
    L = np.zeros((68, 3))
    t = np.linspace(-1.0, 1.0, 17)                                  # jaw line, subject's right first
    ang = t * np.radians(88)
    L[0:17, 0] = 0.075 * np.sin(ang)
    L[0:17, 1] = 0.008 - 0.098 * np.cos(ang) ** 1.4
    L[0:17, 2] = -0.045 + 0.092 * np.cos(ang) ** 0.9
    for s, sl in ((-1, slice(17, 22)), (1, slice(22, 27))):        # brows, outer → inner on the right
        xs = np.linspace(0.057, 0.019, 5) if s == -1 else np.linspace(0.019, 0.057, 5)
        L[sl, 0] = s * xs
        L[sl, 1] = 0.044 - 8.0 * (xs - 0.037) ** 2
        L[sl, 2] = 0.05
    L[27:31] = [[0, 0.025, 0.06], [0, 0.013, 0.07], [0, 0.001, 0.08], [0, -0.009, 0.085]]
    L[31:36] = [[-0.0125, -0.019, 0.06], [-0.006, -0.021, 0.063], [0, -0.022, 0.065],
                [0.006, -0.021, 0.063], [0.0125, -0.019, 0.06]]
    for s, b in ((-1, 36), (1, 42)):
        outer, inner = s * 0.0455, s * 0.018
        xs = [outer, s * 0.037, s * 0.027, inner, s * 0.027, s * 0.037] if s == -1 else \
             [inner, s * 0.027, s * 0.037, outer, s * 0.037, s * 0.027]
        ys = [0.021, 0.0265, 0.0265, 0.0205, 0.0165, 0.0165]
        L[b:b + 6, 0] = xs
        L[b:b + 6, 1] = ys
        L[b:b + 6, 2] = 0.045
    # outer lips 48..59 (right corner, upper lip to left corner, lower lip back), inner 60..67
    L[48:60, 0] = [-0.024, -0.016, -0.006, 0.0, 0.006, 0.016, 0.024, 0.016, 0.006, 0.0, -0.006, -0.016]
    L[48:60, 1] = [-0.044, -0.0395, -0.037, -0.0385, -0.037, -0.0395, -0.044, -0.0495, -0.055, -0.0555,
                   -0.055, -0.0495]
    L[60:68, 0] = [-0.0225, -0.006, 0.0, 0.006, 0.0225, 0.006, 0.0, -0.006]
    L[60:68, 1] = [-0.044, -0.0435, -0.0435, -0.0435, -0.044, -0.0445, -0.0445, -0.0445]
    L[48:68, 2] = 0.07
    return L


def _snap_landmarks(targets: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                    skin_faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embed design landmarks on the skin (closest surface point): face indices (68,), barycentrics (68, 3)."""
    fidx, bary = fr.closest_surface_points(targets, vertices, faces, skin_faces)
    return fidx, bary


def _random_smooth_fields(vertices: np.ndarray, rng: np.random.Generator, n: int, radius: float,
                          n_centres: int = 6) -> np.ndarray:
    """n smooth random vector fields (V, 3, n), each a sum of Gaussian RBFs, rms-normalised to 1."""
    out = np.zeros((len(vertices), 3, n))
    for k in range(n):
        for _ in range(n_centres):
            c = vertices[rng.integers(len(vertices))]
            out[:, :, k] += fr.gaussian(vertices, c, radius)[:, None] * rng.normal(size=3)[None]
        out[:, :, k] /= np.sqrt(np.mean(np.sum(out[:, :, k] ** 2, 1)))
    return out


def _identity_basis(vertices: np.ndarray, eyeballs: list[np.ndarray], eye_centres: np.ndarray, n_shape: int,
                    seed: int) -> np.ndarray:
    """Identity blendshapes (V, 3, S) m per σ: global scale, width, height, depth, then smooth random
    fields of decreasing radius; rms displacement 4 mm × (k + 1)^−0.7. Eyeballs translate rigidly with
    the field at their centre."""
    rng = np.random.default_rng(seed)
    centre = np.array([0.0, -0.02, -0.04])
    rel = vertices - centre
    dirs = np.zeros((len(vertices), 3, n_shape))
    analytic = [rel, rel * [1, 0, 0], rel * [0, 1, 0], rel * [0, 0, 1]]
    for k in range(n_shape):
        if k < len(analytic):
            f = analytic[k]
        else:
            radius = 0.09 * (0.97 ** (k - len(analytic))) + 0.015
            f = _random_smooth_fields(vertices, rng, 1, radius)[:, :, 0]
        for m in eyeballs:
            f[m] = f[m].mean(0)[None]
        f = f / np.sqrt(np.mean(np.sum(f ** 2, 1)))
        dirs[:, :, k] = f * 0.004 * (k + 1) ** -0.7
    return dirs


# ----------------------------------------------------------------------------------------------- builders

@functools.lru_cache(maxsize=8)
def _build_synthetic(n_shape: int, n_expr: int, subdivisions: int, seed: int) -> dict[str, np.ndarray]:
    skin_v, skin_f = _skin_mesh(subdivisions)
    parts_v, parts_f, off = [skin_v], [skin_f], len(skin_v)
    masks = []
    for centre in JOINT_TARGETS[3:]:
        ev, ef = _eyeball(centre)
        parts_v.append(ev)
        parts_f.append(ef + off)
        masks.append((off, off + len(ev)))
        off += len(ev)
    v = np.concatenate(parts_v)
    f = np.concatenate(parts_f)
    V = len(v)
    eye_l = np.zeros(V, bool)
    eye_l[masks[0][0]:masks[0][1]] = True
    eye_r = np.zeros(V, bool)
    eye_r[masks[1][0]:masks[1][1]] = True
    skin_faces = np.zeros(len(f), bool)
    skin_faces[: len(skin_f)] = True
    lmk_idx, lmk_bary = _snap_landmarks(_landmark_targets(), v, f, skin_faces)
    lmk = np.einsum("kcd,kc->kd", v[f[lmk_idx]], lmk_bary)

    J_reg = np.zeros((5, V))
    skin_idx = np.arange(len(skin_v))
    for j in (fr.ROOT, fr.NECK, fr.JAW):
        band = skin_idx[np.abs(skin_v[:, 1] - JOINT_TARGETS[j, 1]) < 0.02]
        band = band[np.argsort(np.linalg.norm(skin_v[band] - JOINT_TARGETS[j], axis=1))[:60]]
        J_reg[j] = fr.regress_joint(v, band, JOINT_TARGETS[j])
    J_reg[fr.EYE_L, eye_l] = 1.0 / eye_l.sum()
    J_reg[fr.EYE_R, eye_r] = 1.0 / eye_r.sum()
    joints = J_reg @ v
    anchors = HeadAnchors(joints=joints, lmk68=lmk, eyeball_l=eye_l, eyeball_r=eye_r)
    arrays = {
        "v_template": v.astype(np.float64),
        "faces": f.astype(np.int32),
        "shapedirs": _identity_basis(v, [eye_l, eye_r], joints[3:], n_shape, seed).astype(np.float32),
        "J_regressor": J_reg.astype(np.float32),
        "parents": PARENTS.copy(),
        "lmk68_face_idx": lmk_idx.astype(np.int32),
        "lmk68_bary": lmk_bary.astype(np.float32),
    }
    arrays.update(fr.rig_head(v, f, anchors, n_expr, seed))
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


def make_synthetic_model(n_shape: int = 100, n_expr: int = 50, subdivisions: int = 4,
                         seed: int = 0) -> FlameModelData:
    """A small deterministic FLAME-format head (release ``flamecap-synthetic``).

    Skin from an implicit head surface sampled on an icosphere with ``subdivisions`` (4 → 2562 skin
    vertices, denser on the face) plus two 642-vertex eyeballs; n_shape identity and n_expr expression
    components (see :data:`SYNTHETIC_EXPRESSION_NAMES`); same joints/parents as FLAME; vertex_albedo,
    vertex_uv, face_mask, lmk68 embedding. Arrays are fresh copies (the build is cached per process)."""
    if n_shape < 1 or n_expr < 1:
        raise InputError(f"synthetic model: n_shape={n_shape}, n_expr={n_expr}; both must be >= 1")
    if n_expr > len(SYNTHETIC_EXPRESSION_NAMES):
        raise InputError(f"synthetic model: n_expr={n_expr} exceeds {len(SYNTHETIC_EXPRESSION_NAMES)}")
    if not 2 <= subdivisions <= 5:
        raise InputError(f"synthetic model: subdivisions={subdivisions}; use 2..5 (4 is the default)")
    arrays = _build_synthetic(int(n_shape), int(n_expr), int(subdivisions), int(seed))
    meta = model_meta(SYNTHETIC_RELEASE, None, seed=int(seed), subdivisions=int(subdivisions),
                      expression_names=list(SYNTHETIC_EXPRESSION_NAMES[:n_expr]))
    return FlameModelData(arrays={k: np.array(a) for k, a in arrays.items()}, meta=meta)


# ----------------------------------------------------------------------------------------------- FLAME test head

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Allows only what a pickled dict of numpy arrays needs; anything else is refused."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise UnsafeFileError(f"{module}.{name} is not allowed in a landmark embedding pickle; "
                                  f"use the original flame_static_embedding_68.pkl")
        import numpy.core.multiarray as ma  # numpy 1.x and 2.x both provide it (the name the pickles use)
        return {"_reconstruct": ma._reconstruct, "ndarray": np.ndarray, "dtype": np.dtype,
                "scalar": getattr(ma, "scalar", None)}[name]


def load_static_embedding_68(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """FLAME's ``flame_static_embedding_68.pkl`` → (face indices (68,) int, barycentrics (68, 3))."""
    try:
        with open(path, "rb") as fh:
            d = _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}; check the FLAME reference folder") from e
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ModelError(f"{path} is not a valid landmark embedding pickle ({e}); re-download it") from e
    if not isinstance(d, dict) or "lmk_face_idx" not in d or "lmk_b_coords" not in d:
        raise ModelError(f"{path}: expected a dict with lmk_face_idx and lmk_b_coords")
    idx = np.asarray(d["lmk_face_idx"]).astype(np.int64)
    bary = np.asarray(d["lmk_b_coords"], dtype=np.float64)
    if idx.shape != (68,) or bary.shape != (68, 3):
        raise ModelError(f"{path}: embedding shapes {idx.shape}, {bary.shape}; expected (68,), (68, 3)")
    return idx, bary


@functools.lru_cache(maxsize=4)
def _build_reference(ref_dir: str, n_expr: int, seed: int) -> dict[str, np.ndarray]:
    import trimesh

    d = Path(ref_dir)
    need = ["flame2020_template.ply", "flame2023open_partial_basis.npz", "flame2020_joint_regressor.npz",
            "flame_static_embedding_68.pkl"]
    missing = [n for n in need if not (d / n).is_file()]
    if missing:
        raise InputError(f"FLAME reference folder {d} lacks {', '.join(missing)}; point to ../shared/data/"
                         f"flame_reference")
    mesh = trimesh.load(d / "flame2020_template.ply", process=False)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, dtype=np.int64)
    with np.load(d / "flame2023open_partial_basis.npz", allow_pickle=False) as b:
        basis = {k: b[k] for k in b.files}
    with np.load(d / "flame2020_joint_regressor.npz", allow_pickle=False) as b:
        J_reg = np.asarray(b["joint_regressor"], dtype=np.float64)
    if basis["shapedirs"].shape[0] != len(v) or J_reg.shape != (5, len(v)):
        raise ModelError(f"FLAME reference folder {d}: shapes do not match the template's {len(v)} vertices")
    if not np.array_equal(np.asarray(basis["faces"], dtype=np.int64), f):
        raise ModelError(f"FLAME reference folder {d}: basis faces differ from the template's")
    lmk_idx, lmk_bary = load_static_embedding_68(d / "flame_static_embedding_68.pkl")
    labels = fr.connected_components(f, len(v))
    joints = J_reg @ v
    eyes = []
    for lab in (1, 2):
        m = labels == lab
        eyes.append(m)
    eye_l, eye_r = (eyes[0], eyes[1]) if v[eyes[0], 0].mean() > 0 else (eyes[1], eyes[0])
    lmk = np.einsum("kcd,kc->kd", v[f[lmk_idx]], lmk_bary)
    anchors = HeadAnchors(joints=joints, lmk68=lmk, eyeball_l=eye_l, eyeball_r=eye_r)
    arrays = {
        "v_template": v,
        "faces": f.astype(np.int32),
        "shapedirs": np.asarray(basis["shapedirs"], dtype=np.float32),
        "J_regressor": J_reg.astype(np.float32),
        "parents": PARENTS.copy(),
        "lmk68_face_idx": lmk_idx.astype(np.int32),
        "lmk68_bary": lmk_bary.astype(np.float32),
        "mp_face_idx": np.asarray(basis["lmk_face_idx"], dtype=np.int32),
        "mp_bary": np.asarray(basis["lmk_b_coords"], dtype=np.float32),
        "mp_landmark_indices": np.asarray(basis["landmark_indices"], dtype=np.int32),
    }
    arrays.update(fr.rig_head(v, f, anchors, n_expr, seed))
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


def flame_reference_head(ref_dir: Path, n_expr: int = 50, seed: int = 0) -> FlameModelData:
    """The FLAME-topology test head (release ``flame-topology-test-head``): real FLAME 2020 template,
    60 FLAME 2023 Open identity components, joint regressor, 68-point and MediaPipe embeddings from
    ``ref_dir``; expression basis, skinning, correctives, eyelids, face mask and albedo from
    :mod:`flamecap.flame.face_regions`. Arrays are fresh copies (the build is cached per process)."""
    if n_expr < 1 or n_expr > len(SYNTHETIC_EXPRESSION_NAMES):
        raise InputError(f"test head: n_expr={n_expr}; use 1..{len(SYNTHETIC_EXPRESSION_NAMES)}")
    ref = Path(ref_dir)
    if not ref.is_dir():
        raise InputError(f"FLAME reference folder {ref} does not exist; pass ../shared/data/flame_reference")
    arrays = _build_reference(str(ref.resolve()), int(n_expr), int(seed))
    meta = model_meta(TEST_HEAD_RELEASE, None, seed=int(seed),
                      expression_names=list(SYNTHETIC_EXPRESSION_NAMES[:n_expr]))
    return FlameModelData(arrays={k: np.array(a) for k, a in arrays.items()}, meta=meta)
