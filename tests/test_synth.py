import numpy as np

from flamecap.cli import main
from flamecap.synth import SynthConfig, load_ground_truth, motion_sequence, render_clip


def test_motion_is_deterministic_and_bounded():
    from flamecap.flame.synthetic import make_synthetic_model
    m = make_synthetic_model()
    a = motion_sequence(m, SynthConfig(n_frames=50, yaw_max_deg=45, seed=3))
    b = motion_sequence(m, SynthConfig(n_frames=50, yaw_max_deg=45, seed=3))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["jaw_pose"][:, 0].min() >= 0 and a["jaw_pose"][:, 0].max() <= 0.35
    yaw = np.degrees(np.abs(a["global_rot"][:, 1] + a["neck_pose"][:, 1]))
    assert 30 < yaw.max() <= 45.01


def test_render_clip_ground_truth_consistent(tmp_path):
    import cv2
    from flamecap.flame.synthetic import make_synthetic_model
    m = make_synthetic_model()
    gt_path = render_clip(m, tmp_path, SynthConfig(n_frames=4, width=160, height=120))
    gt, meta = load_ground_truth(gt_path)
    T, V = 4, m.n_vertices
    assert gt["vertices"].shape == (T, V, 3) and gt["points_2d"].shape == (T, V, 2)
    assert gt["flow"].shape == (T - 1, V, 2)
    np.testing.assert_allclose(gt["points_2d"][1] - gt["points_2d"][0], gt["flow"][0], atol=1e-4)
    # roughly half the head is visible from the front, never all of it
    frac = gt["visible"].mean(1)
    assert np.all((frac > 0.2) & (frac < 0.8))
    cap = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == T
    assert not list(tmp_path.glob(".*tmp*"))


def test_synth_cli_bad_size(tmp_path, capsys):
    assert main(["synth", "-o", str(tmp_path / "x"), "--size", "big", "--model", "synthetic"]) == 2
    assert "--size" in capsys.readouterr().err
