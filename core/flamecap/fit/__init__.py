"""The FLAME fitter: landmarks (+ binding, model) → per-frame FLAME parameters, camera and identity.

``fit_track(track, binding, model, FitConfig.preset('fast'), shape_prior=None, progress=None) -> FitOutput``
and ``build_result(fit, track, model, ...) -> TrackingResult``. The solver needs torch; it is imported on
first use of ``fit_track``/``build_result``/``FitOutput`` (PEP 562), so ``FitConfig`` (settings checks before
any work) stays torch-free and ``flamecap track`` can import torch in the background."""
from importlib import import_module

from .config import FitConfig

__all__ = ["FitConfig", "FitOutput", "fit_track", "build_result"]

_LAZY = {"fit_track": ".tracker", "FitOutput": ".tracker", "build_result": ".result"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
