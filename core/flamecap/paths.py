"""Where FlameCap keeps user data: ``$FLAMECAP_HOME`` or ``~/.flamecap`` (models/, cache/)."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("FLAMECAP_HOME") or Path.home() / ".flamecap")


def models_dir() -> Path:
    return home() / "models"


def cache_dir(kind: str) -> Path:
    """A cache folder, e.g. ``cache_dir('embeddings')``; created on demand."""
    d = home() / "cache" / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


# ------------------------------------------------------------------------------------------ the output rule
# Every command declares which of its arguments are inputs and which are outputs (``set_defaults(
# run_inputs=(...), run_outputs=(...), run_models=(...))``); ``flamecap.cli.main`` calls
# :func:`check_run_paths` before the handler runs, so one rule covers every command: an output may not be,
# or resolve to, any input, cache or model of the run, nor another output of it, nor an existing
# non-regular file (:func:`flamecap.contract.npzio.check_output_path`). An argument listed both as input
# and output (a cache such as ``--landmarks-cache``) is an input when the file exists, an output otherwise.
def _expand_input(value: str) -> list[str]:
    """The files an input argument names: the file; an image folder's files; a printf pattern's folder's
    files (every file there, so a frame can never be overwritten whatever the pattern)."""
    p = Path(value)
    folder = p.parent if "%" in p.name else (p if p.is_dir() else None)
    if folder is None:
        return [value]
    try:
        return [e.path for e in os.scandir(folder or ".") if e.is_file()]
    except OSError:
        return []


def model_file(spec: str | None) -> Path | None:
    """The file a ``--model`` value (path or registered name; None = the default) names, or None when it
    names none (unknown name, unreadable registry: loading the model reports that properly)."""
    if spec is not None and (Path(spec).is_file() or Path(spec).suffix):
        return Path(spec)
    from .errors import ModelError
    from .flame.registry import Registry
    try:
        reg = Registry.load()
        entry = reg.default() if spec is None else reg.get(spec)
        return entry.path() if entry is not None else None
    except ModelError:
        return None


def check_run_paths(args) -> None:
    """Apply the output rule (see above) to a parsed command line; raises ``OutputPathError`` (one line)."""
    from .contract.npzio import check_output_path
    names_in = tuple(getattr(args, "run_inputs", ()))
    names_out = tuple(getattr(args, "run_outputs", ()))
    inputs: list[str] = []
    outputs: list[tuple[str, str]] = []
    for name in names_in:
        value = getattr(args, name, None)
        if not value:
            continue
        if name in names_out and not Path(value).is_file():
            continue          # a cache not made yet: an output of this run
        inputs += _expand_input(str(value))
    for name in getattr(args, "run_models", ()):
        value = getattr(args, name, None)
        if value in ("synthetic",):
            continue
        f = model_file(value)
        if f is not None:
            inputs.append(str(f))
    for name in names_out:
        value = getattr(args, name, None)
        if value is None or (name in names_in and Path(value).is_file()):
            continue
        outputs.append(("output" if name in ("output", "out") else "--" + name.replace("_", "-"), str(value)))
    for i, (what, out) in enumerate(outputs):
        others = [o for j, (_, o) in enumerate(outputs) if j != i]
        check_output_path(out, what=what, inputs=inputs + others)
