"""A MICA identity injected into the fitter (``fit_track(shape_prior=...)``) pulls the fitted identity toward it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

fit_tracker = pytest.importorskip("flamecap.fit.tracker")

from flamecap.fit.config import FitConfig  # noqa: E402
from flamecap.fit.synthetic import default_test_model, make_clip, sample_binding  # noqa: E402
from flamecap.identity.mica import MICA_N_SHAPE, fit_shape_length  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def clip():
    model = default_test_model(n_shape=10, n_expr=5, subdivisions=3)
    binding = sample_binding(model, 100)
    return make_clip(model, binding, n_frames=6, noise_px=2.0, n_shape=10, n_expr=5)


def _fit(clip, prior, w):
    cfg = FitConfig.preset("fast", n_shape=10, n_expr=5, w_shape_prior=w, temporal=False)
    return fit_tracker.fit_track(clip.track, clip.binding, clip.model, cfg, shape_prior=prior).shape


def _mica_vector(first: np.ndarray) -> np.ndarray:
    """A 300-coefficient MICA-style code whose first components are ``first`` (the rest near zero)."""
    v = np.random.default_rng(3).normal(size=MICA_N_SHAPE).astype(np.float32) * 0.01
    v[: first.size] = first
    return v


def test_mica_prior_pulls_identity(clip):
    s_true = np.asarray(clip.params["shape"])
    rng = np.random.default_rng(5)
    mica_code = _mica_vector(s_true + rng.normal(size=s_true.size) * 0.8)   # a MICA estimate off the truth
    prior = fit_shape_length(mica_code, clip.model.n_shape)                  # what track --identity mica passes
    free = _fit(clip, None, 0.0)
    pulled = _fit(clip, prior, 20.0)
    d_free, d_pulled = np.linalg.norm(free - prior), np.linalg.norm(pulled - prior)
    assert d_pulled < 0.8 * d_free, (d_free, d_pulled)
    # a correct MICA identity improves the noisy fit
    good = fit_shape_length(_mica_vector(s_true), clip.model.n_shape)
    helped = _fit(clip, good, 20.0)
    assert np.linalg.norm(helped - s_true) < 0.8 * np.linalg.norm(free - s_true)
