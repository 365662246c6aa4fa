"""Load the FLAME ``.pkl`` releases users download (FLAME 2020 ``generic/female/male_model.pkl``, FLAME 2023
``flame2023.pkl`` / ``flame2023_no_jaw.pkl``, FLAME 2023 Open ``flame2023_Open.pkl``) without chumpy and
without executing anything from the file.

The releases are Python-2 era pickles (protocol 2, byte strings → ``encoding='latin1'``) of a dict:

==============  =========================================  ==========================================
key             stored as                                  meaning
==============  =========================================  ==========================================
v_template      chumpy ``Ch`` (V, 3) float64               template mesh, metres
shapedirs       chumpy ``Ch`` (V, 3, 400)                  300 identity + 100 expression components
posedirs        chumpy ``Ch`` or ndarray (V, 3, 36)        pose correctives (9 × 4 non-root joints)
weights         chumpy ``Ch`` or ndarray (V, 5)            skinning weights
J               chumpy ``Ch`` (5, 3)                       template joints (unused: J_regressor wins)
J_regressor     scipy.sparse ``csc_matrix`` (5, V)          joints from vertices
f               ndarray uint32 (F, 3)                      triangles
kintree_table   ndarray (2, 5)                             [parent; child], root parent = 2**32 − 1
bs_style        str ``'lbs'``                              skinning style
bs_type         str ``'lrotmin'``                          pose-corrective feature type
==============  =========================================  ==========================================

Some derived files add eyelid blendshapes (``l_eyelid`` / ``r_eyelid`` (V, 3) each, as used by
metrical-tracker style trackers, or a combined ``eyelid_dirs`` (V, 3, 2)); they are kept when present.

Security: :class:`SafeFlameUnpickler` resolves globals through an allow-list. chumpy classes become
:class:`ChumpyStandin` objects that only record their pickled state (``Ch`` keeps its value in state key
``'x'``), scipy sparse matrices become :class:`SparseStandin`, numpy arrays are rebuilt by numpy's own
reconstructors. Any other global (``os.system``, ``builtins.eval``, an unknown class) raises
:class:`~flamecap.errors.UnsafeFileError` naming it before anything is called.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import copyreg
import io
import logging
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..contract.errors import ContractError
from ..contract.model_format import N_JOINTS, FlameModelData, model_meta, validate_model
from ..errors import ModelError, UnsafeFileError

log = logging.getLogger(__name__)

FLAME_N_SHAPE = 300       # identity components in the FLAME releases
FLAME_N_EXPR = 100        # expression components in the FLAME releases
FLAME_N_VERTICES = 5023
FLAME_N_FACES = 9976
N_POSE_CORRECTIVES = 9 * (N_JOINTS - 1)

_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"PK\x03\x04": "a zip archive",
    b"\x1f\x8b": "a gzip file",
    b"%PDF": "a PDF document",
    b"<!DO": "an HTML page",
    b"<htm": "an HTML page",
    b"GIF8": "a GIF image",
    b"ply\n": "a PLY mesh",
    b"ply\r": "a PLY mesh",
    b"\x93NUMPY": "a .npy array",
}


# ----------------------------------------------------------------------------------------------------------
# stand-ins for foreign classes
class ChumpyStandin:
    """What a pickled chumpy object becomes: the class name it claimed and its pickled ``__dict__`` state.

    Nothing of chumpy runs. :meth:`value` evaluates the few node types the FLAME releases can contain."""

    chumpy_class = "chumpy.ch.Ch"

    def __new__(cls, *args: Any, **kwargs: Any):  # NEWOBJ / REDUCE: never forward anything
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any):
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = state[0] or {}
        self.__dict__["_state"] = dict(state) if isinstance(state, dict) else {}

    @property
    def state(self) -> dict:
        return self.__dict__.get("_state", {})

    def value(self, depth: int = 0) -> np.ndarray:
        """The array this chumpy node stands for (plain ``Ch``: its ``x``; a few reordering / arithmetic
        nodes are evaluated from their operands)."""
        if depth > 50:
            raise ModelError("chumpy expression nested too deeply")
        s = self.state
        name = self.chumpy_class.rsplit(".", 1)[-1]
        val = lambda key: to_array(s[key], key, depth + 1)  # noqa: E731
        if name == "Ch" or (set(s) & {"x"} and not set(s) & {"a", "b"}):
            if "x" not in s:
                raise ModelError(f"chumpy object {self.chumpy_class} has no value ('x') in its state")
            return to_array(s["x"], "x", depth + 1)
        if name in ("Reshape", "reshape") and "a" in s:
            return val("a").reshape(s.get("newshape", s.get("shape")))
        if name == "transpose" and "a" in s:
            return np.transpose(val("a"), s.get("axes"))
        if name == "Select" and "a" in s and "idxs" in s:
            out = val("a").ravel()[np.asarray(s["idxs"]).astype(np.int64)]
            shape = s.get("preferred_shape")
            return out.reshape(shape) if shape is not None else out
        if name in ("add", "subtract", "multiply", "divide") and "a" in s and "b" in s:
            op = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide}[name]
            return op(val("a"), val("b"))
        raise ModelError(f"the file holds a chumpy expression '{self.chumpy_class}' that cannot be evaluated "
                         f"without chumpy; re-save the model with plain arrays")


class SparseStandin:
    """What a pickled scipy sparse matrix becomes; :meth:`toarray` densifies it with numpy only."""

    sparse_format = "csc"

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0] or {}
        self.__dict__["_state"] = dict(state) if isinstance(state, dict) else {}

    def toarray(self) -> np.ndarray:
        s = self.__dict__.get("_state", {})
        fmt = self.sparse_format
        try:
            shape = tuple(int(x) for x in (s.get("_shape") or s.get("shape")))
            data = np.asarray(s["data"], dtype=np.float64)
            if fmt == "coo":
                row = np.asarray(s.get("row", s.get("coords", [None, None])[0]), dtype=np.int64)
                col = np.asarray(s.get("col", s.get("coords", [None, None])[1]), dtype=np.int64)
            else:
                indices = np.asarray(s["indices"], dtype=np.int64)
                indptr = np.asarray(s["indptr"], dtype=np.int64)
                n_major = shape[1] if fmt == "csc" else shape[0]
                if indptr.shape != (n_major + 1,) or indptr[-1] != data.shape[0] or indices.shape != data.shape:
                    raise ValueError("inconsistent index arrays")
                major = np.repeat(np.arange(n_major), np.diff(indptr))
                row, col = (indices, major) if fmt == "csc" else (major, indices)
            out = np.zeros(shape, dtype=np.float64)
            np.add.at(out, (row, col), data)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"a sparse {fmt} matrix in the file is malformed ({exc})") from None
        return out


def _make_chumpy(module: str, name: str) -> type:
    return type(f"Chumpy_{name}", (ChumpyStandin,), {"chumpy_class": f"{module}.{name}"})


def _make_sparse(fmt: str) -> type:
    return type(f"Sparse_{fmt}", (SparseStandin,), {"sparse_format": fmt})


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python-3 pickles of bytes use it, restricted to latin-1 text."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name not in ("iso8859-1", "latin-1"):
        raise UnsafeFileError(f"refuses _codecs.encode with encoding '{encoding}'")
    return codecs.encode(obj, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import importlib
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:  # numpy >= 2
            multiarray = importlib.import_module("numpy._core.multiarray")
            numeric = importlib.import_module("numpy._core.numeric")
        except ImportError:  # numpy 1.x
            multiarray = importlib.import_module("numpy.core.multiarray")
            numeric = importlib.import_module("numpy.core.numeric")
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            table[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


_CHUMPY_MODULES = {"chumpy", "chumpy.ch", "chumpy.reordering", "chumpy.ch_ops", "chumpy.linalg",
                   "chumpy.logic", "chumpy.utils", "chumpy.extras"}
_SPARSE_MODULES = {"scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr",
                   "scipy.sparse._csr", "scipy.sparse.coo", "scipy.sparse._coo", "scipy.sparse._arrays"}
_SPARSE_NAMES = {"csc_matrix": "csc", "csc_array": "csc", "csr_matrix": "csr", "csr_array": "csr",
                 "coo_matrix": "coo", "coo_array": "coo"}
_SAFE_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "slice": slice, "complex": complex,
                  "bytearray": bytearray, "list": list, "tuple": tuple, "dict": dict, "int": int,
                  "float": float, "str": str, "bytes": bytes, "bool": bool}
_OTHER_SAFE = {("copyreg", "_reconstructor"): copyreg._reconstructor,
               ("copyreg", "__newobj__"): copyreg.__newobj__,
               ("copyreg", "__newobj_ex__"): copyreg.__newobj_ex__,
               ("_codecs", "encode"): _latin1_encode,
               ("collections", "OrderedDict"): OrderedDict}


class SafeFlameUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals (see module docstring); anything else raises
    :class:`UnsafeFileError` before it could be called."""

    def __init__(self, file, where: str = "file"):
        super().__init__(file, encoding="latin1", fix_imports=True)
        self.where = where
        self._numpy = _numpy_globals()
        self._classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:   # the pickle.Unpickler hook
        if (module, name) in _compat_pickle.NAME_MAPPING:      # Python 2 names (copy_reg, __builtin__)
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in self._numpy:
            return self._numpy[key]
        if key in _OTHER_SAFE:
            return _OTHER_SAFE[key]
        if module == "builtins" and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module in _CHUMPY_MODULES and name.isidentifier():
            return self._classes.setdefault(key, _make_chumpy(module, name))
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return self._classes.setdefault(key, _make_sparse(_SPARSE_NAMES[name]))
        raise UnsafeFileError(f"{self.where} refers to '{module}.{name}', which is not allowed in a FLAME "
                              f"model file; it was not loaded and nothing in it was run (use the .pkl from the "
                              f"FLAME website)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"{self.where} uses pickle persistent ids; not a FLAME model file")


def describe_magic(head: bytes) -> str | None:
    """What a file's first bytes say it is, if it is something well known that is not a pickle."""
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    return None


def safe_unpickle(data: bytes, where: str = "file") -> Any:
    """Unpickle ``data`` through :class:`SafeFlameUnpickler`. Raises ModelError / UnsafeFileError (one line)."""
    what = describe_magic(data[:8])
    if what is not None:
        hint = "; unzip it and add the .pkl inside" if what == "a zip archive" else ""
        raise ModelError(f"{where} is {what}, not a FLAME .pkl model{hint}")
    if not data:
        raise ModelError(f"{where} is empty; download the FLAME model again")
    try:
        return SafeFlameUnpickler(io.BytesIO(data), where=where).load()
    except UnsafeFileError:
        raise
    except ModelError:
        raise
    except RecursionError:
        raise ModelError(f"{where} is nested too deeply to be a FLAME model") from None
    except MemoryError:
        raise ModelError(f"{where} asks for more memory than a FLAME model needs; not a FLAME model") from None
    except EOFError:
        raise ModelError(f"{where} ends early (truncated download?); download the FLAME model again") from None
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):
            raise ModelError(f"{where} ends early (truncated download?); download the FLAME model again") from None
        raise ModelError(f"{where} is not a readable FLAME .pkl (UnpicklingError: {exc}); damaged or not a "
                         f"FLAME model — download it again from the FLAME website") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file, reported in one line
        raise ModelError(f"{where} is not a readable FLAME .pkl ({type(exc).__name__}: {exc}); truncated or "
                         f"not a FLAME model — download it again from the FLAME website") from None


def to_array(obj: Any, key: str = "array", depth: int = 0) -> np.ndarray:
    """Plain numpy array from anything the FLAME pickles hold (ndarray, chumpy stand-in, sparse stand-in,
    nested lists / numbers). Object arrays are refused."""
    if isinstance(obj, ChumpyStandin):
        arr = obj.value(depth)
    elif isinstance(obj, SparseStandin):
        arr = obj.toarray()
    else:
        try:
            arr = np.asarray(obj)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"'{key}' cannot be read as an array ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ModelError(f"'{key}' has dtype {arr.dtype}, expected numbers")
    return arr


def read_flame_pkl(path: str | os.PathLike, data: bytes | None = None) -> dict[str, Any]:
    """Safely unpickle a FLAME ``.pkl`` into a dict whose chumpy / sparse values are plain numpy arrays
    (strings such as ``bs_style`` stay strings)."""
    path = Path(path)
    where = f"FLAME file {path.name}"
    if data is None:
        if not path.is_file():
            raise ModelError(f"FLAME model file not found: {path}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read {path} ({exc.strerror or exc})") from None
    obj = safe_unpickle(data, where=where)
    if not isinstance(obj, dict):
        raise ModelError(f"{where} holds a {type(obj).__name__}, not the dict a FLAME model is; "
                         f"not a FLAME model")
    out: dict[str, Any] = {}
    for k, v in obj.items():
        k = k.decode("latin1") if isinstance(k, bytes) else str(k)
        if isinstance(v, (str, bytes)):
            out[k] = v.decode("latin1") if isinstance(v, bytes) else v
        elif v is None or isinstance(v, (bool, int, float)):
            out[k] = v
        else:
            try:
                out[k] = to_array(v, k)
            except ModelError as exc:
                if k in _REQUIRED_KEYS or k in _EYELID_KEYS:
                    raise ModelError(f"{where}: {exc}") from None
                log.debug("%s: ignoring key %r (%s)", where, k, exc)
    return out


_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "weights", "J_regressor", "f", "kintree_table")
_EYELID_KEYS = ("eyelid_dirs", "l_eyelid", "r_eyelid")


def _expect(arr: np.ndarray, key: str, shape: tuple, where: str) -> None:
    ok = arr.ndim == len(shape) and all(w is None or w == g for w, g in zip(shape, arr.shape))
    if not ok:
        spec = "(" + ", ".join("N" if w is None else str(w) for w in shape) + ")"
        raise ModelError(f"{where}: '{key}' has shape {tuple(arr.shape)}, expected {spec}; not a FLAME model "
                         f"or a damaged file")


def parents_from_kintree(kintree: np.ndarray, where: str = "model") -> np.ndarray:
    """``kintree_table`` (2, J) [parent; child] → parents (J,) int32 with -1 for the root (the releases store
    the root's parent as 2**32 − 1)."""
    kt = np.asarray(kintree).astype(np.int64)
    J = kt.shape[1]
    parents = np.full(J, -2, dtype=np.int64)
    for parent, child in zip(kt[0], kt[1]):
        if not 0 <= child < J:
            raise ModelError(f"{where}: kintree_table names joint {child}, outside 0..{J - 1}")
        parents[child] = -1 if (parent < 0 or parent >= J) else parent
    if np.any(parents == -2):
        raise ModelError(f"{where}: kintree_table does not list every joint")
    return parents.astype(np.int32)


def flame_arrays_from_dict(d: dict[str, Any], where: str = "FLAME file", n_shape_in_file: int | None = None,
                           n_shape: int | None = None, n_expr: int | None = None
                           ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Raw FLAME dict → contract model arrays (float32 bases, int32 faces / parents) and extra metadata.

    ``shapedirs`` (V, 3, K) is split FLAME-style: the first ``n_shape_in_file`` (default min(300, K))
    components are identity, the rest (≤ 100) expression. ``n_shape`` / ``n_expr`` keep fewer."""
    missing = [k for k in _REQUIRED_KEYS if k not in d]
    if missing:
        raise ModelError(f"{where} lacks {', '.join(missing)}; not a FLAME model (expected the generic/"
                         f"flame2023 .pkl from the FLAME website)")
    vt = d["v_template"]
    _expect(vt, "v_template", (None, 3), where)
    V = vt.shape[0]
    sd = d["shapedirs"]
    _expect(sd, "shapedirs", (V, 3, None), where)
    K = sd.shape[2]
    split = int(n_shape_in_file) if n_shape_in_file is not None else min(FLAME_N_SHAPE, K)
    if not (1 <= split <= FLAME_N_SHAPE and 1 <= K - split <= FLAME_N_EXPR):
        raise ModelError(f"{where}: shapedirs has {K} components; a FLAME model has up to {FLAME_N_SHAPE} "
                         f"identity + {FLAME_N_EXPR} expression components (split at {split})")
    ns = split if n_shape is None else int(n_shape)
    ne = K - split if n_expr is None else int(n_expr)
    if not (1 <= ns <= split) or not (1 <= ne <= K - split):
        raise ModelError(f"{where}: asked for {ns} shape / {ne} expression components, the file has "
                         f"{split} / {K - split}")
    pd = d["posedirs"]
    if pd.ndim == 2 and pd.shape == (V * 3, N_POSE_CORRECTIVES):
        pd = pd.reshape(V, 3, N_POSE_CORRECTIVES)
    _expect(pd, "posedirs", (V, 3, N_POSE_CORRECTIVES), where)
    w = d["weights"]
    _expect(w, "weights", (V, N_JOINTS), where)
    jr = d["J_regressor"]
    _expect(jr, "J_regressor", (N_JOINTS, V), where)
    f = d["f"]
    _expect(f, "f", (None, 3), where)
    if f.dtype.kind not in "iu":
        if not np.all(np.equal(np.mod(f, 1), 0)):
            raise ModelError(f"{where}: 'f' (faces) holds non-integer values")
    f = f.astype(np.int64)
    if f.size == 0 or f.min() < 0 or f.max() >= V:
        raise ModelError(f"{where}: 'f' (faces) indexes outside 0..{V - 1}")
    kt = d["kintree_table"]
    _expect(kt, "kintree_table", (2, N_JOINTS), where)
    arrays = {
        "v_template": vt.astype(np.float32),
        "faces": f.astype(np.int32),
        "shapedirs": np.ascontiguousarray(sd[:, :, :ns], dtype=np.float32),
        "exprdirs": np.ascontiguousarray(sd[:, :, split:split + ne], dtype=np.float32),
        "posedirs": pd.astype(np.float32),
        "J_regressor": jr.astype(np.float32),
        "weights": w.astype(np.float32),
        "parents": parents_from_kintree(kt, where),
    }
    eyelids = _eyelid_dirs(d, V, where)
    if eyelids is not None:
        arrays["eyelid_dirs"] = eyelids
    for key, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ModelError(f"{where}: '{key}' has NaN or infinite values; damaged file")
    extra = {
        "bs_style": str(d.get("bs_style", "lbs")),
        "bs_type": str(d.get("bs_type", "lrotmin")),
        "n_shape_in_file": split,
        "n_expr_in_file": K - split,
        "source_keys": sorted(d.keys()),
    }
    if extra["bs_style"] != "lbs":
        raise ModelError(f"{where}: skinning style '{extra['bs_style']}' is not supported (FLAME uses 'lbs')")
    return arrays, extra


def _eyelid_dirs(d: dict[str, Any], V: int, where: str) -> np.ndarray | None:
    if "eyelid_dirs" in d:
        e = d["eyelid_dirs"]
        _expect(e, "eyelid_dirs", (V, 3, 2), where)
        return e.astype(np.float32)
    if "l_eyelid" in d and "r_eyelid" in d:
        l_, r_ = d["l_eyelid"], d["r_eyelid"]
        _expect(l_, "l_eyelid", (V, 3), where)
        _expect(r_, "r_eyelid", (V, 3), where)
        return np.stack([l_, r_], axis=2).astype(np.float32)
    return None


def load_flame_pkl(path: str | os.PathLike, n_shape: int | None = None, n_expr: int | None = None,
                   n_shape_in_file: int | None = None) -> FlameModelData:
    """A FLAME ``.pkl`` → validated contract :class:`FlameModelData` (in memory; nothing written).

    ``meta`` carries ``release`` (from the sha256 / structure, see :mod:`flamecap.flame.registry`),
    ``source_sha256``, ``source_name`` and the pickle's ``bs_style`` / ``bs_type``."""
    from .registry import identify_release, sha256_bytes
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"FLAME model file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc.strerror or exc})") from None
    where = f"FLAME file {path.name}"
    raw = read_flame_pkl(path, data=data)
    arrays, extra = flame_arrays_from_dict(raw, where=where, n_shape_in_file=n_shape_in_file,
                                           n_shape=n_shape, n_expr=n_expr)
    sha = sha256_bytes(data)
    release = identify_release(sha, path.name, arrays["v_template"].shape[0], arrays["faces"].shape[0])
    meta = model_meta(release.release, source_sha256=sha, source_name=path.name,
                      release_verified=release.verified, licence=release.licence, **extra)
    try:
        validate_model(arrays, meta, where=where)
    except ContractError as exc:
        raise ModelError(str(exc)) from None
    return FlameModelData(arrays=arrays, meta=meta)
