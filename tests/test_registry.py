"""Release identification, the model registry, load_model and the weights manifest."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flame_pkl_fixtures import make_flame_dict, write_flame_pkl
from flamecap import paths
from flamecap.errors import ModelError, WeightsError
from flamecap.flame.io import NO_MODEL_MESSAGE, add_model_file, convert_pkl_to_npz, load_model
from flamecap.flame.registry import (
    KNOWN_RELEASES, Registry, RegistryEntry, identify_release, registered_models_summary, sha256_file,
)

OPEN_SHA = "e75a0990728ba038c7da2a420ae4396f7ddd7781366c13026066c5b24f127623"


def test_identify_release():
    r = identify_release(OPEN_SHA, "whatever.pkl", 5023, 9976)
    assert (r.release, r.verified, r.licence) == ("flame2023-open", True, "CC-BY-4.0")
    assert identify_release("0" * 64, "generic_model.pkl", 5023, 9976).release == "flame2020-like"
    assert identify_release("0" * 64, "flame2023_no_jaw.pkl", 5023, 9976).release == "flame2023-no-jaw-like"
    # a file named like the open release but with another hash is not trusted as it
    r = identify_release("0" * 64, "flame2023_Open.pkl", 5023, 9976)
    assert r.release == "flame2023-open-like" and not r.verified
    assert identify_release("0" * 64, "my_head.pkl", 5023, 9976).release == "flame-like"
    assert identify_release("0" * 64, "generic_model.pkl", 100, 150).release == "custom"


def test_manifest_matches_known_releases():
    from flamecap.weights import load_manifest, manifest_entry
    m = load_manifest()
    for name in ("flame2023-open", "flame2023", "flame2020", "mica", "arcface-iresnet100", "flowface-dense"):
        e = m[name]
        for field in ("kind", "files", "licence", "url", "stage", "required", "commercial_use"):
            assert field in e, (name, field)
    assert manifest_entry("flame2023-open")["sha256"]["flame2023_Open.pkl"] == OPEN_SHA
    assert manifest_entry("flowface-dense")["files"] == ["flowface_dense.safetensors", "flowface_dense.json"]
    known_files = {r.file_name for r in KNOWN_RELEASES}
    for name, e in m.items():
        if e["kind"] == "head-model":
            assert set(e["files"]) <= known_files
            for f, sha in e.get("sha256", {}).items():
                assert {r.file_name: r.sha256 for r in KNOWN_RELEASES}[f] == sha
    from flamecap.commands.models import DOWNLOADS
    for name, spec in DOWNLOADS.items():
        assert m[name]["archive"] == spec.archive and set(m[name]["files"]) == set(spec.members)
    with pytest.raises(WeightsError, match="not in the weights manifest"):
        manifest_entry("nope")
    entry = manifest_entry("flame2020")
    entry["files"].append("x")  # copies: callers cannot change the cached manifest
    assert "x" not in manifest_entry("flame2020")["files"]


def test_no_model_registered_message():
    with pytest.raises(ModelError) as exc:
        load_model()
    assert str(exc.value) == NO_MODEL_MESSAGE
    assert registered_models_summary() == []
    assert not paths.models_dir().exists()


def _entry(name, sha="a" * 64, **kw):
    base = dict(release="custom", file=f"{name}.npz", source_name="x.pkl", source_sha256=sha,
                npz_sha256="b" * 64, topology_hash="c" * 16, n_vertices=10, n_shape=3, n_expr=2)
    base.update(kw)
    return RegistryEntry(name=name, **base)


def test_registry_roundtrip_default_and_names():
    reg = Registry.load()
    reg.add(_entry("one"))
    reg.add(_entry("two", sha="d" * 64))
    assert reg.default().name == "one"          # the first model becomes the default
    reg.set_default("two")
    reg.save()
    again = Registry.load()
    assert again.names() == ["one", "two"] and again.default().name == "two"
    assert again.find_source("d" * 64).name == "two"
    assert again.unique_name("one") == "one-2" and again.unique_name("new model!") == "new-model"
    with pytest.raises(ModelError, match="already registered"):
        again.add(_entry("one"))
    with pytest.raises(ModelError, match="not allowed"):
        again.add(_entry("../evil"))
    removed = again.remove("two")
    assert removed.name == "two" and again.default().name == "one"
    with pytest.raises(ModelError, match="no registered model named 'zzz'"):
        again.remove("zzz")
    data = json.loads((paths.models_dir() / "registry.json").read_text())
    assert data["version"] == 1 and {m["name"] for m in data["models"]} == {"one", "two"}
    assert not [p for p in paths.models_dir().iterdir() if p.name.endswith(".tmp")]


def test_corrupt_registry_is_one_line_error():
    paths.models_dir().mkdir(parents=True)
    (paths.models_dir() / "registry.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        Registry.load()
    with pytest.raises(ModelError, match="unreadable"):
        load_model()
    assert "unreadable" in registered_models_summary()[0]["error"]


def test_add_load_by_name_path_and_default(tmp_path):
    d = make_flame_dict(n_vertices=50, n_faces=60, seed=2)
    pkl = write_flame_pkl(tmp_path / "generic_model.pkl", d)
    (out,) = add_model_file(pkl)
    e = out.entry
    assert not out.already and e.name == "generic_model" and e.default
    assert e.source_sha256 == sha256_file(pkl) and e.npz_sha256 == sha256_file(e.path())
    by_default, by_name = load_model(), load_model("generic_model")
    by_pkl, by_npz = load_model(pkl), load_model(str(e.path()))
    for m in (by_default, by_name, by_pkl, by_npz):
        np.testing.assert_array_equal(m["shapedirs"], by_pkl["shapedirs"])
        assert m.topology == e.topology_hash
    assert by_name.meta["name"] == "generic_model"
    # the same file again is recognised, a second model gets its own name and can become the default
    (again,) = add_model_file(pkl)
    assert again.already and again.entry.name == "generic_model"
    pkl2 = write_flame_pkl(tmp_path / "other.pkl", make_flame_dict(n_vertices=50, n_faces=60, seed=3))
    (second,) = add_model_file(pkl2, name="mine", make_default=True)
    assert second.entry.default and load_model().meta["name"] == "mine"
    summary = registered_models_summary()
    assert [s["name"] for s in summary] == ["generic_model", "mine"]
    assert all(s["present"] for s in summary) and [s["default"] for s in summary] == [False, True]
    with pytest.raises(ModelError, match="already registered"):
        add_model_file(write_flame_pkl(tmp_path / "third.pkl", make_flame_dict(n_vertices=50, n_faces=60,
                                                                                seed=4)), name="mine")
    with pytest.raises(ModelError, match="no registered model named 'flame2099'"):
        load_model("flame2099")
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "missing.npz"))
    e.path().unlink()
    with pytest.raises(ModelError, match="missing its file"):
        load_model("generic_model")


def test_failed_add_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x02}q\x00(U\x01a")  # truncated
    with pytest.raises(ModelError):
        add_model_file(bad)
    assert not paths.models_dir().exists()


def test_convert_is_atomic_on_failure(tmp_path, monkeypatch):
    pkl = write_flame_pkl(tmp_path / "m.pkl", make_flame_dict(n_vertices=40, n_faces=50))
    import numpy
    real = numpy.lib.format.write_array

    def boom(*a, **k):   # the data is written, then the disk fills up
        real(*a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(numpy.lib.format, "write_array", boom)
    with pytest.raises(OSError):
        convert_pkl_to_npz(pkl, tmp_path / "out" / "m.npz")
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(OSError):
        add_model_file(pkl)
    assert not paths.models_dir().exists() or list(paths.models_dir().iterdir()) == []


def test_zip_with_several_models(tmp_path):
    import zipfile
    z = tmp_path / "FLAME2023.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i, name in enumerate(("flame2023.pkl", "flame2023_no_jaw.pkl")):
            p = write_flame_pkl(tmp_path / name, make_flame_dict(n_vertices=30, n_faces=40, seed=10 + i))
            zf.write(p, f"FLAME2023/{name}")
        zf.writestr("Readme.txt", "hi")
        zf.writestr("FLAME2023/landmark_embedding.pkl", b"\x80\x02}q\x00.")  # not a model: skipped
    outs = add_model_file(z)
    assert [o.entry.name for o in outs] == ["flame2023", "flame2023_no_jaw"]
    assert [o.entry.source_name for o in outs] == ["flame2023.pkl", "flame2023_no_jaw.pkl"]
    with pytest.raises(ModelError, match="holds 2 models"):
        add_model_file(z, name="x")


def test_add_converted_npz(tmp_path):
    pkl = write_flame_pkl(tmp_path / "flame2023.pkl", make_flame_dict(n_vertices=30, n_faces=40, seed=8))
    npz = convert_pkl_to_npz(pkl, tmp_path / "converted.npz")
    (out,) = add_model_file(npz, name="from-npz")
    assert not out.already and out.entry.source_sha256 == sha256_file(pkl)  # the source is the original pkl
    (again,) = add_model_file(pkl)
    assert again.already and again.entry.name == "from-npz"
    np.testing.assert_array_equal(load_model("from-npz")["v_template"], load_model(pkl)["v_template"])
