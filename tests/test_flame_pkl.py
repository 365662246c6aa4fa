"""FLAME .pkl loading without chumpy: faithful fixtures, the restricted unpickler, bad files."""
from __future__ import annotations

import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from flame_pkl_fixtures import make_flame_dict, write_flame_pkl
from flamecap.errors import ModelError, UnsafeFileError
from flamecap.flame.pkl import (
    flame_arrays_from_dict, load_flame_pkl, parents_from_kintree, read_flame_pkl, safe_unpickle, to_array,
)


@pytest.fixture(scope="module")
def raw():
    return make_flame_dict(n_vertices=120, n_faces=200, seed=1)


@pytest.fixture()
def pkl(tmp_path, raw):
    return write_flame_pkl(tmp_path / "generic_model.pkl", raw)


def test_fixture_is_faithful_to_the_release_layout(pkl):
    data = pkl.read_bytes()
    assert data[:2] == b"\x80\x02"                       # protocol 2
    assert b"cchumpy.ch\nCh\n" in data                    # chumpy objects, like the real files
    assert b"cscipy.sparse.csc\ncsc_matrix\n" in data     # py2-era scipy module path
    assert b"U\nv_template" in data                       # keys are Python-2 strings (SHORT_BINSTRING)
    assert "chumpy" not in sys.modules
    with pytest.raises(ModuleNotFoundError):              # a plain unpickler would need chumpy
        pickle.loads(data, encoding="latin1")


def test_pkl_loads_without_chumpy(pkl, raw):
    d = read_flame_pkl(pkl)
    assert "chumpy" not in sys.modules
    for key in ("v_template", "shapedirs", "posedirs", "weights", "J_regressor", "J", "f", "kintree_table"):
        assert isinstance(d[key], np.ndarray)
        np.testing.assert_array_equal(d[key], raw[key])
    assert d["bs_style"] == "lbs" and d["bs_type"] == "lrotmin"


def test_conversion_to_contract_arrays(pkl, raw):
    m = load_flame_pkl(pkl)
    V = raw["v_template"].shape[0]
    assert (m.n_vertices, m.n_shape, m.n_expr) == (V, 300, 100)
    np.testing.assert_allclose(m["shapedirs"], raw["shapedirs"][:, :, :300], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m["exprdirs"], raw["shapedirs"][:, :, 300:], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m["J_regressor"], raw["J_regressor"], rtol=1e-6)
    assert m["J_regressor"].dtype == np.float32 and m["faces"].dtype == np.int32
    np.testing.assert_array_equal(m["faces"], raw["f"].astype(np.int32))
    assert m["parents"].tolist() == [-1, 0, 1, 1, 1]
    assert m.meta["release"] == "custom"  # not the FLAME topology
    assert len(m.meta["source_sha256"]) == 64 and m.meta["source_name"] == "generic_model.pkl"
    assert "eyelid_dirs" not in m


def test_truncating_components(pkl, raw):
    m = load_flame_pkl(pkl, n_shape=50, n_expr=20)
    assert (m.n_shape, m.n_expr) == (50, 20)
    np.testing.assert_allclose(m["exprdirs"], raw["shapedirs"][:, :, 300:320], rtol=1e-6, atol=1e-9)
    with pytest.raises(ModelError, match="asked for"):
        load_flame_pkl(pkl, n_shape=301)


def test_smaller_bases_with_explicit_split(tmp_path):
    d = make_flame_dict(n_vertices=30, n_faces=40, n_components=30)
    p = write_flame_pkl(tmp_path / "small.pkl", d)
    m = load_flame_pkl(p, n_shape_in_file=20)
    assert (m.n_shape, m.n_expr) == (20, 10)
    # without a split, 30 components are all identity: no expression basis → refused
    with pytest.raises(ModelError, match="components"):
        load_flame_pkl(p)


def test_eyelid_blendshapes_are_kept(tmp_path):
    d = make_flame_dict(n_vertices=40, n_faces=50, eyelids=True)
    m = load_flame_pkl(write_flame_pkl(tmp_path / "e.pkl", d))
    assert m["eyelid_dirs"].shape == (40, 3, 2)
    np.testing.assert_allclose(m["eyelid_dirs"][:, :, 0], d["l_eyelid"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m["eyelid_dirs"][:, :, 1], d["r_eyelid"], rtol=1e-6, atol=1e-9)


def test_parents_from_kintree():
    kt = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]])
    assert parents_from_kintree(kt).tolist() == [-1, 0, 1, 1, 1]
    shuffled = kt[:, [2, 0, 4, 1, 3]]
    assert parents_from_kintree(shuffled).tolist() == [-1, 0, 1, 1, 1]
    with pytest.raises(ModelError, match="every joint"):
        parents_from_kintree(np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 3]]))


# ---------------------------------------------------------------- the restricted unpickler refuses code
class _Marker:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _evil_variants(marker: Path):
    import subprocess
    cmd = f"touch {marker}"
    yield "system", pickle.dumps({"v_template": _Marker(os.system, cmd)}, protocol=2)
    yield "eval", pickle.dumps(_Marker(eval, f"open({str(marker)!r}, 'w')"), protocol=2)
    yield "exec", pickle.dumps(_Marker(exec, f"open({str(marker)!r}, 'w')"), protocol=0)
    yield "Popen", pickle.dumps(_Marker(subprocess.Popen, ["touch", str(marker)]), protocol=4)
    yield "getattr", pickle.dumps(_Marker(getattr, "x"), protocol=2)


@pytest.mark.parametrize("idx", range(5))
def test_code_execution_is_refused(tmp_path, idx):
    marker = tmp_path / "pwned"
    name, data = list(_evil_variants(marker))[idx]
    p = tmp_path / "evil.pkl"
    p.write_bytes(data)
    with pytest.raises(UnsafeFileError) as exc:
        read_flame_pkl(p)
    assert name in str(exc.value) and "\n" not in str(exc.value)
    assert not marker.exists()


def test_evil_object_hidden_inside_a_chumpy_state_is_refused(tmp_path, raw):
    from flame_pkl_fixtures import _Py2Pickler, fake_chumpy_modules
    marker = tmp_path / "pwned"
    with fake_chumpy_modules() as (Ch, _):
        good = Ch(raw["v_template"])
        bad = Ch(raw["shapedirs"])
        bad.x = _Marker(os.system, f"touch {marker}")  # the 'x' of a chumpy object is the payload
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump({"v_template": good, "shapedirs": bad})
    data = buf.getvalue()
    assert b"cchumpy.ch\nCh\n" in data and b"system" in data
    with pytest.raises(UnsafeFileError, match="system"):
        safe_unpickle(data, where="tampered.pkl")
    assert not marker.exists()


def test_foreign_but_harmless_class_is_refused(tmp_path):
    from collections import Counter
    p = tmp_path / "counter.pkl"
    p.write_bytes(pickle.dumps({"v_template": Counter("ab")}, protocol=2))
    with pytest.raises(UnsafeFileError, match="collections.Counter"):
        read_flame_pkl(p)


# ---------------------------------------------------------------- bad files, one line each
def test_truncated_pkl(tmp_path, pkl):
    data = pkl.read_bytes()
    bad = tmp_path / "trunc.pkl"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="ends early") as exc:
        load_flame_pkl(bad)
    assert "\n" not in str(exc.value)


def test_png_renamed_pkl(tmp_path):
    p = tmp_path / "photo.pkl"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ModelError, match="PNG image"):
        load_flame_pkl(p)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x80\x02K\x01."])
def test_garbage_and_non_dict(tmp_path, content):
    p = tmp_path / "x.pkl"
    p.write_bytes(content)
    with pytest.raises(ModelError) as exc:
        load_flame_pkl(p)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("key,value,match", [
    ("shapedirs", np.zeros((120, 3)), "shapedirs"),
    ("posedirs", np.zeros((120, 3, 35)), "posedirs"),
    ("weights", np.zeros((120, 4)), "weights"),
    ("v_template", np.zeros((120, 2)), "v_template"),
    ("J_regressor", np.zeros((5, 119)), "J_regressor"),
    ("shapedirs", np.zeros((120, 3, 500)), "components"),
    ("f", np.array([[0, 1, 500]], dtype=np.uint32), "faces"),
    ("kintree_table", np.zeros((2, 4), dtype=np.int64), "kintree_table"),
    ("v_template", np.full((120, 3), np.nan), "NaN"),
])
def test_wrong_shaped_or_bad_arrays(tmp_path, raw, key, value, match):
    d = dict(raw)
    d[key] = value
    p = write_flame_pkl(tmp_path / "bad.pkl", d)
    with pytest.raises(ModelError, match=match) as exc:
        load_flame_pkl(p)
    assert "\n" not in str(exc.value)


def test_missing_keys(tmp_path, raw):
    d = {k: v for k, v in raw.items() if k not in ("posedirs", "weights")}
    with pytest.raises(ModelError, match="lacks posedirs, weights"):
        load_flame_pkl(write_flame_pkl(tmp_path / "m.pkl", d))


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_flame_pkl(tmp_path / "nope.pkl")


# ---------------------------------------------------------------- other pickle flavours the loader meets
def test_modern_scipy_sparse_and_protocol5_numpy():
    import scipy.sparse as sp
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(5, 9)) * (rng.random((5, 9)) < 0.4)
    obj = {"csc": sp.csc_matrix(dense), "csr": sp.csr_matrix(dense), "coo": sp.coo_matrix(dense),
           "arr": np.arange(6.0).reshape(2, 3)}
    for proto in (2, 4, 5):
        out = safe_unpickle(pickle.dumps(obj, protocol=proto))
        for k in ("csc", "csr", "coo"):
            np.testing.assert_allclose(to_array(out[k]), dense)
        np.testing.assert_array_equal(out["arr"], obj["arr"])


def test_object_arrays_are_not_accepted():
    with pytest.raises(ModelError, match="dtype"):
        to_array(safe_unpickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)), "x")


def test_real_python2_pickle_from_shared_data(flame_reference_dir):
    """A real Python-2 era FLAME-project pickle (protocol 0, numpy arrays) through the safe unpickler."""
    data = (flame_reference_dir / "flame_static_embedding_68.pkl").read_bytes()
    d = safe_unpickle(data, where="flame_static_embedding_68.pkl")
    assert to_array(d["lmk_face_idx"]).shape == (68,)
    b = to_array(d["lmk_b_coords"])
    assert b.shape == (68, 3)
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-5)


def test_flame_arrays_from_dict_accepts_flat_posedirs(raw):
    d = dict(raw)
    d["posedirs"] = raw["posedirs"].reshape(-1, 36)
    arrays, extra = flame_arrays_from_dict(d)
    np.testing.assert_allclose(arrays["posedirs"], raw["posedirs"], rtol=1e-6, atol=1e-9)
    assert extra["bs_type"] == "lrotmin"


def test_bytesio_roundtrip_has_no_side_effects(pkl):
    before = set(sys.modules)
    read_flame_pkl(pkl, data=pkl.read_bytes())
    assert not {m for m in set(sys.modules) - before if m.startswith(("chumpy", "scipy.sparse.csc"))}


def test_derived_chumpy_nodes_are_evaluated_or_refused():
    """Reordering / arithmetic chumpy nodes (a ``Ch`` viewed through Select / transpose / add) evaluate
    from their operands; an unknown expression is a one-line ModelError, never executed."""
    import types
    from flame_pkl_fixtures import _Py2Pickler, fake_chumpy_modules
    mods = {}
    for modname, clsname, fields in (("chumpy.reordering", "Select", ("a", "idxs", "preferred_shape")),
                                     ("chumpy.reordering", "transpose", ("a", "axes")),
                                     ("chumpy.ch_ops", "add", ("a", "b")),
                                     ("chumpy.linalg", "Inv", ("a",))):
        mod = mods.setdefault(modname, types.ModuleType(modname))

        def getstate(self, fields=fields):
            return {f: getattr(self, f) for f in fields}

        cls = type(clsname, (), {"__getstate__": getstate, "__module__": modname})
        cls.__qualname__ = clsname
        setattr(mod, clsname, cls)
    x = np.arange(12.0).reshape(3, 4)
    with fake_chumpy_modules() as (Ch, _):
        sys.modules.update(mods)
        try:
            def node(modname, clsname, **kw):
                obj = getattr(mods[modname], clsname)()
                obj.__dict__.update(kw)
                return obj
            base = Ch(x)
            payload = {"sel": node("chumpy.reordering", "Select", a=base, idxs=np.array([0, 5, 11]),
                                   preferred_shape=(3,)),
                       "tr": node("chumpy.reordering", "transpose", a=base, axes=None),
                       "sum": node("chumpy.ch_ops", "add", a=base, b=Ch(np.ones((3, 4)))),
                       "inv": node("chumpy.linalg", "Inv", a=base)}
            buf = io.BytesIO()
            _Py2Pickler(buf, protocol=2).dump(payload)
        finally:
            for m in mods:
                sys.modules.pop(m, None)
    out = safe_unpickle(buf.getvalue())
    np.testing.assert_array_equal(to_array(out["sel"]), [0.0, 5.0, 11.0])
    np.testing.assert_array_equal(to_array(out["tr"]), x.T)
    np.testing.assert_array_equal(to_array(out["sum"]), x + 1)
    with pytest.raises(ModelError, match="chumpy.linalg.Inv"):
        to_array(out["inv"])
