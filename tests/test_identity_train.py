"""MICA mapping-network training: region weights, loss, smoke training on synthetic (image, shape) pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flamecap.contract.model_format import FlameModelData, model_meta, validate_model
from flamecap.errors import InputError
from flamecap.identity.arcface import recalibrate_batchnorm
from flamecap.identity.mica import build_mica
from flamecap.identity.train import (ShapeDecoder, ShapePairDataset, TrainConfig, evaluate_loss, region_masks,
                                     region_weights, tensor_pairs, train_mapping, weighted_vertex_l1)

SMALL = dict(layers=(1, 1, 1, 1), widths=(8, 16, 16, 32))
TINY = dict(SMALL, input_size=48)  # smaller crops: the smoke tests are about the optimisation, not the size


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny ops: one thread avoids OpenMP oversubscription on a shared 2-core machine (30x faster here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(V: int = 60, S: int = 10, seed: int = 0, face_mask: bool = True) -> FlameModelData:
    """A small valid FLAME-format model: vertices 0..29 'face', 50..59 skinned to the eyes."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(V, 3)) * 0.05
    faces = np.stack([np.arange(V - 2), np.arange(1, V - 1), np.arange(2, V)], 1)
    weights = np.zeros((V, 5))
    weights[:, 1] = 1.0
    weights[50:55] = [0, 0, 0, 1, 0]
    weights[55:60] = [0, 0, 0, 0, 1]
    J = np.full((5, V), 1.0 / V)
    arrays = {"v_template": v, "faces": faces, "shapedirs": rng.normal(size=(V, 3, S)) * 0.004,
              "exprdirs": rng.normal(size=(V, 3, 4)) * 0.002, "posedirs": np.zeros((V, 3, 36)),
              "J_regressor": J, "weights": weights, "parents": np.array([-1, 0, 1, 1, 1])}
    if face_mask:
        arrays["face_mask"] = np.arange(V) < 30
    meta = model_meta("synthetic-test")
    validate_model(arrays, meta)
    return FlameModelData(arrays=arrays, meta=meta)


def synthetic_pairs(n: int, n_shape: int, seed: int = 0, size: int = 112):
    """Images whose content is a fixed function of the shape code (so identity is learnable)."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.randn(n, n_shape, generator=g)
    patterns = torch.randn(n_shape, 3, size, size, generator=g)
    images = torch.tanh(0.5 * torch.einsum("nk,kchw->nchw", shapes, patterns))
    return images, shapes


def test_default_config_matches_mica():
    c = TrainConfig()
    assert (c.lr, c.weight_decay) == (1e-5, 2e-4)
    assert (c.face_weight, c.whole_weight, c.eyes_weight, c.ears_weight) == (150.0, 1.0, 0.01, 0.01)
    with pytest.raises(InputError):
        TrainConfig(lr=0)
    with pytest.raises(InputError):
        TrainConfig(steps=0)


def test_region_weights_from_model_and_masks():
    m = tiny_model()
    w = region_weights(m)
    assert w.shape == (60,) and w.dtype == np.float32
    assert np.all(w[:30] == 150.0) and np.all(w[30:50] == 1.0) and np.allclose(w[50:], 0.01)
    # FLAME_masks.pkl-style index arrays override; the face wins overlaps
    w = region_weights(m, masks={"face": np.arange(5), "left_ear": np.arange(3, 10), "right_ear": [40]})
    assert np.all(w[:5] == 150.0) and np.allclose(w[5:10], 0.01) and np.isclose(w[40], 0.01)
    assert np.all(w[10:40] == 1.0)
    # a model without face_mask: defensive, still a valid weighting
    r = region_masks(tiny_model(face_mask=False))
    assert not r["face"].any() and r["eyes"].sum() == 10
    with pytest.raises(InputError):
        region_weights(m, masks={"face": [100]})


def test_region_masks_on_synthetic_head():
    from flamecap.flame.synthetic import make_synthetic_model
    m = make_synthetic_model(n_shape=8, n_expr=4, subdivisions=2)
    r = region_masks(m)
    assert r["face"].sum() == m["face_mask"].sum() > 0
    assert r["eyes"].sum() == 2 * 642  # the two eyeball components, found from the eye-joint skinning
    assert not (r["face"] & r["eyes"]).any()


def test_weighted_l1_and_decoder():
    m = tiny_model()
    dec = ShapeDecoder(m)
    s = torch.randn(2, 10)
    v = dec(s)
    ref = m["v_template"] + np.einsum("vck,bk->bvc", m["shapedirs"], s.numpy())
    np.testing.assert_allclose(v.numpy(), ref, atol=1e-6)
    # longer (MICA's 300) codes are truncated, shorter zero-padded
    assert torch.allclose(dec(torch.cat([s, torch.randn(2, 290)], 1)), v)
    assert torch.allclose(dec(s[:, :4]), dec(torch.cat([s[:, :4], torch.zeros(2, 6)], 1)))
    w = torch.ones(60)
    w[0] = 150.0
    d = torch.zeros(1, 60, 3)
    d[0, 0, 0] = 0.001  # 1 mm on a face vertex
    assert float(weighted_vertex_l1(d, torch.zeros_like(d), w)) == pytest.approx(150.0 / 180.0)


def test_training_smoke_lowers_loss():
    model = tiny_model()
    images, shapes = synthetic_pairs(24, 10, size=48)
    ds = tensor_pairs(images, shapes)
    torch.manual_seed(0)
    net = build_mica(**TINY)
    recalibrate_batchnorm(net.arcface, [images])
    enc_before = {k: v.clone() for k, v in net.arcface.state_dict().items()}
    before = evaluate_loss(net, ds, model)
    # the MICA defaults (lr 1e-5) move the loss down, slowly
    res = train_mapping(net, ds, model, TrainConfig(steps=10, batch_size=24))
    mid = evaluate_loss(net, ds, model)
    assert res.steps == 10 and len(res.losses) == 10 and np.all(np.isfinite(res.losses))
    assert mid < before
    # a larger step size for a quick, clear drop
    res = train_mapping(net, ds, model, TrainConfig(lr=2e-3, steps=30, batch_size=8))
    after = evaluate_loss(net, ds, model)
    assert after < 0.5 * before, (before, mid, after)
    assert not net.training
    # the frozen encoder did not change (BatchNorm statistics included)
    for k, v in net.arcface.state_dict().items():
        assert torch.equal(v, enc_before[k]), k


def test_training_encoder_head_option_trains_stage4_only():
    model = tiny_model()
    images, shapes = synthetic_pairs(8, 10, seed=1, size=48)
    torch.manual_seed(0)
    net = build_mica(**TINY)
    recalibrate_batchnorm(net.arcface, [images])
    l1 = net.arcface.layer1[0].conv1.weight.clone()
    l4 = net.arcface.layer4[0].conv1.weight.clone()
    train_mapping(net, tensor_pairs(images, shapes), model,
                  TrainConfig(lr=1e-3, encoder_lr=1e-3, steps=3, batch_size=8, train_encoder_head=True))
    assert torch.equal(net.arcface.layer1[0].conv1.weight, l1)
    assert not torch.equal(net.arcface.layer4[0].conv1.weight, l4)


def test_shape_pair_dataset_from_files(tmp_path):
    import cv2
    images, shapes = synthetic_pairs(3, 10, seed=2)
    paths, spaths = [], []
    for i in range(3):
        crop = ((images[i].permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255).round().astype(np.uint8)
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        sp = tmp_path / f"shape{i}.npy"
        np.save(sp, shapes[i].numpy())
        paths.append(p)
        spaths.append(sp)
    ds = ShapePairDataset(paths, spaths)
    x, s = ds[1]
    assert x.shape == (3, 112, 112) and x.dtype == torch.float32
    assert torch.allclose(x, images[1], atol=1.0 / 127.5 + 1e-6)
    assert torch.allclose(s, shapes[1])
    net = build_mica(**SMALL)
    recalibrate_batchnorm(net.arcface, [images])
    res = train_mapping(net, ds, tiny_model(), TrainConfig(steps=2, batch_size=2))
    assert res.steps == 2
    with pytest.raises(InputError, match="images but"):
        ShapePairDataset(paths, spaths[:2])
    with pytest.raises(InputError, match="not found"):
        ShapePairDataset([tmp_path / "nope.png"], np.zeros((1, 10)))
