"""Cost terms of the FLAME fit as pure, batched functions (torch).

Total cost = Σ_points ρ(|(π(X) − p) / σ|²) + Σ priors (weighted squared coefficients) + temporal term
(weighted squared second differences of per-frame parameters). Gauss–Newton uses IRLS: the robust kernel
enters as per-point weights ρ'(s) at the linearisation point.
"""
from __future__ import annotations

import torch


def robust(s: torch.Tensor, kernel: str, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel on squared normalised residuals ``s = |r/σ|²`` (any shape) → (ρ(s), ρ'(s)).

    ``huber``: s for s ≤ c², 2c√s − c² beyond (quadratic core, linear tails). ``geman_mcclure``:
    c²s/(c² + s) (outliers saturate at c²). ``none``: s."""
    if kernel == "none":
        return s, torch.ones_like(s)
    c2 = c * c
    if kernel == "huber":
        root = torch.sqrt(s.clamp_min(1e-12))
        inside = s <= c2
        return torch.where(inside, s, 2 * c * root - c2), torch.where(inside, torch.ones_like(s), c / root)
    if kernel == "geman_mcclure":
        d = c2 + s
        return c2 * s / d, (c2 / d) ** 2
    raise ValueError(f"unknown robust kernel {kernel!r}")


def data_residuals(uv: torch.Tensor, obs: torch.Tensor, inv_sigma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised residuals (T, R, 2): (projected − observed)/σ, zero where ``mask`` (T, R) is False.
    ``obs`` may hold NaN where masked."""
    r = (uv - torch.nan_to_num(obs)) * inv_sigma[..., None]
    return torch.where(mask[..., None], r, torch.zeros_like(r))


def data_cost(r: torch.Tensor, mask: torch.Tensor, kernel: str, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame robust data cost (T,) and IRLS weights (T, R) from residuals (T, R, 2)."""
    s = (r * r).sum(-1)
    rho, w = robust(s, kernel, c)
    m = mask.to(r.dtype)
    return (rho * m).sum(-1), w * m


def prior_cost(x: torch.Tensor, weights: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Σ w·(x − mean)² over the last axis: x (..., D), weights (D,) → (...)."""
    d = x if mean is None else x - mean
    return (weights * d * d).sum(-1)


def quadratic_prior(x: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """xᵀQx over the last axis: x (..., D), Q (D, D) symmetric → (...)."""
    return ((x @ Q) * x).sum(-1)


def second_difference(x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Δ²x_t = x_{t−1} − 2x_t + x_{t+1} for t = 1..N−2: x (N, D) → (N−2, D), zeroed where ``active`` (N−2,)
    is False (a triple that spans an invalid frame or a cut)."""
    q = x[:-2] - 2 * x[1:-1] + x[2:]
    return q * active[:, None].to(x.dtype)


def temporal_cost(x: torch.Tensor, weights: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Σ_t Σ_d w_d (Δ²x_t,d)²: x (N, D), weights (D,), active (N−2,) → scalar."""
    if x.shape[0] < 3:
        return x.new_zeros(())
    q = second_difference(x, active)
    return (weights * q * q).sum()


def normal_equations(J: torch.Tensor, r: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame Gauss–Newton blocks of the data term: J (T, R, 2, D), r (T, R, 2), IRLS weights (T, R) →
    H (T, D, D) = Σ w JᵀJ, g (T, D) = Σ w Jᵀr."""
    T, R, _, D = J.shape
    Jw = J * w[..., None, None]
    Jf = J.reshape(T, R * 2, D)
    Jwf = Jw.reshape(T, R * 2, D)
    H = Jwf.transpose(1, 2) @ Jf
    g = (Jwf * r.reshape(T, R * 2, 1)).sum(1)
    return H, g


def cross_equations(Jx: torch.Tensor, Js: torch.Tensor, r: torch.Tensor, w: torch.Tensor):
    """Blocks coupling per-frame (Jx (T, R, 2, D)) and shared (Js (T, R, 2, Ds)) parameters: returns
    Hxs (T, D, Ds), Hss (Ds, Ds) summed over frames, gs (Ds,) summed."""
    T, R, _, D = Jx.shape
    Ds = Js.shape[-1]
    Jxw = (Jx * w[..., None, None]).reshape(T, R * 2, D)
    Jsf = Js.reshape(T, R * 2, Ds)
    Jsw = (Js * w[..., None, None]).reshape(T, R * 2, Ds)
    Hxs = Jxw.transpose(1, 2) @ Jsf
    Hss = (Jsw.transpose(1, 2) @ Jsf).sum(0)
    gs = (Jsw * r.reshape(T, R * 2, 1)).sum((0, 1))
    return Hxs, Hss, gs
