"""Post-filter: numpy-only smooth_params (contract), zero lag, blinks survive, strength 0 = identity; smooth CLI."""
from __future__ import annotations

import numpy as np
import pytest

from flamecap.contract.smoothing import smooth_params


def _signals(T=150, fps=25.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T) / fps
    clean = np.sin(2 * np.pi * 0.5 * t)[:, None] * np.array([[0.3, 0.1, 0.05]])
    blink = np.zeros((T, 2))
    blink[70:74] = [[0.5, 0.5], [1, 1], [1, 1], [0.5, 0.5]]
    arrays = {"global_rot": clean + rng.normal(size=clean.shape) * 0.01, "eyelids": blink.copy(),
              "valid": np.ones(T, bool)}
    return arrays, clean, blink, fps


@pytest.mark.parametrize("method", ["one_euro", "savgol"])
def test_smoothing_reduces_noise_without_lag_and_keeps_blinks(method):
    arrays, clean, blink, fps = _signals()
    out = smooth_params(arrays, fps, 1.0, method)
    err_before = np.abs(arrays["global_rot"] - clean).mean()
    err_after = np.abs(out["global_rot"] - clean).mean()
    assert err_after < 0.7 * err_before
    # no lag: best alignment with the clean signal is at shift 0
    x = out["global_rot"][:, 0]
    shifts = {s: np.abs(np.roll(x, s)[10:-10] - clean[10:-10, 0]).mean() for s in range(-3, 4)}
    assert min(shifts, key=shifts.get) == 0
    assert out["eyelids"][70:74].max() > 0.75        # the blink survives
    assert out["valid"] is arrays["valid"]


def test_strength_zero_is_identity_and_bad_args():
    arrays, *_ = _signals()
    out = smooth_params(arrays, 25.0, 0.0)
    assert np.array_equal(out["global_rot"], arrays["global_rot"])
    with pytest.raises(ValueError):
        smooth_params(arrays, 0.0, 1.0)
    with pytest.raises(ValueError):
        smooth_params(arrays, 25.0, 1.0, method="kalman")


def test_contract_smoothing_is_numpy_only():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None; sys.modules['cv2'] = None; "
            "import flamecap.contract.smoothing as s; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr
