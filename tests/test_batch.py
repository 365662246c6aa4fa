"""flamecap batch: shot lists, failure isolation, resume, atomicity and worker death on the local pool (synthetic
shots: image folders + points files, no data needed), bit-identity with 'flamecap track' and Ray on GRID clips."""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from flamecap.batch import collect_shots, plan_workers, run_batch
from flamecap.batch.shots import read_shot_list
from flamecap.cli import main
from flamecap.commands.track import TrackOptions
from flamecap.contract.events import parse_event
from flamecap.contract.npzio import read_npz
from flamecap.errors import InputError


def _arrays_equal(a: Path, b: Path) -> bool:
    x, _ = read_npz(a)
    y, _ = read_npz(b)
    return sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k], equal_nan=True) for k in x)


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.suffix in (".tmp", ".probe")]


# -- shot lists and options (no work) ---------------------------------------------------------------------------

def test_shot_list_csv_and_json_options(tmp_path):
    (tmp_path / "clips").mkdir()
    for n in ("a.mov", "b.mp4"):
        (tmp_path / "clips" / n).write_bytes(b"x")
    (tmp_path / "head.npz").write_bytes(b"x")
    csv = tmp_path / "shots.csv"
    csv.write_text("footage,name,quality,focal,start,end,face-index,model\n"
                   "# a comment line\n"
                   "clips/a.mov,take_1,production,900,10,50,1,head.npz\n"
                   "clips/b.mp4,,,,,,,\n")
    rows = read_shot_list(csv, TrackOptions(quality="fast"))
    (n1, f1, o1), (n2, f2, o2) = rows
    assert (n1, n2) == ("take_1", None)
    assert f1 == str((tmp_path / "clips" / "a.mov").resolve())
    assert (o1.quality, o1.focal, o1.start, o1.end, o1.face_index) == ("production", 900.0, 10, 50, 1)
    assert o1.model == str((tmp_path / "head.npz").resolve())
    assert o2 == TrackOptions(quality="fast")                  # empty cells keep the batch's values
    js = tmp_path / "shots.json"
    js.write_text(json.dumps({"shots": [{"footage": "clips/a.mov", "end": 30, "no_temporal": True}]}))
    (_, _, o), = read_shot_list(js, TrackOptions())
    assert (o.end, o.no_temporal) == (30, True)


@pytest.mark.parametrize("text, needle", [
    ("clip,quality\na.mov,fast\n", "'footage' column"),
    ("footage,qualty\na.mov,fast\n", "unknown option 'qualty'"),
    ("footage,focal\na.mov,wide\n", "line 2: option 'focal': 'wide' is not a valid float"),
    ("footage,quality\na.mov,ultra\n", "quality 'ultra' is unknown"),
    ("footage,start,end\na.mov,50,10\n", "bad frame range"),
    ("footage,face_index,aligner\na.mov,1,file\n", "face-index applies to the litert and mediapipe aligners"),
    ("footage,name\na.mov,x\nb.mov,x\n", "appear more than once"),
    ("footage,name\na.mov,../x\n", "not a plain file name"),
])
def test_bad_shot_lists_refused_in_one_line(tmp_path, text, needle):
    p = tmp_path / "shots.csv"
    p.write_text(text)
    with pytest.raises(InputError) as exc:
        collect_shots([str(p)], tmp_path / "out", TrackOptions())
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_collect_files_globs_folders_and_names(tmp_path):
    d = tmp_path / "takes"
    d.mkdir()
    for n in ("s10.mov", "s2.mov", "notes.txt"):
        (d / n).write_bytes(b"x")
    seq = tmp_path / "seq"
    seq.mkdir()
    (seq / "0001.png").write_bytes(b"x")
    shots = collect_shots([str(d), str(tmp_path / "takes" / "s*.mov"), str(seq)], tmp_path / "out", TrackOptions())
    assert [s.name for s in shots] == ["s2", "s10", "s2-2", "s10-2", "seq"]   # natural order, repeats renamed
    assert shots[0].output == str((tmp_path / "out" / "s2.npz").resolve())
    assert shots[0].sidecar.endswith("s2.batch.json")
    with pytest.raises(InputError, match="no files match"):
        collect_shots([str(tmp_path / "*.mxf")], tmp_path / "out", TrackOptions())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video files"):
        collect_shots([str(tmp_path / "empty")], tmp_path / "out", TrackOptions())


def test_workers_times_threads_within_cores():
    assert plan_workers(20, None, None, cores=2) == (2, 1)
    assert plan_workers(1, None, None, cores=8) == (1, 8)        # one shot: one worker with every core
    assert plan_workers(20, 2, None, cores=8) == (2, 4)
    assert plan_workers(20, 3, None, cores=8) == (3, 2)
    with pytest.raises(InputError):
        plan_workers(5, 0, None, cores=2)


# -- synthetic shots on the local pool --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small head model, and a factory of shots: an image folder (blank frames) + the head's projected
    vertices as a points file (the file aligner), so each shot is a real track run with no detector."""
    import cv2

    from flamecap.contract.model_format import save_model_npz
    from flamecap.fit.synthetic import make_clip
    from flamecap.flame.synthetic import make_synthetic_model
    from flamecap.binding.vertices import vertex_binding
    d = tmp_path_factory.mktemp("batch_synth")
    model = make_synthetic_model(n_shape=10, n_expr=8, subdivisions=3)
    mpath = save_model_npz(d / "head.npz", model)
    b = vertex_binding(model)

    def shot(name: str, n_frames: int = 8, seed: int = 0) -> tuple[Path, Path]:
        clip = make_clip(model, b, n_frames=n_frames, image_size=(320, 240), n_shape=8, n_expr=6,
                         outlier_frac=0.0, seed=seed)
        pts = np.full((n_frames, model.n_vertices, 2), np.nan, np.float32)
        pts[:, b.point_index] = clip.track.points
        points = d / f"{name}_points.npz"
        np.savez(points, points=pts)
        frames = d / name
        frames.mkdir()
        for i in range(n_frames):
            cv2.imwrite(str(frames / f"{i:04d}.png"), np.zeros((240, 320, 3), np.uint8))
        return frames, points

    return d, mpath, shot


def _shot_list(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_local_batch_isolates_failures_and_reports(synth, tmp_path, capsys):
    d, mpath, shot = synth
    f1, p1 = shot("iso_a", seed=1)
    f2, p2 = shot("iso_b", seed=2)
    (tmp_path / "broken.mp4").write_text("not a video")
    lst = _shot_list(tmp_path / "shots.json", [
        {"footage": str(f1), "points": str(p1)},
        {"footage": str(tmp_path / "missing.mov"), "points": str(p1)},
        {"footage": str(tmp_path / "broken.mp4"), "points": str(p1)},
        {"footage": str(f2), "points": str(p2), "quality": "production"}])
    out = tmp_path / "out"
    code = main(["batch", str(lst), "-o", str(out), "--aligner", "file", "--model", str(mpath),
                 "--workers", "2", "--progress", "jsonl"])
    assert code == 10                                            # some shots failed
    events = [e for e in map(parse_event, capsys.readouterr().out.splitlines()) if e]
    final = {e["shot"]: e for e in events if e["event"] == "shot" and e["status"] in ("done", "failed")}
    assert {k: v["status"] for k, v in final.items()} == {"iso_a": "done", "missing": "failed",
                                                          "broken": "failed", "iso_b": "done"}
    assert "footage not found" in final["missing"]["error"] and "\n" not in final["broken"]["error"]
    assert any(e["event"] == "shot" and e["status"] == "running" for e in events)
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1]["event"] == "error" and "2 of 4 shots failed" in events[-1]["message"]
    report = json.loads((out / "batch_report.json").read_text())
    assert report["counts"]["done"] == 2 and report["counts"]["failed"] == 2
    rows = {r["name"]: r for r in report["shots"]}
    assert rows["iso_b"]["options"]["quality"] == "production" and rows["iso_a"]["frames"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["batch_report.json", "iso_a.batch.json", "iso_a.npz",
                                                    "iso_b.batch.json", "iso_b.npz"]
    # the same shot through 'flamecap track': the same arrays
    single = tmp_path / "single.npz"
    assert main(["track", str(f2), "-o", str(single), "--aligner", "file", "--points", str(p2), "--model",
                 str(mpath), "--quality", "production", "--progress", "none"]) == 0
    assert _arrays_equal(single, out / "iso_b.npz")


def test_resume_skips_only_unchanged_valid_results(synth, tmp_path):
    d, mpath, shot = synth
    f1, p1 = shot("res_a", seed=3)
    f2, p2 = shot("res_b", seed=4)
    f3, p3 = shot("res_c", seed=5)
    out = tmp_path / "out"

    def shots(quality_c="fast"):
        return [collect_shots([str(f)], out, TrackOptions(aligner="file", model=str(mpath), points=str(p),
                                                          quality=q))[0]
                for f, p, q in ((f1, p1, "fast"), (f2, p2, "fast"), (f3, p3, quality_c))]

    first = run_batch(shots(), out, workers=2)
    assert [s.status for s in first.shots] == ["done"] * 3
    stamp = {n: (out / f"{n}.npz").stat().st_mtime_ns for n in ("res_a", "res_b", "res_c")}
    again = run_batch(shots(), out, workers=1)
    assert [s.status for s in again.shots] == ["skipped"] * 3
    assert stamp == {n: (out / f"{n}.npz").stat().st_mtime_ns for n in stamp}
    # changed input content (same size), changed options, damaged result: exactly those are tracked again
    img = f1 / "0003.png"
    data = bytearray(img.read_bytes())
    data[-20] ^= 0xFF
    img.write_bytes(bytes(data))
    r = out / "res_b.npz"
    r.write_bytes(r.read_bytes()[:-10] + b"0123456789")
    third = run_batch(shots(quality_c="production"), out, workers=1)
    assert [s.status for s in third.shots] == ["done", "done", "done"]
    assert [s.status for s in run_batch(shots(quality_c="production"), out, workers=1).shots] == ["skipped"] * 3
    assert [s.status for s in run_batch(shots(quality_c="production"), out, workers=1, resume=False).shots] \
        == ["done"] * 3


def test_killed_worker_retried_nothing_partial(synth, tmp_path):
    """SIGKILL the worker while it fits a shot: that shot is tracked again by a fresh worker, the batch
    completes, and no temporary file is left; with no retries allowed the shot fails and leaves nothing."""
    d, mpath, shot = synth
    f1, p1 = shot("kill_a", n_frames=24, seed=6)
    f2, p2 = shot("kill_b", seed=7)
    def mk(f, p):
        return TrackOptions(aligner="file", model=str(mpath), points=str(p), quality="production")
    out = tmp_path / "out"
    shots = [collect_shots([str(f1)], out, mk(f1, p1))[0], collect_shots([str(f2)], out, mk(f2, p2))[0]]
    killed: list[int] = []

    def on_event(kind, **f):
        if kind == "shot" and f["shot"] == "kill_a" and f["status"] == "running" and not killed:
            killed.append(f["pid"])
            threading.Timer(0.3, os.kill, (f["pid"], signal.SIGKILL)).start()

    report = run_batch(shots, out, workers=2, retries=1, on_event=on_event)
    rows = {s.shot.name: s for s in report.shots}
    assert killed and rows["kill_a"].status == "done" and rows["kill_a"].attempts == 2
    assert rows["kill_a"].worker["pid"] != killed[0] and rows["kill_b"].status == "done"
    assert _temps(out) == []
    single = tmp_path / "single.npz"
    assert main(["track", str(f1), "-o", str(single), "--aligner", "file", "--points", str(p1), "--model",
                 str(mpath), "--quality", "production", "--progress", "none"]) == 0
    assert _arrays_equal(single, out / "kill_a.npz")

    out2 = tmp_path / "out2"
    killed.clear()
    shots2 = [collect_shots([str(f1)], out2, mk(f1, p1))[0]]
    report = run_batch(shots2, out2, workers=1, retries=0, on_event=on_event)
    assert report.shots[0].status == "failed" and "died" in report.shots[0].error
    assert sorted(p.name for p in out2.iterdir()) == ["batch_report.json"]


# -- GRID clips: bit-identical to single runs, and Ray --------------------------------------------------------

@pytest.fixture(scope="module")
def grid_setup(tmp_path_factory, grid_dir, flame_reference_dir):
    """The FLAME reference head and its MediaPipe binding, calibrated once in a FlameCap home shared by the
    module's tests (workers read the cached binding)."""
    from flamecap.contract.model_format import save_model_npz
    from flamecap.binding.mediapipe import mediapipe_binding
    from flamecap.flame.synthetic import flame_reference_head
    home = tmp_path_factory.mktemp("batch_home")
    old = os.environ.get("FLAMECAP_HOME")
    os.environ["FLAMECAP_HOME"] = str(home)
    try:
        head = flame_reference_head(flame_reference_dir)
        mpath = save_model_npz(home / "head.npz", head)
        mediapipe_binding(head)
    finally:
        os.environ["FLAMECAP_HOME"] = old or ""
    return home, mpath, grid_dir


@pytest.mark.slow
def test_grid_batch_equals_single_track_runs(grid_setup, tmp_path, monkeypatch):
    home, mpath, grid = grid_setup
    monkeypatch.setenv("FLAMECAP_HOME", str(home))
    clips = sorted(grid.glob("*.mpg"))[:3]
    out = tmp_path / "out"
    assert main(["batch", *map(str, clips), "-o", str(out), "--model", str(mpath), "--end", "15",
                 "--progress", "none"]) == 0
    for clip in clips:
        single = tmp_path / f"{clip.stem}.npz"
        assert main(["track", str(clip), "-o", str(single), "--model", str(mpath), "--end", "15",
                     "--progress", "none"]) == 0
        assert _arrays_equal(single, out / f"{clip.stem}.npz")


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_batch_retries_killed_worker(grid_setup, local_ray, tmp_path, monkeypatch):
    """Ray tasks (local Ray, 2 CPUs): same arrays as the local pool; a Ray worker SIGKILLed mid-shot → Ray
    retries the task, the batch completes, nothing partial is left."""
    home, mpath, grid = grid_setup
    monkeypatch.setenv("FLAMECAP_HOME", str(home))
    clips = sorted(grid.glob("*.mpg"))[:3]
    opts = TrackOptions(model=str(mpath), end=15)
    local = run_batch(collect_shots(list(map(str, clips)), tmp_path / "local", opts), tmp_path / "local")
    assert [s.status for s in local.shots] == ["done"] * 3
    out = tmp_path / "ray"
    shots = collect_shots(list(map(str, clips)), out, opts)
    killed: list[int] = []

    def on_event(kind, **f):
        if kind == "shot" and f["shot"] == shots[0].name and f["status"] == "running" and not killed:
            killed.append(f["pid"])
            threading.Timer(0.5, os.kill, (f["pid"], signal.SIGKILL)).start()

    report = run_batch(shots, out, ray="auto", retries=2, on_event=on_event)
    rows = {s.shot.name: s for s in report.shots}
    assert killed and all(s.status == "done" for s in report.shots), [(s.status, s.error) for s in report.shots]
    assert rows[shots[0].name].attempts == 2 and report.engine == "ray"
    assert _temps(out) == [] and not (out / ".flamecap-batch").exists()
    for s in shots:
        assert _arrays_equal(tmp_path / "local" / f"{s.name}.npz", Path(s.output))
    again = run_batch(shots, out, ray="auto")
    assert [s.status for s in again.shots] == ["skipped"] * 3


def test_ray_missing_is_one_line(monkeypatch, tmp_path):
    import builtins
    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    from flamecap.batch.ray_runner import import_ray
    with pytest.raises(InputError, match=r"pip install 'flamecap\[ray\]'"):
        import_ray()
