"""Per-frame shape-key weights from target displacements: bounded least squares with temporal smoothness.

For frame t with target displacements dₜ (N·3,) and key basis A (N·3, K):

    min Σₜ ‖A wₜ − dₜ‖² + Σₜ Σₖ λ_s,ₖ (wₜₖ − wₜ₋₁,ₖ)² + Σₜ Σₖ λ_r,ₖ wₜₖ²,   lower ≤ wₜ ≤ upper

The data term is reduced exactly to K rows per frame (Cholesky of AᵀA + λ_r I), the frames are stacked
into one sparse banded system and solved by ``scipy.optimize.lsq_linear`` (windows of ``window`` frames
with overlap for long clips). λ_s and λ_r are per key, relative to that key's own diagonal entry of AᵀA (its squared size), so they
are unitless and small keys (eyelids) are smoothed as much as large ones (jaw).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import lsq_linear

from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SolveConfig:
    smooth: float = 0.05     # temporal smoothness λ_s (relative)
    l2: float = 1e-4         # pull toward 0 λ_r (relative); keeps near-duplicate keys well-posed
    window: int = 240        # frames per stacked solve
    overlap: int = 16        # frames shared by consecutive windows (blended)
    tol: float = 1e-10

    def __post_init__(self):
        if self.smooth < 0 or self.l2 < 0:
            raise InputError("smooth and l2 must be >= 0")
        if self.window < 2 or not 0 <= self.overlap < self.window // 2:
            raise InputError("window must be >= 2 and overlap < window/2")


@dataclass
class WeightSolution:
    weights: np.ndarray     # (T, K)
    residual: np.ndarray    # (T,) RMS per frame of A w − d (units of d)


def solve_weights(basis: np.ndarray, targets: np.ndarray, lower: np.ndarray | float = 0.0,
                  upper: np.ndarray | float = 1.0, config: SolveConfig = SolveConfig()) -> WeightSolution:
    """basis (K, N, 3) key deltas; targets (T, N, 3) displacements → weights (T, K) in [lower, upper]."""
    basis = np.asarray(basis, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    K = basis.shape[0]
    T = targets.shape[0]
    if basis.ndim != 3 or targets.ndim != 3 or basis.shape[1:] != targets.shape[1:]:
        raise InputError(f"basis {basis.shape} and targets {targets.shape} do not match (K,N,3)/(T,N,3)")
    A = basis.reshape(K, -1).T                                   # (M, K)
    D = targets.reshape(T, -1)                                   # (T, M)
    G = A.T @ A
    scale = float(np.mean(np.diag(G)))
    if not np.isfinite(scale) or scale <= 0:
        raise InputError("the shape keys do not move any vertex; nothing to solve for")
    # per-key weights: each key is regularised relative to its own size (diag of AᵀA), so a small key
    # (an eyelid) is smoothed as much as a large one (the jaw), not ~100× more
    gk = np.maximum(np.diag(G), 1e-12 * scale)
    lam_r = config.l2 * gk
    lam_s = config.smooth * gk
    Gr = G + np.diag(lam_r)
    Lc = np.linalg.cholesky(Gr)                                  # Gr = Lc Lcᵀ
    B = D @ A                                                    # (T, K) = (Aᵀ dₜ)ᵀ
    Y = np.linalg.solve(Lc, B.T).T                               # rows: Lc⁻¹ Aᵀ dₜ
    lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), (K,))
    hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), (K,))
    pinned = lo == hi
    W = np.zeros((T, K))
    step = config.window - config.overlap
    starts = list(range(0, max(T - config.overlap, 1), step))
    prev_end = 0
    for s in starts:
        e = min(s + config.window, T)
        Ww = _solve_window(Lc.T, Y[s:e], lam_s, lo, hi, pinned, config.tol)
        if s == 0:
            W[s:e] = Ww
        else:
            ov = prev_end - s
            ramp = np.linspace(0, 1, ov + 2)[1:-1, None] if ov > 0 else np.zeros((0, 1))
            W[s:prev_end] = (1 - ramp) * W[s:prev_end] + ramp * Ww[:ov]
            W[prev_end:e] = Ww[ov:]
        prev_end = e
        if e >= T:
            break
    res = np.sqrt(np.mean((W @ A.T - D) ** 2, axis=1))
    return WeightSolution(weights=W, residual=res)


def _solve_window(U: np.ndarray, Y: np.ndarray, lam_s: np.ndarray, lo, hi, pinned, tol) -> np.ndarray:
    n, K = Y.shape
    free = ~pinned
    if not np.any(lam_s > 0) or n == 1:
        out = np.empty((n, K))
        for t in range(n):
            out[t] = _bounded(U, Y[t], lo, hi, pinned, tol)
        return out
    blocks = [sp.kron(sp.eye(n), sp.csr_matrix(U[:, free]))]
    rhs = [(Y - (U[:, pinned] @ lo[pinned])[None]).reshape(-1)]
    Kf = int(free.sum())
    diff = sp.diags([-np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(n - 1, n))
    blocks.append(sp.kron(diff, sp.diags(np.sqrt(lam_s[free]))))
    rhs.append(np.zeros((n - 1) * Kf))
    M = sp.vstack(blocks).tocsr()
    b = np.concatenate(rhs)
    lb = np.tile(lo[free], n)
    ub = np.tile(hi[free], n)
    sol = lsq_linear(M, b, bounds=(lb, ub), method="trf", lsq_solver="lsmr", tol=tol, max_iter=200)
    out = np.tile(lo, (n, 1)).astype(np.float64)
    out[:, free] = sol.x.reshape(n, Kf)
    return out


def _bounded(U, y, lo, hi, pinned, tol):
    free = ~pinned
    out = lo.astype(np.float64).copy()
    if free.any():
        b = y - U[:, pinned] @ lo[pinned]
        out[free] = lsq_linear(U[:, free], b, bounds=(lo[free], hi[free]), method="bvls", tol=tol).x
    return out
