"""Test helpers: write small pickles in the exact layout of the FLAME releases.

The real files are Python-2 protocol-2 pickles: byte strings as SHORT_BINSTRING/BINSTRING (hence
``encoding='latin1'``), chumpy ``chumpy.ch.Ch`` objects (NEWOBJ + a state dict whose ``'x'`` is the array),
a ``scipy.sparse.csc.csc_matrix`` J_regressor (NEWOBJ + ``__dict__`` state), plain ndarrays for ``f`` and
``kintree_table``. We reproduce that with a pure-Python pickler whose ``str``/``bytes`` go out as Python-2
strings, and fake ``chumpy`` / ``scipy.sparse.csc`` modules that exist in ``sys.modules`` ONLY while writing.
"""
from __future__ import annotations

import contextlib
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np

ROOT_PARENT = 4294967295  # how the releases store the root's parent in kintree_table


def make_flame_dict(n_vertices: int = 120, n_faces: int = 200, n_components: int = 400, seed: int = 0,
                    eyelids: bool = False) -> dict:
    """Raw FLAME-like arrays (float64 like the releases), deterministic, small."""
    rng = np.random.default_rng(seed)
    V = n_vertices
    # a rough head: points on an ellipsoid, metres
    u = rng.uniform(0, 2 * np.pi, V)
    w = rng.uniform(-1, 1, V)
    r = np.sqrt(1 - w ** 2)
    v_template = np.stack([0.08 * r * np.cos(u), 0.11 * w, 0.09 * r * np.sin(u)], axis=1)
    faces = np.stack([rng.choice(V, 3, replace=False) for _ in range(n_faces)]).astype(np.uint32)
    shapedirs = rng.normal(0, 1e-3, (V, 3, n_components))
    posedirs = rng.normal(0, 1e-3, (V, 3, 36))
    logits = rng.normal(0, 2, (V, 5))
    weights = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    J_regressor = np.zeros((5, V))
    for j in range(5):
        idx = rng.choice(V, 6, replace=False)
        J_regressor[j, idx] = rng.uniform(0.5, 1.5, 6)
    J_regressor /= J_regressor.sum(1, keepdims=True)
    d = {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "weights": weights,
        "J_regressor": J_regressor,
        "J": J_regressor @ v_template,
        "f": faces,
        "kintree_table": np.array([[ROOT_PARENT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    if eyelids:
        d["l_eyelid"] = rng.normal(0, 1e-3, (V, 3))
        d["r_eyelid"] = rng.normal(0, 1e-3, (V, 3))
    return d


class _Py2Pickler(pickle._Pickler):
    """Pure-Python pickler writing ``str`` (ASCII) and ``bytes`` as Python-2 strings."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2(self, obj, raw: bytes):
        n = len(raw)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + raw)
        self.memoize(obj)

    def save_bytes(self, obj):
        self._save_py2(obj, obj)

    def save_str(self, obj):
        try:
            raw = obj.encode("ascii")
        except UnicodeEncodeError:
            return pickle._Pickler.save_str(self, obj)
        self._save_py2(obj, raw)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


@contextlib.contextmanager
def fake_chumpy_modules():
    """``chumpy``, ``chumpy.ch`` (with ``Ch``) and ``scipy.sparse.csc`` (with ``csc_matrix``) in sys.modules
    while the block runs; the previous entries are restored afterwards."""
    names = ("chumpy", "chumpy.ch", "scipy.sparse.csc")
    saved = {n: sys.modules.get(n) for n in names}
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:  # the state chumpy's Ch.__getstate__ produces (its __dict__ minus _parents/_cache)
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                    "_make_dense": False, "_make_sparse": False}

    Ch.__module__, Ch.__qualname__, Ch.__name__ = "chumpy.ch", "Ch", "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    chumpy.Ch = Ch
    csc = types.ModuleType("scipy.sparse.csc")

    class csc_matrix:  # noqa: N801 - the real class name
        def __init__(self, dense):
            dense = np.asarray(dense, dtype=np.float64)
            cols = [np.nonzero(dense[:, j])[0] for j in range(dense.shape[1])]
            self._shape = dense.shape
            self.maxprint = 50
            self.format = "csc"
            self.indices = np.concatenate(cols).astype(np.int32) if cols else np.zeros(0, np.int32)
            self.indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32)
            self.data = np.concatenate([dense[c, j] for j, c in enumerate(cols)])

    csc_matrix.__module__, csc_matrix.__qualname__ = "scipy.sparse.csc", "csc_matrix"
    csc.csc_matrix = csc_matrix
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch, "scipy.sparse.csc": csc})
    try:
        yield Ch, csc_matrix
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def flame_pickle_bytes(d: dict) -> bytes:
    """Pickle a raw FLAME dict the way the releases are stored (see module docstring)."""
    import io
    with fake_chumpy_modules() as (Ch, csc_matrix):
        obj = {}
        for k, v in d.items():
            if k == "J_regressor":
                obj[k] = csc_matrix(v)
            elif k in ("f", "kintree_table") or isinstance(v, str):
                obj[k] = v
            else:
                obj[k] = Ch(v)
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2, fix_imports=True).dump(obj)
    return buf.getvalue()


def write_flame_pkl(path: str | Path, d: dict | None = None, **kw) -> Path:
    path = Path(path)
    path.write_bytes(flame_pickle_bytes(d if d is not None else make_flame_dict(**kw)))
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    return path
