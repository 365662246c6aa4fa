"""MICA identity: architecture and checkpoint layout, safe loading, preprocessing, frame selection,
missing-weights errors, CLI."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from flamecap.errors import NoFaceError, WeightsError
from flamecap.identity import checkpoint, preprocess
from flamecap.identity.arcface import IRESNET100_LAYERS, IResNet, recalibrate_batchnorm
from flamecap.identity.mica import (build_mica, estimate_shape_from_footage, fit_shape_length,
                                    load_mica, load_weights_into, predict_shapes, select_frames)

SMALL = dict(layers=(1, 1, 1, 1), widths=(8, 16, 16, 32))


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: avoids OpenMP oversubscription on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def r100_ckpt(tmp_path_factory) -> Path:
    """A random IResNet-100 + mapping network saved in mica.tar's layout (~260 MB, built once)."""
    torch.manual_seed(0)
    net = build_mica()
    recalibrate_batchnorm(net.arcface, [torch.randn(2, 3, 112, 112)])
    path = tmp_path_factory.mktemp("mica") / "mica.tar"
    torch.save(official_payload(net), path)
    return path


def small_net(seed: int = 0):
    torch.manual_seed(seed)
    net = build_mica(**SMALL)
    recalibrate_batchnorm(net.arcface, [torch.randn(8, 3, 112, 112)])
    return net.eval()


def official_payload(net, flame_buffers: bool = True, leftovers: bool = True) -> dict:
    """A dict laid out like MICA's mica.tar: 'arcface' + 'flameModel' (regressor.* + generator.*)."""
    fm = {"regressor." + k: v for k, v in net.mapping.state_dict().items()}
    if flame_buffers:  # FLAME 2020 buffers of MICA's Generator (ignored by FlameCap)
        fm.update({"generator.v_template": torch.zeros(5023, 3), "generator.faces_tensor": torch.zeros(9976, 3, dtype=torch.long),
                   "generator.shapedirs": torch.zeros(5023, 3, 400), "generator.eye_pose": torch.zeros(1, 6),
                   "generator.neck_kin_chain": torch.tensor([1, 0])})
    d = {"arcface": net.arcface.state_dict(), "flameModel": fm}
    if leftovers:
        d.update({"epoch": 3, "global_step": 1234, "batch_size": 8})
    return d


# ------------------------------------------------------------------------------------------ architecture


def test_default_build_is_iresnet100_with_mica_mapping():
    net = build_mica()
    a = net.arcface
    assert a.layers_cfg == IRESNET100_LAYERS == (3, 13, 30, 3)
    assert [len(getattr(a, f"layer{i}")) for i in range(1, 5)] == [3, 13, 30, 3]
    assert a.fc.in_features == 512 * 7 * 7 and a.fc.out_features == 512
    assert isinstance(a.features, torch.nn.BatchNorm1d) and not a.features.weight.requires_grad
    sd = a.state_dict()
    # insightface key names
    for k in ("conv1.weight", "bn1.running_var", "prelu.weight", "layer1.0.downsample.0.weight",
              "layer1.0.downsample.1.running_mean", "layer3.29.bn3.weight", "layer4.2.prelu.weight",
              "bn2.weight", "fc.weight", "features.running_mean"):
        assert k in sd, k
    assert sum(p.numel() for p in a.parameters()) == pytest.approx(65.2e6, rel=0.01)
    m = net.mapping
    assert [tuple(layer.weight.shape) for layer in m.network] == [(300, 512), (300, 300), (300, 300), (300, 300)]
    assert tuple(m.output.weight.shape) == (300, 300)
    assert list(m.state_dict()) == [f"network.{i}.{p}" for i in range(4) for p in ("weight", "bias")] + \
        ["output.weight", "output.bias"]


def test_r100_random_official_checkpoint_loads_deterministic(r100_ckpt):
    path = r100_ckpt
    loaded = load_mica(path, device="cpu")
    assert not loaded.training
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = predict_shapes(loaded, x)
    b = predict_shapes(loaded, x.clone())
    assert a.shape == (1, 300) and np.all(np.isfinite(a)) and np.abs(a).max() > 0
    np.testing.assert_array_equal(a, b)
    emb = loaded.embed(x)
    assert torch.allclose(emb.norm(dim=1), torch.ones(1), atol=1e-5)
    # the loaded weights are the saved ones (check a deep parameter)
    sd = torch.load(path, weights_only=True)
    assert torch.equal(loaded.arcface.layer3[29].conv2.weight, sd["arcface"]["layer3.29.conv2.weight"])
    assert torch.equal(loaded.mapping.output.bias, sd["flameModel"]["regressor.output.bias"])


# ---------------------------------------------------------------------------------------- safe loading


def test_read_weights_sorts_mica_and_insightface(tmp_path):
    net = small_net()
    torch.save(official_payload(net), tmp_path / "m.tar")
    w = checkpoint.read_weights(tmp_path / "m.tar")
    assert w.kind == "mica" and set(w.mapping) == set(net.mapping.state_dict())
    assert "generator.v_template" in w.flame_keys
    other = build_mica(**SMALL)
    load_weights_into(other, w)
    x = torch.randn(2, 3, 112, 112)
    np.testing.assert_allclose(predict_shapes(other, x), predict_shapes(net, x), rtol=1e-5, atol=1e-6)
    # insightface backbone.pth (DataParallel prefix) = encoder only
    torch.save({"module." + k: v for k, v in net.arcface.state_dict().items()}, tmp_path / "backbone.pth")
    e = checkpoint.read_weights(tmp_path / "backbone.pth")
    assert e.kind == "insightface" and e.mapping is None
    enc = IResNet(**SMALL)
    checkpoint.load_into(enc, e.arcface, "ArcFace encoder", "backbone.pth")
    enc.eval()
    assert torch.allclose(enc(x), net.arcface(x), atol=1e-6)


def test_unexpected_entries_and_keys_are_named(tmp_path):
    net = small_net()
    p = official_payload(net)
    p["secret_sauce"] = torch.zeros(1)
    torch.save(p, tmp_path / "a.tar")
    with pytest.raises(WeightsError, match="secret_sauce"):
        checkpoint.read_weights(tmp_path / "a.tar")
    p = official_payload(net)
    p["flameModel"]["decoder.weight"] = torch.zeros(3)
    torch.save(p, tmp_path / "b.tar")
    with pytest.raises(WeightsError, match="decoder.weight"):
        checkpoint.read_weights(tmp_path / "b.tar")
    p = official_payload(net)
    p["arcface"]["layer9.0.conv1.weight"] = torch.zeros(3)
    torch.save(p, tmp_path / "c.tar")
    w = checkpoint.read_weights(tmp_path / "c.tar")
    with pytest.raises(WeightsError, match="layer9.0.conv1.weight"):
        load_weights_into(build_mica(**SMALL), w)
    p = official_payload(net)
    p["flameModel"]["regressor.output.weight"] = torch.zeros(10, 300)
    torch.save(p, tmp_path / "d.tar")
    with pytest.raises(WeightsError, match=r"output.weight \(10, 300\)"):
        load_weights_into(build_mica(**SMALL), checkpoint.read_weights(tmp_path / "d.tar"))
    # small-encoder weights do not fit the real r100 architecture
    torch.save(official_payload(net), tmp_path / "e.tar")
    with pytest.raises(WeightsError, match="missing keys|wrong shapes"):
        load_mica(tmp_path / "e.tar", device="cpu")


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.tar", "wb") as fh:
        pickle.dump({"arcface": Evil()}, fh)
    torch.save({"arcface": {"x": torch.zeros(1)}, "flameModel": Evil()}, tmp_path / "evil2.tar")
    for name in ("evil.tar", "evil2.tar"):
        with pytest.raises(WeightsError, match="refusing|not a readable"):
            checkpoint.read_weights(tmp_path / name)
    assert "must never run" not in capsys.readouterr().out
    (tmp_path / "junk.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        checkpoint.read_weights(tmp_path / "junk.tar")


def test_save_checkpoint_roundtrip(tmp_path):
    net = small_net(3)
    out = checkpoint.save_mica_checkpoint(tmp_path / "trained.tar", net, extra={"global_step": 5})
    raw = torch.load(out, weights_only=True)
    assert set(raw) == {"arcface", "flameModel", "global_step"}
    assert all(k.startswith("regressor.") for k in raw["flameModel"])
    other = load_weights_into(build_mica(**SMALL), checkpoint.read_weights(out))
    x = torch.randn(1, 3, 112, 112)
    np.testing.assert_allclose(predict_shapes(other, x), predict_shapes(net, x), rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------------------- missing weights


def test_missing_weights_one_line_with_instructions(tmp_path):
    with pytest.raises(WeightsError) as ei:
        checkpoint.resolve_weights(None)
    msg = str(ei.value)
    assert "\n" not in msg and str(checkpoint.default_weights_path()) in msg
    assert "mica.tar" in msg and "flamecap identity add-weights" in msg and "non-commercial" in msg
    assert ei.value.exit_code == 5
    # fails on the weights before touching the (here nonexistent) footage
    with pytest.raises(WeightsError, match="MICA weights not found at .*nope.tar"):
        estimate_shape_from_footage(tmp_path / "no_video.mp4", 100, tmp_path / "nope.tar")


def test_cli_identity_without_weights(tmp_path, capsys):
    from flamecap.cli import main

    img = tmp_path / "face.png"
    import cv2
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    code = main(["identity", str(img), "--weights", str(tmp_path / "missing.tar"), "-o", str(tmp_path / "s.npz"),
                 "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "MICA weights not found" in err[0] and "add-weights" in err[0]
    assert not (tmp_path / "s.npz").exists()
    code = main(["identity", "add-weights", str(tmp_path / "missing.tar")])
    assert code == 5 and "does not exist" in capsys.readouterr().err


def test_add_weights_checks_and_installs(tmp_path):
    net = small_net()
    torch.save({"arcface": net.arcface.state_dict()}, tmp_path / "enc_only.tar")
    with pytest.raises(WeightsError, match="only encoder"):
        checkpoint.install_weights(tmp_path / "enc_only.tar")
    torch.save(official_payload(net), tmp_path / "small.tar")
    with pytest.raises(WeightsError, match="do not match|wrong shapes"):
        checkpoint.install_weights(tmp_path / "small.tar")
    assert not checkpoint.default_weights_path().exists()


# ---------------------------------------------------------------------------------------- preprocessing


def _blob_image(points: np.ndarray, size=(400, 300), sigma=2.0) -> np.ndarray:
    """RGB image with a Gaussian blob centred at each point (FlameCap px: pixel centres at i + 0.5)."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    img = np.zeros((h, w), np.float64)
    for x, y in points:
        img += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    img = np.clip(img / img.max() * 255, 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def _centroids(crop: np.ndarray, guesses: np.ndarray, r: int = 5) -> np.ndarray:
    g = crop[..., 0].astype(np.float64)
    out = []
    for x, y in guesses:
        xi, yi = int(round(x)), int(round(y))
        ys, xs = np.mgrid[yi - r: yi + r + 1, xi - r: xi + r + 1]
        wgt = g[yi - r: yi + r + 1, xi - r: xi + r + 1]
        wgt = np.clip(wgt - 0.1 * wgt.max(), 0, None)
        out.append([(xs * wgt).sum() / wgt.sum(), (ys * wgt).sum() / wgt.sum()])
    return np.asarray(out)  # OpenCV index px of the crop


def test_align_maps_known_points_onto_template():
    rng = np.random.default_rng(0)
    T = preprocess.ARCFACE_TEMPLATE
    for trial in range(3):
        ang, scale = rng.uniform(-0.5, 0.5), rng.uniform(1.2, 2.2)
        R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        pts = (T - 56) @ R.T * scale + np.array([200.0, 150.0]) + rng.uniform(-20, 20, 2)  # FlameCap px
        M = preprocess.alignment_matrix(pts)
        np.testing.assert_allclose(preprocess.apply_affine(M, pts - 0.5), T, atol=1e-6)
        aligned = preprocess.align_face(_blob_image(pts, sigma=2.0 * scale), pts)
        assert aligned.image.shape == (112, 112, 3) and aligned.image.dtype == np.uint8
        assert aligned.residual_px < 1e-6
        err = np.linalg.norm(_centroids(aligned.image, T) - T, axis=1)
        assert err.max() < 0.5, err


def test_umeyama_recovers_similarity_and_rejects_degenerate():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(7, 2)) * 30
    ang, s, t = 0.7, 0.37, np.array([5.0, -3.0])
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    M = preprocess.umeyama_similarity(src, src @ R.T * s + t)
    np.testing.assert_allclose(M[:, :2], s * R, atol=1e-10)
    np.testing.assert_allclose(M[:, 2], t, atol=1e-9)
    from flamecap.errors import InputError
    with pytest.raises(InputError):
        preprocess.umeyama_similarity(np.ones((5, 2)), src[:5])


def test_mediapipe_five_points_and_input_scaling():
    lm = np.arange(478 * 2, dtype=np.float64).reshape(478, 2)
    five = preprocess.five_points_from_mediapipe(lm)
    np.testing.assert_array_equal(five, lm[[468, 473, 1, 61, 291]])
    lm468 = lm[:468]
    five = preprocess.five_points_from_mediapipe(lm468[None])[0]
    np.testing.assert_allclose(five[0], lm[[33, 133]].mean(0))
    np.testing.assert_allclose(five[1], lm[[362, 263]].mean(0))
    x = preprocess.to_arcface_input(np.array([[[[0, 255, 127]]]], np.uint8).repeat(4, 1).repeat(4, 2))
    assert x.shape == (1, 3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [-1.0, 1.0, 127 / 127.5 - 1.0], atol=1e-6)


def test_frontality_scores():
    T = preprocess.ARCFACE_TEMPLATE
    assert preprocess.frontality(T) > 0.97
    turned = T.copy()
    turned[2, 0] += 12.0  # nose far off centre = yaw
    assert preprocess.frontality(turned) < 0.5
    ang = 0.6  # roll does not change frontality
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    assert preprocess.frontality(T @ R.T) == pytest.approx(preprocess.frontality(T), abs=1e-9)


def test_fit_shape_length():
    s = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(fit_shape_length(s, 3), [0, 1, 2])
    np.testing.assert_array_equal(fit_shape_length(s, 7), [0, 1, 2, 3, 4, 0, 0])


def test_no_face_is_reported(tmp_path):
    import cv2
    img = tmp_path / "blank.png"
    cv2.imwrite(str(img), np.full((120, 160, 3), 90, np.uint8))
    with pytest.raises(NoFaceError, match="no face"):
        select_frames(img, k=2)
    with pytest.raises(NoFaceError):
        preprocess.prepare_image(np.full((120, 160, 3), 90, np.uint8))


# ---------------------------------------------------------------------------------- real footage (GRID)


def test_frame_selection_and_footage_estimate_on_real_video(grid_dir):
    video = grid_dir / "bbaf2n.mpg"
    cands = select_frames(video, k=3, max_candidates=6)
    assert len(cands) == 3
    scores = [c.score for c in cands]
    assert scores == sorted(scores, reverse=True)
    for c in cands:
        assert c.crop.shape == (112, 112, 3) and c.frontality > 0.6 and c.sharpness > 0
        M = preprocess.alignment_matrix(c.five_points)
        res = np.linalg.norm(preprocess.apply_affine(M, c.five_points - 0.5) - preprocess.ARCFACE_TEMPLATE, axis=1)
        assert res.max() < 6.0  # a real face's five points are close to a similar copy of the template
    events = []
    net = small_net()
    shape = estimate_shape_from_footage(video, 50, None, progress=lambda s, f, m: events.append((s, f)),
                                        k=2, max_candidates=4, net=net)
    assert shape.shape == (50,) and shape.dtype == np.float32 and np.all(np.isfinite(shape))
    assert np.all(shape[:50] != 0)
    assert events and all(s == "identity" for s, _ in events) and events[-1][1] == 1.0
    fr = [f for _, f in events]
    assert fr == sorted(fr)


def test_cli_identity_on_real_frame_and_add_weights(grid_dir, r100_ckpt, tmp_path, capsys):
    import cv2

    from flamecap.cli import main
    from flamecap.contract.npzio import read_npz

    cap = cv2.VideoCapture(str(grid_dir / "bbaf2n.mpg"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    img = tmp_path / "frame.png"
    cv2.imwrite(str(img), frame)
    code = main(["identity", "add-weights", str(r100_ckpt)])
    assert code == 0 and checkpoint.default_weights_path().is_file()
    assert "sha256" in capsys.readouterr().out
    out = tmp_path / "shape.npz"
    code = main(["identity", str(img), "-o", str(out), "--n-shape", "100", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    arrays, meta = read_npz(out)
    assert arrays["shape"].shape == (100,) and np.all(np.isfinite(arrays["shape"]))
    assert meta["method"] == "mica" and meta["space"] == "FLAME2020" and len(meta["weights_sha256"]) == 64
    # with a head model: truncated to its n_shape, neutral mesh saved
    from flamecap.contract.model_format import save_model_npz
    from flamecap.flame.synthetic import make_synthetic_model
    model = make_synthetic_model(n_shape=20, n_expr=5, subdivisions=2)
    save_model_npz(tmp_path / "head.npz", model)
    code = main(["identity", str(img), "-o", str(tmp_path / "s2.npz"), "--model", str(tmp_path / "head.npz"),
                 "--progress", "jsonl"])
    assert code == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert '"done"' in lines[-1]
    a2, _ = read_npz(tmp_path / "s2.npz")
    np.testing.assert_allclose(a2["shape"], arrays["shape"][:20])
    assert a2["neutral_vertices"].shape == (model.n_vertices, 3)
    # the same code as the library path on the same aligned crop
    net = load_mica(r100_ckpt, device="cpu")
    from flamecap.identity.mica import estimate_shape_from_image
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(arrays["shape"], estimate_shape_from_image(rgb, net, 100), rtol=1e-4, atol=1e-6)


def test_cli_identity_train(r100_ckpt, tmp_path, capsys):
    import cv2

    from flamecap.cli import main
    from flamecap.contract.model_format import save_model_npz
    from flamecap.flame.synthetic import make_synthetic_model

    model = make_synthetic_model(n_shape=12, n_expr=5, subdivisions=2)
    save_model_npz(tmp_path / "head.npz", model)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # already-aligned 112x112 crops (no detection needed) + their FLAME shapes
        cv2.imwrite(str(pairs / f"p{i}.png"), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
        np.save(pairs / f"p{i}.npy", rng.normal(size=12).astype(np.float32))
    cv2.imwrite(str(pairs / "orphan.png"), np.zeros((112, 112, 3), np.uint8))  # no .npy: skipped
    out = tmp_path / "trained.tar"
    code = main(["identity", "train", str(pairs), "--weights", str(r100_ckpt), "--model", str(tmp_path / "head.npz"),
                 "-o", str(out), "--steps", "3", "--batch-size", "3", "--lr", "1e-3", "--progress", "none"])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "trained on 3 pair(s), 3 steps" in text.out
    new = checkpoint.read_weights(out)
    old = checkpoint.read_weights(r100_ckpt)
    assert not torch.equal(new.mapping["output.weight"], old.mapping["output.weight"])
    assert torch.equal(new.arcface["layer4.2.conv2.weight"], old.arcface["layer4.2.conv2.weight"])
    assert main(["identity", "train", str(pairs), "--model", str(tmp_path / "head.npz")]) == 2  # no -o


def test_convert_shape_between_flame_releases(tmp_path):
    from flamecap.contract.model_format import FlameModelData, model_meta
    from flamecap.identity.mica import convert_shape

    rng = np.random.default_rng(0)
    V = 40
    v20 = rng.normal(size=(V, 3)) * 0.05
    d20 = rng.normal(size=(V, 3, 300)) * 1e-3
    s = np.zeros(300, np.float32)
    s[:20] = rng.normal(size=20)  # an identity the target basis can express exactly
    # a "FLAME 2023" model: another template and identity basis (a mix of FLAME 2020's first 20 directions)
    mix = rng.normal(size=(20, 20))
    t = rng.normal(size=20)
    v23 = v20 + np.einsum("vck,k->vc", d20[:, :, :20], t)
    d23 = np.einsum("vck,kj->vcj", d20[:, :, :20], mix)

    def model(release, dirs, tmpl):
        return FlameModelData(arrays={"v_template": tmpl, "shapedirs": dirs, "faces": np.array([[0, 1, 2]])},
                              meta=model_meta(release))

    c = convert_shape(s, model("flame2023-open", d23, v23), (v20, d20))
    assert c.shape == (20,) and c.dtype == np.float32
    np.testing.assert_allclose(c, np.linalg.solve(mix, s[:20] - t), rtol=1e-4, atol=1e-4)
    mesh23 = v23 + np.einsum("vck,k->vc", d23, c)
    mesh20 = v20 + np.einsum("vck,k->vc", d20, s)
    assert np.abs(mesh23 - mesh20).max() < 1e-6  # the same head, metres
    s = rng.normal(size=300).astype(np.float32)
    # FLAME 2020: the code is used as is
    np.testing.assert_array_equal(convert_shape(s, model("flame2020", d20[:, :, :50], v20), (v20, d20)), s[:50])
    # no basis at hand: as is (with a warning)
    np.testing.assert_array_equal(convert_shape(s, model("flame2023-open", d23, v23), None), s[:20])
    # mica.tar's generator buffers are picked up as the FLAME 2020 basis
    net = small_net()
    p = official_payload(net)
    p["flameModel"]["generator.v_template"] = torch.as_tensor(v20, dtype=torch.float32)
    p["flameModel"]["generator.shapedirs"] = torch.as_tensor(np.concatenate([d20, np.zeros((V, 3, 100))], 2),
                                                             dtype=torch.float32)
    torch.save(p, tmp_path / "m.tar")
    w = checkpoint.read_weights(tmp_path / "m.tar")
    assert w.flame_basis[0].shape == (V, 3) and w.flame_basis[1].shape == (V, 3, 300)
    np.testing.assert_allclose(w.flame_basis[1], d20, rtol=1e-6, atol=1e-9)
