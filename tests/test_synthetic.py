"""Synthetic FLAME-format head and the FLAME-topology test head (flamecap.flame.synthetic)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from flamecap.contract.model_format import MODEL_SCHEMA, load_model_npz, save_model_npz
from flamecap.errors import InputError, UnsafeFileError
from flamecap.flame import face_regions as fr
from flamecap.flame import synthetic as syn
from flamecap.flame.layer import FlameLayer, FlameParams, barycentric_points


@pytest.fixture(scope="module")
def model():
    return syn.make_synthetic_model()


@pytest.fixture(scope="module")
def ref_head(flame_reference_dir):
    return syn.flame_reference_head(flame_reference_dir)


def _lmk(model, verts: torch.Tensor) -> np.ndarray:
    f = torch.as_tensor(model["faces"], dtype=torch.long)
    return barycentric_points(verts, f, torch.as_tensor(model["lmk68_face_idx"]),
                              torch.as_tensor(model["lmk68_bary"])).numpy()


def _run(model, **kw):
    layer = FlameLayer(model, dtype=torch.float64)
    p = FlameParams(**{k: torch.as_tensor(np.asarray(v, dtype=np.float64))[None] for k, v in kw.items()})
    return layer(p).vertices


def _eyeball_masks(model):
    return model["weights"][:, fr.EYE_L] > 0.999, model["weights"][:, fr.EYE_R] > 0.999


# ----------------------------------------------------------------------------------------------- synthetic

def test_structure_and_scale(model):
    a = model.arrays
    V = model.n_vertices
    assert 2000 <= V <= 6000
    assert model.release == "flamecap-synthetic"
    assert a["shapedirs"].shape == (V, 3, 100) and a["exprdirs"].shape == (V, 3, 50)
    assert a["posedirs"].shape == (V, 3, 36) and a["eyelid_dirs"].shape == (V, 3, 2)
    assert a["parents"].tolist() == [-1, 0, 1, 1, 1]
    np.testing.assert_allclose(a["J_regressor"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a["weights"].sum(1), 1.0, atol=1e-5)
    assert (a["weights"] >= 0).all() and (a["J_regressor"] >= 0).all()
    v = a["v_template"]
    lo, hi = v.min(0), v.max(0)
    assert 0.13 < hi[0] - lo[0] < 0.2 and 0.28 < hi[1] - lo[1] < 0.36 and 0.2 < hi[2] - lo[2] < 0.26
    assert -0.2 < lo[1] < -0.15 and 0.1 < hi[1] < 0.15 and 0.06 < hi[2] < 0.09      # FLAME-like placement
    J = a["J_regressor"] @ v
    assert J[3, 0] > 0.02 and J[4, 0] < -0.02 and abs(J[3, 1] - J[4, 1]) < 1e-6      # left eye is +X
    assert ((a["vertex_albedo"] >= 0) & (a["vertex_albedo"] <= 1)).all()
    assert ((a["vertex_uv"] >= 0) & (a["vertex_uv"] <= 1)).all()
    assert 300 < a["face_mask"].sum() < V // 2
    assert len(syn.SYNTHETIC_EXPRESSION_NAMES) >= 50 and syn.SYNTHETIC_EXPRESSION_NAMES[0] == "smile"
    # identity variance decreases
    rms = np.sqrt((a["shapedirs"] ** 2).sum(1).mean(0))
    assert rms[0] > rms[10] > rms[50] > rms[99] > 0


def test_landmarks_anatomical(model):
    L = _lmk(model, torch.as_tensor(model["v_template"])[None])[0]
    assert np.all(np.diff(L[0:17, 0]) > 0)                     # jaw line runs right (−X) → left (+X)
    assert L[30, 2] == L[:, 2].max()                            # nose tip is the most forward point
    assert L[8, 1] == L[:, 1].min()                             # chin is the lowest
    assert L[19, 1] > L[37, 1] > L[41, 1] > L[30, 1] > L[51, 1] > L[57, 1] > L[8, 1]
    assert L[36, 0] < L[39, 0] < 0 < L[42, 0] < L[45, 0]
    assert L[54, 0] > 0.015 and L[48, 0] < -0.015


def test_deterministic_and_copies():
    a = syn.make_synthetic_model(n_shape=10, n_expr=20, seed=3)
    a.arrays["v_template"][:] = 0.0                             # callers get copies: cache unharmed
    syn._build_synthetic.cache_clear()
    b = syn.make_synthetic_model(n_shape=10, n_expr=20, seed=3)
    c = syn.make_synthetic_model(n_shape=10, n_expr=20, seed=3)
    for k in b.arrays:
        np.testing.assert_array_equal(b[k], c[k])
    assert np.abs(b["v_template"]).max() > 0.1
    d = syn.make_synthetic_model(n_shape=10, n_expr=20, seed=4)
    assert not np.allclose(b["shapedirs"][:, :, 5:], d["shapedirs"][:, :, 5:])
    np.testing.assert_array_equal(b["v_template"], d["v_template"])   # geometry does not depend on seed


def test_contract_round_trip(model, tmp_path):
    assert "vertex_albedo" in MODEL_SCHEMA
    p = save_model_npz(tmp_path / "syn.npz", model)
    back = load_model_npz(p)
    assert back.release == "flamecap-synthetic" and back.topology == model.topology
    for k in model.arrays:
        np.testing.assert_array_equal(back[k], model[k])


def test_bad_arguments():
    with pytest.raises(InputError):
        syn.make_synthetic_model(n_expr=0)
    with pytest.raises(InputError):
        syn.make_synthetic_model(subdivisions=9)
    with pytest.raises(InputError):
        syn.flame_reference_head("/nonexistent/flame_reference")


def test_unsafe_embedding_pickle_refused(tmp_path):
    bad = tmp_path / "emb.pkl"
    bad.write_bytes(pickle.dumps({"lmk_face_idx": __import__("os").getcwd}, protocol=2))
    with pytest.raises(UnsafeFileError):
        syn.load_static_embedding_68(bad)


def _check_rig(model):
    """Behaviour that must hold for any head rigged by face_regions."""
    v0 = torch.as_tensor(model["v_template"], dtype=torch.float64)[None]
    L0 = _lmk(model, v0)[0]
    # jaw opens the mouth: lower lip down, upper lip (almost) still, forehead still
    vj = _run(model, jaw_pose=[0.25, 0.0, 0.0])
    Lj = _lmk(model, vj)[0]
    assert L0[57, 1] - Lj[57, 1] > 0.008
    assert abs(Lj[51, 1] - L0[51, 1]) < 0.002
    assert np.linalg.norm(Lj[19] - L0[19]) < 1e-4
    # eye pose rotates only eyeball vertices
    eye_l, eye_r = _eyeball_masks(model)
    ve = _run(model, eye_pose=[0.0, 0.3, 0.0, 0.0, 0.0, 0.0])
    moved = (ve - v0).norm(dim=-1)[0].numpy() > 1e-7
    assert moved[eye_l].mean() > 0.98 and not moved[~eye_l].any()     # (the two poles on the axis stay)
    J = model["J_regressor"] @ model["v_template"]
    r0 = np.linalg.norm(model["v_template"][eye_l] - J[3], axis=1)
    np.testing.assert_allclose(np.linalg.norm(ve[0].numpy()[eye_l] - J[3], axis=1), r0, atol=1e-7)
    # blink: left upper lid comes down to (near) the lower lid; the right eye stays open
    vb = _run(model, eyelids=[1.0, 0.0])
    Lb = _lmk(model, vb)[0]
    gap0 = L0[[43, 44], 1].mean() - L0[[47, 46], 1].mean()
    gap1 = Lb[[43, 44], 1].mean() - Lb[[47, 46], 1].mean()
    assert gap0 > 0.003 and gap1 < 0.35 * gap0
    assert np.abs(Lb[36:42] - L0[36:42]).max() < 1e-9
    # upper-lid landmarks end up in front of the eyeball
    rad = np.linalg.norm(model["v_template"][eye_l] - J[3], axis=1).mean()
    assert (np.linalg.norm(Lb[[43, 44]] - J[3], axis=1) > rad).all()
    # semantic expressions are local and do what their names say
    names = syn.SYNTHETIC_EXPRESSION_NAMES
    E = model["exprdirs"]
    disp = lambda k: np.linalg.norm(E[:, :, k], axis=1)  # noqa: E731
    mouth = np.linalg.norm(model["v_template"] - L0[[62, 66]].mean(0), axis=1) < 0.03
    brows = np.linalg.norm(model["v_template"][:, None] - L0[None, 17:27], axis=2).min(1) < 0.01
    smile = names.index("smile")
    assert disp(smile)[mouth].max() > 0.003 and disp(smile)[brows & ~mouth].max() < 0.1 * disp(smile).max()
    raise_ = names.index("brow_raise")
    assert disp(raise_)[brows].max() > 0.003 and disp(raise_)[mouth].max() < 0.1 * disp(raise_).max()
    vs = _run(model, expr=np.eye(model.n_expr)[smile] * 1.0)
    Ls = _lmk(model, vs)[0]
    assert Ls[48, 1] - L0[48, 1] > 0.002 and Ls[54, 1] - L0[54, 1] > 0.002
    for k in range(model.n_expr):                               # every component moves < 40% of the skin
        assert (disp(k) > 1e-4).mean() < 0.4, names[k]
        assert disp(k)[eye_l | eye_r].max() == 0.0
    # pose correctives are small
    assert np.abs(model["posedirs"]).max() < 0.01


def test_synthetic_rig_behaviour(model):
    _check_rig(model)


@pytest.mark.slow
def test_mediapipe_detects_synthetic_face(model):
    """Render the synthetic head with shading + albedo (frontal and ±30° yaw) and run FaceMesh."""
    _assert_detected(model)


def _assert_detected(model):
    from flamecap.contract.conventions import axis_angle_to_matrix, intrinsics_from_fov
    from flamecap.landmarks import get_aligner
    from flamecap.render import render_rgb

    K = intrinsics_from_fov(512, 512, 25.0)
    v0 = np.asarray(model["v_template"], dtype=np.float64) - [0.0, -0.01, -0.02]
    found, err = {}, {}
    with get_aligner(max_num_faces=1).static_detector() as detect:      # MediaPipe's face models, default backend
        for yaw in (0, 30, -30):
            R = axis_angle_to_matrix(np.array([0.0, np.radians(yaw), 0.0]))
            vc = (v0 @ R.T) * [1, -1, -1] + [0.0, 0.0, 0.62]
            img = render_rgb(vc, model["faces"], K, (512, 512), albedo=model["vertex_albedo"],
                             background=(120, 140, 160))
            faces = detect(img)
            found[yaw] = bool(faces)
            if found[yaw]:
                pts = faces[0][:, :2]
                assert len(pts) == 478
                nose = _lmk(model, torch.as_tensor(vc)[None])[0, 30]
                uv = K[:2, :2] @ (nose[:2] / nose[2]) + K[:2, 2]
                err[yaw] = float(np.linalg.norm(pts[1] - uv))       # MediaPipe nose tip vs the model's
    assert all(found.values()), found
    assert max(err.values()) < 20.0, err                          # pixels, face ~380 px tall


# ----------------------------------------------------------------------------------------------- FLAME test head

def test_reference_head_matches_template(ref_head, flame_reference_dir):
    import trimesh

    mesh = trimesh.load(flame_reference_dir / "flame2020_template.ply", process=False)
    assert ref_head.release == "flame-topology-test-head"
    assert ref_head.n_vertices == 5023 and ref_head.n_shape == 60 and ref_head.n_expr == 50
    np.testing.assert_array_equal(ref_head["faces"], np.asarray(mesh.faces))
    out = _run(ref_head, expr=np.zeros(50), jaw_pose=np.zeros(3))[0].numpy()
    np.testing.assert_array_equal(ref_head["v_template"], np.asarray(mesh.vertices))
    np.testing.assert_allclose(out, np.asarray(mesh.vertices), rtol=0, atol=1e-8)  # smplx Rodrigues eps
    eye_l, eye_r = _eyeball_masks(ref_head)
    assert eye_l.sum() == 546 and eye_r.sum() == 546
    assert ref_head["v_template"][eye_l, 0].mean() > 0
    assert ref_head["mp_face_idx"].shape == (105,)


def test_reference_head_contract_and_rig(ref_head, tmp_path):
    back = load_model_npz(save_model_npz(tmp_path / "ref.npz", ref_head))
    np.testing.assert_array_equal(back["exprdirs"], ref_head["exprdirs"])
    _check_rig(ref_head)


@pytest.mark.slow
def test_mediapipe_detects_reference_head(ref_head):
    _assert_detected(ref_head)
