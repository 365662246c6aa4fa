"""Set Up Runtime's decisions, stdlib only (no bpy; tested without Blender): the core wheel bundled in the add-on,
a Python that meets its ``Requires-Python``, torch's CPU-only build when there is no NVIDIA GPU, and the steps."""
from __future__ import annotations

import glob
import os
import re
import sys
import zipfile


def venv_python(venv_dir: str) -> str:
    return os.path.join(venv_dir, "Scripts", "python.exe") if os.name == "nt" else os.path.join(venv_dir, "bin", "python")


REQUIRES_RE = re.compile(r"^Requires-Python:\s*(.+)$", re.M)


def bundled_wheel() -> str:
    """The core wheel that build_addon.py put into the add-on (``core_wheel/flamecap-*.whl``), or ''."""
    folder = os.path.join(os.path.dirname(__file__), "core_wheel")
    wheels = sorted(glob.glob(os.path.join(folder, "flamecap-*.whl")))
    return wheels[-1] if wheels else ""


def wheel_requires_python(wheel: str) -> str:
    """The ``Requires-Python`` of a wheel's METADATA (e.g. ``>=3.11,<3.12``), '' when it has none."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        m = REQUIRES_RE.search(zf.read(meta).decode("utf-8", "replace"))
    return m.group(1).strip() if m else ""


def python_supported(version: tuple, spec: str) -> bool:
    """Whether ``version`` (major, minor[, micro]) meets a ``Requires-Python`` spec of ``>=, >, <=, <, ==, !=``
    clauses (``==3.11.*`` included)."""
    v = tuple(int(x) for x in version[:3]) + (0,) * (3 - len(version[:3]))
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op, ver = re.fullmatch(r"(>=|<=|==|!=|>|<|~=)\s*([\d.*]+)", clause).groups()
        if ver.endswith(".*"):
            want = tuple(int(x) for x in ver[:-2].split("."))
            same = v[:len(want)] == want
            if (op == "==" and not same) or (op == "!=" and same):
                return False
            continue
        w = tuple(int(x) for x in ver.split(".")) + (0,) * (3 - len(ver.split(".")))
        ok = {">=": v >= w, ">": v > w, "<=": v <= w, "<": v < w, "==": v == w, "!=": v != w,
              "~=": v >= w and v[:len(ver.split(".")) - 1] == w[:len(ver.split(".")) - 1]}[op]
        if not ok:
            return False
    return True


def _python_version(exe: str) -> tuple | None:
    import subprocess
    try:
        out = subprocess.run([exe, "-c", "import sys, venv; print(*sys.version_info[:3])"], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return tuple(int(x) for x in out.stdout.split()) if out.returncode == 0 and out.stdout.strip() else None


def find_base_python(spec: str, preferred: str = "") -> str:
    """A Python that meets ``spec`` and has ``venv``: ``preferred`` (the Base Python preference) when set, else
    Blender's own, else ``python3.X`` / ``python3`` / ``python`` on PATH. Raises RuntimeError (one line)."""
    import shutil
    if preferred:
        v = _python_version(preferred)
        if v is None or not python_supported(v, spec):
            raise RuntimeError(f"Base Python '{preferred}' is {'not runnable' if v is None else 'Python ' + '.'.join(map(str, v))}; "
                               f"the FlameCap core needs Python {spec}: set Base Python to such a Python")
        return preferred
    names = [f"python3.{m}" for m in range(20, 8, -1)] + ["python3", "python"]
    candidates = [sys.executable] + [p for p in (shutil.which(n) for n in names) if p]
    for exe in dict.fromkeys(candidates):
        v = _python_version(exe)
        if v is not None and python_supported(v, spec):
            return exe
    raise RuntimeError(f"no Python {spec} found for the FlameCap runtime (this Blender's is "
                       f"{'.'.join(map(str, sys.version_info[:2]))}); install one from python.org and set Base "
                       f"Python in the FlameCap preferences")


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is installed (then pip's default CUDA build of torch is worth its size)."""
    import shutil
    return bool(shutil.which("nvidia-smi")) or os.path.exists("/proc/driver/nvidia/version")


# PyTorch's CPU-only builds (pip picks their +cpu versions over PyPI's CUDA ones); $FLAMECAP_TORCH_INDEX
# replaces it (a mirror), and an empty value installs torch from the configured index alone
TORCH_CPU_INDEX = os.environ.get("FLAMECAP_TORCH_INDEX", "https://download.pytorch.org/whl/cpu")


def setup_runtime_steps(venv_dir: str, base_python: str, wheel: str, gpu: bool) -> list[tuple[str, list[str]]]:
    """(what, argv) of each step: make the venv, upgrade pip, torch (CPU-only build from PyTorch's index when
    there is no NVIDIA GPU), then the bundled core wheel with its dependencies from the package index."""
    py = venv_python(venv_dir)
    pip = [py, "-m", "pip", "install", "--progress-bar", "off"]
    torch = (("PyTorch with CUDA (about 2.5 GB download)", pip + ["torch"]) if gpu else
             ("PyTorch, CPU-only build (about 200 MB download)",
              pip + ["torch"] + (["--extra-index-url", TORCH_CPU_INDEX] if TORCH_CPU_INDEX else [])))
    return [("creating the runtime venv", [base_python, "-m", "venv", venv_dir]),
            ("upgrading pip (about 2 MB)", [py, "-m", "pip", "install", "--progress-bar", "off", "--upgrade", "pip"]),
            torch,
            ("the FlameCap core and its dependencies: MediaPipe, OpenCV, SciPy, trimesh, smplx, matplotlib "
             "(about 150 MB download)", pip + [wheel])]
