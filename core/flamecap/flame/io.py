"""Load a FLAME-format model from whatever the user has: a converted ``.npz``, a FLAME ``.pkl``, a registered
name, or nothing (the default registered model); convert and register models (numpy + stdlib only)."""
from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..contract.errors import ContractError, OutputPathError
from ..contract.model_format import FlameModelData, load_model_npz, save_model_npz
from ..contract.npzio import check_output_path
from ..errors import ModelError
from .pkl import describe_magic, load_flame_pkl
from .registry import Registry, RegistryEntry, check_name, sha256_file

log = logging.getLogger(__name__)

NO_MODEL_MESSAGE = ("no FLAME model registered: run 'flamecap models add /path/to/flame2023_Open.pkl' (free, "
                    "CC-BY-4.0, from the FLAME website) or 'flamecap models download flame2023-open'; "
                    "'flamecap demo' needs no FLAME file")


def _load_npz(path: Path) -> FlameModelData:
    try:
        return load_model_npz(path)
    except ContractError as exc:
        raise ModelError(str(exc)) from None


def load_model(spec: str | os.PathLike | None = None) -> FlameModelData:
    """The model named by ``spec``: a ``.npz`` path (contract loader), a ``.pkl`` path (converted in memory),
    a registered name, or ``None`` for the default registered model. Raises :class:`ModelError` (one line)."""
    if spec is None:
        reg = Registry.load()
        entry = reg.default()
        if entry is None:
            raise ModelError(NO_MODEL_MESSAGE)
        return load_registered(entry)
    p = Path(spec)
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return _load_npz(p)
        return load_flame_pkl(p)
    if isinstance(spec, str):
        reg = Registry.load()
        entry = reg.get(spec)
        if entry is not None:
            return load_registered(entry)
        if not (p.suffix or os.sep in spec or "/" in spec):
            known = ", ".join(reg.names()) or "none"
            raise ModelError(f"no registered model named '{spec}' (registered: {known}); "
                             f"see 'flamecap models list'")
    raise ModelError(f"model file not found: {p}")


def load_registered(entry: RegistryEntry) -> FlameModelData:
    """A registered model, checked against what was registered (its sha256) before use."""
    path = entry.path()
    if not path.is_file():
        raise ModelError(f"registered model '{entry.name}' is missing its file {path}; add the model again "
                         f"with 'flamecap models add'")
    if sha256_file(path) != entry.npz_sha256:
        raise ModelError(f"registered model '{entry.name}' ({path}) changed since it was registered (sha256 "
                         f"differs); 'flamecap models remove {entry.name}' and add the original file again")
    model = _load_npz(path)
    model.meta.setdefault("name", entry.name)
    return model


def convert_pkl_to_npz(pkl: str | os.PathLike, out: str | os.PathLike, n_shape: int | None = None,
                       n_expr: int | None = None) -> Path:
    """Convert a FLAME ``.pkl`` to the plain contract ``.npz`` at ``out`` (atomic; nothing on failure)."""
    model = load_flame_pkl(pkl, n_shape=n_shape, n_expr=n_expr)
    try:
        return save_model_npz(out, model)
    except OutputPathError:  # where it goes, not what the model is: keep the output-path error (exit 2)
        raise
    except ContractError as exc:
        raise ModelError(str(exc)) from None


# ----------------------------------------------------------------------------------------------------------
@dataclass
class AddOutcome:
    """One model handled by :func:`add_model_file`: its registry entry and whether it was already there."""

    entry: RegistryEntry
    already: bool = False


def _models_from_zip(path: Path, n_shape: int | None, n_expr: int | None) -> list[FlameModelData]:
    """Every FLAME ``.pkl`` inside a release zip, converted in memory (members are read, never extracted)."""
    import tempfile
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path.name} is not a readable zip ({exc}); download it again") from None
    models = []
    with zf:
        members = [m for m in zf.infolist() if m.filename.lower().endswith(".pkl") and not m.is_dir()
                   and not Path(m.filename).name.startswith(".")]
        # a release archive may carry other pickles (e.g. landmark embeddings): take the model files
        # when any known release file is there
        from .registry import KNOWN_RELEASES
        known = {r.file_name.lower() for r in KNOWN_RELEASES}
        if any(Path(m.filename).name.lower() in known for m in members):
            members = [m for m in members if Path(m.filename).name.lower() in known]
        if not members:
            raise ModelError(f"{path.name} holds no .pkl file; expected a FLAME release zip")
        with tempfile.TemporaryDirectory(prefix="flamecap-zip-") as tmp:
            for m in members:
                name = Path(m.filename).name  # flat: no path from the archive is used
                target = Path(tmp) / name
                try:
                    with zf.open(m) as src, open(target, "wb") as dst:
                        while True:
                            block = src.read(1 << 20)
                            if not block:
                                break
                            dst.write(block)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise ModelError(f"{path.name}: member {name} is damaged ({exc}); download it again") from None
                models.append(load_flame_pkl(target, n_shape=n_shape, n_expr=n_expr))
    return models


def read_model_file(path: str | os.PathLike, n_shape: int | None = None,
                    n_expr: int | None = None) -> list[FlameModelData]:
    """A ``.npz`` / ``.pkl`` / release ``.zip`` → the models it holds, validated, in memory."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.suffix.lower() == ".npz":
        model = _load_npz(path)
        for flag, want, have in (("--n-shape", n_shape, model.n_shape), ("--n-expr", n_expr, model.n_expr)):
            if want is not None and want != have:   # an already converted file is not re-cut silently
                raise ModelError(f"{path.name} is a converted model with {have} components; {flag} {want} applies "
                                 f"when converting a FLAME .pkl: add the .pkl with {flag} {want}")
        model.meta.setdefault("source_name", path.name)
        model.meta["source_sha256"] = model.meta.get("source_sha256") or sha256_file(path)
        return [model]
    if describe_magic(head) == "a zip archive":
        return _models_from_zip(path, n_shape, n_expr)
    return [load_flame_pkl(path, n_shape=n_shape, n_expr=n_expr)]


def _base_name(model: FlameModelData) -> str:
    release = model.release
    if release == "custom":
        return Path(str(model.meta.get("source_name", "model"))).stem
    return release[: -len("-like")] if release.endswith("-like") else release


def with_stored_eyelids(model: FlameModelData) -> FlameModelData:
    """The model with eyelid-closing shapes (:mod:`flamecap.flame.eyelids`) generated once, to be stored
    with it, when it has none (FLAME 2020, 2023 Open). The lids are found from the model's 68-point
    embedding, else from its MediaPipe binding (calibrated on renders; cached, so tracking reuses it).
    A head whose lids cannot be found is stored without them, with a warning: tracking says the same."""
    from ..errors import NoFaceError
    from .eyelids import eyeballs, with_eyelids
    if "eyelid_dirs" in model:
        return model
    if not all(m.any() for m in eyeballs(model)):
        log.warning("no eyelid shapes for %s: it has no vertices skinned to its eye joints", model.release)
        return model
    try:
        binding = None
        if "lmk68_face_idx" not in model:
            from ..binding.mediapipe import mediapipe_binding
            binding = mediapipe_binding(model)
        return with_eyelids(model, binding)
    except (ModelError, NoFaceError) as exc:
        log.warning("no eyelid shapes for %s: %s", model.release, exc)
        return model


def add_model_file(path: str | os.PathLike, name: str | None = None, make_default: bool = False,
                   n_shape: int | None = None, n_expr: int | None = None,
                   embeddings: list[str | os.PathLike] = ()) -> list[AddOutcome]:
    """Verify, convert and register the model(s) in ``path`` (``.pkl``, ``.npz`` or release ``.zip``).

    Everything is converted and validated in memory first; then each ``<models>/<name>.npz`` is written
    atomically and the registry rewritten atomically. On any failure nothing new is left in the models
    folder. A file whose sha256 is already registered is reported, not added twice. ``embeddings``: landmark
    embedding files of the download (:mod:`flamecap.flame.embeddings`) stored with the model."""
    if name is not None:
        check_name(name)
    models = read_model_file(path, n_shape=n_shape, n_expr=n_expr)
    if embeddings:
        from .embeddings import attach_embeddings
        models = [attach_embeddings(m, list(embeddings)) for m in models]
    if name is not None and len(models) > 1:
        raise ModelError(f"{Path(path).name} holds {len(models)} models; add them without --name "
                         f"(they are named by release) or add one .pkl at a time")
    outcomes: list[AddOutcome] = []
    written: list[Path] = []
    try:
        with Registry.locked() as reg:   # concurrent adds/removes wait: none of their entries is lost
            for model in models:
                sha = model.meta.get("source_sha256")
                same = [e for e in reg.find_sources(sha)
                        if (e.n_shape, e.n_expr) == (model.n_shape, model.n_expr)]
                if same and (name is None or name == same[0].name):
                    if make_default:
                        reg.set_default(same[0].name)
                    outcomes.append(AddOutcome(same[0], already=True))
                    continue
                other = reg.find_source(sha)
                if other is not None and name is None:
                    raise ModelError(f"{Path(path).name} is already registered as '{other.name}' with "
                                     f"{other.n_shape} shape / {other.n_expr} expression components, not the "
                                     f"{model.n_shape} / {model.n_expr} asked for; add it under another name "
                                     f"(--name NAME) or 'flamecap models remove {other.name}' first")
                model_name = name or reg.unique_name(_base_name(model))
                if reg.get(model_name) is not None:
                    raise ModelError(f"a model named '{model_name}' is already registered; pass another --name "
                                     f"or 'flamecap models remove {model_name}' first")
                out = paths.models_dir() / f"{model_name}.npz"
                model = with_stored_eyelids(model)
                model.meta["name"] = model_name
                try:
                    check_output_path(out, what="model file", inputs=[path, *embeddings])
                    save_model_npz(out, model)
                except OutputPathError:
                    raise
                except ContractError as exc:
                    raise ModelError(str(exc)) from None
                written.append(out)
                entry = RegistryEntry(
                    name=model_name, release=model.release, file=out.name,
                    source_name=str(model.meta.get("source_name", Path(path).name)),
                    source_sha256=sha, npz_sha256=sha256_file(out),
                    topology_hash=model.topology, n_vertices=model.n_vertices, n_shape=model.n_shape,
                    n_expr=model.n_expr, has_eyelids="eyelid_dirs" in model)
                reg.add(entry, make_default=make_default)
                outcomes.append(AddOutcome(entry))
            if written or make_default:
                reg.save()
    except BaseException:
        for p in written:
            try:
                p.unlink()
            except OSError:
                pass
        _remove_if_empty(paths.models_dir())
        raise
    return outcomes


def _remove_if_empty(d: Path) -> None:
    try:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    except OSError:
        pass

