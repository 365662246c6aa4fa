"""Per-frame shape-key weights: bounded least squares with a temporal term, batched over the whole take.

For frame t with target displacements dₜ (N·3,) and key basis A (N·3, K):

    min Σₜ ‖A wₜ − dₜ‖² + Σₜ Σₖ λ_s,ₖ (wₜₖ − wₜ₋₁,ₖ)² + Σₜ Σₖ λ_r,ₖ wₜₖ²,   lower ≤ wₜ ≤ upper

Only the normal equations enter: G = AᵀA (K, K) once per character and bₜ = Aᵀdₜ per frame, so the solve
never touches vertices (:mod:`.shapekeys` builds bₜ from a per-character (K, F) projection of the FLAME
feature basis). λ_s and λ_r are per key, relative to that key's own diagonal entry of G (its squared size),
so they are unitless and small keys (eyelids) are smoothed as much as large ones (jaw).

The box-constrained QP over all T·K values is solved by ADMM (splitting w = z, z in the box). Its linear
step (G + λ_r + ρ) ⊗ I_T + λ_s ⊗ (path Laplacian) is diagonalised exactly by the eigenvectors of the
(scaled) G and the DCT-II along time (the DCT diagonalises the free-ended path Laplacian), so each
iteration is two (T, K)×(K, K) products, two DCTs and a projection — no factorisation per frame or window,
and a free change of ρ (residual balancing). Keys can be pinned per frame (values driven from pose
features, :mod:`.shapekeys`); they leave the solve and enter the right-hand side.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.fft import dct, idct

from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SolveConfig:
    smooth: float = 0.05     # temporal smoothness λ_s (relative)
    l2: float = 1e-4         # pull toward 0 λ_r (relative); keeps near-duplicate keys well-posed
    tol: float = 1e-4        # stop when primal and dual ADMM residuals (weight units) are below this: a
                             # ten-thousandth of a key is invisible, and redundant key sets converge slowly
    max_iter: int = 3000

    def __post_init__(self):
        if not (self.smooth >= 0 and self.l2 >= 0):
            raise InputError("smooth and l2 must be >= 0")
        if not (self.tol > 0 and self.max_iter >= 1):
            raise InputError("tol must be > 0 and max_iter >= 1")


@dataclass
class WeightSolution:
    weights: np.ndarray     # (T, K)
    residual: np.ndarray    # (T,) RMS per frame of A w − d (units of d)
    iterations: int = 0


@dataclass
class NormalEquations:
    """G = AᵀA (K, K), B = Aᵀdₜ per frame (T, K), and dd = ‖dₜ‖² (T,) for residuals; M = rows of A
    (N·3, for the RMS)."""

    G: np.ndarray
    B: np.ndarray
    dd: np.ndarray
    M: int


def with_row(ne: NormalEquations, a: np.ndarray, b: np.ndarray, weight: float) -> NormalEquations:
    """``ne`` plus one more equation a·wₜ ≈ bₜ (a (K,), b (T,)) counted ``weight`` times."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return NormalEquations(G=ne.G + weight * np.outer(a, a), B=ne.B + weight * b[:, None] * a[None, :],
                           dd=ne.dd + weight * b ** 2, M=ne.M)


def normal_equations(basis: np.ndarray, targets: np.ndarray) -> NormalEquations:
    """From basis (K, N, 3) key deltas and targets (T, N, 3) displacements."""
    basis = np.asarray(basis, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if basis.ndim != 3 or targets.ndim != 3 or basis.shape[1:] != targets.shape[1:]:
        raise InputError(f"basis {basis.shape} and targets {targets.shape} do not match (K,N,3)/(T,N,3)")
    A = basis.reshape(basis.shape[0], -1).T
    D = targets.reshape(targets.shape[0], -1)
    return NormalEquations(G=A.T @ A, B=D @ A, dd=np.einsum("tm,tm->t", D, D), M=A.shape[0])


def solve_weights(basis: np.ndarray, targets: np.ndarray, lower: np.ndarray | float = 0.0,
                  upper: np.ndarray | float = 1.0, config: SolveConfig = SolveConfig()) -> WeightSolution:
    """basis (K, N, 3) key deltas; targets (T, N, 3) displacements → weights (T, K) in [lower, upper]."""
    return solve_normal(normal_equations(basis, targets), lower, upper, config)


def solve_normal(ne: NormalEquations, lower: np.ndarray | float = 0.0, upper: np.ndarray | float = 1.0,
                 config: SolveConfig = SolveConfig(), pinned: dict[int, np.ndarray] | None = None) -> WeightSolution:
    """The bounded, temporally smooth solve from normal equations. ``pinned``: key index → (T,) values
    fixed per frame (they are not solved; their effect on the other keys is)."""
    G = np.asarray(ne.G, dtype=np.float64)
    B = np.asarray(ne.B, dtype=np.float64)
    T, K = B.shape
    diag = np.diag(G)
    scale = float(np.mean(diag)) if K else 0.0
    if not np.isfinite(scale) or scale <= 0:
        raise InputError("the shape keys do not move any vertex; nothing to solve for")
    lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), (K,)).copy()
    hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), (K,)).copy()
    W = np.zeros((T, K))
    fixed = np.zeros(K, bool)
    for k, vals in (pinned or {}).items():
        W[:, k] = np.clip(np.asarray(vals, dtype=np.float64).reshape(T), lo[k], hi[k])
        fixed[k] = True
    const = (lo == hi) & ~fixed
    W[:, const] = lo[const]
    fixed |= const
    free = ~fixed
    iters = 0
    if free.any() and T:
        Bf = B[:, free] - W[:, fixed] @ G[fixed][:, free]
        W[:, free], iters = _admm(G[np.ix_(free, free)], Bf, lo[free], hi[free],
                                  np.maximum(diag[free], 1e-12 * scale), config)
    quad = np.einsum("tk,kl,tl->t", W, G, W) - 2 * np.einsum("tk,tk->t", W, B) + ne.dd
    res = np.sqrt(np.maximum(quad, 0.0) / max(ne.M, 1))
    return WeightSolution(weights=W, residual=res, iterations=iters)


def _admm(G: np.ndarray, B: np.ndarray, lo: np.ndarray, hi: np.ndarray, gk: np.ndarray,
          config: SolveConfig) -> tuple[np.ndarray, int]:
    """min ½ Σₜ wₜᵀ(G + λ_r)wₜ − bₜᵀwₜ + ½ λ_s Σ (Δₜw)², lo ≤ w ≤ hi, in variables scaled by √gk."""
    T, K = B.shape
    s = 1.0 / np.sqrt(gk)                                      # w = s · x: unit diagonal
    Gs = s[:, None] * G * s[None, :] + config.l2 * np.eye(K)
    gam, Q = np.linalg.eigh(Gs)
    gam = np.maximum(gam, 1e-12)
    Bs = B * s
    xlo, xhi = lo / s, hi / s
    mu = 4.0 * np.sin(np.pi * np.arange(T) / (2.0 * T)) ** 2   # path-Laplacian eigenvalues (DCT-II order)
    base = gam[None, :] + config.smooth * mu[:, None]          # (T, K) in the (DCT, eigen) basis
    # the iterations run in float32: the stopping tolerance (1e-4 of a key) is far above its precision, and
    # the (T, K) passes are bound by memory traffic, which float32 halves
    f32 = np.float32
    Bhat = dct(Bs @ Q, type=2, norm="ortho", axis=0).astype(f32)
    Qf, Qt = Q.astype(f32), np.ascontiguousarray(Q.T, dtype=f32)
    xlo, xhi = xlo.astype(f32), xhi.astype(f32)

    def x_step(v_hat, rho, inv):
        v_hat *= rho
        v_hat += Bhat
        v_hat *= inv
        return idct(v_hat, type=2, norm="ortho", axis=0) @ Qt

    def inverse(rho):
        return (1.0 / (base + rho)).astype(f32)

    x = np.zeros((T, K), f32)
    if config.smooth > 0 or gam.min() > 1e-9:
        x = x_step(x, 0.0, inverse(0.0))
    rho = float(np.sqrt(gam.min() * gam.max()))
    inv = inverse(rho)
    z = np.clip(x, xlo, xhi)
    u = np.zeros((T, K), f32)
    tol = config.tol
    sf = s.astype(f32)
    it = 0
    for it in range(1, config.max_iter + 1):
        x = x_step(dct((z - u) @ Qf, type=2, norm="ortho", axis=0), rho, inv)
        xr = 1.6 * x - 0.6 * z                                 # over-relaxation
        z_old = z
        z = np.clip(xr + u, xlo, xhi)
        u += xr
        u -= z
        if it % 10 == 0 or it == config.max_iter:
            r = float(np.max(np.abs((x - z) * sf)))
            d = rho * float(np.max(np.abs((z - z_old) * sf)))
            if r < tol and d < tol:
                break
            if r > 10 * d:                                      # residual balancing: ρ is free to change
                rho *= 2.0
                u /= 2.0
                inv = inverse(rho)
            elif d > 10 * r:
                rho /= 2.0
                u *= 2.0
                inv = inverse(rho)
    log.debug("ADMM: %d iterations, rho %.3g", it, rho)
    return z.astype(np.float64) * s, it
