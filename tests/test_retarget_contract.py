"""The retarget contract (character / animation files, mapping) and the batched solve's pinned keys."""
from __future__ import annotations

import numpy as np
import pytest

from flamecap.contract import apply_mapping, load_animation, save_animation, save_character
from flamecap.contract.errors import ContractError
from flamecap.contract.rotations import best_bone_preset, fill_invalid, gaze_angles, matrix_to_quaternion
from flamecap.contract.conventions import axis_angle_to_matrix
from flamecap.retarget.solve import SolveConfig, normal_equations, solve_normal


def test_files_validated_on_write_and_read(tmp_path):
    v = np.random.default_rng(0).normal(size=(5, 3))
    f = np.array([[0, 1, 2], [2, 3, 4]])
    save_character(tmp_path / "c.npz", v, f, ["jawOpen"], np.zeros((1, 5, 3)), "C")
    with pytest.raises(ContractError, match="do not match"):
        save_character(tmp_path / "bad.npz", v, f, ["a", "b"], np.zeros((1, 5, 3)))
    assert not (tmp_path / "bad.npz").exists()
    save_animation(tmp_path / "a.npz", ["jawOpen"], np.ones((3, 1)), np.ones((3, 1)), np.arange(3), np.zeros(3), 30.0)
    arrays, meta = load_animation(tmp_path / "a.npz")
    assert meta["names"] == ["jawOpen"] and arrays["raw"].shape == (3, 1)
    with pytest.raises(ContractError, match="not a FlameCap shape-key animation"):
        load_animation(tmp_path / "c.npz")


def test_mapping_gain_offset_clamp_neutral_and_merge():
    raw = np.array([[0.2, 0.1], [0.6, 0.3], [0.9, 0.5]])
    names, w = apply_mapping(["a", "b"], raw, {"a": {"gain": 2.0, "upper": 1.0}, "b": {"offset": 0.1}}, 30.0)
    assert names == ["a", "b"]
    np.testing.assert_allclose(w, [[0.4, 0.2], [1.0, 0.4], [1.0, 0.6]])
    names, w = apply_mapping(["a", "b"], raw, {"b": {"target": "a"}}, 30.0, neutral=raw[0])
    assert names == ["a"]
    np.testing.assert_allclose(w[:, 0], [0.0, 0.6, 1.0])
    with pytest.raises(ContractError, match="unknown field"):
        apply_mapping(["a"], raw[:, :1], {"a": {"gian": 1}}, 30.0)


def test_rotation_helpers():
    rv = np.array([[0.0, np.radians(15), 0.0], [np.radians(10), 0.0, 0.0]])
    yaw, pitch = gaze_angles(rv).T
    np.testing.assert_allclose(np.degrees(yaw), [15, 0], atol=1e-9)
    np.testing.assert_allclose(np.degrees(pitch), [0, 10], atol=1e-9)
    q = matrix_to_quaternion(axis_angle_to_matrix(np.array([[0, 0, 3.0], [0, 0, -3.0]])))
    assert np.dot(q[0], q[1]) >= 0
    filled = fill_invalid(np.array([[0.0], [np.nan], [2.0]]), np.array([True, True, True]))
    np.testing.assert_allclose(filled[:, 0], [0, 1, 2])
    assert best_bone_preset(["Hips", "Neck", "Head", "LeftEye", "RightEye"])[0] == "head_neck"
    assert best_bone_preset(["mixamorig:Head", "mixamorig:LeftEye"])[0] == "mixamo"


def test_solve_bounds_pinned_keys_and_exactness():
    rng = np.random.default_rng(1)
    K, N, T = 6, 40, 50
    basis = rng.normal(size=(K, N, 3))
    W = np.clip(rng.uniform(-0.2, 1.2, size=(T, K)), 0, 1)
    ne = normal_equations(basis, np.einsum("tk,knc->tnc", W, basis))
    sol = solve_normal(ne, 0.0, 1.0, SolveConfig(smooth=0.0))
    assert np.abs(sol.weights - W).max() < 1e-3 and sol.residual.max() < 1e-3
    pin = solve_normal(ne, 0.0, 1.0, SolveConfig(smooth=0.0), pinned={2: W[:, 2]})
    np.testing.assert_array_equal(pin.weights[:, 2], W[:, 2])
    assert np.abs(pin.weights - W).max() < 1e-3
