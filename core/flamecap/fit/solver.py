"""Levenberg–Marquardt solvers with adaptive damping for the fitter's three problem structures (torch).

- :func:`lm_frames`: independent per-frame problems, batched (block-diagonal normal equations).
- :func:`lm_joint`: per-frame blocks plus shared parameters (shape, focal), solved exactly with the
  Schur complement on the shared block.
- :func:`lm_temporal`: per-frame blocks coupled by a second-difference (acceleration) term; the
  block-pentadiagonal system is solved as a symmetric banded matrix (LAPACK via scipy), O(N·D³).

The cost is Σ of squared normalised residuals (robustified), its
Gauss–Newton model is ``cost + 2gᵀδ + δᵀHδ``; steps solve ``(H + λ·diag H) δ = −g``. Deterministic.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

LAM_INIT = 1e-3
LAM_UP = 8.0
LAM_DOWN = 0.25
LAM_MIN, LAM_MAX = 1e-7, 1e7


@dataclass
class SolveInfo:
    iterations: int
    cost_start: float
    cost_end: float


def _damped(H: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    d = torch.diagonal(H, dim1=-2, dim2=-1)
    scale = d.clamp_min(1e-6 * d.abs().amax(-1, keepdim=True).clamp_min(1e-12)) + 1e-9
    return H + torch.diag_embed(lam[..., None] * scale)


def _solve_spd(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched SPD solve in float64 (Cholesky, falls back to LU)."""
    A64, b64 = A.double(), b.double()
    L, info = torch.linalg.cholesky_ex(A64)
    if bool((info == 0).all()):
        return torch.cholesky_solve(b64.unsqueeze(-1), L).squeeze(-1)
    return torch.linalg.solve(A64, b64.unsqueeze(-1)).squeeze(-1)


def lm_frames(x: torch.Tensor, linearize: Callable, evaluate: Callable, iters: int,
              tries: int = 3, rtol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, SolveInfo]:
    """Batched LM over independent frames. x (T, D); linearize(x) → (cost (T,), H (T, D, D), g (T, D));
    evaluate(x) → cost (T,). Each frame has its own damping and accepts a step only if its cost drops.
    Stops early once an iteration lowers the total cost by less than ``rtol`` (relative)."""
    T = x.shape[0]
    lam = torch.full((T,), LAM_INIT, dtype=torch.float64)
    cost0 = None
    cost = None
    n_it = 0
    for it in range(iters):
        c, H, g = linearize(x)
        n_it += 1
        cost = c if cost is None else cost
        if cost0 is None:
            cost0 = float(c.sum())
        before = float(cost.sum())
        todo = torch.ones(T, dtype=torch.bool)
        for _ in range(tries):
            dx = -_solve_spd(_damped(H.double(), lam), g.double()).to(x.dtype)
            dx = torch.where(todo[:, None], dx, torch.zeros_like(dx))
            new = evaluate(x + dx)
            ok = todo & torch.isfinite(new) & (new < cost)
            x = torch.where(ok[:, None], x + dx, x)
            cost = torch.where(ok, new, cost)
            lam = torch.where(ok, (lam * LAM_DOWN).clamp_min(LAM_MIN), torch.where(todo, (lam * LAM_UP).clamp_max(LAM_MAX), lam))
            todo = todo & ~ok
            if not bool(todo.any()):
                break
        if _converged(before, float(cost.sum()), rtol):
            break
    final = evaluate(x) if cost is None else cost
    return x, final, SolveInfo(n_it, cost0 if cost0 is not None else float(final.sum()), float(final.sum()))


def _converged(before: float, after: float, rtol: float) -> bool:
    """True when the last iteration's relative cost decrease is below ``rtol`` (never with rtol = 0)."""
    return rtol > 0 and np.isfinite(before) and (before - after) <= rtol * max(abs(before), 1e-12)


def lm_joint(x: torch.Tensor, s: torch.Tensor, linearize: Callable, evaluate: Callable, iters: int,
             tries: int = 4, rtol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, SolveInfo]:
    """LM over per-frame x (T, D) and shared s (Ds,). linearize(x, s) → (cost scalar, H (T, D, D), g (T, D),
    Hxs (T, D, Ds), Hss (Ds, Ds), gs (Ds,)); evaluate(x, s) → cost scalar. Schur complement on s.
    Stops early once an iteration lowers the cost by less than ``rtol`` (relative)."""
    lam = LAM_INIT
    cost0 = None
    cost = None
    n_it = 0
    for it in range(iters):
        c, H, g, Hxs, Hss, gs = linearize(x, s)
        n_it += 1
        c = float(c)
        cost = c if cost is None else cost
        cost0 = c if cost0 is None else cost0
        before = cost
        H, g, Hxs, Hss, gs = H.double(), g.double(), Hxs.double(), Hss.double(), gs.double()
        for _ in range(tries):
            A = _damped(H, torch.full((H.shape[0],), lam, dtype=torch.float64))
            L, info = torch.linalg.cholesky_ex(A)
            if not bool((info == 0).all()):
                lam = min(lam * LAM_UP, LAM_MAX)
                continue
            AinvB = torch.cholesky_solve(Hxs, L)                            # (T, D, Ds)
            Ainvg = torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)    # (T, D)
            S = _damped(Hss, torch.tensor(lam, dtype=torch.float64)) - (Hxs.transpose(1, 2) @ AinvB).sum(0)
            rhs = -gs + (Hxs.transpose(1, 2) @ Ainvg.unsqueeze(-1)).squeeze(-1).sum(0)
            try:
                ds = torch.linalg.solve(S, rhs)
            except RuntimeError:
                lam = min(lam * LAM_UP, LAM_MAX)
                continue
            dx = -(Ainvg + (AinvB @ ds.unsqueeze(-1)).squeeze(-1))
            xn, sn = x + dx.to(x.dtype), s + ds.to(s.dtype)
            new = float(evaluate(xn, sn))
            if np.isfinite(new) and new < cost:
                x, s, cost = xn, sn, new
                lam = max(lam * LAM_DOWN, LAM_MIN)
                break
            lam = min(lam * LAM_UP, LAM_MAX)
        if _converged(before, cost, rtol):
            break
    if cost is None:
        cost = float(evaluate(x, s))
        cost0 = cost
    return x, s, SolveInfo(n_it, float(cost0), float(cost))


def temporal_system(H: torch.Tensor, g: torch.Tensor, x: torch.Tensor, tw: torch.Tensor,
                    active: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """Add the acceleration term Σ w (Δ²x)² to per-frame blocks and return the banded lower storage
    ``ab`` (2D+1, N·D), gradient (N·D,) and the temporal cost. H (N, D, D), g (N, D), x (N, D), tw (D,),
    active (N−2,) bool."""
    N, D = x.shape
    Hn = H.double().cpu().numpy().copy()
    gn = g.double().cpu().numpy().copy()
    xn = x.double().cpu().numpy()
    w = tw.double().cpu().numpy()
    off1 = np.zeros((N, D))   # H[t+1, t] diagonal
    off2 = np.zeros((N, D))   # H[t+2, t] diagonal
    tcost = 0.0
    if N >= 3:
        a = active.cpu().numpy().astype(np.float64)[:, None] * w[None]  # (N-2, D)
        q = xn[:-2] - 2 * xn[1:-1] + xn[2:]
        tcost = float((a * q * q).sum())
        diag = np.zeros((N, D))
        diag[:-2] += a
        diag[1:-1] += 4 * a
        diag[2:] += a
        idx = np.arange(D)
        Hn[:, idx, idx] += diag
        off1[:-2] += -2 * a
        off1[1:-1] += -2 * a
        off2[:-2] += a
        gn[:-2] += a * q
        gn[1:-1] += -2 * a * q
        gn[2:] += a * q
    ab = np.zeros((2 * D + 1, N * D))
    ii, jj = np.tril_indices(D)
    cols = (np.arange(N)[:, None] * D + jj[None]).reshape(-1)
    ab[np.tile(ii - jj, N), cols] = Hn[:, ii, jj].reshape(-1)
    ab[D, :] = off1.reshape(-1)
    ab[2 * D, :] = off2.reshape(-1)
    return ab, gn.reshape(-1), tcost


def lm_temporal(x: torch.Tensor, linearize: Callable, evaluate: Callable, tw: torch.Tensor,
                active: torch.Tensor, iters: int, tries: int = 4, rtol: float = 0.0) -> tuple[torch.Tensor, SolveInfo]:
    """LM over frames x (N, D) with the acceleration term. linearize(x) → (cost (N,), H, g);
    evaluate(x) → cost (N,); tw (D,) temporal weights; active (N−2,) which triples count. Stops early
    once an iteration lowers the cost by less than ``rtol`` (relative)."""
    from scipy.linalg import LinAlgError, solveh_banded

    from .costs import temporal_cost

    N, D = x.shape
    lam = LAM_INIT
    cost0 = cost = None
    n_it = 0
    for it in range(iters):
        c, H, g = linearize(x)
        n_it += 1
        ab, gv, tc = temporal_system(H, g, x, tw, active)
        cur = float(c.sum()) + tc
        cost = cur if cost is None else cost
        cost0 = cur if cost0 is None else cost0
        before = cost
        d0 = ab[0].copy()
        scale = np.maximum(d0, 1e-6 * max(np.abs(d0).max(), 1e-12)) + 1e-9
        for _ in range(tries):
            ab[0] = d0 + lam * scale
            try:
                dx = -solveh_banded(ab, gv, lower=True, check_finite=False)
            except (LinAlgError, ValueError):
                lam = min(lam * LAM_UP, LAM_MAX)
                continue
            xn = x + torch.as_tensor(dx.reshape(N, D), dtype=x.dtype)
            new = float(evaluate(xn).sum()) + float(temporal_cost(xn.double(), tw.double(), active))
            if np.isfinite(new) and new < cost:
                x, cost = xn, new
                lam = max(lam * LAM_DOWN, LAM_MIN)
                break
            lam = min(lam * LAM_UP, LAM_MAX)
        if _converged(before, cost, rtol):
            break
    if cost is None:
        cost = cost0 = float(evaluate(x).sum())
    return x, SolveInfo(n_it, float(cost0), float(cost))
