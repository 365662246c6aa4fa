"""Dense aligner network pieces: encoder, UV branch, correlation, loss, data stream, checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flamecap.dense.checkpoint import load_checkpoint, save_checkpoint
from flamecap.dense.data import SynthConfig, SyntheticFaceStream, SyntheticRenderer, crop_box
from flamecap.dense.model import (PRESETS, DenseIteration, DenseNetConfig, build_net,
                                  laplace_nll, sample_uv, sequence_loss)
from flamecap.dense.raft import CorrPyramid
from flamecap.dense.segformer import MIT_CONFIGS, MiTFeatures, MixTransformer
from flamecap.errors import WeightsError


@pytest.fixture(scope="module")
def small_model():
    from flamecap.flame.synthetic import make_synthetic_model
    return make_synthetic_model(n_shape=10, n_expr=5, subdivisions=2)


def test_mit_configs_and_feature_shapes():
    assert set(MIT_CONFIGS) >= {"b0", "b1", "b2", "b3", "b4", "b5"}
    assert MIT_CONFIGS["b5"].depths == (3, 6, 40, 3) and MIT_CONFIGS["b0"].embed_dims == (32, 64, 160, 256)
    torch.manual_seed(0)
    enc = MixTransformer(MIT_CONFIGS["tiny"])
    feats = enc(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape[2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    fused = MiTFeatures(MIT_CONFIGS["tiny"], 20)(torch.rand(2, 3, 64, 96))
    assert fused.shape == (2, 20, 8, 12)
    # b0 really has the paper's size (3.3 M encoder parameters, ±10 %)
    n = sum(p.numel() for p in MixTransformer(MIT_CONFIGS["b0"]).parameters())
    assert 3.0e6 < n < 3.8e6


def test_forward_shapes_sigma_and_uv_cache():
    torch.manual_seed(0)
    net = build_net("tiny").eval()
    uv = torch.rand(50, 2)
    with torch.no_grad():
        out = net(torch.rand(3, 3, 64, 64), uv)
        assert net.uv() is net.uv()   # image-independent features are cached at inference
    assert len(out.iterations) == PRESETS["tiny"].iters
    assert out.final.points.shape == (3, 50, 2) and out.final.log_b.shape == (3, 50)
    assert out.pos_map.shape == (3, 2, 16, 16)
    s = out.final.sigma
    assert torch.isfinite(s).all() and (s > 0).all() and torch.isfinite(out.final.points).all()
    net.train()
    assert net.uv() is not net.uv()   # training: recomputed (weights change)


def test_corr_lookup_finds_the_match():
    C, R, H, W = 8, 4, 10, 12
    g = torch.Generator().manual_seed(0)
    fimg = torch.nn.functional.normalize(torch.randn(1, C, H, W, generator=g), dim=1)  # unit: self-match is max
    # texel (1, 2) has exactly the features of image cell (row 6, col 3)
    fuv = torch.randn(1, C, R, R, generator=g) * 0.01
    fuv[0, :, 1, 2] = fimg[0, :, 6, 3]
    corr = CorrPyramid(fuv, fimg, levels=1, radius=2)
    coords = torch.zeros(1, 2, R, R)
    coords[0, :, 1, 2] = torch.tensor([3.5, 6.5])    # the centre of cell (6, 3)
    look = corr.lookup(coords)[0, :, 1, 2].reshape(5, 5)
    expect = torch.einsum("c,chw->hw", fimg[0, :, 6, 3], fimg[0]) / math.sqrt(C)
    torch.testing.assert_close(look, expect[4:9, 1:6], atol=1e-5, rtol=1e-5)
    assert look[2, 2] == look.max()


def test_sample_uv_is_exact_for_linear_maps():
    R = 8
    g = (torch.arange(R) + 0.5) / R
    vv, uu = torch.meshgrid(1 - g, g, indexing="ij")
    maps = torch.stack([3 * uu + 1, -2 * vv + 5])[None]
    uv = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.1 + 0.5 / R, 0.9 - 0.5 / R]])
    out = sample_uv(maps, uv)[0]
    uv = uv.clamp(0.5 / R, 1 - 0.5 / R)
    torch.testing.assert_close(out, torch.stack([3 * uv[:, 0] + 1, -2 * uv[:, 1] + 5], 1), atol=1e-5, rtol=0)


def test_laplace_nll_optimum_is_mean_abs_error():
    torch.manual_seed(0)
    tgt = torch.randn(1, 400, 2) * 3
    pts = torch.zeros(1, 400, 2)
    vis = torch.ones(1, 400, dtype=torch.bool)
    vis[0, :50] = False
    mae = tgt[0, 50:].abs().mean()
    vals = {b: float(laplace_nll(DenseIteration(pts, torch.full((1, 400), math.log(b))), tgt, vis))
            for b in (float(mae) * 0.7, float(mae), float(mae) * 1.4)}
    assert min(vals, key=vals.get) == float(mae)
    # the sequence loss weighs later iterations more (γ^(N-1-i))
    from flamecap.dense.model import DenseOutput
    it_bad = DenseIteration(pts + 5, torch.zeros(1, 400))
    it_good = DenseIteration(tgt.clone(), torch.zeros(1, 400))
    a = sequence_loss(DenseOutput([it_bad, it_good], None, None), tgt, vis, gamma=0.5)
    b = sequence_loss(DenseOutput([it_good, it_bad], None, None), tgt, vis, gamma=0.5)
    assert a < b


def test_synthetic_stream_is_seeded_and_consistent(small_model):
    cfg = SynthConfig(image_size=64, occluder_prob=1.0)
    ds = SyntheticFaceStream(small_model, cfg, seed=3, start=5, length=2)
    items = list(ds)
    assert [it["index"] for it in items] == [5, 6]
    again = next(iter(SyntheticFaceStream(small_model, cfg, seed=3, start=5, length=1)))
    torch.testing.assert_close(items[0]["image"], again["image"])
    torch.testing.assert_close(items[0]["points"], again["points"])
    assert items[0]["image"].shape == (3, 64, 64) and items[0]["points"].shape == (small_model.n_vertices, 2)
    r = SyntheticRenderer(small_model, SynthConfig(image_size=64, occluder_prob=0.0))
    s = r.sample(np.random.default_rng([0, 0]))
    vis = s.visible
    assert 0.15 < vis.mean() < 0.8                 # the back of the head is hidden
    inside = (s.points >= 0).all(1) & (s.points < 64).all(1)
    assert not (vis & ~inside).any()               # visible ⇒ inside the crop
    # framing: the face region's box, scaled by the margin (± the jitter), is centred in the crop
    cx, cy, side = crop_box(s.points[r.frame_idx], 1.5)
    assert abs(cx - 32) < 0.2 * 64 and abs(cy - 32) < 0.2 * 64 and 0.6 * 64 < side < 1.6 * 64
    assert vis.sum() > 50 and np.isfinite(s.points).all()


def test_checkpoint_roundtrip_and_errors(tmp_path, small_model):
    torch.manual_seed(0)
    net = build_net("tiny")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 64, 64)
    uv = torch.as_tensor(small_model["vertex_uv"][:30])
    sequence_loss(net(x, uv), torch.rand(2, 30, 2) * 64, torch.ones(2, 30, dtype=torch.bool)).backward()
    opt.step()
    p = save_checkpoint(tmp_path / "c.safetensors", net, small_model["vertex_uv"], small_model.topology,
                        step=7, optimizer=opt, train_config={"a": 1}, history=[{"step": 7}],
                        frame_vertices=np.arange(5))
    ck = load_checkpoint(p)
    assert ck.step == 7 and ck.config == net.cfg and ck.train_config == {"a": 1} and ck.optim_state
    assert ck.topology_hash == small_model.topology and ck.frame_vertices.tolist() == [0, 1, 2, 3, 4]
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(ck.net(x, uv).final.points, net(x, uv).final.points)
    opt2 = torch.optim.AdamW(ck.net.parameters(), lr=1e-3)
    opt2.load_state_dict(ck.optim_state)
    pairs = [(p1, p2) for p1, p2 in zip(net.parameters(), ck.net.parameters()) if p1 in opt.state]
    assert len(pairs) == len(opt.state) == len(opt2.state)
    for p1, p2 in pairs:
        torch.testing.assert_close(opt.state[p1]["exp_avg"], opt2.state[p2]["exp_avg"])
        torch.testing.assert_close(opt.state[p1]["step"], opt2.state[p2]["step"])
    # bad inputs: one-line WeightsError
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(WeightsError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "other"})
    with pytest.raises(WeightsError, match="not FlameCap dense"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_config_validation():
    with pytest.raises(ValueError):
        DenseNetConfig(image_size=100)
    with pytest.raises(ValueError):
        DenseNetConfig(encoder="b9")
    assert DenseNetConfig.from_dict(PRESETS["b5"].to_dict()) == PRESETS["b5"]
