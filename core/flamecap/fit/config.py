"""Fitter configuration: a frozen, validated dataclass with quality presets ``fast`` and ``production``."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..errors import InputError

ROBUST_KERNELS = ("none", "huber", "geman_mcclure")
QUALITIES = ("fast", "production")


@dataclass(frozen=True)
class FitConfig:
    """All knobs of :func:`flamecap.fit.tracker.fit_track`. Weights multiply squared terms of a cost whose
    data term is Σ ρ(|residual / σ|²) over visible points (so a weight of 1 on a unit-variance coefficient
    is the Gaussian prior of a model whose landmark noise is σ).

    Sizes: n_shape / n_expr components fitted (clipped to the model). max_points: bound points used (a
    spread subset; 0 = all). Camera: focal_px fixed when set, else estimated from fov_init_deg with a weak
    log-prior (focal_prior_weight). Iterations: LM iterations per stage (each stops early once an iteration
    lowers the cost by less than ``rtol``, relative)."""

    quality: str = "fast"
    n_shape: int = 50
    n_expr: int = 30
    max_points: int = 200             # points for tracking and shape (0 = all)
    final_points: int = 0             # points for the final pass (0 = all)
    rigid_points: int = 64            # points for the rigid init
    fit_neck: bool = False            # head rotation lives in global_rot; neck only if asked
    fit_eyes: bool = True             # from iris points when the binding has eye-skinned points
    fit_eyelids: bool = True          # when the model has eyelid blendshapes
    default_sigma_px: float = 1.5     # σ for points whose aligner gave none
    robust: str = "huber"             # kernel during init/tracking
    robust_final: str = "geman_mcclure"  # kernel for the joint refinement
    robust_scale: float = 2.5         # kernel scale, in σ units
    w_shape: float = 1.0
    w_shape_prior: float = 0.0        # weight of an identity prior (e.g. MICA), when one is given
    w_expr: float = 1.0
    w_jaw: float = 10.0               # on jaw axis-angle (rad²)
    w_neck: float = 50.0
    w_eyes: float = 20.0             # gaze within ~±15° of the head's forward axis
    w_vergence: float = 1000.0       # on (left − right) eye pitch and yaw (rad²): one gaze point
    w_eyelids: float = 0.1           # lids close fully on a blink: a weak pull toward open
    w_temporal: float = 1.5           # on acceleration (Δ² per frame at 30 fps), all per-frame params
    temporal: bool = True             # off for unordered image sets
    focal_px: float | None = None
    fov_init_deg: float = 40.0
    estimate_focal: bool = True
    focal_prior_weight: float = 4.0   # on (log f − log f0)²
    n_keyframes: int = 8
    max_joint_frames: int = 30        # frames in the joint shape/focal fit (keyframes + evenly spread)
    chunk_frames: int = 200           # temporal refinement window
    chunk_overlap: int = 16
    iters_rigid: int = 8
    iters_track: int = 4
    iters_identity: int = 10
    iters_joint: int = 4
    iters_temporal: int = 2
    min_points: int = 6               # fewer visible points → frame invalid
    vertex_offsets: bool = False      # shared per-vertex offsets (Laplacian-regularised), production
    w_offsets_laplacian: float = 1e6  # on |L δ|² (δ metres, uniform mesh Laplacian)
    w_offsets: float = 2e3            # on |δ|² (keeps offsets small)
    max_offset_mm: float = 5.0        # per-vertex clamp
    staged_identity: bool = False     # separate identity-on-keyframes stage + second tracking pass
    rtol: float = 1e-3                # LM early stop: relative cost decrease per iteration below this
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 1                  # torch CPU threads while fitting: the small batched solves run fastest on
                                      # one (bbaf2n, 2 cores: 6.5 ms/frame with 1 vs 16.5 with 2)

    def __post_init__(self):
        if self.quality not in QUALITIES:
            raise InputError(f"quality '{self.quality}' is unknown; use one of {', '.join(QUALITIES)}")
        for name in ("robust", "robust_final"):
            if getattr(self, name) not in ROBUST_KERNELS:
                raise InputError(f"{name} '{getattr(self, name)}' is unknown; use one of {', '.join(ROBUST_KERNELS)}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith(("w_", "iters_")) or f.name in (
                    "focal_prior_weight", "chunk_overlap", "max_points", "final_points", "rigid_points", "rtol",
                    "max_offset_mm"):
                if not (isinstance(v, (int, float)) and v >= 0):
                    raise InputError(f"fit setting {f.name} must be a number >= 0, got {v!r}")
        for name in ("n_shape", "n_expr", "n_keyframes", "max_joint_frames", "chunk_frames", "min_points", "threads"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"fit setting {name} must be >= 1, got {getattr(self, name)!r}")
        if self.chunk_overlap * 2 >= self.chunk_frames:
            raise InputError(f"chunk_overlap ({self.chunk_overlap}) must be less than half of chunk_frames "
                             f"({self.chunk_frames})")
        if not (self.default_sigma_px > 0 and self.robust_scale > 0):
            raise InputError("default_sigma_px and robust_scale must be > 0")
        if self.focal_px is not None and not (self.focal_px > 0):
            raise InputError(f"--focal must be a positive number of pixels, got {self.focal_px}")
        if not (1.0 < self.fov_init_deg < 170.0):
            raise InputError(f"fov_init_deg must be between 1 and 170 degrees, got {self.fov_init_deg}")
        if self.dtype not in ("float32", "float64"):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype!r}")

    @classmethod
    def preset(cls, quality: str = "fast", **overrides) -> "FitConfig":
        """``fast``: few components, a point subset, few iterations. ``production``: the full bases the model
        has (up to 100 shape / 50 expression), all points, more iterations and keyframes."""
        if quality == "fast":
            base = cls(quality="fast")
        elif quality == "production":
            base = cls(quality="production", n_shape=100, n_expr=50, max_points=0, n_keyframes=16,
                       max_joint_frames=300, iters_rigid=10, iters_track=10, iters_identity=15,
                       iters_joint=10, iters_temporal=8, fit_neck=False, staged_identity=True, rtol=1e-4,
                       vertex_offsets=True)
        else:
            raise InputError(f"quality '{quality}' is unknown; use one of {', '.join(QUALITIES)}")
        known = {f.name for f in fields(cls)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise InputError(f"unknown fit setting(s): {', '.join(bad)}")
        return replace(base, **overrides)
