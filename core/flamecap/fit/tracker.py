"""The fitting stages. Entry point: :func:`fit_track`.

fast (single pass): rigid init (``rigid_points``) → per-frame tracking with the mean/prior shape
(``max_points``) → joint shape + focal on keyframes + an even spread (``max_joint_frames``, all points) →
the binding's sliding rows (contour points such as the inner lips) placed for the clip → final per-frame pass
with the temporal term (all points).
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
from typing import Callable

import numpy as np
import torch

from ..contract.events import ProgressCallback
from ..contract.model_format import FlameModelData
from ..contract.npzio import release_pages
from ..errors import FitError, InputError
from ..binding.base import SurfaceBinding
from ..landmarks.base import LandmarkTrack
from . import costs
from .config import FitConfig
from .model import BoundModel, matvec3, project
from .solver import lm_frames, lm_joint, lm_temporal

log = logging.getLogger(__name__)

BATCH_FRAMES = 256
FOCAL_PROFILE_STEP = 1.15       # see stage_focal
FOCAL_PROFILE_MIN_GAIN = 4.0    # robust cost (χ² units) a focal FOCAL_PROFILE_STEP off must add: 2σ
FOCAL_MIN_TURN_DEG = 20.0       # without turning, face depth and size trade off against the focal
FOCAL_PROFILE_FRAMES = 12       # of the joint frames, evenly spread
SLIDE_FRAMES = 120              # frames (evenly spread) that place the sliding binding rows
SLIDE_SIGMA_M = 0.003           # prior on sliding a row: 3 mm costs what a 1σ residual costs in every frame
FOCAL_PROFILE_ITERS = 2          # LM iterations per profile point (warm-started from its neighbour)
BLOCK_FRAMES = 32
BLOCK_ELEMENTS = 1_300_000


@dataclass
class FitOutput:
    """Fitted parameters for every frame of the track (invalid frames interpolated).

    params: expr (T, E), jaw_pose / neck_pose / global_rot (T, 3) rad, eye_pose (T, 6) rad, transl (T, 3) m,
    eyelids (T, 2) when the model has them. shape (S,). focal px; K (3, 3). valid (T,). landmark_residual_px
    (T,): mean distance of the frame's fitted points to the detector's visible points (NaN on invalid frames).
    timings: seconds per stage.
    offsets (V, 3) m: per-vertex offsets of the neutral mesh (``FitConfig.vertex_offsets``) or None.
    binding: the binding the final pass fitted with (sliding rows placed for this clip, :func:`stage_slide`)."""

    params: dict
    shape: np.ndarray
    focal: float
    K: np.ndarray
    valid: np.ndarray
    landmark_residual_px: np.ndarray
    n_points: int
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    offsets: np.ndarray | None = None   # (V, 3) metres, neutral frame, when vertex offsets were fitted
    binding: SurfaceBinding | None = None


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

    def prior(self, weights: dict, w_vergence: float = 0.0) -> torch.Tensor:
        """Per-frame prior matrix Q (D, D), cost xᵀQx: the diagonal of :meth:`vector` plus ``w_vergence`` on the
        difference of the two eyes' pitch and yaw (the eyes look at one point: a few px of iris noise on one
        eye must not turn it alone)."""
        Q = torch.diag(self.vector(weights))
        if self.eyes and w_vergence > 0:
            o = self.slices["eyes"].start
            for a, b in ((o, o + 2), (o + 1, o + 3)):
                Q[a, a] += w_vergence
                Q[b, b] += w_vergence
                Q[a, b] -= w_vergence
                Q[b, a] -= w_vergence
        return Q

    def embed(self, x: torch.Tensor, other: "Layout") -> torch.Tensor:
        """Copy the blocks of x (layout ``other``) into a zero vector of this layout."""
        out = x.new_zeros(x.shape[0], self.D)
        for name, sl in self.slices.items():
            if name in other.slices:
                src = other.slices[name]
                n = min(sl.stop - sl.start, src.stop - src.start)
                out[:, sl.start: sl.start + n] = x[:, src.start: src.start + n]
        return out


def gather_observations(track: LandmarkTrack, frames: np.ndarray, cols: np.ndarray,
                        default_sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The track's observations of ``frames`` (n,) at its points ``cols`` (R,): obs (n, R, 2) px as stored
    (NaN where missing), σ (n, R) px (``default_sigma`` where unknown) and mask (n, R): visible, finite and
    on a frame with a face."""
    sel = np.ix_(frames, cols)
    obs = np.asarray(track.points)[sel]
    sig = np.asarray(track.sigma)[sel].astype(np.float32, copy=False)   # stored as float16 (TrackRows)
    sig = np.where(np.isfinite(sig) & (sig > 0), sig, np.float32(default_sigma))
    mask = (np.asarray(track.visible, dtype=bool)[sel] & np.isfinite(obs).all(-1)
            & np.asarray(track.valid, dtype=bool)[frames][:, None])
    release_pages(track.points, track.sigma, track.visible)   # a spilled track stays on disk between reads
    return obs, sig, mask


class Problem:
    """Observations of a set of frames and the cost pieces.

    The observations stay in the track's arrays: a Problem holds frame and point indices into them and
    gathers obs (T, R, 2) px, inv_sigma (T, R) and mask (T, R) when a cost asks, so memory stays flat in
    clip length (no (T, R) copies of an hour-long track). Problems of at most BATCH_FRAMES frames keep what
    they gathered, because the LM revisits the same frames every iteration; their subsets slice it."""

    def __init__(self, bm: BoundModel, cfg: FitConfig, track: LandmarkTrack, frames: np.ndarray, cols: np.ndarray,
                 cx: float, cy: float, dtype: torch.dtype):
        self.bm, self.cfg, self.cx, self.cy, self.dtype = bm, cfg, cx, cy, dtype
        self.track, self.frames, self.cols = track, np.asarray(frames, np.int64), np.asarray(cols, np.int64)
        self._arrays: tuple | None = None

    def _derive(self, **changes) -> "Problem":
        p = Problem.__new__(Problem)
        p.__dict__.update(self.__dict__)
        p._arrays = None
        p.__dict__.update(changes)
        return p

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(obs, inv_sigma, mask) of this problem's frames and points, gathered from the track."""
        if self._arrays is not None:
            return self._arrays
        obs, sig, mask = gather_observations(self.track, self.frames, self.cols, self.cfg.default_sigma_px)
        out = (torch.as_tensor(obs, dtype=self.dtype), torch.as_tensor(1.0 / sig, dtype=self.dtype),
               torch.as_tensor(mask, dtype=torch.bool))
        if self.frames.size <= BATCH_FRAMES:
            self._arrays = out
        return out

    @property
    def obs(self) -> torch.Tensor:
        return self.arrays()[0]

    @property
    def inv_sigma(self) -> torch.Tensor:
        return self.arrays()[1]

    @property
    def mask(self) -> torch.Tensor:
        return self.arrays()[2]

    def subset(self, idx) -> "Problem":
        """The same points on a subset of frames (slice or indices into this problem's frames)."""
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        p = self._derive(frames=self.frames[idx])
        if self._arrays is not None:
            p._arrays = tuple(a[idx] for a in self._arrays)
        return p

    def with_model(self, bm: BoundModel) -> "Problem":
        """The same observations against another BoundModel on the same points (e.g. with offsets)."""
        p = self._derive(bm=bm)
        p._arrays = self._arrays
        return p

    def points(self, cols: np.ndarray) -> "Problem":
        """The same frames on a subset of the bound points (cols (R',) indices into this problem's points)."""
        if cols.size == self.bm.U and np.array_equal(cols, np.arange(self.bm.U)):
            return self
        return self._derive(bm=self.bm.subset(cols), cols=self.cols[cols])

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
        c = c.double() + costs.quadratic_prior(x.double(), wx)
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
        H = Hall[:, :D, :D] + wx
        g = Hall[:, :D, -1] + xd @ wx
        c = got["c"].double() + costs.quadratic_prior(xd, wx)
        if not shared:
            return c, H, g
        return c, H, g, Hall[:, :D, D:-1], Hall[:, D:-1, D:-1].sum(0), Hall[:, D:-1, -1].sum(0)

    def point_costs(self, lay: Layout, x, shape, focal, kernel: str) -> torch.Tensor:
        """Robust data cost of each point (R,) float64, mean over the frames that observe it (NaN: none)."""
        total = torch.zeros(self.bm.U, dtype=torch.float64)
        seen = torch.zeros(self.bm.U, dtype=torch.float64)
        for b in self._blocks(x.shape[0]):
            p = self.subset(b)
            uv, _ = project(p._pred(lay, x[b], shape, focal), focal.to(self.dtype), self.cx, self.cy)
            r = costs.data_residuals(uv, p.obs, p.inv_sigma, p.mask)
            rho, _ = costs.robust((r * r).sum(-1), kernel, self.cfg.robust_scale)
            m = p.mask.double()
            total += (rho.double() * m).sum(0)
            seen += m.sum(0)
        return torch.where(seen > 0, total / seen.clamp_min(1), torch.full_like(seen, float("nan")))

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


def best_candidates(group: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Index of the lowest ``cost`` within each value of ``group`` (N,), in increasing group order; ties go
    to the earlier index."""
    order = np.lexsort((np.arange(len(group)), cost, group))
    first = np.r_[True, group[order][1:] != group[order][:-1]]
    return order[first]


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


@dataclass
class FitState:
    """What the stages of :func:`fit_track` share and update. Per-frame vectors ``x`` are over the valid
    frames ``vidx`` only (Tv of them); ``shape`` (S,), ``focal`` (scalar tensor, px)."""

    cfg: FitConfig
    track: LandmarkTrack
    model: FlameModelData
    binding: SurfaceBinding
    prog: Callable
    bm: BoundModel
    rows: np.ndarray                 # bound-point rows the fit uses
    lay: Layout
    rigid: Layout
    prob: Problem                    # all fitted points
    prob_track: Problem              # tracking / shape subset
    prob_rigid: Problem              # rigid-init subset
    valid: np.ndarray                # (T,) frames with enough points
    vidx: np.ndarray                 # (Tv,) their indices
    wx: torch.Tensor                 # per-frame prior matrix (D, D)
    wx_rigid: torch.Tensor
    f0: float
    focal: torch.Tensor
    shape: torch.Tensor
    prior: torch.Tensor | None
    w_prior: float
    x: torch.Tensor | None = None
    kf: np.ndarray | None = None
    jidx: np.ndarray | None = None
    info_id: object = None
    info_j: object = None
    offsets: np.ndarray | None = None
    focal_observable: bool | None = None   # estimated focal: does the clip determine it (stage_focal)
    focal_profile: dict | None = None
    slid_mm: dict | None = None            # sliding rows: point → distance moved (stage_slide)
    timings: dict = field(default_factory=dict)

    @property
    def Tv(self) -> int:
        return int(self.vidx.size)

    @property
    def S(self) -> int:
        return self.bm.n_shape


def _fit_track(track: LandmarkTrack, binding: SurfaceBinding, model: FlameModelData, cfg: FitConfig,
               shape_prior: np.ndarray | None, progress: ProgressCallback | None) -> FitOutput:
    t0 = time.perf_counter()
    st = prepare(track, binding, model, cfg, shape_prior, progress)
    st.prog("fit", 0.0, f"fitting {st.Tv} frames")
    _timed(st, "rigid", stage_rigid)
    _timed(st, "track0", lambda s: stage_track(s, max(2, cfg.iters_track // 2), 0.15, 0.3))
    if cfg.staged_identity:
        _timed(st, "identity", stage_identity)
        _timed(st, "track", lambda s: stage_track(s, cfg.iters_track, 0.4, 0.6))
    _timed(st, "joint" if cfg.staged_identity else "identity", stage_joint)
    if cfg.estimate_focal and cfg.focal_px is None:
        _timed(st, "focal", stage_focal)
    _timed(st, "slide", stage_slide)
    _timed(st, "refine", stage_refine)
    if cfg.vertex_offsets:
        _timed(st, "offsets", stage_offsets)
    st.timings["total"] = time.perf_counter() - t0
    return outputs(st)


def _timed(st: FitState, name: str, stage: Callable[[FitState], None]) -> None:
    t = time.perf_counter()
    stage(st)
    st.timings[name] = time.perf_counter() - t


def _countable_frames(track: LandmarkTrack, cols: np.ndarray, cfg: FitConfig, chunk: int = 4096) -> np.ndarray:
    """(T,) frames with at least ``min_points`` usable observations among ``cols``, in chunks of frames
    (an hour-long track is never gathered whole)."""
    T = track.n_frames
    ok = np.zeros(T, dtype=bool)
    for a in range(0, T, chunk):
        fr = np.arange(a, min(a + chunk, T))
        ok[fr] = gather_observations(track, fr, cols, cfg.default_sigma_px)[2].sum(1) >= cfg.min_points
    return ok


def prepare(track: LandmarkTrack, binding: SurfaceBinding, model: FlameModelData, cfg: FitConfig,
            shape_prior: np.ndarray | None = None, progress: ProgressCallback | None = None) -> FitState:
    """Check the inputs, choose the point subsets, gather the observations of the valid frames, and set the
    camera and identity starting values."""
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
    # point sets: all bound points (or final_points of them) for the final pass, max_points for tracking
    # and shape, rigid_points for the rigid init (farthest-point subsets of each other, eye points kept)
    bm_all = BoundModel(model, binding.face_idx, binding.bary, 1, 1, dtype=torch.float64)
    rest = bm_all.points(torch.zeros(1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64),
                         torch.zeros(1, 15, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))[0].numpy()
    eye_pt = bm_all.weights[:, 3:].sum(-1).numpy() > 0.5
    rows = _select_points(rest, cfg.final_points, eye_pt)
    rows_track = rows[_select_points(rest[rows], cfg.max_points, eye_pt[rows])]
    rows_rigid = rows_track[_select_points(rest[rows_track], cfg.rigid_points, np.zeros(rows_track.size, bool))]
    bm = BoundModel(model, binding.face_idx[rows], binding.bary[rows], cfg.n_shape, cfg.n_expr, dtype=dtype)
    lay = Layout(bm.n_expr, jaw=True, neck=cfg.fit_neck, eyes=cfg.fit_eyes and bool(eye_pt[rows].any()),
                 lids=cfg.fit_eyelids and bm.has_eyelids)
    rigid = Layout(0, jaw=False)
    cols = pidx[rows]
    valid = _countable_frames(track, cols, cfg)
    if not valid.any():
        raise FitError(f"no frame of {T} has a detected face with at least {cfg.min_points} landmarks; "
                       f"check the footage shows a face (or the --start/--end range)")
    vidx = np.flatnonzero(valid)
    prob = Problem(bm, cfg, track, vidx, cols, W / 2.0, Hh / 2.0, dtype)
    pos = {int(r): i for i, r in enumerate(rows)}
    f0 = cfg.focal_px or (W / 2.0) / math.tan(math.radians(cfg.fov_init_deg) / 2.0)
    S = bm.n_shape
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
    wx = lay.prior({"jaw_pose": cfg.w_jaw, "neck_pose": cfg.w_neck, "eyes": cfg.w_eyes, "expr": cfg.w_expr,
                    "eyelids": cfg.w_eyelids}, cfg.w_vergence)
    return FitState(cfg=cfg, track=track, model=model, binding=binding,
                    prog=progress or (lambda stage, frac, msg="": None), bm=bm, rows=rows, lay=lay, rigid=rigid,
                    prob=prob, prob_track=prob.points(np.array([pos[int(r)] for r in rows_track])),
                    prob_rigid=prob.points(np.array([pos[int(r)] for r in rows_rigid])), valid=valid, vidx=vidx,
                    wx=wx, wx_rigid=rigid.prior({}), f0=float(f0), focal=torch.tensor(float(f0), dtype=torch.float64),
                    shape=shape, prior=prior, w_prior=cfg.w_shape_prior if prior is not None else 0.0)


def run_frames(st: FitState, L: Layout, x: torch.Tensor, w: torch.Tensor, kernel: str, iters: int,
               pr: Problem, frac: tuple[float, float] = (0.0, 0.0), stage: str = "") -> torch.Tensor:
    """Independent per-frame LM over ``pr``'s frames in batches of BATCH_FRAMES (shape and focal fixed).
    Updates ``x`` (Tv, D) in place and returns it: batches are disjoint, and a second (Tv, D) copy is most
    of the fitter's memory on an hour of footage."""
    out = x
    n = x.shape[0]
    nb = max(1, math.ceil(n / BATCH_FRAMES))
    ft = st.focal.clone()
    for bi, a in enumerate(range(0, n, BATCH_FRAMES)):
        sl = slice(a, min(a + BATCH_FRAMES, n))
        sub = pr.subset(sl)
        out[sl], _, _ = lm_frames(x[sl], lambda z: sub.linearize(L, z, st.shape, ft, kernel, w),
                                  lambda z: sub.evaluate(L, z, st.shape, ft, kernel, w), iters, rtol=st.cfg.rtol)
        if stage:
            st.prog("fit", frac[0] + (frac[1] - frac[0]) * (bi + 1) / nb, f"{stage}: frames {sl.stop}/{n}")
    return out


def _centroid_spread(obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: centroid (T, 2) and RMS radius (T,) of the visible points of obs (T, R, 2)."""
    mk = mask.astype(np.float64)
    o = np.nan_to_num(obs)
    n_vis = mk.sum(1)
    c2 = (o * mk[..., None]).sum(1) / n_vis[:, None]
    return c2, np.sqrt((((o - c2[:, None]) ** 2).sum(-1) * mk).sum(1) / n_vis)


def rigid_init(st: FitState) -> torch.Tensor:
    """Closed-form start per frame: the neutral face's visible-point centroid and spread → translation
    (rotation zero), (Tv, 6) in the rigid layout."""
    pr, f = st.prob_rigid, float(st.focal)
    rest = pr.bm.points(st.shape.to(pr.dtype), torch.zeros(1, pr.bm.n_expr, dtype=pr.dtype),
                        torch.zeros(1, 15, dtype=pr.dtype), torch.zeros(1, 3, dtype=pr.dtype))[0].double().numpy()
    m3 = rest.mean(0)
    s3 = np.sqrt(((rest[:, :2] - m3[:2]) ** 2).sum(1).mean())
    c2, s2 = np.empty((st.Tv, 2)), np.empty(st.Tv)
    for a in range(0, st.Tv, 4096):
        sub = pr.subset(slice(a, a + 4096))
        c2[a:a + 4096], s2[a:a + 4096] = _centroid_spread(sub.obs.double().numpy(), sub.mask.numpy())
    z = -f * s3 / np.maximum(s2, 1e-6)
    x = torch.zeros(st.Tv, st.rigid.D, dtype=torch.float64)
    x[:, 3] = torch.as_tensor((c2[:, 0] - pr.cx) * (-z) / f - m3[0])
    x[:, 4] = torch.as_tensor((c2[:, 1] - pr.cy) * z / f - m3[1])
    x[:, 5] = torch.as_tensor(z - m3[2])
    return x


def stage_rigid(st: FitState) -> None:
    """Head pose per frame from the rigid points; frames stuck in a bad basin restart from the nearest good
    neighbour and keep whichever is better. Sets ``st.x`` (full layout, non-rigid blocks zero)."""
    cfg, rig, pr = st.cfg, st.rigid, st.prob_rigid
    x_r = run_frames(st, rig, rigid_init(st), st.wx_rigid, cfg.robust, cfg.iters_rigid, pr, (0.0, 0.15), "rigid")
    err = pr.errors_px(rig, x_r, st.shape, st.focal).numpy()
    bad = ~(err <= max(3 * np.nanmedian(err), 5.0))
    if bad.any() and (~bad).any():
        good_i, bad_i = np.flatnonzero(~bad), np.flatnonzero(bad)
        near = good_i[np.argmin(np.abs(bad_i[:, None] - good_i[None]), axis=1)]
        sub = pr.subset(bad_i)
        x_try = run_frames(st, rig, x_r[near].clone(), st.wx_rigid, cfg.robust, cfg.iters_rigid, sub)
        c_old = sub.evaluate(rig, x_r[bad_i], st.shape, st.focal, cfg.robust, st.wx_rigid)
        c_new = sub.evaluate(rig, x_try, st.shape, st.focal, cfg.robust, st.wx_rigid)
        better = c_new < c_old
        x_r[torch.as_tensor(bad_i)[better]] = x_try[better]
        log.debug("rigid rescue: %d/%d frames improved", int(better.sum()), bad_i.size)
    st.x = st.lay.embed(x_r, rig)


def stage_track(st: FitState, iters: int, frac0: float, frac1: float) -> None:
    """Per-frame tracking of every per-frame parameter with the current shape and focal."""
    st.x = run_frames(st, st.lay, st.x, st.wx, st.cfg.robust, iters, st.prob_track, (frac0, frac1), "tracking")


def keyframes(st: FitState) -> np.ndarray:
    """Frames spread in head pose, jaw and expression (farthest-point sampling, most neutral first)."""
    sl, E = st.lay.slices, st.lay.E
    x = st.x
    feat = np.concatenate([x[:, sl["global_rot"]].numpy() * 4.0, x[:, sl["jaw_pose"]].numpy() * 4.0,
                           x[:, sl["expr"]].numpy()[:, :10] * 0.5 if E > 0 else np.zeros((st.Tv, 0))], 1)
    return _keyframes(feat - np.median(feat, 0), st.cfg.n_keyframes)


def shared_prior(st: FitState, s: torch.Tensor, with_f: bool):
    """Cost, Hessian and gradient of the shared vector's priors: shape (+ identity prior) [+ log-focal]."""
    cfg, S = st.cfg, st.S
    sh = s[:S]
    c = cfg.w_shape * (sh * sh).sum()
    g = cfg.w_shape * sh
    if st.prior is not None and st.w_prior > 0:
        c = c + st.w_prior * ((sh - st.prior) ** 2).sum()
        g = g + st.w_prior * (sh - st.prior)
    H = torch.diag(torch.full((S,), cfg.w_shape + st.w_prior, dtype=torch.float64))
    if with_f:
        df = s[S] - math.log(st.f0)
        c = c + cfg.focal_prior_weight * df * df
        g = torch.cat([g, (cfg.focal_prior_weight * df).reshape(1)])
        H = torch.block_diag(H, torch.tensor([[cfg.focal_prior_weight]], dtype=torch.float64))
    return c, H, g


def joint_fit(st: FitState, sub: Problem, xs: torch.Tensor, s0: torch.Tensor, with_f: bool, kernel: str,
              iters: int, focal: torch.Tensor | None = None):
    """LM over per-frame vectors ``xs`` and the shared vector s0 = [shape | log f?] together (the focal fixed
    at ``focal``, default the current one, unless ``with_f``)."""
    S = st.S
    fixed = st.focal if focal is None else focal

    def unpack_s(s):
        return s[:S], (torch.exp(s[S]) if with_f else fixed)

    def lin(xx, s):
        sh, fo = unpack_s(s)
        c, H, g, Hxs, Hss, gs = sub.linearize(st.lay, xx, sh, fo, kernel, st.wx, shared=True, log_focal=with_f)
        pc, pH, pg = shared_prior(st, s, with_f)
        return c.sum() + pc, H, g, Hxs, Hss + pH, gs + pg

    def ev(xx, s):
        sh, fo = unpack_s(s)
        return sub.evaluate(st.lay, xx, sh, fo, kernel, st.wx).sum() + shared_prior(st, s, with_f)[0]

    return lm_joint(xs, s0, lin, ev, iters, rtol=st.cfg.rtol)


def stage_identity(st: FitState) -> None:
    """Shape from the keyframes, focal fixed (production)."""
    st.kf = keyframes(st)
    kf = torch.as_tensor(st.kf)
    st.x[kf], st.shape, st.info_id = joint_fit(st, st.prob_track.subset(kf), st.x[kf], st.shape.clone(), False,
                                               st.cfg.robust, st.cfg.iters_identity)
    st.prog("fit", 0.4, f"identity from {st.kf.size} keyframes")


def joint_frames(st: FitState) -> np.ndarray:
    """Frames of the joint shape/focal stage: an even spread of ``max_joint_frames``; in a single pass, where
    identity comes from here, the keyframes and an even spread of the rest."""
    cfg, Tv = st.cfg, st.Tv
    nj = min(Tv, cfg.max_joint_frames)
    jidx = np.unique(np.round(np.linspace(0, Tv - 1, nj)).astype(np.int64))
    if cfg.staged_identity:
        return jidx
    st.kf = keyframes(st)
    spread = jidx[~np.isin(jidx, st.kf)]
    keep = max(0, nj - st.kf.size)
    return np.union1d(st.kf, spread[np.round(np.linspace(0, spread.size - 1, keep)).astype(np.int64)]
                      if keep and spread.size else spread[:0])


def stage_joint(st: FitState) -> None:
    """Shape (+ focal, unless given) refined jointly with the per-frame parameters of :func:`joint_frames`."""
    cfg = st.cfg
    with_f = cfg.estimate_focal and cfg.focal_px is None
    st.jidx = joint_frames(st)
    S = st.S
    s0 = torch.cat([st.shape, torch.log(st.focal).reshape(1)]) if with_f else st.shape.clone()
    j = torch.as_tensor(st.jidx)
    x_j, s_new, st.info_j = joint_fit(st, st.prob.subset(j), st.x[j], s0, with_f, cfg.robust_final,
                                      cfg.iters_joint)
    st.shape = s_new[:S]
    if with_f:
        st.focal = torch.exp(s_new[S])
    st.x[j] = x_j
    st.prog("refine", 0.7, f"shape and focal refined on {st.jidx.size} frames (focal {float(st.focal):.0f} px)")


def stage_focal(st: FitState) -> None:
    """The focal by its profile: the joint fit on FOCAL_PROFILE_FRAMES of the joint frames redone with the
    focal fixed on a grid of ratios FOCAL_PROFILE_STEP apart (shape and per-frame parameters free,
    warm-started from the nearest grid point), walked downhill from the joint stage's estimate, then a
    parabola through the lowest three; the joint frames are then refit at the best focal.
    The joint LM alone stops early along the focal: a talking head seen from the front fits nearly as well
    at any focal (depth and face size trade off), so the cost valley is long and flat.

    Observable when both neighbours of the lowest grid point fit worse by at least FOCAL_PROFILE_MIN_GAIN
    of robust cost (the focal then known to within about ±FOCAL_PROFILE_STEP) and the head turns through at
    least FOCAL_MIN_TURN_DEG: a still head fits the profile's neighbours worse only through the priors on
    shape and expression, which bias the focal as much as the data pin it."""
    cfg = st.cfg
    pick = np.unique(np.round(np.linspace(0, st.jidx.size - 1, min(st.jidx.size, FOCAL_PROFILE_FRAMES))))
    j = torch.as_tensor(st.jidx[pick.astype(np.int64)])
    sub = st.prob.subset(j)
    lf0, step = math.log(float(st.focal)), math.log(FOCAL_PROFILE_STEP)
    grid: dict[float, tuple[float, torch.Tensor, torch.Tensor]] = {}
    tsl = st.lay.slices["transl"]

    def prior_f(lf: float) -> float:
        return cfg.focal_prior_weight * (lf - math.log(st.f0)) ** 2

    def at(n: float):
        if n not in grid:
            near = min(grid, key=lambda m: abs(m - n))
            x0 = grid[near][1].clone()
            x0[:, tsl] *= math.exp((n - near) * step)   # the same image: k times the focal, k times as far
            lf = lf0 + n * step
            x, sh, info = joint_fit(st, sub, x0, grid[near][2].clone(), False, cfg.robust_final,
                                    FOCAL_PROFILE_ITERS, focal=torch.tensor(math.exp(lf), dtype=torch.float64))
            grid[n] = (info.cost_end + prior_f(lf), x, sh)
        return grid[n][0]

    # every grid point, the start included, gets the same refit on the same frames, so costs compare
    x, sh, info = joint_fit(st, sub, st.x[j], st.shape.clone(), False, cfg.robust_final, FOCAL_PROFILE_ITERS)
    grid[0] = (info.cost_end + prior_f(lf0), x, sh)
    n = 0
    d = -1 if at(-1) < at(1) else 1
    lo, hi = (math.log(v) - lf0 for v in _focal_range(st))
    while at(n + d) < at(n) and lo <= (n + 2 * d) * step <= hi:
        n += d
    cm, c0, cp = at(n - 1), at(n), at(n + 1)
    den = cm - 2 * c0 + cp
    t = float(np.clip(0.5 * (cm - cp) / den, -1.0, 1.0)) if den > 0 else 0.0
    if abs(t) > 1e-3:
        at(n + t)
    best = min(grid, key=lambda m: grid[m][0])
    if best != 0:    # every frame moved to the new focal's depth; shape and joint frames refit there
        st.x[:, tsl] *= math.exp(best * step)
        st.focal = torch.tensor(math.exp(lf0 + best * step), dtype=torch.float64)
        ja = torch.as_tensor(st.jidx)
        st.x[ja], st.shape, _ = joint_fit(st, st.prob.subset(ja), st.x[ja], grid[best][2].clone(), False,
                                          cfg.robust_final, cfg.iters_joint)
    gain = min(cm, cp) - c0
    turn = _turn_range_deg(st)
    st.focal_observable = bool(gain >= FOCAL_PROFILE_MIN_GAIN and turn >= FOCAL_MIN_TURN_DEG)
    st.focal_profile = {"gain": round(float(gain), 3), "turn_deg": round(turn, 1), "evaluations": len(grid)}
    st.prog("refine", 0.72, f"focal {float(st.focal):.0f} px"
            f"{'' if st.focal_observable else ' (not observable from this clip: pass the lens)'}")


def _turn_range_deg(st: FitState) -> float:
    """How far the head turns over the clip: the larger 5–95 % range of its pitch and yaw, degrees."""
    r = st.x[:, st.lay.slices["global_rot"]].double().numpy()[:, :2]
    return float(np.degrees(np.max(np.percentile(r, 95, axis=0) - np.percentile(r, 5, axis=0))))


def _focal_range(st: FitState) -> tuple[float, float]:
    """Focal lengths the search may reach: horizontal fields of view from 100° down to 8°."""
    half_w = st.prob.cx
    return half_w / math.tan(math.radians(50.0)), half_w / math.tan(math.radians(4.0))


def stage_slide(st: FitState) -> None:
    """Sliding binding rows (:class:`SurfaceBinding`) placed for this clip: each row takes the candidate place
    whose points fit the tracked frames best (mean robust cost per observed frame, ``cfg.robust``) plus
    (moved distance / SLIDE_SIGMA_M)²; the final pass then fits with them."""
    b, cfg = st.binding, st.cfg
    use = np.isin(b.slide_row, st.rows)
    if not use.any():
        return
    moving = np.unique(b.slide_row[use])
    cand_row = np.concatenate([moving, b.slide_row[use]])           # the current place first
    cand_f = np.concatenate([b.face_idx[moving], b.slide_face_idx[use]])
    cand_b = np.concatenate([b.bary[moving], b.slide_bary[use]])
    frames = np.unique(np.round(np.linspace(0, st.Tv - 1, min(st.Tv, SLIDE_FRAMES))).astype(np.int64))
    bm_c = BoundModel(st.model, cand_f, cand_b, cfg.n_shape, cfg.n_expr, dtype=st.bm.dtype)
    pr = Problem(bm_c, cfg, st.track, st.vidx[frames], b.point_index[cand_row], st.prob.cx, st.prob.cy,
                 st.prob.dtype)
    fit = pr.point_costs(st.lay, st.x[torch.as_tensor(frames)], st.shape, st.focal, cfg.robust).numpy()
    rest = bm_c.tmpl.double().numpy()
    moved = np.linalg.norm(rest - rest[np.searchsorted(moving, cand_row)], axis=1)   # from the current place
    pick = best_candidates(cand_row, np.nan_to_num(fit, nan=np.inf) + (moved / SLIDE_SIGMA_M) ** 2)
    st.binding = b.with_rows(cand_row[pick], cand_f[pick], cand_b[pick])
    st.bm = BoundModel(st.model, st.binding.face_idx[st.rows], st.binding.bary[st.rows], cfg.n_shape, cfg.n_expr,
                       dtype=st.bm.dtype)
    st.prob = st.prob.with_model(st.bm)
    st.slid_mm = {int(b.point_index[r]): float(1000 * moved[i]) for r, i in zip(cand_row[pick], pick)}
    log.debug("sliding rows placed: %s", ", ".join(f"{k}:{v:.1f}mm" for k, v in sorted(st.slid_mm.items())))


def stage_refine(st: FitState) -> None:
    """Every frame with the final shared parameters: windows with the temporal term, or per frame."""
    cfg = st.cfg
    if cfg.temporal and st.Tv >= 3:
        tw = st.lay.vector(_temporal_weights(cfg, st.track.fps))
        st.x = _temporal_pass(st.prob, st.lay, st.x, st.vidx, st.shape, st.focal, st.wx, tw, cfg, st.prog)
    else:
        st.x = run_frames(st, st.lay, st.x, st.wx, cfg.robust_final, cfg.iters_temporal, st.prob, (0.7, 0.95),
                          "refine")


def stage_offsets(st: FitState) -> None:
    """Shared per-vertex offsets of the neutral mesh (smooth, small; eyeballs rigid); the problem then
    predicts with them."""
    from .offsets import fit_offsets
    cfg, model, b = st.cfg, st.model, st.binding
    faces = np.asarray(model["faces"], dtype=np.int64)
    tri = faces[b.face_idx[st.rows]]
    bary = np.asarray(b.bary[st.rows], dtype=np.float64)
    free = np.asarray(model["weights"])[:, 3:].sum(1) < 0.5
    j = torch.as_tensor(st.jidx)
    st.offsets = fit_offsets(st.prob.subset(j), st.lay, st.x[j], st.shape, st.focal, faces, model.n_vertices, tri,
                             bary, free, cfg.robust_final, cfg.w_offsets_laplacian, cfg.w_offsets,
                             cfg.max_offset_mm * 1e-3)
    bm_off = st.bm.subset(np.arange(st.bm.U))
    bm_off.tmpl = st.bm.tmpl + torch.as_tensor(np.einsum("rk,rkc->rc", bary, st.offsets[tri]), dtype=st.bm.tmpl.dtype)
    st.prob = st.prob.with_model(bm_off)


def outputs(st: FitState) -> FitOutput:
    """Per-frame parameters for all T frames (invalid ones interpolated), residuals, camera."""
    T, lay, E = st.track.n_frames, st.lay, st.bm.n_expr
    err_v = st.prob.errors_px(lay, st.x, st.shape, st.focal).numpy()
    err = np.full(T, np.nan)
    err[st.vidx] = err_v
    if st.Tv == T:          # every frame fitted: the parameters as they are (no second hour-long copy)
        full = st.x.double().numpy()
    else:
        scattered = torch.zeros(T, lay.D, dtype=torch.float64)
        scattered[torch.as_tensor(st.vidx)] = st.x.double()
        full = _interp_invalid(scattered.numpy(), st.valid)
    rot15, tr, expr, lids = lay.unpack(torch.as_tensor(full), E)
    params = {"global_rot": rot15[:, 0:3].numpy(), "neck_pose": rot15[:, 3:6].numpy(),
              "jaw_pose": rot15[:, 6:9].numpy(), "eye_pose": rot15[:, 9:15].numpy(),
              "transl": tr.numpy(), "expr": expr.numpy()}
    if st.bm.has_eyelids:
        params["eyelids"] = lids.numpy() if lids is not None else np.zeros((T, 2))
    fval = float(st.focal)
    cx, cy = st.prob.cx, st.prob.cy
    K = np.array([[fval, 0.0, cx], [0.0, fval, cy], [0.0, 0.0, 1.0]])
    st.prog("refine", 1.0, f"fit done: mean residual {np.nanmean(err_v):.2f} px")
    log.info("fit: %d/%d frames, %.2f px mean residual to the landmarks, focal %.0f px, %.1f ms/frame", st.Tv, T,
             np.nanmean(err_v), fval, 1e3 * st.timings["total"] / T)
    vidx, kf, info_id, info_j = st.vidx, st.kf, st.info_id, st.info_j
    return FitOutput(params={k: np.asarray(v, dtype=np.float64) for k, v in params.items()},
                     shape=st.shape.numpy().astype(np.float64), focal=fval, K=K, valid=st.valid,
                     landmark_residual_px=err, n_points=int(st.rows.size), timings=st.timings, offsets=st.offsets,
                     binding=st.binding,
                     info={"keyframes": vidx[kf].tolist(), "joint_frames": vidx[st.jidx].tolist(),
                           "identity_cost": ([info_id.cost_start, info_id.cost_end] if info_id else None),
                           "joint_cost": [info_j.cost_start, info_j.cost_end], "joint_iterations": info_j.iterations,
                           "n_expr": E, "n_shape": st.S, "focal_observable": st.focal_observable,
                           "focal_profile": st.focal_profile, "slid_mm": st.slid_mm})


def _temporal_weights(cfg: FitConfig, fps: float) -> dict:
    """Acceleration weights per block: 1/(typical per-frame noise of Δ²)², scaled to the frame rate
    (Δ² of a smooth motion shrinks with fps², so the weight grows with (fps/30)⁴, clamped)."""
    k = cfg.w_temporal * float(np.clip((fps / 30.0) ** 4, 0.05, 50.0))
    return {"global_rot": k / 0.01 ** 2, "transl": k / 0.003 ** 2, "jaw_pose": k / 0.03 ** 2,
            "neck_pose": k / 0.01 ** 2, "eyes": k / 0.1 ** 2, "expr": k / 0.4 ** 2, "eyelids": k / 2.0 ** 2}


def _temporal_pass(prob: Problem, lay: Layout, x: torch.Tensor, vidx: np.ndarray, shape, focal, wx, tw,
                   cfg: FitConfig, prog) -> torch.Tensor:
    """Windows of chunk_frames valid frames with chunk_overlap context each side; results kept from the
    window centre. Triples count in the acceleration term only where source frames are consecutive.
    Updates ``x`` in place (as :func:`run_frames`) and returns it."""
    Tv = x.shape[0]
    step = cfg.chunk_frames - 2 * cfg.chunk_overlap
    out = x
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
