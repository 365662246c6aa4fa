"""Registering the FLAME head onto a character's neutral face (numpy + scipy).

1. :func:`umeyama` — similarity (scale, rotation, translation) from corresponding points.
2. :func:`nonrigid_icp` — per-vertex displacements of the (similarity-aligned) FLAME surface pulled onto the
   target surface by closest points and landmarks, regularised by the Laplacian of the displacement field
   (keeps the FLAME surface's local shape), with a stiffness schedule; each step is one sparse solve.
3. :func:`closest_points` — exact closest points on a triangle mesh (barycentric binding), used for both
   ICP correspondences and the final target-vertex → FLAME-surface binding.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.spatial import cKDTree

from ..errors import InputError
from ..geometry import closest_barycentric
from ..render.raster import vertex_normals

log = logging.getLogger(__name__)


@dataclass
class Similarity:
    """``x ↦ scale · R @ x + t``."""

    scale: float
    R: np.ndarray   # (3, 3)
    t: np.ndarray   # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points) @ self.R.T + self.t

    def apply_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Displacements: scaled and rotated, not translated."""
        return self.scale * np.asarray(vectors) @ self.R.T


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True,
            weights: np.ndarray | None = None) -> Similarity:
    """Least-squares similarity mapping ``src`` (N, 3) onto ``dst`` (N, 3) (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or src.shape[0] < 3:
        raise InputError(f"need at least 3 corresponding 3D points (got {src.shape} and {dst.shape})")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    var_s = float(np.sum(w * np.sum(xs ** 2, axis=1)))
    if var_s <= 1e-20:
        raise InputError("the source correspondence points are all at one place; pick spread-out points")
    scale = float(np.trace(np.diag(S) @ D) / var_s) if with_scale else 1.0
    return Similarity(scale=scale, R=R, t=mu_d - scale * R @ mu_s)


def robust_similarity(src: np.ndarray, dst: np.ndarray, rounds: int = 2,
                      cutoff: float = 2.5) -> tuple[Similarity, np.ndarray]:
    """:func:`umeyama` refitted ``rounds`` times on the pairs whose residual is at most ``cutoff`` × the
    median: a stylised face (anime eyes, a small nose) differs from FLAME in a few regions, and those pairs
    must not tilt or shrink the whole fit. Returns the similarity and the inlier mask (N,)."""
    keep = np.ones(len(src), bool)
    sim = umeyama(src, dst)
    for _ in range(rounds):
        r = np.linalg.norm(sim.apply(src) - dst, axis=1)
        new = r <= cutoff * np.median(r)
        if new.sum() < 4 or np.array_equal(new, keep):
            break
        keep = new
        sim = umeyama(src, dst, weights=keep.astype(np.float64))
    return sim, keep


@dataclass
class SurfacePoints:
    """Closest points on a mesh: face (N,), bary (N, 3), points (N, 3), distance (N,)."""

    face: np.ndarray
    bary: np.ndarray
    points: np.ndarray
    distance: np.ndarray


def closest_points(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, k: int = 12,
                   tree: cKDTree | None = None) -> SurfacePoints:
    """Closest point on the mesh (vertices (V, 3), faces (F, 3)) to each of ``points`` (N, 3).

    Candidate triangles: the ``k`` nearest by centroid plus all triangles around the nearest vertex
    (exact for reasonable meshes)."""
    points = np.asarray(points, dtype=np.float64)
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    tri = vertices[faces]
    cent = tri.mean(1)
    tree = tree or cKDTree(cent)
    k = min(k, len(faces))
    _, cand = tree.query(points, k=k)
    cand = cand.reshape(len(points), -1)
    N, C = cand.shape
    flat = cand.reshape(-1)
    pp = np.repeat(points, C, axis=0)
    bary = closest_barycentric(pp, tri[flat, 0], tri[flat, 1], tri[flat, 2])
    q = np.einsum("nk,nkc->nc", bary, tri[flat])
    d = np.linalg.norm(q - pp, axis=1).reshape(N, C)
    best = np.argmin(d, axis=1)
    rows = np.arange(N) * C + best
    return SurfacePoints(face=flat[rows], bary=bary[rows], points=q[rows], distance=d[np.arange(N), best])


def uniform_laplacian(n_vertices: int, faces: np.ndarray) -> sp.csr_matrix:
    """Graph Laplacian ``L = I − D⁻¹A`` (V, V) of the mesh edges."""
    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    A = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices))
    A.data[:] = 1.0
    deg = np.asarray(A.sum(1)).reshape(-1)
    deg[deg == 0] = 1.0
    return (sp.eye(n_vertices) - sp.diags(1.0 / deg) @ A).tocsr()


@dataclass
class NonrigidResult:
    vertices: np.ndarray        # (V, 3) registered source vertices (target frame)
    rms: float                  # RMS closest-point distance of inlier vertices at the end (target units)
    inlier_fraction: float


def nonrigid_icp(src_vertices: np.ndarray, src_faces: np.ndarray, dst_vertices: np.ndarray,
                 dst_faces: np.ndarray, src_landmarks: np.ndarray | None = None,
                 dst_landmark_points: np.ndarray | None = None, *,
                 stiffness: tuple[float, ...] = (50.0, 20.0, 8.0, 3.0, 1.0), iters_per_stage: int = 3,
                 landmark_weight: float = 1.0, reject_factor: float = 3.0,
                 region: np.ndarray | None = None) -> NonrigidResult:
    """Deform ``src_vertices`` (already similarity-aligned) onto the target surface.

    Minimises Σ wᵢ‖xᵢ − cᵢ‖² + α‖L(x − x₀)‖² + β Σ‖x_l − p_l‖² per step, with cᵢ the closest target
    point, wᵢ = 0 for rejected pairs (farther than ``reject_factor`` × median, or normals opposing) and
    outside ``region`` (bool (V,), e.g. the face), α from ``stiffness`` (relative to the data term),
    β = ``landmark_weight`` × (number of vertices / number of landmarks)."""
    x0 = np.asarray(src_vertices, dtype=np.float64)
    V = len(x0)
    L = uniform_laplacian(V, src_faces)
    LtL = (L.T @ L).tocsr()
    dst_v = np.asarray(dst_vertices, dtype=np.float64)
    dst_f = np.asarray(dst_faces, dtype=np.int64)
    tree = cKDTree(dst_v[dst_f].mean(1))
    dst_n = vertex_normals(dst_v, dst_f)
    region = np.ones(V, bool) if region is None else np.asarray(region, bool)
    use_lmk = src_landmarks is not None and len(src_landmarks) > 0
    if use_lmk:
        li = np.asarray(src_landmarks, dtype=np.int64)
        lp = np.asarray(dst_landmark_points, dtype=np.float64)
        beta = landmark_weight * V / len(li)
        Lm = sp.csr_matrix((np.full(len(li), 1.0), (np.arange(len(li)), li)), shape=(len(li), V))
        LmtLm = (Lm.T @ Lm) * beta
        Lm_rhs = (Lm.T @ lp) * beta
    x = x0.copy()
    rms, inl = np.inf, 0.0
    for alpha in stiffness:
        for _ in range(iters_per_stage):
            cp = closest_points(x, dst_v, dst_f, tree=tree)
            n_src = vertex_normals(x, src_faces)
            n_dst = np.einsum("nk,nkc->nc", cp.bary, dst_n[dst_f[cp.face]])
            med = np.median(cp.distance[region]) if region.any() else 0.0
            w = (region & (cp.distance <= reject_factor * max(med, 1e-12))
                 & (np.sum(n_src * n_dst, 1) > 0.0)).astype(np.float64)
            inl = float(w[region].mean()) if region.any() else 0.0
            A = sp.diags(w) + alpha * LtL
            rhs = w[:, None] * cp.points + alpha * (LtL @ x0)
            if use_lmk:
                A = A + LmtLm
                rhs = rhs + Lm_rhs
            solve = spla.factorized(A.tocsc())
            x = np.stack([solve(rhs[:, c]) for c in range(3)], axis=1)
            rms = float(np.sqrt(np.sum(w * cp.distance ** 2) / max(w.sum(), 1.0)))
        log.debug("nonrigid ICP stiffness %.3g: rms %.4g inliers %.2f", alpha, rms, inl)
    cp = closest_points(x, dst_v, dst_f, tree=tree)
    sel = region
    rms = float(np.sqrt(np.mean(cp.distance[sel] ** 2))) if sel.any() else 0.0
    return NonrigidResult(vertices=x, rms=rms, inlier_fraction=inl)


def local_affines(before: np.ndarray, after: np.ndarray, faces: np.ndarray, smooth_iters: int = 2) -> np.ndarray:
    """Per-vertex local linear map (V, 3, 3) taking ``before``'s 1-ring edges and normal (scaled to the mean
    edge length) onto ``after``'s, least squares, then averaged over the 1-ring ``smooth_iters`` times —
    the Jacobian of the registration, which carries displacements from one surface to the other
    (as in deformation transfer)."""
    f = np.asarray(faces, dtype=np.int64)
    V = len(before)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    e0 = before[j] - before[i]
    e1 = after[j] - after[i]
    cnt = np.bincount(i, minlength=V).astype(np.float64)
    ln = np.sqrt(np.bincount(i, np.sum(e0 ** 2, 1), minlength=V) / np.maximum(cnt, 1))
    n0 = vertex_normals(before, f) * ln[:, None]
    n1 = vertex_normals(after, f) * ln[:, None]
    C10 = np.einsum("va,vb->vab", n1, n0)
    C00 = np.einsum("va,vb->vab", n0, n0)
    np.add.at(C10, i, np.einsum("ea,eb->eab", e1, e0))
    np.add.at(C00, i, np.einsum("ea,eb->eab", e0, e0))
    C00 += 1e-12 * np.eye(3) * np.maximum(ln, 1e-12)[:, None, None] ** 2
    A = C10 @ np.linalg.inv(C00)
    if smooth_iters:
        Lw = uniform_laplacian(V, f)
        avg = (sp.eye(V) - Lw).tocsr()
        for _ in range(smooth_iters):
            A = 0.5 * A + 0.5 * (avg @ A.reshape(V, 9)).reshape(V, 3, 3)
    return A


def local_similarities(before: np.ndarray, after: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-vertex best local similarity (scale · rotation, (V, 3, 3)) mapping the 1-ring edge vectors of
    ``before`` (V, 3) onto those of ``after`` (ARAP-style Procrustes per vertex)."""
    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    e0 = before[j] - before[i]
    e1 = after[j] - after[i]
    V = len(before)
    cov = np.zeros((V, 3, 3))
    np.add.at(cov, i, np.einsum("ea,eb->eab", e1, e0))
    n0 = np.zeros(V)
    np.add.at(n0, i, np.sum(e0 ** 2, 1))
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones((V, 3))
    D[:, 2] = d
    R = U @ (D[:, :, None] * Vt)
    s = np.sum(S * D, 1) / np.maximum(n0, 1e-30)
    return s[:, None, None] * R
