"""flamecap.contract: result validation, atomic writes, Rodrigues / axis conversions and Blender camera
settings with known vectors, the JSON-lines event protocol."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from flamecap.contract import (
    DEFAULT_CAM_R, ContractError, JsonlEmitter, TrackingResult, axis_angle_to_matrix, blender_camera_intrinsics,
    blender_camera_matrix_world, blender_to_flame_points, default_meta, encode_event, flame_to_blender_points,
    intrinsics_from_fov, iter_events, load_result, make_event, matrix_to_axis_angle, parse_event, project_points,
    read_npz, save_result, validate, write_npz_atomic,
)
from flamecap.contract.model_format import FlameModelData, load_model_npz, model_meta, save_model_npz


# ---------------------------------------------------------------- rotations
def test_rodrigues_known_vectors():
    Rz = axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(Rz, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    Rx = axis_angle_to_matrix([np.pi / 2, 0.0, 0.0])
    np.testing.assert_allclose(Rx @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(axis_angle_to_matrix(np.zeros(3)), np.eye(3))
    Rpi = axis_angle_to_matrix([0.0, np.pi, 0.0])
    np.testing.assert_allclose(Rpi, np.diag([-1.0, 1.0, -1.0]), atol=1e-12)


def test_axis_angle_roundtrip_batched_and_edge_cases():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([[0.0, 1e-9, 1e-4, np.pi - 1e-6, np.pi - 1e-3], rng.uniform(0, np.pi, 45)])
    r = axes * angles[:, None]
    R = axis_angle_to_matrix(r)
    assert R.shape == (50, 3, 3)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    back = matrix_to_axis_angle(R)
    np.testing.assert_allclose(axis_angle_to_matrix(back), R, atol=1e-6)
    ok = angles < np.pi - 1e-2  # away from π the vector itself is unique
    np.testing.assert_allclose(back[ok], r[ok], atol=1e-8)
    assert axis_angle_to_matrix(r.reshape(5, 10, 3)).shape == (5, 10, 3, 3)


def test_flame_blender_axes():
    np.testing.assert_allclose(flame_to_blender_points([1.0, 2.0, 3.0]), [1.0, -3.0, 2.0])
    np.testing.assert_allclose(flame_to_blender_points([0.0, 1.0, 0.0]), [0, 0, 1])   # up stays up
    np.testing.assert_allclose(flame_to_blender_points([0.0, 0.0, 1.0]), [0, -1, 0])  # toward camera = -Y
    pts = np.random.default_rng(1).normal(size=(7, 4, 3))
    np.testing.assert_allclose(blender_to_flame_points(flame_to_blender_points(pts)), pts)


# ---------------------------------------------------------------- camera
def test_projection_and_fov():
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    np.testing.assert_allclose(project_points([0.1, -0.2, 2.0], K), [55.0, 30.0])
    np.testing.assert_allclose(intrinsics_from_fov(100, 50, 90.0), [[50, 0, 50], [0, 50, 25], [0, 0, 1]])


def test_blender_camera_matrix_world_known_vectors():
    M = blender_camera_matrix_world(DEFAULT_CAM_R, np.zeros(3))
    np.testing.assert_allclose(M[:3, :3] @ [0, 0, -1], [0, 1, 0], atol=1e-12)   # looks along Blender +Y
    np.testing.assert_allclose(M[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)    # its up is Blender +Z
    np.testing.assert_allclose(M[:3, 3], 0, atol=1e-12)
    M = blender_camera_matrix_world(DEFAULT_CAM_R, np.array([0.0, 0.0, 0.5]))
    np.testing.assert_allclose(M[:3, 3], [0.0, -0.5, 0.0], atol=1e-12)         # FLAME z=0.5 → Blender y=-0.5
    np.testing.assert_allclose(M[3], [0, 0, 0, 1])


def test_blender_camera_reproduces_opencv_projection():
    rng = np.random.default_rng(2)
    W, H = 640, 480
    K = np.array([[700.0, 0, 300.0], [0, 700.0, 260.0], [0, 0, 1]])
    R = axis_angle_to_matrix([0.1, -0.2, 0.05]) @ DEFAULT_CAM_R
    t = np.array([0.02, -0.01, 0.1])
    pts = rng.normal(0, 0.05, (20, 3)) + [0, 0, -0.6]                 # a head in front of the camera
    ref = project_points(pts @ R.T + t, K)
    M = blender_camera_matrix_world(R, t)
    local = (np.linalg.inv(M) @ np.c_[flame_to_blender_points(pts), np.ones(20)].T).T[:, :3]
    cam = blender_camera_intrinsics(K, W, H)
    big = max(W, H)
    f_px = cam["lens"] / cam["sensor_width"] * big
    cx = W / 2 - cam["shift_x"] * big
    cy = H / 2 + cam["shift_y"] * big
    u = cx + f_px * local[:, 0] / -local[:, 2]
    v = cy - f_px * local[:, 1] / -local[:, 2]
    np.testing.assert_allclose(np.c_[u, v], ref, atol=1e-6)


def test_blender_camera_intrinsics_known_values():
    K = np.array([[1000.0, 0, 960], [0, 1000.0, 540], [0, 0, 1]])
    c = blender_camera_intrinsics(K, 1920, 1080)
    assert c == {"lens": pytest.approx(18.75), "sensor_width": 36.0, "sensor_fit": "HORIZONTAL",
                 "shift_x": 0.0, "shift_y": 0.0}
    K2 = np.array([[1000.0, 0, 500], [0, 1000.0, 1000], [0, 0, 1]])
    c = blender_camera_intrinsics(K2, 1080, 1920)
    assert c["sensor_fit"] == "VERTICAL" and c["lens"] == pytest.approx(18.75)
    assert c["shift_x"] == pytest.approx((540 - 500) / 1920) and c["shift_y"] == pytest.approx(40 / 1920)


# ---------------------------------------------------------------- result files
def _result(T=3, S=4, E=2, V=6, F=4, P=36) -> TrackingResult:
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    arrays = {
        "expr": f32(T, E), "jaw_pose": f32(T, 3), "neck_pose": f32(T, 3), "eye_pose": f32(T, 6),
        "global_rot": f32(T, 3), "transl": f32(T, 3), "valid": np.ones(T, bool),
        "landmark_residual_px": np.abs(f32(T)), "time_s": np.arange(T, dtype=np.float32) / 25,
        "frame_index": np.arange(T, dtype=np.int32), "shape": f32(S),
        "K": np.eye(3, dtype=np.float32), "cam_R": np.eye(3, dtype=np.float32), "cam_t": np.zeros(3, np.float32),
        "image_size": np.array([640, 480], np.int32), "head_vertices": f32(V, 3),
        "head_faces": rng.integers(0, V, (F, 3)).astype(np.int32), "head_exprdirs": f32(V, 3, E),
        "head_posedirs": f32(V, 3, P), "head_weights": np.abs(f32(V, 5)), "head_joints": f32(5, 3),
        "head_parents": np.array([-1, 0, 1, 1, 1], np.int32),
    }
    meta = default_meta(25.0, {"path": "clip.mp4", "kind": "video"}, {"release": "custom"})
    return TrackingResult(arrays, meta)


def test_valid_result_roundtrip(tmp_path):
    r = _result()
    p = save_result(tmp_path / "r.npz", r)
    back = load_result(p)
    assert back.n_frames == 3 and back.fps == 25.0 and back.image_size == (640, 480)
    for k, v in r.arrays.items():
        np.testing.assert_array_equal(back[k], v)
    assert back.meta["joint_names"] == ["root", "neck", "jaw", "eye_l", "eye_r"]


def test_version_2_result_reads_with_its_residual_under_the_new_name(tmp_path):
    from flamecap.contract.npzio import write_npz_atomic
    r = _result()
    arrays = dict(r.arrays)
    arrays["fit_error_px"] = arrays.pop("landmark_residual_px")
    meta = dict(r.meta, version=2, source=dict(r.meta["source"]))
    p = write_npz_atomic(tmp_path / "old.npz", arrays, meta)
    back = load_result(p)
    np.testing.assert_array_equal(back["landmark_residual_px"], r["landmark_residual_px"])
    assert "fit_error_px" not in back
    with pytest.raises(ContractError, match="'landmark_residual_px' is missing"):
        validate(arrays, dict(meta, version=3))    # a version-3 file must use the new name


@pytest.mark.parametrize("mutate,match", [
    (lambda a, m: a.pop("expr"), "required field 'expr' is missing"),
    (lambda a, m: a.__setitem__("jaw_pose", np.zeros((4, 3), np.float32)), "'jaw_pose' axis 0 \\(T\\) is 4"),
    (lambda a, m: a.__setitem__("eye_pose", np.zeros((3, 3), np.float32)), "'eye_pose' has shape \\(3, 3\\)"),
    (lambda a, m: a.__setitem__("valid", np.ones(3, np.float32)), "'valid' has dtype float32"),
    (lambda a, m: a.__setitem__("head_exprdirs", np.zeros((6, 3, 5), np.float32)), "'head_exprdirs' axis 2 \\(E\\)"),
    (lambda a, m: a["head_faces"].__setitem__((0, 0), 6), "head_faces index outside 0..5"),
    (lambda a, m: a["transl"].__setitem__((1, 2), np.nan), "'transl' has non-finite values on valid frames"),
    (lambda a, m: a["head_vertices"].__setitem__((0, 0), np.inf), "'head_vertices' has non-finite"),
    (lambda a, m: a.__setitem__("head_parents", np.array([-1, 0, 1, 1], np.int32)), "axis 0 \\(J\\)"),
    (lambda a, m: m.__setitem__("fps", 0), "fps must be > 0"),
    (lambda a, m: m.__setitem__("version", 99), "newer than this FlameCap"),
    (lambda a, m: m.pop("model"), "metadata field 'model' is missing"),
    (lambda a, m: a.__setitem__("image_size", np.array([0, 480], np.int32)), "image_size must be positive"),
])
def test_result_validation_names_the_field(tmp_path, mutate, match):
    r = _result()
    mutate(r.arrays, r.meta)
    with pytest.raises(ContractError, match=match):
        validate(r.arrays, r.meta)
    with pytest.raises(ContractError):
        save_result(tmp_path / "bad.npz", r)
    assert not list(tmp_path.iterdir())  # nothing written


def test_nan_on_invalid_frames_is_allowed():
    r = _result()
    r.arrays["valid"][1] = False
    r.arrays["transl"][1] = np.nan
    r.arrays["landmark_residual_px"][1] = np.nan
    validate(r.arrays, r.meta)


# ---------------------------------------------------------------- atomic npz I/O
def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.npz"
    write_npz_atomic(target, {"a": np.arange(3)}, {"x": 1})
    before = target.read_bytes()

    def boom(fh, arr, **kw):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        write_npz_atomic(target, {"a": np.arange(5)}, {"x": 2})
    assert target.read_bytes() == before                   # old file untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]  # no temp file left
    with pytest.raises(OSError):
        write_npz_atomic(tmp_path / "new.npz", {"a": np.arange(5)}, {})
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_atomic_write_refuses_object_arrays(tmp_path):
    with pytest.raises(ContractError, match="dtype object"):
        write_npz_atomic(tmp_path / "o.npz", {"a": np.array([1, None], dtype=object)}, {})
    assert not list(tmp_path.iterdir())


def test_read_npz_errors(tmp_path):
    with pytest.raises(ContractError, match="not found"):
        read_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ContractError, match="not a readable .npz"):
        read_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ContractError, match="no metadata"):
        read_npz(tmp_path / "plain.npz")
    arrays, meta = read_npz(write_npz_atomic(tmp_path / "ok.npz", {"a": np.ones(2)}, {"k": [1, 2]}))
    assert meta == {"k": [1, 2]} and arrays["a"].tolist() == [1.0, 1.0]


def test_model_npz_roundtrip_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    V = 8
    arrays = {"v_template": rng.normal(size=(V, 3)).astype(np.float32),
              "faces": np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6], [5, 6, 7]], np.int32),
              "shapedirs": rng.normal(size=(V, 3, 4)).astype(np.float32),
              "exprdirs": rng.normal(size=(V, 3, 2)).astype(np.float32),
              "posedirs": rng.normal(size=(V, 3, 36)).astype(np.float32),
              "J_regressor": np.full((5, V), 1.0 / V, np.float32),
              "weights": np.full((V, 5), 0.2, np.float32), "parents": np.array([-1, 0, 1, 1, 1], np.int32)}
    m = FlameModelData(arrays, model_meta("custom", source_sha256=None))
    back = load_model_npz(save_model_npz(tmp_path / "m.npz", m))
    assert back.topology == m.topology and back.meta["topology_hash"] == m.topology
    bad = FlameModelData({**arrays, "parents": np.array([0, 0, 1, 1, 1], np.int32)}, m.meta)
    with pytest.raises(ContractError, match="root-first"):
        save_model_npz(tmp_path / "bad.npz", bad)
    assert not (tmp_path / "bad.npz").exists()


# ---------------------------------------------------------------- events
def test_event_roundtrip():
    line = encode_event("progress", stage="fit", fraction=0.5, eta_s=1.0, message="half")
    ev = parse_event(line)
    assert ev == {"event": "progress", "protocol": 1, "stage": "fit", "fraction": 0.5, "eta_s": 1.0,
                  "message": "half"}
    assert json.loads(line) == ev and "\n" not in line
    assert parse_event("INFO: some library chatter") is None
    assert parse_event('{"event": "unknown"}') is None and parse_event("{broken") is None
    assert parse_event("[1, 2]") is None
    with pytest.raises(ValueError):
        make_event("explode")


def test_jsonl_emitter_stream():
    buf = io.StringIO()
    em = JsonlEmitter(buf)
    em.emit("start", command="track")
    em.progress("landmarks", 1.7, "clamped")
    em.progress("fit", 0.0)
    buf.write("warning: not an event\n")
    em.emit("done", result="/tmp/r.npz")
    events = list(iter_events(io.StringIO(buf.getvalue())))
    assert [e["event"] for e in events] == ["start", "progress", "progress", "done"]
    assert events[1]["fraction"] == 1.0 and events[1]["eta_s"] == 0.0
    assert events[2]["eta_s"] is None
    assert events[3]["result"] == "/tmp/r.npz"
