"""The fitting stages. Entry point: :func:`fit_track`.

fast (single pass): rigid init (``rigid_points``) → per-frame tracking with the mean/prior shape
(``max_points``) → joint shape + focal on keyframes + an even spread (``max_joint_frames``, all points) →
final per-frame pass with the temporal term (all points).
production (``staged_identity``): adds identity on keyframes and a second tracking pass before the joint
stage, uses all points throughout, then fits shared per-vertex offsets (``vertex_offsets``).

Speed: the model Jacobians are projected and fused in one pass (``BoundModel.linearize_projected``), frames
are processed in cache-sized blocks, and every LM stops once an iteration gains less than ``rtol``.
Per-frame stages run in batches of frames (flat memory); the temporal stage runs in windows of
``chunk_frames`` with ``chunk_overlap`` frames of context on each side, so 10 000 frames need no more memory
than 200. Invalid frames (no face, NaN points, too few visible points) are never fitted; their parameters
are interpolated from the neighbouring valid frames.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..contract.events import ProgressCallback
from ..contract.model_format import FlameModelData
from ..errors import FitError, InputError
from ..binding.base import SurfaceBinding
from ..landmarks.base import LandmarkTrack
from . import costs
from .config import FitConfig
from .model import BoundModel, matvec3, project
from .solver import lm_frames, lm_joint, lm_temporal

log = logging.getLogger(__name__)

BATCH_FRAMES = 256
BLOCK_FRAMES = 32
BLOCK_ELEMENTS = 1_300_000


@dataclass
class FitOutput:
    """Fitted parameters for every frame of the track (invalid frames interpolated).

    params: expr (T, E), jaw_pose / neck_pose / global_rot (T, 3) rad, eye_pose (T, 6) rad, transl (T, 3) m,
    eyelids (T, 2) when the model has them. shape (S,). focal px; K (3, 3). valid (T,). fit_error_px (T,)
    mean reprojection error of the frame's visible points (NaN on invalid frames). timings: seconds per stage.
    offsets (V, 3) m: per-vertex offsets of the neutral mesh (``FitConfig.vertex_offsets``) or None."""

    params: dict
    shape: np.ndarray
    focal: float
    K: np.ndarray
    valid: np.ndarray
    fit_error_px: np.ndarray
    n_points: int
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    offsets: np.ndarray | None = None   # (V, 3) metres, neutral frame, when vertex offsets were fitted


class Layout:
    """Per-frame parameter vector layout: [global_rot 3 | transl 3 | jaw 3 | neck 3? | eyes 4? | expr E |
    eyelids 2?]. Eyes are (pitch, yaw) per eye (axis-angle x, y; roll 0)."""

    def __init__(self, n_expr: int, jaw: bool = True, neck: bool = False, eyes: bool = False, lids: bool = False):
        self.E, self.jaw, self.neck, self.eyes, self.lids = n_expr, jaw, neck, eyes, lids
        self.slices: dict[str, slice] = {}
        o = 0
        for name, n, on in (("global_rot", 3, True), ("transl", 3, True), ("jaw_pose", 3, jaw),
                            ("neck_pose", 3, neck), ("eyes", 4, eyes), ("expr", n_expr, n_expr > 0),
                            ("eyelids", 2, lids)):
            if on:
                self.slices[name] = slice(o, o + n)
                o += n
        self.D = o
        rows = []
        for name, cols in (("global_rot", [0, 1, 2]), ("jaw_pose", [6, 7, 8]), ("neck_pose", [3, 4, 5]),
                           ("eyes", [9, 10, 12, 13])):
            if name in self.slices:
                rows += cols
        self.rot_dirs = torch.zeros(len(rows), 15)
        self.rot_dirs[torch.arange(len(rows)), torch.as_tensor(rows)] = 1.0
        self.n_rot = len(rows)
        self.rot_cols = [(j // 3, j % 3) for j in rows]

    def unpack(self, x: torch.Tensor, n_expr_model: int) -> tuple:
        """x (T, D) → rot15 (T, 15), transl (T, 3), expr (T, n_expr_model), eyelids (T, 2) or None."""
        T = x.shape[0]
        z = x.new_zeros
        s = self.slices
        parts = [x[:, s["global_rot"]], x[:, s["neck_pose"]] if self.neck else z(T, 3),
                 x[:, s["jaw_pose"]] if self.jaw else z(T, 3)]
        if self.eyes:
            e = x[:, s["eyes"]]
            parts += [e[:, 0:2], z(T, 1), e[:, 2:4], z(T, 1)]
        else:
            parts.append(z(T, 6))
        rot15 = torch.cat(parts, 1)
        expr = x[:, s["expr"]] if self.E > 0 else z(T, 0)
        if expr.shape[1] < n_expr_model:
            expr = torch.cat([expr, z(T, n_expr_model - expr.shape[1])], 1)
        lids = x[:, s["eyelids"]] if self.lids else None
        return rot15, x[:, s["transl"]], expr, lids

    def jac(self, d: dict, P: torch.Tensor) -> torch.Tensor:
        """Model Jacobians (see BoundModel.jacobians) + projection Jacobian P (T, R, 2, 3) → (T, R, 2, D)."""
        cols = [matvec3(P, d["d_rot"][..., :3]), P, matvec3(P, d["d_rot"][..., 3:])]
        if self.E > 0:
            cols.append(matvec3(P, d["d_expr"][..., : self.E]))
        if self.lids:
            cols.append(matvec3(P, d["d_eyelids"]))
        return torch.cat(cols, -1)

    def vector(self, weights: dict) -> torch.Tensor:
        """Per-parameter weights (D,) from a {block name: weight} dict (missing → 0)."""
        w = torch.zeros(self.D, dtype=torch.float64)
        for name, sl in self.slices.items():
            w[sl] = float(weights.get(name, 0.0))
        return w

    def embed(self, x: torch.Tensor, other: "Layout") -> torch.Tensor:
        """Copy the blocks of x (layout ``other``) into a zero vector of this layout."""
        out = x.new_zeros(x.shape[0], self.D)
        for name, sl in self.slices.items():
            if name in other.slices:
                src = other.slices[name]
                n = min(sl.stop - sl.start, src.stop - src.start)
                out[:, sl.start: sl.start + n] = x[:, src.start: src.start + n]
        return out


class Problem:
    """Observations of a set of frames and the cost pieces. obs (T, R, 2) px, inv_sigma (T, R), mask (T, R)."""

    def __init__(self, bm: BoundModel, cfg: FitConfig, obs: np.ndarray, sigma: np.ndarray, mask: np.ndarray,
                 cx: float, cy: float, dtype: torch.dtype):
        self.bm, self.cfg, self.cx, self.cy, self.dtype = bm, cfg, cx, cy, dtype
        self.obs = torch.as_tensor(obs, dtype=dtype)
        sig = np.where(np.isfinite(sigma) & (sigma > 0), sigma, cfg.default_sigma_px)
        self.inv_sigma = torch.as_tensor(1.0 / sig, dtype=dtype)
        self.mask = torch.as_tensor(mask, dtype=torch.bool)

    def subset(self, idx) -> "Problem":
        """The same points on a subset of frames."""
        p = Problem.__new__(Problem)
        p.__dict__.update(self.__dict__)
        p.obs, p.inv_sigma, p.mask = self.obs[idx], self.inv_sigma[idx], self.mask[idx]
        return p

    def with_model(self, bm: BoundModel) -> "Problem":
        """The same observations against another BoundModel on the same points (e.g. with offsets)."""
        p = Problem.__new__(Problem)
        p.__dict__.update(self.__dict__)
        p.bm = bm
        return p

    def points(self, cols: np.ndarray) -> "Problem":
        """The same frames on a subset of the bound points (cols (R',) indices into this problem's points)."""
        if cols.size == self.bm.U and np.array_equal(cols, np.arange(self.bm.U)):
            return self
        p = Problem.__new__(Problem)
        p.__dict__.update(self.__dict__)
        c = torch.as_tensor(cols)
        p.bm = self.bm.subset(cols)
        p.obs, p.inv_sigma, p.mask = self.obs[:, c], self.inv_sigma[:, c], self.mask[:, c]
        return p

    def _pred(self, lay: Layout, x: torch.Tensor, shape: torch.Tensor, focal: torch.Tensor):
        rot15, tr, expr, lids = lay.unpack(x.to(self.dtype), self.bm.n_expr)
        pts = self.bm.points(shape.to(self.dtype), expr, rot15, tr, lids)
        return pts

    def _blocks(self, T: int, n_cols: int = 48):
        """Frame blocks small enough that a block's Jacobian (frames × 2R × n_cols floats) stays in cache
        (measured ~3× less time per frame at 32 than at 200 frames of 404 points)."""
        n = int(np.clip(BLOCK_ELEMENTS // max(1, 2 * self.bm.U * n_cols), 4, BLOCK_FRAMES))
        return [slice(a, min(a + n, T)) for a in range(0, T, n)]

    def evaluate(self, lay: Layout, x, shape, focal, kernel: str, wx: torch.Tensor) -> torch.Tensor:
        """Per-frame cost (T,) float64: robust data + per-frame priors."""
        blocks = self._blocks(x.shape[0])
        if len(blocks) > 1:
            return torch.cat([self.subset(b)._evaluate(lay, x[b], shape, focal, kernel, wx) for b in blocks])
        return self._evaluate(lay, x, shape, focal, kernel, wx)

    def linearize(self, lay: Layout, x, shape, focal, kernel: str, wx: torch.Tensor, shared: bool = False,
                  log_focal: bool = False):
        """Cost (T,), H (T, D, D), g (T, D) [+ Hxs (T, D, Ds), Hss (Ds, Ds), gs (Ds,) for the shared vector
        (shape [, log f])], computed in frame blocks."""
        blocks = self._blocks(x.shape[0], lay.D + (self.bm.n_shape + 1 if shared else 0))
        if len(blocks) == 1:
            return self._linearize(lay, x, shape, focal, kernel, wx, shared, log_focal)
        parts = [self.subset(b)._linearize(lay, x[b], shape, focal, kernel, wx, shared, log_focal) for b in blocks]
        out = [torch.cat([p[k] for p in parts]) for k in range(3)]
        if shared:
            out += [torch.cat([p[3] for p in parts]), sum(p[4] for p in parts), sum(p[5] for p in parts)]
        return tuple(out)

    def _evaluate(self, lay: Layout, x, shape, focal, kernel: str, wx: torch.Tensor) -> torch.Tensor:
        pts = self._pred(lay, x, shape, focal)
        uv, _ = project(pts, focal.to(self.dtype), self.cx, self.cy)
        bad = ~(pts[..., 2] < -1e-3).all(-1)  # behind the camera: reject
        r = costs.data_residuals(uv, self.obs, self.inv_sigma, self.mask)
        c, _ = costs.data_cost(r, self.mask, kernel, self.cfg.robust_scale)
        c = c.double() + costs.prior_cost(x.double(), wx)
        return torch.where(bad, torch.full_like(c, float("inf")), c)

    def _linearize(self, lay: Layout, x, shape, focal, kernel: str, wx: torch.Tensor, shared: bool = False,
                   log_focal: bool = False):
        """One block: cost (T,), H (T, D, D), g (T, D) [+ Hxs, Hss, gs for the shared vector (shape [, log f])].

        One fused pass: projected Jacobians straight from the model (no (T, R, 3, ·) intermediates), IRLS
        weights folded into the rows, and one batched product for all normal-equation blocks."""
        rot15, tr, expr, lids = lay.unpack(x.to(self.dtype), self.bm.n_expr)
        f = focal.to(self.dtype)
        got: dict = {}

        def rows(uv):
            r = costs.data_residuals(uv, self.obs, self.inv_sigma, self.mask)
            c, w = costs.data_cost(r, self.mask, kernel, self.cfg.robust_scale)
            sw = torch.sqrt(w)
            got["c"] = c
            return self.inv_sigma * sw, r * sw[..., None]

        pj = self.bm.linearize_projected(shape.to(self.dtype), expr, rot15, tr, lids, f, self.cx, self.cy,
                                         lay.rot_cols, lay.E, lay.lids, want_shape=shared, log_focal=log_focal,
                                         rows=rows)
        T, R, _, Da = pj.J.shape
        Jq = pj.J.reshape(T, R * 2, Da)
        Hall = (Jq.transpose(1, 2) @ Jq).double()                               # [J | r]ᵀ[J | r]
        D = lay.D
        xd = x.double()
        H = Hall[:, :D, :D] + torch.diag_embed(wx.expand_as(xd))
        g = Hall[:, :D, -1] + wx * xd
        c = got["c"].double() + costs.prior_cost(xd, wx)
        if not shared:
            return c, H, g
        return c, H, g, Hall[:, :D, D:-1], Hall[:, D:-1, D:-1].sum(0), Hall[:, D:-1, -1].sum(0)

    def errors_px(self, lay: Layout, x, shape, focal) -> torch.Tensor:
        """Mean reprojection error per frame (T,) px over visible points (NaN if none), in frame blocks."""
        blocks = self._blocks(x.shape[0])
        if len(blocks) > 1:
            return torch.cat([self.subset(b)._errors_px(lay, x[b], shape, focal) for b in blocks])
        return self._errors_px(lay, x, shape, focal)

    def _errors_px(self, lay: Layout, x, shape, focal) -> torch.Tensor:
        pts = self._pred(lay, x, shape, focal)
        uv, _ = project(pts, focal.to(self.dtype), self.cx, self.cy)
        e = torch.linalg.norm(uv - torch.nan_to_num(self.obs), dim=-1)
        m = self.mask.to(e.dtype)
        n = m.sum(-1)
        return torch.where(n > 0, (e * m).sum(-1) / n.clamp_min(1), torch.full_like(n, float("nan")))


def _select_points(bm_full_pos: np.ndarray, n: int, keep: np.ndarray) -> np.ndarray:
    """Farthest-point subset of ``n`` rows of positions (R, 3), always including ``keep`` (bool (R,))."""
    R = bm_full_pos.shape[0]
    if n <= 0 or n >= R:
        return np.arange(R)
    chosen = list(np.flatnonzero(keep))
    d = np.full(R, np.inf)
    start = chosen if chosen else [0]
    for i in start:
        d = np.minimum(d, np.linalg.norm(bm_full_pos - bm_full_pos[i], axis=1))
    chosen = list(start)
    while len(chosen) < n:
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, np.linalg.norm(bm_full_pos - bm_full_pos[i], axis=1))
    return np.sort(np.unique(chosen))


def _interp_invalid(arr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill rows of arr (T, ...) where ``valid`` is False by linear interpolation in time (ends held)."""
    T = arr.shape[0]
    good = np.flatnonzero(valid)
    if good.size == T:
        return arr
    flat = arr.reshape(T, -1).astype(np.float64)
    t = np.arange(T)
    out = np.stack([np.interp(t, good, flat[good, k]) for k in range(flat.shape[1])], 1)
    return out.reshape(arr.shape)


def _keyframes(feat: np.ndarray, n: int) -> np.ndarray:
    """Farthest-point sampling in feature space, starting from the most neutral row."""
    if feat.shape[0] <= n:
        return np.arange(feat.shape[0])
    first = int(np.argmin(np.linalg.norm(feat, axis=1)))
    chosen = [first]
    d = np.linalg.norm(feat - feat[first], axis=1)
    while len(chosen) < n:
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, np.linalg.norm(feat - feat[i], axis=1))
    return np.sort(np.asarray(chosen))


def fit_track(track: LandmarkTrack, binding: SurfaceBinding, model: FlameModelData,
              config: FitConfig | None = None, shape_prior: np.ndarray | None = None,
              progress: ProgressCallback | None = None) -> FitOutput:
    """Fit FLAME to a landmark track. See the module docstring for the stages; returns a :class:`FitOutput`
    for all T frames. Raises :class:`FitError` when no frame can be fitted."""
    cfg = config or FitConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _fit_track(track, binding, model, cfg, shape_prior, progress)
    finally:
        torch.set_num_threads(threads)


def _fit_track(track: LandmarkTrack, binding: SurfaceBinding, model: FlameModelData, cfg: FitConfig,
               shape_prior: np.ndarray | None, progress: ProgressCallback | None) -> FitOutput:
    prog = progress or (lambda stage, frac, msg="": None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
    W, Hh = (int(v) for v in track.image_size)
    if W <= 0 or Hh <= 0:
        raise InputError(f"landmark track has image size {W}x{Hh}; expected positive width and height")
    T = track.n_frames
    if T < 1:
        raise FitError("the landmark track has no frames; check the frame range (--start/--end)")
    pidx = np.asarray(binding.point_index, dtype=np.int64)
    if pidx.size == 0 or pidx.min() < 0 or pidx.max() >= track.n_points:
        raise FitError(f"binding refers to points outside the track's {track.n_points} points; the binding "
                       f"and landmarks come from different aligners")
    # ---- model and point subset ------------------------------------------------------------------------
    bm_all = BoundModel(model, binding.face_idx, binding.bary, 1, 1, dtype=torch.float64)
    rest = bm_all.points(torch.zeros(1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64),
                         torch.zeros(1, 15, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))[0].numpy()
    eye_pt = bm_all.weights[:, 3:].sum(-1).numpy() > 0.5
    # point sets: all bound points (or final_points of them) for the final pass, max_points for tracking
    # and shape, rigid_points for the rigid init (farthest-point subsets of each other, eye points kept)
    rows = _select_points(rest, cfg.final_points, eye_pt)
    rows_track = rows[_select_points(rest[rows], cfg.max_points, eye_pt[rows])]
    rows_rigid = rows_track[_select_points(rest[rows_track], cfg.rigid_points, np.zeros(rows_track.size, bool))]
    bm = BoundModel(model, binding.face_idx[rows], binding.bary[rows], cfg.n_shape, cfg.n_expr, dtype=dtype)
    S, E = bm.n_shape, bm.n_expr
    use_eyes = cfg.fit_eyes and bool(eye_pt[rows].any())
    use_lids = cfg.fit_eyelids and bm.has_eyelids
    lay = Layout(E, jaw=True, neck=cfg.fit_neck, eyes=use_eyes, lids=use_lids)
    rigid = Layout(0, jaw=False)
    # ---- observations ----------------------------------------------------------------------------------
    obs = np.asarray(track.points)[:, pidx[rows]]          # kept in the track's dtype (float32): ~O(T) input only
    sig = np.asarray(track.sigma)[:, pidx[rows]]
    vis = np.asarray(track.visible, dtype=bool)[:, pidx[rows]]
    finite = np.isfinite(obs).all(-1)
    mask = vis & finite & np.asarray(track.valid, dtype=bool)[:, None]
    valid = mask.sum(1) >= cfg.min_points
    if not valid.any():
        raise FitError(f"no frame of {T} has a detected face with at least {cfg.min_points} landmarks; "
                       f"check the footage shows a face (or the --start/--end range)")
    vidx = np.flatnonzero(valid)
    cx, cy = W / 2.0, Hh / 2.0
    prob = Problem(bm, cfg, obs[vidx], sig[vidx], mask[vidx], cx, cy, dtype)
    pos = {int(r): i for i, r in enumerate(rows)}
    prob_track = prob.points(np.array([pos[int(r)] for r in rows_track]))
    prob_rigid = prob.points(np.array([pos[int(r)] for r in rows_rigid]))
    Tv = vidx.size
    # ---- camera + shared -------------------------------------------------------------------------------
    f0 = cfg.focal_px or (W / 2.0) / math.tan(math.radians(cfg.fov_init_deg) / 2.0)
    focal = torch.tensor(float(f0), dtype=torch.float64)
    shape = torch.zeros(S, dtype=torch.float64)
    prior = None
    if shape_prior is not None:
        sp = np.asarray(shape_prior, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(sp)):
            raise InputError("identity prior (shape_prior) has NaN values; re-run the identity estimate")
        prior = torch.zeros(S, dtype=torch.float64)
        n = min(S, sp.size)
        prior[:n] = torch.as_tensor(sp[:n])
        shape = prior.clone()
    w_prior = cfg.w_shape_prior if prior is not None else 0.0
    temporal_on = cfg.temporal and Tv >= 3
    wx = lay.vector({"jaw_pose": cfg.w_jaw, "neck_pose": cfg.w_neck, "eyes": cfg.w_eyes, "expr": cfg.w_expr,
                     "eyelids": cfg.w_eyelids})
    wx_rigid = rigid.vector({})
    prog("fit", 0.0, f"fitting {Tv} frames")

    def batches(n):
        for a in range(0, n, BATCH_FRAMES):
            yield slice(a, min(a + BATCH_FRAMES, n))

    def run_frames(L: Layout, x: torch.Tensor, w: torch.Tensor, kernel: str, iters: int, sh: torch.Tensor,
                   fr: float, frac0: float, frac1: float, stage: str, pr: Problem) -> torch.Tensor:
        out = x.clone()
        nb = max(1, math.ceil(Tv / BATCH_FRAMES))
        for bi, sl in enumerate(batches(Tv)):
            sub = pr.subset(sl)
            ft = torch.tensor(fr, dtype=torch.float64)
            xs, _, _ = lm_frames(
                x[sl], lambda z: sub.linearize(L, z, sh, ft, kernel, w),
                lambda z: sub.evaluate(L, z, sh, ft, kernel, w), iters, rtol=cfg.rtol)
            out[sl] = xs
            prog("fit", frac0 + (frac1 - frac0) * (bi + 1) / nb, f"{stage}: frames {sl.stop}/{Tv}")
        return out

    # ---- 1. rigid init ---------------------------------------------------------------------------------
    ts = time.perf_counter()
    rest_pts = prob_rigid.bm.points(shape.to(dtype), torch.zeros(1, E, dtype=dtype),
                                    torch.zeros(1, 15, dtype=dtype), torch.zeros(1, 3, dtype=dtype))[0].double().numpy()
    x_r = torch.zeros(Tv, rigid.D, dtype=torch.float64)
    m3 = rest_pts.mean(0)
    s3 = np.sqrt(((rest_pts[:, :2] - m3[:2]) ** 2).sum(1).mean())
    fval = float(focal)
    mk = prob_rigid.mask.numpy().astype(np.float64)                        # (Tv, R)
    o = np.nan_to_num(prob_rigid.obs.double().numpy())
    n_vis = mk.sum(1)
    c2 = (o * mk[..., None]).sum(1) / n_vis[:, None]                        # visible-point centroid (Tv, 2)
    s2 = np.sqrt((((o - c2[:, None]) ** 2).sum(-1) * mk).sum(1) / n_vis)
    z = -fval * s3 / np.maximum(s2, 1e-6)
    x_r[:, 3] = torch.as_tensor((c2[:, 0] - cx) * (-z) / fval - m3[0])
    x_r[:, 4] = torch.as_tensor((c2[:, 1] - cy) * z / fval - m3[1])
    x_r[:, 5] = torch.as_tensor(z - m3[2])
    x_r = run_frames(rigid, x_r, wx_rigid, cfg.robust, cfg.iters_rigid, shape, fval, 0.0, 0.15, "rigid",
                     prob_rigid)
    # rescue frames stuck in a bad basin: restart from the nearest good neighbour
    err = prob_rigid.errors_px(rigid, x_r, shape, focal).numpy()
    med = np.nanmedian(err)
    bad = ~(err <= max(3 * med, 5.0))
    if bad.any() and (~bad).any():
        good_i = np.flatnonzero(~bad)
        bad_i = np.flatnonzero(bad)
        near = good_i[np.argmin(np.abs(bad_i[:, None] - good_i[None]), axis=1)]
        sub = prob_rigid.subset(bad_i)
        x_try = x_r[near].clone()
        ft = focal
        x_try, _, _ = lm_frames(x_try, lambda z: sub.linearize(rigid, z, shape, ft, cfg.robust, wx_rigid),
                                lambda z: sub.evaluate(rigid, z, shape, ft, cfg.robust, wx_rigid), cfg.iters_rigid,
                                rtol=cfg.rtol)
        c_old = sub.evaluate(rigid, x_r[bad_i], shape, ft, cfg.robust, wx_rigid)
        c_new = sub.evaluate(rigid, x_try, shape, ft, cfg.robust, wx_rigid)
        better = c_new < c_old
        x_r[torch.as_tensor(bad_i)[better]] = x_try[better]
        log.debug("rigid rescue: %d/%d frames improved", int(better.sum()), bad_i.size)
    timings["rigid"] = time.perf_counter() - ts
    # ---- 2. per-frame tracking with the mean/prior shape ----------------------------------------------
    ts = time.perf_counter()
    x = lay.embed(x_r, rigid)
    x = run_frames(lay, x, wx, cfg.robust, max(2, cfg.iters_track // 2), shape, fval, 0.15, 0.3, "tracking",
                   prob_track)
    timings["track0"] = time.perf_counter() - ts
    # ---- 3. identity from keyframes (shape; focal fixed) -----------------------------------------------
    ts = time.perf_counter()
    sl_ = lay.slices
    feat = np.concatenate([x[:, sl_["global_rot"]].numpy() * 4.0, x[:, sl_["jaw_pose"]].numpy() * 4.0,
                           x[:, sl_["expr"]].numpy()[:, :10] * 0.5 if E > 0 else np.zeros((Tv, 0))], 1)
    kf = _keyframes(feat - np.median(feat, 0), cfg.n_keyframes)
    w_shape_vec = torch.full((S,), cfg.w_shape + w_prior, dtype=torch.float64)

    def shared_prior(s, with_f):
        sh = s[:S]
        c = cfg.w_shape * (sh * sh).sum()
        g = cfg.w_shape * sh
        if prior is not None and w_prior > 0:
            c = c + w_prior * ((sh - prior) ** 2).sum()
            g = g + w_prior * (sh - prior)
        H = torch.diag(w_shape_vec)
        if with_f:
            df = s[S] - math.log(f0)
            c = c + cfg.focal_prior_weight * df * df
            g = torch.cat([g, (cfg.focal_prior_weight * df).reshape(1)])
            H = torch.block_diag(H, torch.tensor([[cfg.focal_prior_weight]], dtype=torch.float64))
        return c, H, g

    def joint(sub: Problem, xs: torch.Tensor, s0: torch.Tensor, with_f: bool, kernel: str, iters: int):
        def unpack_s(s):
            return s[:S], (torch.exp(s[S]) if with_f else focal)

        def lin(xx, s):
            sh, fo = unpack_s(s)
            c, H, g, Hxs, Hss, gs = sub.linearize(lay, xx, sh, fo, kernel, wx, shared=True, log_focal=with_f)
            pc, pH, pg = shared_prior(s, with_f)
            return c.sum() + pc, H, g, Hxs, Hss + pH, gs + pg

        def ev(xx, s):
            sh, fo = unpack_s(s)
            return sub.evaluate(lay, xx, sh, fo, kernel, wx).sum() + shared_prior(s, with_f)[0]

        return lm_joint(xs, s0, lin, ev, iters, rtol=cfg.rtol)

    info_id = None
    if cfg.staged_identity:
        sub = prob_track.subset(torch.as_tensor(kf))
        x_kf, shape, info_id = joint(sub, x[kf], shape.clone(), False, cfg.robust, cfg.iters_identity)
        x[kf] = x_kf
        timings["identity"] = time.perf_counter() - ts
        prog("fit", 0.4, f"identity from {kf.size} keyframes")
        # ---- 4. per-frame tracking with the identity --------------------------------------------------
        ts = time.perf_counter()
        x = run_frames(lay, x, wx, cfg.robust, cfg.iters_track, shape, fval, 0.4, 0.6, "tracking", prob_track)
        timings["track"] = time.perf_counter() - ts
        ts = time.perf_counter()
    # ---- 5. joint refinement of shape (+ focal) over keyframes + an even subsample ---------------------
    with_f = cfg.estimate_focal and cfg.focal_px is None
    nj = min(Tv, cfg.max_joint_frames)
    jidx = np.unique(np.round(np.linspace(0, Tv - 1, nj)).astype(np.int64))
    if not cfg.staged_identity:   # single pass: identity comes from here, so the keyframes must take part
        spread = jidx[~np.isin(jidx, kf)]
        keep = max(0, nj - kf.size)
        jidx = np.union1d(kf, spread[np.round(np.linspace(0, spread.size - 1, keep)).astype(np.int64)]
                          if keep and spread.size else spread[:0])
    s0 = torch.cat([shape, torch.tensor([math.log(fval)], dtype=torch.float64)]) if with_f else shape.clone()
    sub = prob.subset(torch.as_tensor(jidx))
    x_j, s_new, info_j = joint(sub, x[jidx], s0, with_f, cfg.robust_final, cfg.iters_joint)
    shape = s_new[:S]
    if with_f:
        focal = torch.exp(s_new[S])
        fval = float(focal)
    x[jidx] = x_j
    timings["joint" if cfg.staged_identity else "identity"] = time.perf_counter() - ts
    prog("refine", 0.7, f"shape and focal refined on {jidx.size} frames (focal {fval:.0f} px)")
    # ---- 6. per-frame (+ temporal) refinement with the final shared parameters --------------------------
    ts = time.perf_counter()
    if temporal_on:
        tw = lay.vector(_temporal_weights(cfg, track.fps))
        x = _temporal_pass(prob, lay, x, vidx, shape, focal, wx, tw, cfg, prog)
    else:
        x = run_frames(lay, x, wx, cfg.robust_final, cfg.iters_temporal, shape, fval, 0.7, 0.95, "refine", prob)
    timings["refine"] = time.perf_counter() - ts
    # ---- 7. per-vertex offsets (optional): shared, smooth, small --------------------------------------
    offsets = None
    if cfg.vertex_offsets:
        ts = time.perf_counter()
        from .offsets import fit_offsets
        faces = np.asarray(model["faces"], dtype=np.int64)
        tri = faces[binding.face_idx[rows]]
        free = np.asarray(model["weights"])[:, 3:].sum(1) < 0.5          # eyeballs stay rigid
        offsets = fit_offsets(prob.subset(torch.as_tensor(jidx)), lay, x[jidx], shape, focal, faces,
                              model.n_vertices, tri, np.asarray(binding.bary[rows], dtype=np.float64), free,
                              cfg.robust_final, cfg.w_offsets_laplacian, cfg.w_offsets, cfg.max_offset_mm * 1e-3)
        blended = np.einsum("rk,rkc->rc", np.asarray(binding.bary[rows], dtype=np.float64), offsets[tri])
        bm_off = bm.subset(np.arange(bm.U))
        bm_off.tmpl = bm.tmpl + torch.as_tensor(blended, dtype=bm.tmpl.dtype)
        prob = prob.with_model(bm_off)
        timings["offsets"] = time.perf_counter() - ts
    # ---- outputs -----------------------------------------------------------------------------------------
    err_v = prob.errors_px(lay, x, shape, focal).numpy()
    err = np.full(T, np.nan)
    err[vidx] = err_v
    full = torch.zeros(T, lay.D, dtype=torch.float64)
    full[torch.as_tensor(vidx)] = x.double()
    xf = torch.as_tensor(_interp_invalid(full.numpy(), valid))
    rot15, tr, expr, lids = lay.unpack(xf, E)
    params = {"global_rot": rot15[:, 0:3].numpy(), "neck_pose": rot15[:, 3:6].numpy(),
              "jaw_pose": rot15[:, 6:9].numpy(), "eye_pose": rot15[:, 9:15].numpy(),
              "transl": tr.numpy(), "expr": expr.numpy()}
    if bm.has_eyelids:
        params["eyelids"] = lids.numpy() if lids is not None else np.zeros((T, 2))
    K = np.array([[fval, 0.0, cx], [0.0, fval, cy], [0.0, 0.0, 1.0]])
    timings["total"] = time.perf_counter() - t0
    prog("refine", 1.0, f"fit done: mean error {np.nanmean(err_v):.2f} px")
    log.info("fit: %d/%d frames, %.2f px mean error, focal %.0f px, %.1f ms/frame", Tv, T, np.nanmean(err_v),
             fval, 1e3 * timings["total"] / T)
    return FitOutput(params={k: np.asarray(v, dtype=np.float64) for k, v in params.items()},
                     shape=shape.numpy().astype(np.float64), focal=fval, K=K, valid=valid, fit_error_px=err,
                     n_points=int(rows.size), timings=timings, offsets=offsets,
                     info={"keyframes": vidx[kf].tolist(), "joint_frames": vidx[jidx].tolist(),
                           "identity_cost": ([info_id.cost_start, info_id.cost_end] if info_id else None),
                           "joint_cost": [info_j.cost_start, info_j.cost_end], "joint_iterations": info_j.iterations,
                           "n_expr": E, "n_shape": S})


def _temporal_weights(cfg: FitConfig, fps: float) -> dict:
    """Acceleration weights per block: 1/(typical per-frame noise of Δ²)², scaled to the frame rate
    (Δ² of a smooth motion shrinks with fps², so the weight grows with (fps/30)⁴, clamped)."""
    k = cfg.w_temporal * float(np.clip((fps / 30.0) ** 4, 0.05, 50.0))
    return {"global_rot": k / 0.01 ** 2, "transl": k / 0.003 ** 2, "jaw_pose": k / 0.03 ** 2,
            "neck_pose": k / 0.01 ** 2, "eyes": k / 0.1 ** 2, "expr": k / 0.4 ** 2, "eyelids": k / 2.0 ** 2}


def _temporal_pass(prob: Problem, lay: Layout, x: torch.Tensor, vidx: np.ndarray, shape, focal, wx, tw,
                   cfg: FitConfig, prog) -> torch.Tensor:
    """Windows of chunk_frames valid frames with chunk_overlap context each side; results kept from the
    window centre. Triples count in the acceleration term only where source frames are consecutive."""
    Tv = x.shape[0]
    step = cfg.chunk_frames - 2 * cfg.chunk_overlap
    out = x.clone()
    starts = list(range(0, Tv, step))
    for ci, a in enumerate(starts):
        b = min(a + step, Tv)
        lo, hi = max(0, a - cfg.chunk_overlap), min(Tv, b + cfg.chunk_overlap)
        idx = torch.arange(lo, hi)
        sub = prob.subset(idx)
        src = vidx[lo:hi]
        active = torch.as_tensor((src[2:] - src[:-2]) == 2) if hi - lo >= 3 else torch.zeros(0, dtype=torch.bool)
        xc = out[lo:hi].clone()   # left context already refined, right context from tracking
        xc, _ = lm_temporal(xc, lambda z: sub.linearize(lay, z, shape, focal, cfg.robust_final, wx),
                            lambda z: sub.evaluate(lay, z, shape, focal, cfg.robust_final, wx),
                            tw, active, cfg.iters_temporal, rtol=cfg.rtol)
        out[a:b] = xc[a - lo: b - lo]
        prog("refine", 0.7 + 0.25 * (ci + 1) / len(starts), f"refine: frames {b}/{Tv}")
    return out
