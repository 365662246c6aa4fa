"""The FLAME fitter: landmarks (+ binding, model) → per-frame FLAME parameters, camera and identity.

``fit_track(track, binding, model, FitConfig.preset('fast'), shape_prior=None, progress=None) -> FitOutput``
and ``build_result(fit, track, model, ...) -> TrackingResult``. Needs torch (imported here)."""
from .config import FitConfig
from .result import build_result
from .tracker import FitOutput, fit_track

__all__ = ["FitConfig", "FitOutput", "fit_track", "build_result"]
