"""Safe loading and saving of MICA weights.

Accepted files (all user-supplied; MICA and insightface weights are for non-commercial use):

- MICA's ``mica.tar`` (a ``torch.save`` dict): ``'arcface'`` = IResNet-100 state dict (insightface names),
  ``'flameModel'`` = the generator's state dict: ``regressor.network.{0..3}.{weight,bias}``,
  ``regressor.output.{weight,bias}`` (the mapping network) and ``generator.*`` (FLAME 2020 buffers, ignored:
  FlameCap decodes with the user's own model). Training leftovers (``opt``, ``scheduler``, ``validator``,
  ``epoch``, ``global_step``, ``batch_size``) are tolerated and ignored.
- insightface ``backbone.pth`` (glint360k / ms1mv3 r100): a bare IResNet state dict (optionally with a
  ``module.`` prefix); gives the encoder only, the mapping network must come from a MICA-layout file
  (e.g. one written by :func:`save_mica_checkpoint` after :mod:`flamecap.identity.train`).

Loading never executes code: ``torch.load(weights_only=True)``; then every key and shape is checked
against the architecture and a mismatch raises :class:`~flamecap.errors.WeightsError` naming the keys.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import paths
from ..contract.npzio import atomic_output
from ..errors import WeightsError
from ..flame.registry import sha256_file

log = logging.getLogger(__name__)

MICA_DOWNLOAD_URL = "https://keeper.mpdl.mpg.de/f/db172dc4bd4f4c0f96de/?dl=1"
MICA_PROJECT_URL = "https://github.com/Zielon/MICA"
MICA_FILENAME = "mica.tar"
#: Top-level entries of MICA training checkpoints that carry no weights we use.
TRAINING_LEFTOVERS = frozenset({"opt", "scheduler", "validator", "epoch", "global_step", "batch_size"})
WEIGHT_ENTRIES = frozenset({"arcface", "flameModel"})
MAPPING_PREFIX = "regressor."
FLAME_PREFIX = "generator."


def weights_dir() -> Path:
    """``$FLAMECAP_HOME/weights`` (where ``flamecap identity add-weights`` installs files)."""
    return paths.home() / "weights"


def default_weights_path() -> Path:
    return weights_dir() / MICA_FILENAME


def missing_weights_message(path: Path) -> str:
    return (f"MICA weights not found at {path}: download mica.tar from {MICA_DOWNLOAD_URL} (MICA project "
            f"{MICA_PROJECT_URL}, non-commercial licence) and run 'flamecap identity add-weights PATH' "
            f"or pass --identity-weights PATH")


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use: ``path`` if given, else the installed default. Raises
    :class:`WeightsError` with download/installation instructions when the file does not exist."""
    p = Path(path).expanduser() if path else default_weights_path()
    if not p.is_file():
        raise WeightsError(missing_weights_message(p))
    return p


@dataclass
class MicaWeights:
    """State dicts read from a weights file. ``arcface`` (IResNet names), ``mapping`` (MappingNetwork
    names, i.e. without the ``regressor.`` prefix) or ``None`` for encoder-only files; ``kind`` is
    ``'mica'`` or ``'insightface'``; ``flame_keys`` the ignored ``generator.*`` entries."""

    arcface: dict[str, Any] | None
    mapping: dict[str, Any] | None
    kind: str
    path: str = ""
    flame_keys: list[str] = field(default_factory=list)
    flame_basis: tuple[Any, Any] | None = None  # FLAME 2020 (v_template (V, 3), shapedirs (V, 3, 300)) if stored


def _short(keys, n: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _torch_load(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text is long and ends by suggesting weights_only=False; keep only the unpickler's reason
        text = str(exc)
        tail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else text
        first = next((ln.strip() for ln in tail.splitlines() if ln.strip()), type(exc).__name__)
        if "Unsupported global" not in first:
            raise WeightsError(f"{path} is not a readable torch weights file ({first}); use the original "
                               f"mica.tar / backbone.pth, or download it again") from None
        raise WeightsError(f"{path} holds objects other than plain weights ({first}); refusing to unpickle "
                           f"it: use the original mica.tar / backbone.pth") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} is not a readable torch weights file ({first}); download it again") from None


def _strip_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def read_weights(path: str | os.PathLike) -> MicaWeights:
    """Read a ``mica.tar`` or an insightface IResNet state dict safely (no code execution) and sort its
    entries; key *names* are checked here, shapes when loading into a network (:func:`load_into`)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(missing_weights_message(path))
    obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, expected a dict of weights "
                           f"(MICA mica.tar or insightface backbone.pth)")
    keys = set(obj.keys())
    if keys & WEIGHT_ENTRIES:
        unexpected = keys - WEIGHT_ENTRIES - TRAINING_LEFTOVERS
        if unexpected:
            raise WeightsError(f"{path} is not a MICA checkpoint: unexpected top-level entries "
                               f"{_short(map(str, unexpected))}; expected 'arcface' and 'flameModel'")
        arc = obj.get("arcface")
        if arc is not None and not _is_state_dict(arc):
            raise WeightsError(f"{path}: entry 'arcface' is not a state dict of tensors")
        arcface = _strip_module(arc) if arc is not None else None
        mapping, flame_keys = None, []
        fm = obj.get("flameModel")
        if fm is not None:
            if not _is_state_dict(fm):
                raise WeightsError(f"{path}: entry 'flameModel' is not a state dict of tensors")
            fm = _strip_module(fm)
            mapping = {k[len(MAPPING_PREFIX):]: v for k, v in fm.items() if k.startswith(MAPPING_PREFIX)}
            flame_keys = sorted(k for k in fm if k.startswith(FLAME_PREFIX))
            other = [k for k in fm if not k.startswith((MAPPING_PREFIX, FLAME_PREFIX))]
            if other:
                raise WeightsError(f"{path}: 'flameModel' has unexpected keys {_short(other)}; expected "
                                   f"'{MAPPING_PREFIX}*' (mapping network) and '{FLAME_PREFIX}*' (FLAME)")
            if not mapping:
                raise WeightsError(f"{path}: 'flameModel' has no '{MAPPING_PREFIX}*' weights (mapping network)")
            basis = _flame_basis(fm)
        else:
            basis = None
        return MicaWeights(arcface=arcface, mapping=mapping, kind="mica", path=str(path), flame_keys=flame_keys,
                           flame_basis=basis)
    if _is_state_dict(obj):
        sd = _strip_module(obj)
        if "conv1.weight" in sd and "fc.weight" in sd:
            return MicaWeights(arcface=sd, mapping=None, kind="insightface", path=str(path))
    raise WeightsError(f"{path} is neither a MICA checkpoint (entries 'arcface', 'flameModel') nor an "
                       f"insightface IResNet state dict; top-level keys: {_short(map(str, keys))}")


def _flame_basis(fm: Mapping[str, Any]):
    """MICA's generator carries FLAME 2020's template and bases (shape 300 + expression 100): keep the
    identity part as numpy, for converting MICA codes into another FLAME release's shape space."""
    v, d = fm.get(FLAME_PREFIX + "v_template"), fm.get(FLAME_PREFIX + "shapedirs")
    if v is None or d is None or v.dim() != 2 or d.dim() != 3 or v.shape[1] != 3 or d.shape[:2] != v.shape \
            or d.shape[2] < 300:
        return None
    return v.double().numpy().copy(), d[:, :, :300].double().numpy().copy()


def load_into(module, state: Mapping[str, Any], what: str, where: str) -> None:
    """Copy ``state`` into ``module`` after an exact key and shape check (BatchNorm
    ``num_batches_tracked`` counters may be absent). Raises :class:`WeightsError` naming the keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        raise WeightsError(f"{where}: {what} weights do not match the architecture: {'; '.join(parts)}")
    bad = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in own.items()
           if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise WeightsError(f"{where}: {what} weights have wrong shapes: {_short(bad, 3)}")
    module.load_state_dict({k: v for k, v in state.items()}, strict=False)


def save_mica_checkpoint(path: str | os.PathLike, net, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``net`` (a :class:`~flamecap.identity.mica.MicaNet`) in MICA's layout
    (``{'arcface': ..., 'flameModel': {'regressor.*': ...}}``) atomically; ``extra`` entries must be
    training leftovers (e.g. ``epoch``, ``global_step``)."""
    import torch

    extra = dict(extra or {})
    unknown = set(extra) - TRAINING_LEFTOVERS
    if unknown:
        raise ValueError(f"extra checkpoint entries must be among {sorted(TRAINING_LEFTOVERS)}, got {sorted(unknown)}")
    payload = {"arcface": {k: v.detach().cpu() for k, v in net.arcface.state_dict().items()},
               "flameModel": {MAPPING_PREFIX + k: v.detach().cpu() for k, v in net.mapping.state_dict().items()},
               **extra}
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def install_weights(src: str | os.PathLike, dest: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Check that ``src`` is a complete MICA checkpoint (encoder + mapping network, right shapes), then copy
    it atomically to ``dest`` (default :func:`default_weights_path`). Returns (path, sha256)."""
    from .mica import build_mica, load_weights_into

    src = Path(src).expanduser()
    if not src.is_file():
        raise WeightsError(f"{src} does not exist: download mica.tar from {MICA_DOWNLOAD_URL} "
                           f"(non-commercial licence) and pass its path")
    w = read_weights(src)
    if w.arcface is None or w.mapping is None:
        raise WeightsError(f"{src} has only {'encoder' if w.mapping is None else 'mapping'} weights; "
                           f"'add-weights' needs a full MICA checkpoint (mica.tar)")
    load_weights_into(build_mica(), w)  # shape check against the real r100 architecture
    dest = Path(dest) if dest else default_weights_path()
    with atomic_output(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest, sha256_file(dest)
