"""What both MediaPipe backends (``mediapipe``: the legacy package; ``litert``: FlameCap's own front end on
LiteRT) share: the 478-point scheme's per-point σ model and visibility, and the per-frame row assembly.

The mesh topology (regions, tessellation) comes from MediaPipe's ``face_mesh_connections`` table: read as
data from the file ``flamecap models fetch-mediapipe`` puts next to the models (parsed with ``ast``, never
imported) or, when that is absent, from the installed legacy ``mediapipe`` package; both are the same file
of the same 0.10.21 release, so both backends get identical σ.

σ per point (pixels), the 1-σ localisation uncertainty the fitter divides residuals by:

    σ_k = max(σ_min, base_k · s) · 1 / max(cos_k, 0.25)     (× 3 more when the point faces away)

- ``s`` is the face size: the distance between the outer eye corners (points 33 and 263) in pixels, or
  0.45 × the point cloud's bounding-box diagonal if that is larger (profile views shrink the eye span).
- ``base_k`` by region (fractions of ``s``): iris 0.015, eyes 0.02, lips 0.025, nose 0.03, eyebrows 0.035,
  other interior points 0.04, face oval / jawline 0.07 (contour points slide along the silhouette).
- ``cos_k`` is the cosine between the point's surface normal and the direction to the camera. Normals come
  from MediaPipe's 3D output (x, y in pixels, z in the same scale as x): per point the smallest principal
  axis of its tessellation neighbours, oriented toward the camera side of the whole face; iris points
  take the value of the nearest mesh point. ``σ_min`` = 0.5 px.
- ``visible`` is ``cos_k > 0.05`` (points on the far side of a turned face are hidden in the image; their
  reported positions are MediaPipe's guesses, hence the inflated σ).
No temporal term is used.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from ..errors import WeightsError

N_POINTS = 478
SIGMA_MIN_PX = 0.5
REGION_BASE = {"iris": 0.015, "eyes": 0.02, "lips": 0.025, "nose": 0.03, "brows": 0.035, "interior": 0.04,
               "oval": 0.07}

_TABLES: dict = {}


CONNECTION_TABLES = ("FACEMESH_LIPS", "FACEMESH_LEFT_EYE", "FACEMESH_LEFT_IRIS", "FACEMESH_LEFT_EYEBROW",
                     "FACEMESH_RIGHT_EYE", "FACEMESH_RIGHT_EYEBROW", "FACEMESH_RIGHT_IRIS", "FACEMESH_FACE_OVAL",
                     "FACEMESH_NOSE", "FACEMESH_TESSELATION")


def parse_connections(text: str, where: str = "face_mesh_connections.py") -> dict[str, frozenset]:
    """The edge tables of MediaPipe's ``face_mesh_connections.py`` source, read as literals: each
    ``NAME = frozenset([(i, j), ...])`` assignment; the file is data to FlameCap and is never executed."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise WeightsError(f"{where} is not readable Python ({exc.msg}); run 'flamecap models fetch-mediapipe "
                           f"--force'") from None
    out: dict[str, frozenset] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "frozenset"
                and len(node.value.args) == 1 and isinstance(node.value.args[0], ast.List)):
            out[node.targets[0].id] = frozenset(ast.literal_eval(node.value.args[0]))
    missing = [n for n in CONNECTION_TABLES if n not in out]
    if missing:
        raise WeightsError(f"{where} lacks the tables {', '.join(missing)}; run 'flamecap models fetch-mediapipe "
                           f"--force'")
    return out


def _connections() -> dict[str, frozenset]:
    """The mesh tables: the fetched file if present, else the legacy package's module."""
    from .mp_models import CONNECTIONS, model_file, models_dir
    if (models_dir() / CONNECTIONS).is_file():
        p: Path = model_file(CONNECTIONS)
        return parse_connections(p.read_text(encoding="utf-8"), str(p))
    try:
        from mediapipe.python.solutions import face_mesh_connections as c
    except ImportError:
        raise WeightsError(f"the MediaPipe mesh topology is missing ({models_dir() / CONNECTIONS}); run "
                           f"'flamecap models fetch-mediapipe'") from None
    return {n: frozenset(getattr(c, n)) for n in CONNECTION_TABLES}




def _tables() -> dict:
    """Per-point base σ fraction (478,), tessellation edges (E, 2), iris → nearest-mesh map (built once)."""
    if _TABLES:
        return _TABLES
    c = _connections()

    def pts(conn):
        return sorted({i for e in conn for i in e})

    base = np.full(N_POINTS, REGION_BASE["interior"], dtype=np.float64)
    for name, conns in (("oval", [c["FACEMESH_FACE_OVAL"]]),
                        ("brows", [c["FACEMESH_LEFT_EYEBROW"], c["FACEMESH_RIGHT_EYEBROW"]]),
                        ("nose", [c["FACEMESH_NOSE"]]), ("lips", [c["FACEMESH_LIPS"]]),
                        ("eyes", [c["FACEMESH_LEFT_EYE"], c["FACEMESH_RIGHT_EYE"]]),
                        ("iris", [c["FACEMESH_LEFT_IRIS"] | c["FACEMESH_RIGHT_IRIS"]])):
        for conn in conns:
            base[pts(conn)] = REGION_BASE[name]
    base[468:478] = REGION_BASE["iris"]
    edges = np.array(sorted(c["FACEMESH_TESSELATION"]), dtype=np.int64)
    # point ← edge incidence as a sparse sum: row p lists the edges starting at p, then those ending at p, in
    # edge order, so the product sums in exactly np.add.at's order (bit-identical, ~10x faster)
    from scipy.sparse import csr_matrix
    n_e = edges.shape[0]
    inc = csr_matrix((np.ones(2 * n_e), (np.concatenate([edges[:, 0], edges[:, 1]]), np.arange(2 * n_e))),
                     shape=(N_POINTS, 2 * n_e))
    inc.sort_indices()
    _TABLES.update(base=base, edges=edges, incidence=inc)
    return _TABLES


def point_normals_cos(p3: np.ndarray) -> np.ndarray:
    """Cosine between each point's normal and the view direction, from MediaPipe 3D points.

    p3 (N, 478, 3): x, y pixels, z pixels (MediaPipe's z × width; smaller = nearer the camera).
    Returns (N, 478) in [−1, 1]; positive faces the camera."""
    tab = _tables()
    e = tab["edges"]
    p = np.asarray(p3, dtype=np.float64)
    N = p.shape[0]
    d = p[:, e[:, 1]] - p[:, e[:, 0]]                                # (N, E, 3)
    outer = d[..., :, None] * d[..., None, :]                       # (N, E, 3, 3)
    o = np.ascontiguousarray(outer.transpose(1, 0, 2, 3)).reshape(e.shape[0], N * 9)
    cov = (tab["incidence"] @ np.concatenate([o, o])).reshape(N_POINTS, N, 3, 3).transpose(1, 0, 2, 3)
    mesh = np.arange(468)
    _, vecs = np.linalg.eigh(cov[:, mesh] + 1e-9 * np.eye(3))
    n = vecs[..., 0]                                                # (N, 468, 3) smallest axis
    # global face normal from the face's own frame: (right eye → left eye) × (chin → forehead)
    across = p[:, 263] - p[:, 33]
    up = p[:, 10] - p[:, 152]
    g = np.cross(across, up)
    g /= np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-9)
    g = np.where((g[:, 2:3] > 0), -g, g)                            # toward the camera = −z
    # orient each local normal to agree with the mean of its neighbours... start from the global normal
    n = np.where((np.sum(n * g[:, None], -1) < 0)[..., None], -n, n)
    cos = np.empty((N, N_POINTS))
    cos[:, :468] = -n[..., 2]
    # iris points: nearest mesh point in 2D
    dx = p[:, 468:, None, 0] - p[:, None, :468, 0]
    dy = p[:, 468:, None, 1] - p[:, None, :468, 1]
    dist = np.sqrt(dx * dx + dy * dy)                               # = np.linalg.norm(..., axis=-1), cheaper
    near = np.argmin(dist, axis=-1)
    cos[:, 468:] = np.take_along_axis(cos[:, :468], near, axis=1)
    return cos


POST_BLOCK = 32   # frames per σ/visibility block (cache-sized)


def _rows_to_arrays(rows: list[tuple]) -> tuple:
    """Detection rows (frame_index, time_s, points3 or None, n_faces) → frame_index (n,), time_s (n,),
    points (n, 478, 2) float32 px, σ (n, 478) float32 px, valid (n,), visible (n, 478); no-face rows NaN."""
    n = len(rows)
    points = np.full((n, N_POINTS, 2), np.nan, dtype=np.float32)
    sigma = np.full((n, N_POINTS), np.nan, dtype=np.float32)
    visible = np.zeros((n, N_POINTS), dtype=bool)
    valid = np.array([r[2] is not None for r in rows], dtype=bool)
    if valid.any():
        p3 = np.stack([r[2] for r in rows if r[2] is not None])
        sig, vis = sigma_and_visibility(p3)
        points[valid] = p3[..., :2]
        sigma[valid] = sig
        visible[valid] = vis
    return (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float64),
            points, sigma, valid, visible)


def sigma_and_visibility(points3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """σ (N, 478) px and visible (N, 478) bool from MediaPipe 3D points (N, 478, 3) in pixels (see module
    docstring for the formula)."""
    tab = _tables()
    p = np.asarray(points3, dtype=np.float64)
    eye_span = np.linalg.norm(p[:, 263, :2] - p[:, 33, :2], axis=-1)
    diag = np.linalg.norm(p[..., :2].max(1) - p[..., :2].min(1), axis=-1)
    s = np.maximum(np.maximum(eye_span, 0.45 * diag), 1e-3)
    cos = point_normals_cos(p)
    sig = np.maximum(tab["base"][None] * s[:, None], SIGMA_MIN_PX) / np.maximum(cos, 0.25)
    sig = np.where(cos < 0.05, sig * 3.0, sig)
    return sig.astype(np.float32), cos > 0.05
