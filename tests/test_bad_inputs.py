"""A new user's bad inputs, across the whole CLI and the core file APIs.

Every case runs the real CLI (``flamecap.cli.main`` in-process, a representative subset as a subprocess
``python -m flamecap``) and checks the house rule for errors: exit code != 0 (the documented one), exactly one
``error: ...`` line on stderr that says what to do, no Python traceback, with ``--progress jsonl`` also an
``error`` event on stdout, and nothing written: no output, no temporary file, an existing output untouched.

Inputs are tiny and built here (a 1446-vertex synthetic head, 3-6 frame 96 px clips); the truncated-video case
reads a GRID clip from ``../shared/data`` and skips when it is absent.
"""
from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flamecap import cli
from flamecap.contract import OutputPathError, atomic_output, check_output_path, read_npz, save_model_npz
from flamecap.contract.errors import ContractError
from flamecap.contract.npzio import write_npz_atomic
from flamecap.contract.result import TrackingResult, default_meta, save_result
from flamecap.errors import InputError
from flamecap.landmarks.base import LandmarkTrack

REPO = Path(__file__).resolve().parents[1]
GRID_CLIP = REPO.parent / "shared" / "data" / "footage" / "grid" / "bbaf2n.mpg"
# a location nobody (not even root) can create files in: /proc refuses new entries
UNWRITABLE = Path("/proc/flamecap_cannot_write_here.npz")
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")


class _Evil:
    """Pickles to a call of os.system: a FLAME loader must refuse it without running it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def F(tmp_path_factory) -> dict[str, Path]:
    """Every bad (and a few good) input files, built once."""
    import cv2
    from flamecap.flame.synthetic import make_synthetic_model
    d = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    f: dict[str, Path] = {"dir": d}

    # models
    m = make_synthetic_model(n_shape=10, n_expr=5, subdivisions=2)
    f["model"] = save_model_npz(d / "model.npz", m)
    ma, mm = read_npz(f["model"])
    a = dict(ma, shapedirs=ma["shapedirs"].copy())
    a["shapedirs"][0, 0, 0] = np.nan
    f["model_nan"] = write_npz_atomic(d / "model_nan.npz", a, mm)
    f["model_shape"] = write_npz_atomic(d / "model_shape.npz", dict(ma, shapedirs=ma["shapedirs"][:-3]), mm)
    f["png_pkl"] = d / "face.pkl"
    f["png_pkl"].write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sys.path.insert(0, str(Path(__file__).parent))
    from flame_pkl_fixtures import write_flame_pkl
    good = write_flame_pkl(d / "good.pkl")
    f["trunc_pkl"] = d / "trunc.pkl"
    f["trunc_pkl"].write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    f["pwned"] = d / "PWNED"
    f["evil_pkl"] = d / "evil.pkl"
    f["evil_pkl"].write_bytes(pickle.dumps({"v_template": _Evil(f["pwned"])}, protocol=2))

    # results (consistent with the model)
    T, V = 4, m.n_vertices
    arr = {"expr": np.zeros((T, m.n_expr), np.float32), "jaw_pose": np.zeros((T, 3), np.float32),
           "neck_pose": np.zeros((T, 3), np.float32), "eye_pose": np.zeros((T, 6), np.float32),
           "global_rot": np.zeros((T, 3), np.float32), "transl": np.tile(np.float32([0, 0, 0.5]), (T, 1)),
           "valid": np.ones(T, bool), "landmark_residual_px": np.ones(T, np.float32),
           "time_s": np.arange(T, dtype=np.float32) / 25, "frame_index": np.arange(T, dtype=np.int32),
           "shape": np.zeros(m.n_shape, np.float32), "K": np.float32([[500, 0, 48], [0, 500, 48], [0, 0, 1]]),
           "cam_R": np.eye(3, dtype=np.float32), "cam_t": np.zeros(3, np.float32),
           "image_size": np.int32([96, 96]), "head_vertices": m["v_template"].astype(np.float32),
           "head_faces": m.faces.astype(np.int32), "head_exprdirs": m["exprdirs"].astype(np.float32),
           "head_posedirs": m["posedirs"].astype(np.float32), "head_weights": m["weights"].astype(np.float32),
           "head_joints": (m["J_regressor"] @ m["v_template"]).astype(np.float32),
           "head_parents": m["parents"].astype(np.int32)}
    meta = default_meta(25.0, {"path": "clip.mp4", "kind": "video"}, {"release": "flamecap-synthetic"})
    f["result"] = save_result(d / "result.npz", TrackingResult(arr, meta))
    nan = dict(arr, expr=arr["expr"].copy())
    nan["expr"][1, 0] = np.nan                              # NaN on a *valid* frame
    f["result_nan"] = write_npz_atomic(d / "result_nan.npz", nan, meta)
    f["result_v99"] = write_npz_atomic(d / "result_v99.npz", arr, dict(meta, version=99))
    f["result_v0"] = write_npz_atomic(d / "result_v0.npz", arr, dict(meta, version=0))
    f["result_frames_back"] = write_npz_atomic(d / "result_frames_back.npz",
                                               dict(arr, frame_index=np.int32([0, 1, 1, 2])), meta)
    f["result_far"] = write_npz_atomic(d / "result_far.npz",
                                       dict(arr, transl=np.tile(np.float32([0, 0, 1e30]), (T, 1))), meta)
    inval = dict(arr, valid=np.array([True, False, True, True]), expr=arr["expr"].copy(),
                 jaw_pose=arr["jaw_pose"].copy())
    inval["expr"][1] = np.nan                               # NaN on an *invalid* frame: a valid result
    inval["jaw_pose"][1] = np.nan
    f["result_nan_invalid"] = save_result(d / "result_nan_invalid.npz", TrackingResult(inval, meta))
    np.save(d / "shape_short.npy", np.zeros(m.n_shape - 3, np.float32))
    f["shape_short"] = d / "shape_short.npy"
    f["link_to_result"] = d / "link_to_result.npz"          # a symlink and a hard link to the result
    f["link_to_result"].symlink_to(f["result"])
    f["hard_result"] = d / "hard_result.npz"
    os.link(f["result"], f["hard_result"])
    f["corrupt_npz"] = d / "corrupt.npz"
    f["corrupt_npz"].write_bytes(b"PK\x03\x04" + rng.bytes(300))
    raw = f["result"].read_bytes()
    f["trunc_npz"] = d / "trunc.npz"
    f["trunc_npz"].write_bytes(raw[: len(raw) // 2])

    # footage
    f["text_mp4"] = d / "clip.mp4"
    f["text_mp4"].write_text("this is not a video\n" * 10)
    f["zero_mp4"] = d / "zero.mp4"
    f["zero_mp4"].write_bytes(b"")
    f["no_images"] = d / "no_images"
    f["no_images"].mkdir()
    (f["no_images"] / "notes.txt").write_text("x")
    f["noise_avi"] = d / "noise.avi"
    vw = cv2.VideoWriter(str(f["noise_avi"]), cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 96))
    for _ in range(6):
        vw.write(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    vw.release()
    f["noise_dir"] = d / "noise_frames"
    f["noise_dir"].mkdir()
    for i in range(3):
        cv2.imwrite(str(f["noise_dir"] / f"{i:04d}.png"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))

    # landmarks: one point per model vertex ("vertices" scheme binds without any rendering)
    K = V
    def track(valid, points):
        n = len(valid)
        return LandmarkTrack(points=points, sigma=np.full((n, K), 2.0, np.float32), valid=np.asarray(valid),
                             visible=np.ones((n, K), bool), frame_index=np.arange(n), time_s=np.arange(n) / 25.0,
                             image_size=(96, 96), fps=25.0, scheme="vertices")
    nanpts = np.full((3, K, 2), np.nan, np.float32)
    f["lm_invalid"] = track(np.zeros(3, bool), nanpts).save(d / "lm_invalid.npz")     # every frame invalid
    f["lm_nan"] = track(np.ones(3, bool), nanpts).save(d / "lm_nan.npz")              # "valid" but all NaN
    lm_meta = {"format": "flamecap.landmarks", "version": 1, "fps": 25.0, "scheme": "vertices"}
    f["lm_wrong"] = write_npz_atomic(d / "lm_wrong.npz", {
        "points": np.zeros((3, K, 2)), "sigma": np.ones((3, K)), "valid": np.ones(3, bool),
        "visible": np.ones((2, 7), bool), "frame_index": np.arange(1), "time_s": np.arange(3.0),
        "image_size": np.array([96])}, lm_meta)
    f["lm_nometa"] = write_npz_atomic(d / "lm_nometa.npz", {
        "points": np.zeros((3, K, 2)), "sigma": np.ones((3, K)), "valid": np.ones(3, bool),
        "visible": np.ones((3, K), bool), "frame_index": np.arange(3), "time_s": np.arange(3.0),
        "image_size": np.array([96, 96])}, {"format": "flamecap.landmarks", "version": 1})
    f["junk_csv"] = d / "points.csv"
    f["junk_csv"].write_text("frame,x0,y0\n0,abc,1\n")
    f["bin_csv"] = d / "binary.csv"
    f["bin_csv"].write_bytes(b"\xff\xfe\x00\x81" * 50)
    return f


def _fmt(argv: list[str], F: dict, out: Path) -> list[str]:
    keys = {k: str(v) for k, v in F.items()}
    return [a.format(o=out, **keys) for a in argv]


def run_inprocess(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def run_subprocess(argv: list[str]) -> tuple[int, str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "core"))
    p = subprocess.run([sys.executable, "-m", "flamecap", *argv], capture_output=True, text=True, env=env,
                       timeout=240)
    return p.returncode, p.stdout, p.stderr


def assert_one_line_error(rc: int, out: str, err: str, code: int | None, expect: str, jsonl: bool = False) -> str:
    """The house rule for errors; returns the message."""
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, f"want exactly one 'error: ' line on stderr, got:\n{err}"
    assert err.rstrip().splitlines()[-1] == errors[0], f"the error must be the last stderr line:\n{err}"
    msg = errors[0][len("error: "):]
    assert rc != 0 and (code is None or rc == code), f"exit {rc}, want {code}: {msg}"
    assert "internal error" not in msg, msg
    assert expect.lower() in msg.lower(), f"{expect!r} not in {msg!r}"
    if jsonl:
        events = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        assert events and events[-1]["event"] == "error", out
        assert events[-1]["message"] == msg and events[-1]["code"] == rc
    return msg


def assert_nothing_written(out_dir: Path) -> None:
    left = [p for p in out_dir.rglob("*") if p.is_file()] if out_dir.exists() else []
    assert not left, f"left behind: {left}"


# ---------------------------------------------------------------------------------------------- the table
# id, argv ({name} = a file from F, {o} = a fresh output folder), exit code, text the message must contain
CASES = [
    # footage
    ("footage-missing", ["landmarks", "{dir}/missing.mp4", "-o", "{o}/lm.npz"], 2, "footage not found"),
    ("footage-folder-without-images", ["landmarks", "{no_images}", "-o", "{o}/lm.npz"], 2, "holds no images"),
    ("footage-text-renamed-mp4", ["landmarks", "{text_mp4}", "-o", "{o}/lm.npz"], 2, "not a video"),
    ("footage-zero-bytes", ["landmarks", "{zero_mp4}", "-o", "{o}/lm.npz"], 2, "0 bytes"),
    ("footage-pattern-no-match", ["landmarks", "{noise_dir}/%06d.png", "-o", "{o}/lm.npz"], 2, "no files match"),
    ("footage-pattern-no-folder", ["landmarks", "{dir}/nothere/%04d.png", "-o", "{o}/lm.npz"], 2, "does not exist"),
    ("footage-start-past-end", ["landmarks", "{noise_avi}", "-o", "{o}/lm.npz", "--start", "1000"], 2, "past the end"),
    ("footage-stride-0", ["landmarks", "{noise_avi}", "-o", "{o}/lm.npz", "--stride", "0"], 2, "stride >= 1"),
    ("footage-negative-end", ["landmarks", "{noise_avi}", "-o", "{o}/lm.npz", "--end", "-3"], 2, "bad frame range"),
    ("footage-negative-fps", ["landmarks", "{noise_avi}", "-o", "{o}/lm.npz", "--fps", "-3"], 2, "fps"),
    ("footage-images-start-past-end", ["landmarks", "{noise_dir}", "-o", "{o}/lm.npz", "--start", "50"], 2,
     "no frames in range"),
    ("landmarks-negative-face-index", ["landmarks", "{noise_dir}", "-o", "{o}/lm.npz", "--face-index", "-1"], 2,
     "--face-index"),
    ("landmarks-no-face", ["landmarks", "{noise_dir}", "-o", "{o}/lm.npz", "--progress", "none"], 4, "no face"),
    ("track-footage-missing", ["track", "{dir}/missing.mp4", "-o", "{o}/r.npz", "--model", "{model}"], 2,
     "footage not found"),
    ("track-stride-0", ["track", "{noise_avi}", "-o", "{o}/r.npz", "--model", "{model}", "--stride", "0"], 2,
     "stride"),
    ("track-file-aligner-no-points", ["track", "{noise_dir}", "-o", "{o}/r.npz", "--model", "{model}",
                                      "--aligner", "file"], 2, "--points"),
    ("track-no-face", ["track", "{noise_dir}", "-o", "{o}/r.npz", "--model", "{model}", "--aligner", "file",
                       "--points", "{lm_invalid}"], 4, "no face"),
    ("track-landmarks-cache-corrupt", ["track", "{noise_dir}", "-o", "{o}/r.npz", "--model", "{model}",
                                       "--landmarks-cache", "{corrupt_npz}"], 6, "not a readable .npz"),
    ("track-landmarks-cache-wrong-shapes", ["track", "{noise_dir}", "-o", "{o}/r.npz", "--model", "{model}",
                                            "--landmarks-cache", "{lm_wrong}"], 2, "inconsistent shapes"),
    # models
    ("model-missing", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{dir}/missing.npz"], 3, "not found"),
    ("model-png-renamed-pkl", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{png_pkl}"], 3, "PNG image"),
    ("model-truncated-pkl", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{trunc_pkl}"], 3, "ends early"),
    ("model-foreign-class-pkl", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{evil_pkl}"], 3,
     "not allowed"),
    ("model-nan-shapedirs", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{model_nan}"], 3, "shapedirs"),
    ("model-wrong-shape", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{model_shape}"], 3, "shapedirs"),
    ("model-is-a-result", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{result}"], 3, "flamecap.result"),
    ("model-corrupt-npz", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{corrupt_npz}"], 3,
     "not a readable .npz"),
    ("model-unknown-name", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "nosuchmodel"], 3,
     "no registered model"),
    ("model-none-registered", ["fit", "{lm_nan}", "-o", "{o}/r.npz"], 3, "models add"),
    ("models-add-evil", ["models", "add", "{evil_pkl}"], 3, "nothing in it was run"),
    ("models-add-a-result", ["models", "add", "{result}"], 3, "flamecap.result"),
    ("models-add-folder", ["models", "add", "{no_images}"], 3, "not found"),
    ("embed-png-model", ["embed", "--model", "{png_pkl}"], 3, "PNG image"),
    ("identity-weights-png", ["identity", "add-weights", "{png_pkl}"], 5, "not a readable torch weights file"),
    # results
    *[(f"{cmd}-{case}", [cmd, src, *extra], code, expect)
      for cmd, extra in (("info", []), ("validate", []), ("smooth", ["-o", "{o}/s.npz"]),
                         ("export", ["--params-npz", "{o}/p.npz"]))
      for case, src, code, expect in (("missing", "{dir}/missing.npz", 6, "not found"),
                                      ("corrupt-zip", "{corrupt_npz}", 6, "not a readable .npz"),
                                      ("truncated", "{trunc_npz}", 6, "not a readable .npz"),
                                      ("model-file", "{model}", 6, "not a tracking result"),
                                      ("nan-on-valid-frame", "{result_nan}", 6, "non-finite"),
                                      ("newer-version", "{result_v99}", 6, "update FlameCap"),
                                      ("folder", "{no_images}", 6, "is a folder"),
                                      ("video-file", "{text_mp4}", 6, "not a zip archive"))],
    ("export-nothing-asked", ["export", "{result}"], 2, "nothing to export"),
    ("export-fbx-wrong-suffix", ["export", "{result}", "--fbx", "{o}/out.obj"], 2, ".fbx"),
    ("export-livelink-without-anim", ["export", "{result}", "--livelink-csv", "{o}/l.csv"], 2, "--anim"),
    ("smooth-negative-strength", ["smooth", "{result}", "-o", "{o}/s.npz", "--strength", "-1"], 2, "--strength"),
    ("retarget-target-is-model", ["retarget", "shapekeys", "{result}", "--target", "{model}", "-o", "{o}/a.npz"],
     2, "not a FlameCap character"),
    ("retarget-identity-from-model", ["retarget", "identity", "{result}", "--target-result", "{model}", "-o",
                                      "{o}/a.npz"], 6, "not a tracking result"),
    # landmarks files
    ("fit-every-frame-invalid", ["fit", "{lm_invalid}", "-o", "{o}/r.npz", "--model", "{model}"], 4, "no face"),
    ("fit-all-points-nan", ["fit", "{lm_nan}", "-o", "{o}/r.npz", "--model", "{model}"], 7, "landmarks"),
    ("fit-landmarks-wrong-shapes", ["fit", "{lm_wrong}", "-o", "{o}/r.npz", "--model", "{model}"], 2,
     "inconsistent shapes"),
    ("fit-landmarks-no-metadata", ["fit", "{lm_nometa}", "-o", "{o}/r.npz", "--model", "{model}"], 2, "fps"),
    ("fit-csv-instead-of-npz", ["fit", "{junk_csv}", "-o", "{o}/r.npz", "--model", "{model}"], 2, "--aligner file"),
    ("fit-result-instead-of-landmarks", ["fit", "{result}", "-o", "{o}/r.npz", "--model", "{model}"], 2,
     "not a FlameCap landmarks file"),
    ("fit-landmarks-missing", ["fit", "{dir}/missing.npz", "-o", "{o}/r.npz", "--model", "{model}"], 2,
     "not found"),
    ("points-csv-junk", ["landmarks", "{noise_dir}", "-o", "{o}/lm.npz", "--aligner", "file", "--points",
                         "{junk_csv}"], 2, "non-numeric"),
    ("points-csv-binary", ["landmarks", "{noise_dir}", "-o", "{o}/lm.npz", "--aligner", "file", "--points",
                           "{bin_csv}"], 2, "UTF-8"),
    ("points-npz-wrong-shapes", ["landmarks", "{noise_dir}", "-o", "{o}/lm.npz", "--aligner", "file", "--points",
                                 "{lm_wrong}"], 2, "inconsistent shapes"),
    # output paths
    ("output-is-a-folder", ["smooth", "{result}", "-o", "{o}"], 2, "is a folder"),
    ("output-under-a-file", ["smooth", "{result}", "-o", "{result}/s.npz"], 2, "is a file, not a folder"),
    ("output-empty-name", ["smooth", "{result}", "-o", ""], 2, "no output file name"),
    ("export-output-is-a-folder", ["export", "{result}", "--params-json", "{o}"], 2, "is a folder"),
    ("landmarks-output-is-a-folder", ["landmarks", "{noise_dir}", "-o", "{o}"], 2, "is a folder"),
    ("synth-output-under-a-file", ["synth", "-o", "{result}", "--frames", "2", "--size", "64x64", "--model",
                                   "synthetic"], 2, "is a file"),
    # the one output rule: never an input, cache, model or other output of the run (issue 14, items 1-2)
    ("track-output-is-the-footage", ["track", "{noise_avi}", "-o", "{noise_avi}", "--model", "{model}"], 2,
     "same file as"),
    ("landmarks-output-is-the-footage", ["landmarks", "{noise_avi}", "-o", "{noise_avi}"], 2, "same file as"),
    ("landmarks-output-is-a-frame", ["landmarks", "{noise_dir}", "-o", "{noise_dir}/0001.png"], 2, "same file as"),
    ("landmarks-output-is-a-pattern-frame", ["landmarks", "{noise_dir}/%04d.png", "-o", "{noise_dir}/0002.png"],
     2, "same file as"),
    ("fit-output-is-the-landmarks", ["fit", "{lm_nan}", "-o", "{lm_nan}", "--model", "{model}"], 2, "same file as"),
    ("fit-output-is-the-model", ["fit", "{lm_nan}", "-o", "{model}", "--model", "{model}"], 2, "same file as"),
    ("track-output-is-the-cache", ["track", "{noise_dir}", "-o", "{o}/c.npz", "--landmarks-cache", "{o}/c.npz",
                                   "--model", "{model}"], 2, "same file as"),
    ("track-output-is-an-existing-cache", ["track", "{noise_dir}", "-o", "{lm_nan}", "--landmarks-cache",
                                           "{lm_nan}", "--model", "{model}"], 2, "same file as"),
    ("smooth-in-place", ["smooth", "{result}", "-o", "{result}"], 2, "same file as"),
    ("smooth-onto-a-symlink-to-the-input", ["smooth", "{result}", "-o", "{link_to_result}"], 2, "same file as"),
    ("smooth-onto-a-hard-link-to-the-input", ["smooth", "{result}", "-o", "{hard_result}"], 2, "same file as"),
    ("smooth-through-dotdot", ["smooth", "{result}", "-o", "{no_images}/../result.npz"], 2, "same file as"),
    ("export-two-outputs-one-file", ["export", "{result}", "--params-npz", "{o}/p.npz", "--params-json",
                                     "{o}/p.npz"], 2, "same file as"),
    ("export-over-the-result", ["export", "{result}", "--params-json", "{result}"], 2, "same file as"),
    ("retarget-output-is-the-target", ["retarget", "identity", "{result}", "--target-result", "{result_nan_invalid}",
                                       "-o", "{result_nan_invalid}"], 2, "same file as"),
    # the validator (issue 14, smaller items)
    *[(f"{cmd}-{case}", [cmd, src, *extra], 6, expect)
      for cmd, extra in (("validate", []), ("smooth", ["-o", "{o}/s.npz"]))
      for case, src, expect in (("version-0", "{result_v0}", "not a valid result version"),
                                ("frame-index-not-increasing", "{result_frames_back}", "frame_index must increase"),
                                ("transl-1e30", "{result_far}", "'transl' reaches"))],
    ("retarget-identity-shape-wrong-length", ["retarget", "identity", "{result}", "--shape", "{shape_short}",
                                              "--model", "{model}", "-o", "{o}/a.npz"], 2, "coefficients"),
    ("models-download-plain-http", ["models", "download", "flame2023-open", "--url-base",
                                    "http://example.com/download.php", "--username", "u", "--password-stdin"],
     2, "unencrypted"),
    # usage
    ("usage-unknown-command", ["trak", "clip.mp4"], 2, "invalid choice"),
    ("usage-missing-output", ["landmarks", "{noise_dir}"], 2, "-o/--output"),
    ("usage-bad-int", ["landmarks", "{noise_dir}", "-o", "{o}/lm.npz", "--start", "abc"], 2, "invalid int"),
]
SLOW = {"landmarks-no-face"}  # runs MediaPipe on 3 frames


@pytest.mark.parametrize("case,argv,code,expect",
                         [pytest.param(*c, marks=[pytest.mark.slow] if c[0] in SLOW else []) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_in_process(capsys, tmp_path, F, case, argv, code, expect):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = {p: p.read_bytes() for p in F["dir"].rglob("*") if p.is_file()}
    rc, out, err = run_inprocess(capsys, _fmt(argv, F, out_dir))
    assert_one_line_error(rc, out, err, code, expect)
    assert_nothing_written(out_dir)
    after = {p: p.read_bytes() for p in F["dir"].rglob("*") if p.is_file()}
    assert after == before, "an input file was changed, added or removed"
    assert not F["pwned"].exists()


# a representative subset for real, as a user would run it (stderr then also carries native-library noise)
SUBPROCESS_CASES = ["footage-text-renamed-mp4", "footage-zero-bytes", "footage-stride-0", "model-foreign-class-pkl",
                    "model-is-a-result", "info-corrupt-zip", "smooth-nan-on-valid-frame", "export-newer-version",
                    "fit-every-frame-invalid", "fit-landmarks-wrong-shapes", "output-is-a-folder",
                    "usage-missing-output"]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_subprocess(tmp_path, F, case):
    _, argv, code, expect = next(c for c in CASES if c[0] == case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, out, err = run_subprocess(_fmt(argv, F, out_dir))
    assert_one_line_error(rc, out, err, code, expect)
    assert_nothing_written(out_dir)
    assert not F["pwned"].exists()


@pytest.mark.parametrize("argv,code,expect", [
    (["smooth", "{result_v99}", "-o", "{o}/s.npz", "--progress", "jsonl"], 6, "update FlameCap"),
    (["fit", "{lm_invalid}", "-o", "{o}/r.npz", "--model", "{model}", "--progress", "jsonl"], 4, "no face"),
    (["landmarks", "{zero_mp4}", "-o", "{o}/lm.npz", "--progress", "jsonl"], 2, "0 bytes"),
    (["landmarks", "{noise_dir}", "--progress", "jsonl"], 2, "-o/--output"),
], ids=["smooth", "fit", "landmarks", "usage"])
def test_jsonl_error_event(capsys, tmp_path, F, argv, code, expect):
    rc, out, err = run_inprocess(capsys, _fmt(argv, F, tmp_path / "out"))
    assert_one_line_error(rc, out, err, code, expect, jsonl=True)


@needs_proc
def test_jsonl_error_event_subprocess_unwritable_output(tmp_path, F):
    rc, out, err = run_subprocess(["smooth", str(F["result"]), "-o", str(UNWRITABLE), "--progress", "jsonl"])
    assert_one_line_error(rc, out, err, 2, "cannot write", jsonl=True)


@needs_proc
@pytest.mark.parametrize("argv", [
    ["smooth", "{result}", "-o", str(UNWRITABLE)],
    ["export", "{result}", "--params-npz", "{o}/ok.npz", "--params-json", str(UNWRITABLE)],
    ["landmarks", "{noise_dir}", "-o", str(UNWRITABLE)],
    ["synth", "-o", str(UNWRITABLE), "--frames", "2", "--size", "64x64", "--model", "synthetic"],
], ids=["smooth", "export-checks-all-before-writing", "landmarks", "synth"])
def test_unwritable_output(capsys, tmp_path, F, argv):
    out_dir = tmp_path / "out"
    rc, out, err = run_inprocess(capsys, _fmt(argv, F, out_dir))
    assert_one_line_error(rc, out, err, 2, "cannot")
    assert_nothing_written(out_dir)


# ---------------------------------------------------------------------------------------------- outputs
def test_output_into_new_deep_folder_is_created(capsys, tmp_path, F):
    target = tmp_path / "a" / "b" / "c" / "smoothed.npz"
    rc, out, err = run_inprocess(capsys, ["smooth", str(F["result"]), "-o", str(target), "--progress", "none"])
    assert rc == 0, err
    assert target.is_file() and [p.name for p in target.parent.iterdir()] == ["smoothed.npz"]


def test_output_files_are_not_private(capsys, tmp_path, F):
    """mkstemp makes 0600 files; a result must get the usual permissions (umask), or keep the replaced file's."""
    target = tmp_path / "s.npz"
    old = os.umask(0o022)
    try:
        assert run_inprocess(capsys, ["smooth", str(F["result"]), "-o", str(target), "--progress", "none"])[0] == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        target.chmod(0o640)
        assert run_inprocess(capsys, ["smooth", str(F["result"]), "-o", str(target), "--progress", "none"])[0] == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("argv", [
    ["fit", "{lm_invalid}", "-o", "{o}/keep.npz", "--model", "{model}"],          # fails late (no face)
    ["fit", "{lm_nan}", "-o", "{o}/keep.npz", "--model", "{model}"],              # fails in the fitter
    ["smooth", "{result_nan}", "-o", "{o}/keep.npz"],                             # bad input
    ["landmarks", "{noise_dir}", "-o", "{o}/keep.npz", "--stride", "0"],
    ["export", "{result}", "--params-npz", "{o}/keep.npz", "--params-json", "{o}/keep.npz/x.json"],
], ids=["fit-no-face", "fit-error", "smooth", "landmarks", "export"])
def test_failure_keeps_existing_output(capsys, tmp_path, F, argv):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    keep = out_dir / "keep.npz"
    keep.write_bytes(b"a good earlier result")
    rc, out, err = run_inprocess(capsys, _fmt(argv, F, out_dir))
    assert rc != 0 and "Traceback" not in err
    assert keep.read_bytes() == b"a good earlier result"
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.npz"]    # no temp file either


def test_smooth_in_place_is_refused_and_keeps_the_input(capsys, tmp_path, F):
    """The output rule has no exception for in-place rewrites: the unsmoothed result would be lost."""
    target = tmp_path / "r.npz"
    target.write_bytes(F["result"].read_bytes())
    rc, out, err = run_inprocess(capsys, ["smooth", str(target), "-o", str(target), "--progress", "none"])
    assert_one_line_error(rc, out, err, 2, "same file as")
    assert target.read_bytes() == F["result"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]


def _device_node(path: Path) -> str:
    """A character device like /dev/null (mknod, as root), else a FIFO: both are non-regular files."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return "chr"
    except (PermissionError, OSError):
        os.mkfifo(path)
        return "fifo"


@pytest.mark.parametrize("argv", [
    ["smooth", "{result}", "-o", "{node}"],
    ["landmarks", "{noise_dir}", "-o", "{node}"],
    ["export", "{result}", "--params-json", "{node}"],
    ["fit", "{lm_nan}", "-o", "{node}", "--model", "{model}"],
], ids=["smooth", "landmarks", "export", "fit"])
def test_output_onto_a_device_node_is_refused(capsys, tmp_path, F, argv):
    node = tmp_path / "null"
    kind = _device_node(node)
    rc, out, err = run_inprocess(capsys, _fmt(argv, {**F, "node": node}, tmp_path))
    assert_one_line_error(rc, out, err, 2, "not a regular file")
    mode = node.lstat().st_mode
    assert (stat.S_ISCHR(mode) if kind == "chr" else stat.S_ISFIFO(mode)), "the node was replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_atomic_output_refuses_a_device_node_directly(tmp_path):
    node = tmp_path / "null"
    _device_node(node)
    with pytest.raises(OutputPathError, match="not a regular file"):
        with atomic_output(node) as tmp:
            tmp.write_text("never")
    assert not stat.S_ISREG(node.lstat().st_mode)


def test_smooth_accepts_nan_on_invalid_frames(capsys, tmp_path, F):
    """validate accepts NaN parameters on invalid frames; smooth must too, and keep valid frames finite."""
    target = tmp_path / "s.npz"
    rc, _, err = run_inprocess(capsys, ["smooth", str(F["result_nan_invalid"]), "-o", str(target),
                                        "--progress", "none"])
    assert rc == 0, err
    arrays, _ = read_npz(target)
    assert np.isfinite(arrays["expr"][arrays["valid"]]).all() and np.isnan(arrays["expr"][1]).all()


def test_stale_temporaries_of_killed_writes_are_cleaned(tmp_path):
    """A write killed between mkstemp and os.replace leaves '.NAME.XXXXXXXX.tmp'; the next write into the
    folder removes those older than an hour, and nothing else."""
    import time
    from flamecap.contract.npzio import STALE_TMP_S
    old = time.time() - STALE_TMP_S - 60
    stale = tmp_path / ".result.npz.ab12cd_9.tmp"
    fresh = tmp_path / ".other.npz.zz99yy00.tmp"          # a write in progress right now: kept
    mine = tmp_path / ".notes.tmp"                          # not the writer's pattern: kept
    for p in (stale, fresh, mine):
        p.write_text("partial")
    os.utime(stale, (old, old))
    os.utime(mine, (old, old))
    with atomic_output(tmp_path / "new.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, mine.name, "new.json"])


def test_truncated_grid_clip_keeps_the_frames_it_has(tmp_path):
    """The first 20 KB of a GRID .mpg decode to a few good frames: they are read, the clip is not an error."""
    if not GRID_CLIP.is_file():
        pytest.skip(f"real footage not present at {GRID_CLIP}")
    from flamecap.video import open_footage
    clip = tmp_path / "trunc.mpg"
    clip.write_bytes(GRID_CLIP.read_bytes()[:20_000])
    foot = open_footage(clip)
    frames = [(i, rgb.shape) for i, _, rgb in foot]
    assert 1 <= len(frames) < 75 and frames[0] == (0, (288, 360, 3))
    assert foot.frames_read == len(frames)


# ---------------------------------------------------------------------------------------------- core APIs
def test_atomic_output_errors_name_the_target(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad, expect in ((tmp_path, "is a folder"), (tmp_path / "file" / "x.npz", "is a file, not a folder"),
                        ("", "no output file name")):
        with pytest.raises(OutputPathError, match=expect):
            with atomic_output(bad) as tmp:
                tmp.write_text("never")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    with pytest.raises(OSError):      # an OutputPathError is also an OSError and a ContractError
        check_output_path(tmp_path)
    assert issubclass(OutputPathError, ContractError)


def test_atomic_output_disk_full_midway_keeps_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(OutputPathError, match=r"could not write .*out\.json.*No space left"):
        with atomic_output(target) as tmp:
            tmp.write_text("partial")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_landmark_track_load_rejects_malformed_files(F, tmp_path):
    with pytest.raises(InputError, match="inconsistent shapes"):
        LandmarkTrack.load(F["lm_wrong"])
    with pytest.raises(InputError, match="'fps'/'scheme'"):
        LandmarkTrack.load(F["lm_nometa"])
    with pytest.raises(InputError, match="is a CSV"):
        LandmarkTrack.load(F["junk_csv"])
    arrays, meta = read_npz(F["lm_nan"])
    newer = write_npz_atomic(tmp_path / "v9.npz", arrays, dict(meta, version=9))
    with pytest.raises(InputError, match="version 9"):
        LandmarkTrack.load(newer)
    bad_fps = write_npz_atomic(tmp_path / "fps.npz", arrays, dict(meta, fps="fast"))
    with pytest.raises(InputError, match="not a positive number"):
        LandmarkTrack.load(bad_fps)


def test_read_npz_says_what_is_wrong(F, tmp_path):
    for path, expect in ((F["no_images"], "is a folder"), (F["zero_mp4"], "empty file"),
                         (F["text_mp4"], "not a zip archive"), (F["corrupt_npz"], "not a readable .npz")):
        with pytest.raises(ContractError, match=expect):
            read_npz(path, what="result file")


def test_unexpected_exception_is_one_line(capsys, monkeypatch):
    """The last line of defence: a bug anywhere still ends as one 'error: internal error ...' line, exit 1."""
    from flamecap.commands import info

    def boom(args):
        raise RuntimeError("something\nbroke")
    monkeypatch.setattr(info, "cmd_env", boom)
    rc, out, err = run_inprocess(capsys, ["env"])
    assert rc == 1 and err.count("\n") == 1 and err.startswith("error: internal error (RuntimeError: something broke)")


# ---------------------------------------------------------------------------------------------- for others
# Failures in files other engineers own (fit/, commands/track.py, smooth.py, contract/smoothing.py); each is
# a real user-facing problem, routed to the owner. strict: they start failing loudly once fixed.
def test_smooth_infinite_strength(capsys, tmp_path, F):
    rc, out, err = run_inprocess(capsys, ["smooth", str(F["result"]), "-o", str(tmp_path / "s.npz"),
                                          "--strength", "inf"])
    assert_one_line_error(rc, out, err, 2, "--strength")


@needs_proc
def test_track_checks_output_before_tracking(capsys, F):
    rc, out, err = run_inprocess(capsys, ["track", str(F["noise_dir"]), "-o", str(UNWRITABLE), "--model",
                                          str(F["model"]), "--aligner", "file", "--points", str(F["lm_invalid"])])
    assert_one_line_error(rc, out, err, 2, "cannot write")


@needs_proc
def test_fit_checks_output_before_fitting(capsys, F):
    rc, out, err = run_inprocess(capsys, ["fit", str(F["lm_nan"]), "-o", str(UNWRITABLE), "--model", str(F["model"])])
    assert_one_line_error(rc, out, err, 2, "cannot write")


def test_track_checks_focal_before_tracking(capsys, tmp_path, F):
    rc, out, err = run_inprocess(capsys, ["track", str(F["noise_dir"]), "-o", str(tmp_path / "r.npz"), "--model",
                                          str(F["model"]), "--aligner", "file", "--points", str(F["lm_invalid"]),
                                          "--focal", "-5"])
    assert_one_line_error(rc, out, err, 2, "--focal")
