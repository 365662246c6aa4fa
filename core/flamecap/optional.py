"""Optional dependencies: which ``pip`` extra brings each one (the one table of them), and the one-line error
when a command needs one that is not installed. The base install (``pip install flamecap``) tracks footage;
these add the legacy reference backend, the dense network's checkpoints, bench plots, Ray and headless Blender.
Keep this table and ``[project.optional-dependencies]`` in ``pyproject.toml`` in step (a test checks it)."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import InputError

# import name -> (distribution, extra, what it is for)
EXTRAS: dict[str, tuple[str, str, str]] = {
    "mediapipe": ("mediapipe", "legacy", "the legacy MediaPipe package, a reference backend (Python 3.11 only)"),
    "safetensors": ("safetensors", "dense", "the dense aligner's network checkpoints"),
    "matplotlib": ("matplotlib", "plots", "the bench's plots"),
    "ray": ("ray", "ray", "batch tracking on Ray"),
    "bpy": ("bpy", "blender", "headless Blender (scene.blend and FBX from the command line)"),
}


def install_hint(module: str) -> str:
    """``pip install 'flamecap[<extra>]'`` for an optional module, else ``pip install <module>``."""
    if module in EXTRAS:
        return f"pip install 'flamecap[{EXTRAS[module][1]}]'"
    return f"pip install {module}"


def missing(module: str, needed_by: str) -> InputError:
    """The error for ``needed_by`` (e.g. "aligner 'mediapipe'") when ``module`` is not installed."""
    dist = EXTRAS[module][0] if module in EXTRAS else module
    return InputError(f"{needed_by} needs the package '{dist}', which is not installed; {install_hint(module)}")


def available(module: str) -> bool:
    """Whether ``module`` can be imported (looked up, not imported)."""
    return importlib.util.find_spec(module) is not None


def require(module: str, needed_by: str) -> ModuleType:
    """Import ``module`` or raise :func:`missing`'s one-line :class:`InputError`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name not in (top, module):
            raise                     # the package is there but broken inside: its own traceback says why
        raise missing(top, needed_by) from None
