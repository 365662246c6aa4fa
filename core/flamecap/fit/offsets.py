"""Per-vertex offsets: a shared, small, smooth displacement of the neutral mesh that the blendshape bases
cannot express, fitted after tracking (production quality, optional).

Cost (x, shape, focal fixed): Σ_frames Σ_points ρ-weighted |r + J_δ·δ|² / n_frames
+ w_lap·|L δ|² + w_0·|δ|²,
where δ (V, 3) metres lives in the neutral (rest) frame like ``v_template``, a bound point moves by its
triangle's barycentric blend of δ skinned by the point's blended transform (J_δ = P·M3·b_k), and L is the
uniform graph Laplacian of the mesh (scipy sparse). Linear least squares in δ after one linearisation: one
sparse SPD solve. Eyeball vertices stay fixed (their joints are regressed from them).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from . import costs

log = logging.getLogger(__name__)


def mesh_laplacian(faces: np.ndarray, n_vertices: int):
    """Uniform graph Laplacian (V, V) scipy CSR: (L δ)_v = δ_v − mean of v's edge neighbours."""
    import scipy.sparse as sp

    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    A = sp.coo_matrix((np.ones(i.size), (i, j)), shape=(n_vertices, n_vertices)).tocsr()
    A.data[:] = 1.0                                                        # duplicate edges count once
    deg = np.asarray(A.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
    return (sp.identity(n_vertices, format="csr") - sp.diags(inv) @ A).tocsr()


def fit_offsets(prob, lay, x: torch.Tensor, shape: torch.Tensor, focal: torch.Tensor, faces: np.ndarray,
                n_vertices: int, tri: np.ndarray, bary: np.ndarray, free: np.ndarray, kernel: str,
                w_laplacian: float, w_norm: float, max_offset: float) -> np.ndarray:
    """Solve for the offsets δ (V, 3) metres, float64.

    prob: the fitter's Problem over some frames; lay/x (T, D)/shape/focal: the fitted state; tri (R, 3)
    vertex ids and bary (R, 3) of the problem's bound points; free (V,) bool: vertices allowed to move.
    Offsets are clamped to ``max_offset`` metres per vertex."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    bm = prob.bm
    rot15, tr, expr, lids = lay.unpack(x.to(prob.dtype), bm.n_expr)
    with torch.no_grad():
        fw = bm.forward(shape.to(prob.dtype), expr, rot15, tr, lids)
        from .model import project
        uv, P = project(fw.points, focal.to(prob.dtype), prob.cx, prob.cy)
        r = costs.data_residuals(uv, prob.obs, prob.inv_sigma, prob.mask)
        _, w = costs.data_cost(r, prob.mask, kernel, prob.cfg.robust_scale)
        q = (prob.inv_sigma * torch.sqrt(w))[..., None, None]
        PM = (P @ fw.M[..., :3]) * q                                         # (T, R, 2, 3) per unit offset
        rq = r * torch.sqrt(w)[..., None]                                    # (T, R, 2)
        T = max(1, x.shape[0])
        Q = (torch.einsum("trab,trac->rbc", PM.double(), PM.double()) / T).numpy()     # (R, 3, 3)
        gq = (torch.einsum("trab,tra->rb", PM.double(), rq.double()) / T).numpy()      # (R, 3)
    V3 = 3 * n_vertices
    # data block: Σ_u Σ_kl b_k b_l Q_u at (3 tri_k + a, 3 tri_l + c)
    bb = bary[:, :, None] * bary[:, None, :]                                  # (R, 3, 3) over (k, l)
    vals = bb[:, :, :, None, None] * Q[:, None, None]                         # (R, k, l, a, c)
    rows = 3 * tri[:, :, None, None, None] + np.arange(3)[None, None, None, :, None]
    cols = 3 * tri[:, None, :, None, None] + np.arange(3)[None, None, None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    H = sp.coo_matrix((vals.ravel(), (rows.ravel(), cols.ravel())), shape=(V3, V3)).tocsr()
    g = np.zeros(V3)
    np.add.at(g, (3 * tri[:, :, None] + np.arange(3)).ravel(), (bary[:, :, None] * gq[:, None, :]).ravel())
    L = mesh_laplacian(faces, n_vertices)
    L3 = sp.kron(L, sp.identity(3), format="csr")
    A = H + w_laplacian * (L3.T @ L3) + w_norm * sp.identity(V3, format="csr")
    keep = np.repeat(np.asarray(free, bool), 3)
    idx = np.flatnonzero(keep)
    d = np.zeros(V3)
    if idx.size:
        Ak = A[idx][:, idx].tocsc()
        d[idx] = -spsolve(Ak, g[idx])
    d = d.reshape(n_vertices, 3)
    n = np.linalg.norm(d, axis=1, keepdims=True)
    d = np.where(n > max_offset, d * (max_offset / np.maximum(n, 1e-12)), d)
    log.debug("offsets: %d free vertices, max %.2f mm, rms %.2f mm", int(np.sum(free)), 1e3 * float(n.max()),
              1e3 * float(np.sqrt((n ** 2).mean())))
    return d
