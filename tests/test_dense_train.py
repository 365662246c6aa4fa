"""Dense aligner training (overfit a tiny config on CPU), resume, export, inference backend and CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flamecap.dense.checkpoint import load_checkpoint
from flamecap.dense.data import SynthConfig, fixed_set
from flamecap.dense.model import FlowFaceNet
from flamecap.dense.train import TrainConfig, evaluate, train
from flamecap.errors import WeightsError

FAST = dict(preset="tiny", image_size=96, net={"iters": 3}, batch_size=4, fixed_n=4, n_vertices=128,
            eval_n=0, warmup=0.02, weight_decay=0.0, synth=SynthConfig(occluder_prob=0.0))


@pytest.fixture(scope="module")
def small_model():
    from flamecap.flame.synthetic import make_synthetic_model
    return make_synthetic_model(n_shape=10, n_expr=5, subdivisions=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_model):
    """Tiny network overfitted on 4 fixed renders: (checkpoint path, config, error before, after)."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("dense") / "ckpt.safetensors"
    cfg = TrainConfig(steps=320, lr=2e-3, ckpt_every=0, **FAST)
    data = fixed_set(small_model, cfg.synth, cfg.seed, cfg.fixed_n)
    torch.manual_seed(cfg.seed)
    before = evaluate(FlowFaceNet(cfg.net_config()), small_model["vertex_uv"], data)
    train(cfg, small_model, out)
    ck = load_checkpoint(out)
    after = evaluate(ck.net, ck.vertex_uv, data)
    return out, cfg, before, after, data


@pytest.mark.slow
def test_tiny_network_overfits_a_small_synthetic_set(trained):
    out, cfg, before, after, _ = trained
    print(f"per-vertex error {before.mean_px:.2f} px -> {after.mean_px:.2f} px "
          f"({before.mean_px / after.mean_px:.1f}x), sigma {after.mean_sigma_px:.2f} px, "
          f"within 2 sigma {after.within_2sigma:.2f}")
    assert before.mean_px / after.mean_px >= 5.0
    assert np.isfinite(after.mean_sigma_px) and after.mean_sigma_px > 0
    # σ tracks the error scale (Laplace: E|x-μ| = b = σ/√2, 2D error ≈ 1.6 b)
    assert 0.2 < after.mean_sigma_px / after.mean_px < 5.0
    ck = load_checkpoint(out)
    assert ck.step == 320 and len(ck.history) == 320 and ck.optim_state is not None


def test_resume_continues_exactly(tmp_path, small_model):
    torch.set_num_threads(2)
    cfg = TrainConfig(steps=4, lr=1e-3, ckpt_every=0, **dict(FAST, image_size=64, fixed_n=2, batch_size=2,
                                                            n_vertices=32))
    full = train(cfg, small_model, tmp_path / "full.safetensors")
    part = tmp_path / "part.safetensors"
    first = train(cfg, small_model, part, stop_at=2)           # interrupted after step 2
    assert first.step == 2 and load_checkpoint(part).step == 2
    resumed = train(cfg, small_model, part, resume=True)
    assert resumed.step == 4 and len(resumed.history) == 4
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-5)
    a, b = load_checkpoint(tmp_path / "full.safetensors"), load_checkpoint(part)
    for (k, v1), v2 in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        torch.testing.assert_close(v1, v2, atol=1e-6, rtol=1e-5, msg=k)
    with pytest.raises(WeightsError, match="another network config"):
        train(TrainConfig(**{**cfg.__dict__, "image_size": 96}), small_model, part, resume=True)


def _frames(data, scale: int = 2) -> list[np.ndarray]:
    import cv2
    imgs = (data["image"].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return [cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) for im in imgs]


def test_aligner_without_weights_is_a_one_line_error():
    from flamecap.landmarks import get_aligner
    from flamecap.landmarks.dense_aligner import NO_WEIGHTS, DenseAligner
    with pytest.raises(WeightsError) as exc:
        DenseAligner()
    assert str(exc.value) == NO_WEIGHTS and "flamecap dense train" in NO_WEIGHTS and "--weights" in NO_WEIGHTS
    with pytest.raises(WeightsError):
        get_aligner("dense")
    with pytest.raises(WeightsError, match="not found"):
        get_aligner("dense", weights="/nonexistent/w.safetensors")


@pytest.mark.slow
def test_aligner_tracks_frames_and_binds_vertices(trained, small_model):
    from flamecap.landmarks.dense_aligner import DenseAligner
    out, cfg, _, after, data = trained
    frames = _frames(data)
    al = DenseAligner(weights=out, device="cpu", batch_size=3, detector="full")
    tr = al.track(((i, i / 25, f) for i, f in enumerate(frames)), (192, 192), 25.0, n_frames=len(frames))
    V = small_model.n_vertices
    assert tr.scheme == "vertices" and tr.points.shape == (4, V, 2) and tr.sigma.shape == (4, V)
    assert tr.valid.any()
    ok = tr.valid
    assert np.isfinite(tr.points[ok]).all() and (tr.sigma[ok] > 0).all() and np.isfinite(tr.sigma[ok]).all()
    assert tr.frame_index.tolist() == [0, 1, 2, 3]
    # points come back in full-image pixels: compare with the ground truth (×2) on visible vertices
    gt = data["points"].numpy() * 2
    vis = data["visible"].numpy() & ok[:, None]
    err = np.linalg.norm(tr.points - gt, axis=-1)[vis]
    size = np.ptp(gt[0][data["visible"][0].numpy()], axis=0).max()
    print(f"dense aligner on training frames: mean error {err.mean():.2f} px (head box {size:.0f} px)")
    assert err.mean() < 0.25 * size
    from flamecap.binding import bind
    al.check_model(small_model)
    b = bind(al.scheme, small_model)
    assert b.source == "vertices" and len(b.point_index) == V
    tri = small_model.faces[b.face_idx]
    corner = tri[np.arange(len(tri)), b.bary.argmax(1)]
    assert (corner == b.point_index).all() and np.allclose(b.bary.sum(1), 1) and (b.bary.max(1) == 1).all()
    from flamecap.flame.synthetic import make_synthetic_model
    with pytest.raises(WeightsError, match="another head topology"):
        al.check_model(make_synthetic_model(n_shape=10, n_expr=5, subdivisions=3))


@pytest.mark.slow
def test_cli_eval_export_install_and_landmarks(trained, small_model, tmp_path, capsys):
    import cv2
    from flamecap.cli import main
    from flamecap.contract.model_format import save_model_npz
    from flamecap.landmarks.base import LandmarkTrack
    from flamecap.landmarks.dense_aligner import default_weights_path
    out, cfg, _, after, data = trained
    model_path = save_model_npz(tmp_path / "head.npz", small_model)
    assert main(["dense", "eval", str(out), "--model", str(model_path), "--n", "2", "--json"]) == 0
    import json
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n_images"] == 2 and res["mean_px"] > 0
    exp = tmp_path / "flowface_dense.safetensors"
    assert main(["dense", "export", str(out), "-o", str(exp), "--half", "--install"]) == 0
    ck = load_checkpoint(exp)
    assert ck.optim_state is None and default_weights_path().is_file()
    side = json.loads(exp.with_suffix(".json").read_text())
    import hashlib
    assert side["sha256"] == hashlib.sha256(exp.read_bytes()).hexdigest() and side["dtype"] == "float16"
    assert default_weights_path().with_suffix(".json").is_file()
    assert exp.stat().st_size < out.stat().st_size
    # bad weights: non-zero exit, one line
    (tmp_path / "bad.safetensors").write_bytes(b"xx")
    assert main(["dense", "eval", str(tmp_path / "bad.safetensors"), "--model", str(model_path)]) == 5
    # `flamecap landmarks --aligner dense` end to end (installed default weights)
    fdir = tmp_path / "frames"
    fdir.mkdir()
    for i, f in enumerate(_frames(data)):
        cv2.imwrite(str(fdir / f"frame_{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    lm = tmp_path / "lm.npz"
    assert main(["landmarks", str(fdir), "--aligner", "dense", "-o", str(lm), "--progress", "none"]) == 0
    tr = LandmarkTrack.load(lm)
    assert tr.scheme == "vertices" and tr.n_points == small_model.n_vertices and tr.n_frames == 4


@pytest.mark.slow
def test_track_command_with_dense_aligner(trained, small_model, tmp_path):
    import importlib.util
    if importlib.util.find_spec("flamecap.commands.track") is None:
        pytest.skip("the track command is not in this build yet")
    import cv2
    from flamecap.cli import main
    from flamecap.contract.model_format import save_model_npz
    from flamecap.contract.result import load_result
    out, cfg, _, after, data = trained
    model_path = save_model_npz(tmp_path / "head.npz", small_model)
    fdir = tmp_path / "frames"
    fdir.mkdir()
    for i, f in enumerate(_frames(data)):
        cv2.imwrite(str(fdir / f"frame_{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    res = tmp_path / "result.npz"
    code = main(["track", str(fdir), "-o", str(res), "--model", str(model_path), "--aligner", "dense",
                 "--weights", str(out), "--progress", "none"])
    assert code == 0 and res.is_file()
    r = load_result(res)
    assert r.meta.get("aligner") in ("dense", None) and r.n_frames == 4


def test_cli_train_resume_and_bad_input(small_model, tmp_path, capsys):
    import json
    from flamecap.cli import main
    from flamecap.contract.model_format import save_model_npz
    model_path = save_model_npz(tmp_path / "head.npz", small_model)
    ck = tmp_path / "ck.safetensors"
    common = ["dense", "train", "-o", str(ck), "--model", str(model_path), "--preset", "tiny", "--batch-size", "2",
              "--vertices", "16", "--eval-n", "1", "--fixed-n", "2", "--progress", "jsonl"]
    assert main(common + ["--steps", "2"]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done" and events[-1]["step"] == 2
    assert any(e["event"] == "progress" for e in events) and events[-1]["eval"]["mean_px"] > 0
    assert main(common + ["--steps", "3", "--resume"]) == 0
    assert load_checkpoint(ck).step == 3
    capsys.readouterr()
    assert main(common[:3] + [str(tmp_path / "none.safetensors")] + common[4:] + ["--steps", "2", "--resume"]) == 2
    assert main(common + ["--steps", "2", "--image-size", "100"]) == 2
    assert main(common + ["--steps", "2", "--preset", "b9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_detector_box_on_real_footage(grid_dir):
    """MediaPipe's full-range detector (on LiteRT) gives the first crop: on a real frame it must land on the face."""
    from flamecap.landmarks import get_aligner
    from flamecap.landmarks.dense_aligner import DenseAligner
    from flamecap.video import open_footage
    fi, ts, rgb = next(iter(open_footage(grid_dir / "bbaf2n.mpg")))
    faces = get_aligner().detect_image(rgb)
    assert faces, "MediaPipe FaceMesh finds this face (data README)"
    al = DenseAligner.__new__(DenseAligner)        # only the detector; no weights needed for it
    al.detector, al.margin, al._fd = "mediapipe", 1.5, None
    cx, cy, side = al._detect(rgb)
    pts = faces[0][:, :2]
    lo, hi = pts.min(0), pts.max(0)
    assert lo[0] - 0.1 * side < cx < hi[0] + 0.1 * side and lo[1] < cy < hi[1]
    assert 1.0 * (hi - lo).max() < side < 3.0 * (hi - lo).max()
