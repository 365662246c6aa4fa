"""``flamecap models ...``: add / list / verify / remove, bad inputs as a new user tries them, and the
download flow against a local HTTP server on 127.0.0.1 (login, wrong password, interrupted + resumed)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from flame_pkl_fixtures import make_flame_dict, write_flame_pkl
from flamecap import cli, paths
from flamecap.flame.registry import Registry, sha256_file

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _models_dir_is_clean() -> bool:
    d = paths.models_dir()
    return not d.exists() or not any(d.iterdir())


@pytest.fixture()
def pkl(tmp_path):
    return write_flame_pkl(tmp_path / "generic_model.pkl", make_flame_dict(n_vertices=60, n_faces=80, seed=4))


def test_add_list_verify_remove(capsys, pkl):
    rc, out, err = run_cli(capsys, "models", "add", str(pkl))
    assert rc == 0, err
    assert "added generic_model" in out and "(default)" in out
    rc, out, _ = run_cli(capsys, "models", "list")
    assert rc == 0 and out.startswith("* generic_model")
    rc, out, _ = run_cli(capsys, "models", "list", "--json")
    rows = json.loads(out)
    assert rows[0]["name"] == "generic_model" and rows[0]["n_shape"] == 300 and rows[0]["present"]
    rc, out, _ = run_cli(capsys, "models", "verify")
    assert rc == 0 and out.strip() == "ok: generic_model (custom)"
    rc, out, _ = run_cli(capsys, "models", "add", str(pkl))
    assert rc == 0 and "already registered" in out
    # tamper with the converted file: verify notices, exits non-zero, one line on stderr
    npz = Registry.load().get("generic_model").path()
    npz.write_bytes(npz.read_bytes()[:-10])
    rc, out, err = run_cli(capsys, "models", "verify", "generic_model")
    assert rc == 3 and "FAILED: generic_model" in out and "sha256 differs" in out
    assert err.count("\n") == 1 and err.startswith("error:")
    rc, out, _ = run_cli(capsys, "models", "remove", "generic_model")
    assert rc == 0 and not npz.exists() and Registry.load().names() == []


def test_add_with_name_and_default(capsys, pkl, tmp_path):
    other = write_flame_pkl(tmp_path / "flame2023.pkl", make_flame_dict(n_vertices=60, n_faces=80, seed=5))
    assert run_cli(capsys, "models", "add", str(pkl))[0] == 0
    rc, out, err = run_cli(capsys, "models", "add", str(other), "--name", "head-b", "--default",
                           "--n-shape", "100", "--n-expr", "50")
    assert rc == 0, err
    reg = Registry.load()
    assert reg.default().name == "head-b"
    assert (reg.get("head-b").n_shape, reg.get("head-b").n_expr) == (100, 50)
    rc, out, err = run_cli(capsys, "models", "add", str(other), "--name", "../x")
    assert rc == 3 and "not allowed" in err


def _bad_inputs(tmp_path: Path, pkl: Path) -> dict[str, Path]:
    import pickle
    from collections import Counter
    data = pkl.read_bytes()
    out = {}
    out["truncated"] = tmp_path / "truncated.pkl"
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["foreign"] = tmp_path / "foreign.pkl"
    out["foreign"].write_bytes(pickle.dumps({"v_template": Counter("abc")}, protocol=2))
    d = make_flame_dict(n_vertices=60, n_faces=80)
    d["shapedirs"] = d["shapedirs"][:, :2]
    out["wrong_shape"] = write_flame_pkl(tmp_path / "wrong_shape.pkl", d)
    out["png"] = tmp_path / "face.pkl"
    out["png"].write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    out["missing"] = tmp_path / "does_not_exist.pkl"
    out["npz_garbage"] = tmp_path / "model.npz"
    out["npz_garbage"].write_bytes(b"not a zip")
    return out


@pytest.mark.parametrize("case,expect", [("truncated", "ends early"), ("foreign", "collections.Counter"),
                                         ("wrong_shape", "shapedirs"), ("png", "PNG image"),
                                         ("missing", "not found"), ("npz_garbage", "not a readable .npz")])
def test_bad_inputs_one_line_nonzero_nothing_left(capsys, tmp_path, pkl, case, expect):
    bad = _bad_inputs(tmp_path, pkl)[case]
    rc, out, err = run_cli(capsys, "models", "add", str(bad))
    assert rc != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
    assert _models_dir_is_clean()


def test_cli_subprocess_refuses_code_and_exits_nonzero(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "flame2023_Open.pkl"
    evil.write_bytes(b"\x80\x02cposix\nsystem\nq\x00X" + len(f"touch {marker}").to_bytes(4, "little")
                     + f"touch {marker}".encode() + b"q\x01\x85q\x02Rq\x03.")
    env = {**os.environ, "FLAMECAP_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "flamecap", "models", "add", str(evil)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 3
    assert r.stderr.count("\n") == 1 and "posix.system" in r.stderr
    assert not marker.exists() and not (tmp_path / "home" / "models").exists()


# ---------------------------------------------------------------- download flow against a local server
class FakeFlameSite:
    """A loopback stand-in for download.is.tue.mpg.de: POST username/password, Range resume."""

    def __init__(self, archive: bytes, password="secret", wrong="html"):
        self.archive, self.password, self.wrong = archive, password, wrong
        self.cut_next = 0            # how many upcoming downloads to cut off half-way
        self.requests: list[dict] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                site.requests.append({"range": self.headers.get("Range"), "form": form, "query": query})
                if form.get("password") != [site.password] or form.get("username") != ["me@example.org"]:
                    if site.wrong == "html":
                        body = b"<!DOCTYPE html><html><body>Login</body></html>"
                        self.send_response(200)
                        self.send_header("Content-Type", "text/html; charset=utf-8")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    else:
                        self.send_error(401)
                    return
                data = site.archive
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                payload = data[start:]
                if site.cut_next > 0:
                    site.cut_next -= 1
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/download.php"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _release_zip(tmp_path: Path, members: dict[str, int]) -> bytes:
    z = tmp_path / "release.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, seed in members.items():
            p = write_flame_pkl(tmp_path / name, make_flame_dict(n_vertices=40, n_faces=50, seed=seed))
            zf.write(p, name)
    return z.read_bytes()


def _download(capsys, monkeypatch, site, release, password="secret", *extra):
    return run_cli(capsys, "models", "download", release, "--username", "me@example.org", "--password-stdin",
                   "--url-base", site.url, "--progress", "none", "--timeout", "20", *extra,
                   stdin=password + "\n", monkeypatch=monkeypatch)


def test_download_resumes_after_interruption(capsys, monkeypatch, tmp_path):
    archive = _release_zip(tmp_path, {"generic_model.pkl": 1, "female_model.pkl": 2, "male_model.pkl": 3})
    with FakeFlameSite(archive) as site:
        site.cut_next = 1
        rc, out, err = _download(capsys, monkeypatch, site, "flame2020")
    assert rc == 0, err
    assert [r["range"] for r in site.requests] == [None, f"bytes={len(archive) // 2}-"]
    assert site.requests[0]["query"] == {"domain": ["flame"], "sfile": ["FLAME2020.zip"], "resume": ["1"]}
    assert site.requests[0]["form"]["username"] == ["me@example.org"]
    reg = Registry.load()
    assert sorted(reg.names()) == ["female_model", "generic_model", "male_model"]
    for e in reg.entries:
        assert e.path().is_file()
    assert not list(paths.cache_dir("downloads").iterdir())       # the .part is gone


def test_interrupted_run_resumes_on_the_next_command(capsys, monkeypatch, tmp_path):
    archive = _release_zip(tmp_path, {"flame2023.pkl": 1, "flame2023_no_jaw.pkl": 2})
    with FakeFlameSite(archive) as site:
        site.cut_next = 10
        rc, out, err = _download(capsys, monkeypatch, site, "flame2023")
        assert rc == 8 and err.count("\n") == 1 and "run the same command again to resume" in err
        part = paths.cache_dir("downloads") / "FLAME2023.zip.part"
        have = part.stat().st_size
        assert 0 < have < len(archive) and _models_dir_is_clean()
        site.cut_next = 0
        n_before = len(site.requests)
        rc, out, err = _download(capsys, monkeypatch, site, "flame2023")
    assert rc == 0, err
    assert site.requests[n_before]["range"] == f"bytes={have}-"
    assert sorted(Registry.load().names()) == ["flame2023", "flame2023_no_jaw"]


@pytest.mark.parametrize("wrong", ["html", "401"])
def test_wrong_password(capsys, monkeypatch, tmp_path, wrong):
    archive = _release_zip(tmp_path, {"flame2023_Open.pkl": 1})
    with FakeFlameSite(archive, wrong=wrong) as site:
        rc, out, err = _download(capsys, monkeypatch, site, "flame2023-open", "not-the-password")
    assert rc == 8
    assert err.count("\n") == 1 and "did not accept the username/password" in err
    assert _models_dir_is_clean()
    assert not list(paths.cache_dir("downloads").iterdir())


def test_published_checksum_is_enforced(capsys, monkeypatch, tmp_path):
    from flamecap.flame import registry
    archive = _release_zip(tmp_path, {"flame2023_Open.pkl": 7})
    with FakeFlameSite(archive) as site:
        rc, out, err = _download(capsys, monkeypatch, site, "flame2023-open")
        assert rc == 8 and "expected e75a0990728ba038" in err and err.count("\n") == 1
        assert _models_dir_is_clean()
        # the same flow with the fixture's hash as the "published" one: verified and registered
        sha = sha256_file(tmp_path / "flame2023_Open.pkl")
        rel = registry.KnownRelease("flame2023-open", "flame2023_Open.pkl", "CC-BY-4.0", sha)
        monkeypatch.setattr(registry, "KNOWN_RELEASES", (rel,) + registry.KNOWN_RELEASES[1:])
        monkeypatch.setattr(registry, "KNOWN_SHA256", {sha: rel})
        rc, out, err = _download(capsys, monkeypatch, site, "flame2023-open", "secret", "--default")
    assert rc == 0, err
    e = Registry.load().get("flame2023-open")
    assert e is not None and e.release == "flame2023-open" and e.default
    from flamecap.flame.io import load_model
    m = load_model()
    assert m.meta["release_verified"] is True and m.meta["licence"] == "CC-BY-4.0"
    np.testing.assert_equal(m.n_vertices, 40)


def test_download_jsonl_progress(capsys, monkeypatch, tmp_path):
    from flamecap.contract.events import parse_event
    archive = _release_zip(tmp_path, {"generic_model.pkl": 1})
    with FakeFlameSite(archive) as site:
        rc, out, err = run_cli(capsys, "models", "download", "flame2020", "--username", "me@example.org",
                               "--password-stdin", "--url-base", site.url, "--progress", "jsonl",
                               stdin="secret\n", monkeypatch=monkeypatch)
    assert rc == 0, err
    events = [parse_event(line) for line in out.splitlines()]
    assert all(e is not None for e in events)
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"


def test_download_needs_credentials_and_http_url(capsys, monkeypatch):
    rc, out, err = run_cli(capsys, "models", "download", "flame2020", "--password-stdin",
                           stdin="secret\n", monkeypatch=monkeypatch)
    assert rc == 2 and "--username" in err
    rc, out, err = run_cli(capsys, "models", "download", "flame2020", "--username", "u", "--password-stdin",
                           "--url-base", "file:///etc/passwd", stdin="x\n", monkeypatch=monkeypatch)
    assert rc == 2 and "http(s)" in err


def test_add_keeps_the_downloads_landmark_embeddings(capsys, pkl, tmp_path):
    """A MediaPipe embedding .npz and the 68-point .pkl given with --embedding are stored in the model;
    an embedding for another topology is refused in one line and nothing is registered."""
    import pickle

    from flamecap.flame.io import load_model
    mp = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(mp, lmk_face_idx=np.array([0, 5, 7]), lmk_b_coords=np.full((3, 3), 1 / 3),
             landmark_indices=np.array([1, 13, 14]))
    l68 = tmp_path / "flame_static_embedding.pkl"
    with open(l68, "wb") as fh:
        pickle.dump({"lmk_face_idx": np.arange(68) % 80, "lmk_b_coords": np.full((68, 3), 1 / 3)}, fh)
    bad = tmp_path / "other.npz"
    np.savez(bad, lmk_face_idx=np.array([10 ** 6]), lmk_b_coords=np.full((1, 3), 1 / 3), landmark_indices=np.array([1]))
    rc, out, err = run_cli(capsys, "models", "add", str(pkl), "--embedding", str(bad))
    assert rc != 0 and "another head topology" in err and err.count("\n") == 1 and _models_dir_is_clean()
    rc, out, err = run_cli(capsys, "models", "add", str(pkl), "--embedding", str(mp), "--embedding", str(l68))
    assert rc == 0, err
    m = load_model("generic_model")
    assert m["mp_landmark_indices"].tolist() == [1, 13, 14] and m["lmk68_face_idx"].shape == (68,)


def test_add_stores_generated_eyelid_shapes_for_a_head_without_them(capsys, tmp_path, flame_reference_dir):
    # FLAME 2020 and 2023 Open carry no eyelid shapes: they are made once, at add time, and kept in the model
    from flamecap.contract.model_format import FlameModelData, load_model_npz, save_model_npz
    from flamecap.flame.synthetic import flame_reference_head
    head = flame_reference_head(flame_reference_dir)
    bare = FlameModelData(arrays={k: v for k, v in head.arrays.items() if k != "eyelid_dirs"}, meta=dict(head.meta))
    src = save_model_npz(tmp_path / "no_lids.npz", bare)
    rc, out, err = run_cli(capsys, "models", "add", str(src), "--name", "nolids")
    assert rc == 0, err
    assert "eyelids" in out
    entry = Registry.load().get("nolids")
    assert entry.has_eyelids
    stored = load_model_npz(entry.path())
    lids = np.asarray(stored["eyelid_dirs"])
    assert lids.shape == (stored.n_vertices, 3, 2) and stored.meta["eyelids"] == "generated"
    # the upper lids move down (−Y) and the eyeballs stay put
    from flamecap.flame.eyelids import eyeballs
    moved = np.linalg.norm(lids, axis=1).max(1) > 1e-4
    assert moved.any() and not (moved & (eyeballs(stored)[0] | eyeballs(stored)[1])).any()
    assert lids[moved][..., 1, :].min() < 0
