"""FlameLayer (torch, smplx lbs) on small FLAME-layout models: batching, identities, gradients, and the
same vertices through a .pkl and its converted .npz."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flame_pkl_fixtures import make_flame_dict, write_flame_pkl
from flamecap.contract.conventions import axis_angle_to_matrix
from flamecap.contract.model_format import FlameModelData, model_meta
from flamecap.flame.layer import FlameLayer, FlameParams, barycentric_points
from flamecap.flame.pkl import flame_arrays_from_dict


def _model(n_vertices=60, n_faces=80, n_components=30, split=20, eyelids=True, seed=0) -> FlameModelData:
    d = make_flame_dict(n_vertices=n_vertices, n_faces=n_faces, n_components=n_components, seed=seed,
                        eyelids=eyelids)
    arrays, extra = flame_arrays_from_dict(d, n_shape_in_file=split)
    return FlameModelData(arrays, model_meta("custom", **extra))


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def layer(model):
    return FlameLayer(model)


def _random_params(B, layer, scale=0.3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: (torch.randn(*s, generator=g) * scale).to(dtype)  # noqa: E731
    return FlameParams(shape=r(B, layer.n_shape) * 3, expr=r(B, layer.n_expr) * 3, global_rot=r(B, 3),
                       neck_pose=r(B, 3), jaw_pose=r(B, 3), eye_pose=r(B, 6), transl=r(B, 3) * 0.1)


def test_zero_params_give_template_and_regressed_joints(layer, model):
    out = layer(FlameParams(expr=torch.zeros(2, layer.n_expr)))
    assert out.vertices.shape == (2, model.n_vertices, 3) and out.vertices.dtype == torch.float32
    v = torch.as_tensor(model["v_template"])
    torch.testing.assert_close(out.vertices[0], v)
    torch.testing.assert_close(out.vertices[1], v)
    torch.testing.assert_close(out.joints[0], torch.as_tensor(model["J_regressor"]) @ v)


def test_batch_equals_single_frames(layer):
    p = _random_params(3, layer)
    out = layer(p)
    assert out.vertices.shape == (3, layer.n_vertices, 3) and out.joints.shape == (3, 5, 3)
    for b in range(3):
        single = FlameParams(**{k: getattr(p, k)[b:b + 1] for k in ("shape", "expr", "global_rot", "neck_pose",
                                                                     "jaw_pose", "eye_pose", "transl")})
        torch.testing.assert_close(layer(single).vertices[0], out.vertices[b], rtol=1e-5, atol=1e-6)


def test_translation_shifts_everything(layer):
    p = _random_params(2, layer)
    base = layer(FlameParams(**{**p.__dict__, "transl": None}))
    moved = layer(p)
    torch.testing.assert_close(moved.vertices - base.vertices, p.transl[:, None].expand_as(base.vertices),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moved.joints - base.joints, p.transl[:, None].expand_as(base.joints),
                               rtol=1e-5, atol=1e-6)


def test_global_rotation_is_rigid_about_the_root_joint(layer, model):
    rot = np.array([0.3, -0.5, 0.2])
    out = layer(FlameParams(global_rot=torch.tensor(rot[None], dtype=torch.float32)))
    v = model["v_template"].astype(np.float64)
    j0 = model["J_regressor"][0].astype(np.float64) @ v
    R = axis_angle_to_matrix(rot)
    expected = (v - j0) @ R.T + j0  # no pose correctives: FLAME's pose feature excludes the root
    np.testing.assert_allclose(out.vertices[0].numpy(), expected, atol=1e-6)


def test_shape_matches_neutral_and_short_vectors_are_zero_padded(layer):
    shape = torch.randn(layer.n_shape) * 2
    out = layer(FlameParams(shape=shape))
    torch.testing.assert_close(out.vertices[0], layer.neutral(shape), rtol=1e-5, atol=1e-6)
    short = shape[:5]
    padded = torch.cat([short, torch.zeros(layer.n_shape - 5)])
    torch.testing.assert_close(layer(FlameParams(shape=short)).vertices, layer(FlameParams(shape=padded)).vertices)
    torch.testing.assert_close(layer.neutral(short), layer.neutral(padded))
    e_short = torch.randn(2, 3)
    e_pad = torch.cat([e_short, torch.zeros(2, layer.n_expr - 3)], 1)
    torch.testing.assert_close(layer(FlameParams(expr=e_short)).vertices, layer(FlameParams(expr=e_pad)).vertices)


def test_expression_is_linear_at_zero_pose(layer, model):
    e = torch.randn(1, layer.n_expr)
    out = layer(FlameParams(expr=e)).vertices[0]
    dirs = torch.as_tensor(model["exprdirs"])
    expected = torch.as_tensor(model["v_template"]) + torch.einsum("vck,k->vc", dirs, e[0])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_eyelids_and_offsets(layer, model):
    eyelids = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    out = layer(FlameParams(eyelids=eyelids)).vertices
    v = torch.as_tensor(model["v_template"])
    dirs = torch.as_tensor(model["eyelid_dirs"])
    torch.testing.assert_close(out[0], v + dirs[:, :, 0])
    torch.testing.assert_close(out[1], v + 0.5 * dirs[:, :, 1])
    offsets = torch.randn(layer.n_vertices, 3) * 1e-3
    torch.testing.assert_close(layer(FlameParams(offsets=offsets)).vertices[0], v + offsets)
    batched = torch.randn(2, layer.n_vertices, 3) * 1e-3      # per-frame offsets set the batch size
    torch.testing.assert_close(layer(FlameParams(offsets=batched)).vertices, v + batched)
    # posed: offsets move with the skinning (same result as shifting the template)
    p = _random_params(1, layer)
    moved = layer(FlameParams(**{**p.__dict__, "offsets": offsets})).vertices
    shifted = FlameModelData({**model.arrays, "v_template": (model["v_template"] + offsets.numpy())}, model.meta)
    torch.testing.assert_close(moved, FlameLayer(shifted)(p).vertices, rtol=1e-4, atol=1e-6)


def test_model_without_eyelids_ignores_them():
    layer = FlameLayer(_model(eyelids=False))
    assert not layer.has_eyelids
    a = layer(FlameParams(eyelids=torch.ones(1, 2))).vertices
    torch.testing.assert_close(a, layer(FlameParams()).vertices)


def test_truncated_layer(model):
    small = FlameLayer(model, n_shape=4, n_expr=3)
    assert (small.n_shape, small.n_expr) == (4, 3)
    full = FlameLayer(model)
    s = torch.randn(4)
    e = torch.randn(1, 3)
    torch.testing.assert_close(small(FlameParams(shape=s, expr=e)).vertices,
                               full(FlameParams(shape=s, expr=e)).vertices, rtol=1e-5, atol=1e-6)


def test_gradcheck_float64_tiny_model():
    layer = FlameLayer(_model(n_vertices=12, n_faces=10, n_components=6, split=3), dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    inputs = [(torch.randn(1, n, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
              for n in (3, 3, 3, 3, 6, 3)]

    def f(shape, expr, rot, jaw, eyes, transl):
        return layer(FlameParams(shape=shape, expr=expr, global_rot=rot, jaw_pose=jaw, eye_pose=eyes,
                                 transl=transl)).vertices

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, fast_mode=True)


def test_barycentric_points(layer, model):
    out = layer(_random_params(2, layer))
    faces = layer.faces
    idx = torch.tensor([0, 5, 7])
    bary = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.2, 0.3, 0.5]])
    pts = barycentric_points(out.vertices, faces, idx, bary)
    assert pts.shape == (2, 3, 3)
    torch.testing.assert_close(pts[:, 0], out.vertices[:, faces[0, 0]])
    torch.testing.assert_close(pts[:, 1], out.vertices[:, faces[5, 1]])
    tri = out.vertices[:, faces[7]]
    torch.testing.assert_close(pts[:, 2], 0.2 * tri[:, 0] + 0.3 * tri[:, 1] + 0.5 * tri[:, 2])


def test_same_vertices_through_pkl_and_converted_npz(tmp_path):
    from flamecap.flame.io import convert_pkl_to_npz, load_model
    pkl = write_flame_pkl(tmp_path / "flame2023.pkl", make_flame_dict(n_vertices=80, n_faces=100, seed=5))
    npz = convert_pkl_to_npz(pkl, tmp_path / "m.npz")
    a, b = load_model(pkl), load_model(npz)
    assert a.topology == b.topology and b.meta["source_sha256"] == a.meta["source_sha256"]
    la, lb = FlameLayer(a), FlameLayer(b)
    p = _random_params(4, la, seed=7)
    va, vb = la(p).vertices, lb(p).vertices
    assert torch.equal(va, vb)
    assert float((va - la(FlameParams(expr=torch.zeros(4, la.n_expr))).vertices).abs().max()) > 1e-3
