#!/usr/bin/env python3
"""Build the FlameCap Blender extension zip.

    python build_addon.py [-o dist/flamecap-<version>.zip] [--smoke] [--no-validate]

- Packs ``blender_addon/`` (manifest at the zip root) with ``core/flamecap/contract`` vendored as
  ``_vendor/flamecap_contract``, and the core itself as a wheel in ``core_wheel/`` (what Set Up Runtime installs
  into its private venv; built with ``pip wheel``, timestamps from ``SOURCE_DATE_EPOCH``); deterministic:
  sorted entries, fixed timestamps and permissions.
- Refuses add-on sources that import torch / cv2 / mediapipe (static scan).
- Validates the manifest with Blender's own validator (``blender --command extension validate`` when a
  ``blender`` binary is on PATH, else the ``blender_ext.py`` that ships with the ``bpy`` module), after
  its own checks of the required fields.
- ``--smoke``: installs and enables the zip in a headless bpy (temporary user folder) and checks that the
  operators and panels are registered.
Exit code 0 on success; one ``error: ...`` line and a non-zero code otherwise.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
ADDON_DIR = REPO / "blender_addon"
CONTRACT_DIR = REPO / "core" / "flamecap" / "contract"
VENDOR_PREFIX = "_vendor/flamecap_contract/"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
FORBIDDEN_IMPORTS = ("torch", "cv2", "mediapipe")
REQUIRED_FIELDS = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                   "blender_version_min", "license")


class BuildError(Exception):
    pass


def _excluded(rel: str) -> bool:
    parts = rel.split("/")
    return any(p == "__pycache__" or p.startswith(".") for p in parts) or rel.endswith((".pyc", ".pyo", ".blend1"))


def collect_files() -> list[tuple[str, Path]]:
    """(archive name, source path) of every file in the extension, sorted by archive name."""
    if not (ADDON_DIR / "blender_manifest.toml").is_file():
        raise BuildError(f"{ADDON_DIR}/blender_manifest.toml is missing")
    if not (CONTRACT_DIR / "__init__.py").is_file():
        raise BuildError(f"{CONTRACT_DIR} is missing; run from a complete FlameCap checkout")
    files: dict[str, Path] = {}
    for p in ADDON_DIR.rglob("*"):
        rel = p.relative_to(ADDON_DIR).as_posix()
        if p.is_file() and not _excluded(rel) and not rel.startswith(VENDOR_PREFIX):
            files[rel] = p
    for p in CONTRACT_DIR.rglob("*"):
        rel = p.relative_to(CONTRACT_DIR).as_posix()
        if p.is_file() and not _excluded(rel) and p.suffix == ".py":
            files[VENDOR_PREFIX + rel] = p
    return sorted(files.items())


RUNTIME_PREFIX = "core_wheel/"
_WHEELS: dict[str, Path] = {}   # source digest → built wheel (one build per process)


def core_digest() -> str:
    h = hashlib.sha256(b"".join((REPO / f).read_bytes() for f in ("pyproject.toml", "README.md", "setup.py")))
    # everything that goes into the wheel: the core's modules and data, the bundled add-on and baseline
    srcs = [*(REPO / "core" / "flamecap").rglob("*"), *ADDON_DIR.rglob("*"), REPO / "benchmarks" / "baseline_adam.py"]
    for p in sorted(srcs):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".toml"):
            h.update(p.relative_to(REPO).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def build_core_wheel() -> Path:
    """The core as a wheel (``pip wheel --no-deps`` of the repository), cached per source digest."""
    digest = core_digest()
    cached = _WHEELS.get(digest)
    if cached is not None and cached.is_file():
        return cached
    out = Path(tempfile.gettempdir()) / f"flamecap-wheel-{digest}"
    wheels = sorted(out.glob("flamecap-*.whl"))
    if not wheels:
        tmp = Path(tempfile.mkdtemp(prefix=".flamecap-wheel-", dir=tempfile.gettempdir()))
        env = dict(os.environ, SOURCE_DATE_EPOCH="315532800", PIP_DISABLE_PIP_VERSION_CHECK="1")
        with tempfile.TemporaryDirectory(prefix="flamecap-src-") as src:
            # build from a copy: setuptools writes build/ and *.egg-info next to the sources
            import shutil
            skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            for f in ("pyproject.toml", "README.md", "setup.py", "MANIFEST.in", "build_addon.py"):
                shutil.copy2(REPO / f, src)
            shutil.copytree(REPO / "core", Path(src) / "core", ignore=skip)
            # setup.py bundles these into the wheel (flamecap/_bundled/: the headless jobs, the bench baseline)
            shutil.copytree(ADDON_DIR, Path(src) / "blender_addon", ignore=skip)
            (Path(src) / "benchmarks").mkdir()
            shutil.copy2(REPO / "benchmarks" / "baseline_adam.py", Path(src) / "benchmarks")
            proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--ignore-requires-python", "-q", "-w", str(tmp), src],
                                  capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BuildError(f"could not build the core wheel with pip: {last}")
        try:
            os.replace(tmp, out)
        except OSError:  # another process built it first
            pass
        wheels = sorted(out.glob("flamecap-*.whl"))
        if not wheels:
            raise BuildError(f"pip wheel wrote no flamecap wheel into {out}")
    _WHEELS[digest] = wheels[-1]
    return wheels[-1]


def scan_imports(files: list[tuple[str, Path]]) -> None:
    """Fail when add-on code imports a heavy core dependency (the two worlds rule)."""
    for name, path in files:
        if not name.endswith(".py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            for m in mods:
                if m.split(".")[0] in FORBIDDEN_IMPORTS or m.split(".")[0] == "flamecap":
                    raise BuildError(f"{name}:{node.lineno} imports '{m}'; the add-on may only use bpy, numpy, "
                                     f"the stdlib and relative imports")


def check_manifest(text: str) -> dict:
    """Own checks of the required manifest fields (also run when Blender's validator is available)."""
    try:
        m = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"blender_manifest.toml is not valid TOML: {exc}") from None
    missing = [k for k in REQUIRED_FIELDS if k not in m]
    if missing:
        raise BuildError(f"blender_manifest.toml lacks {', '.join(missing)}")
    if m["schema_version"] != "1.0.0":
        raise BuildError(f"schema_version is {m['schema_version']!r}, expected '1.0.0'")
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]*", str(m["id"])):
        raise BuildError(f"id {m['id']!r} must be an identifier (letters, digits, underscore)")
    if not re.fullmatch(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?", str(m["version"])):
        raise BuildError(f"version {m['version']!r} is not semantic (X.Y.Z)")
    if m["type"] != "add-on":
        raise BuildError(f"type is {m['type']!r}, expected 'add-on'")
    tag = str(m["tagline"])
    if len(tag) > 64 or tag.endswith((".", "!", "?")):
        raise BuildError("tagline must be at most 64 characters and not end with punctuation")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(m["blender_version_min"])):
        raise BuildError(f"blender_version_min {m['blender_version_min']!r} must be X.Y.Z")
    if not isinstance(m["license"], list) or not all(str(x).startswith("SPDX:") for x in m["license"]):
        raise BuildError("license must be a list of 'SPDX:...' identifiers")
    return m


def write_zip(out: Path, files: list[tuple[str, Path]]) -> Path:
    """Deterministic zip written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            zf.writestr(info, path.read_bytes())
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def find_blender_validator() -> list[str] | None:
    """argv prefix of Blender's extension validator, or None."""
    from shutil import which
    exe = which("blender")
    if exe:
        return [exe, "--factory-startup", "--command", "extension", "validate"]
    spec = importlib.util.find_spec("bpy")  # locates the package without importing (starting) Blender
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        hits = sorted(Path(root).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if hits:
            return [sys.executable, str(hits[-1]), "validate"]
    return None


def blender_validate(zip_path: Path) -> str:
    """Run Blender's validator on the zip; returns which validator ran. Raises on failure."""
    cmd = find_blender_validator()
    if cmd is None:
        return "own checks only (no Blender validator found)"
    proc = subprocess.run(cmd + [str(zip_path)], capture_output=True, text=True, timeout=300)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or "error" in out.lower():
        last = out.splitlines()[-1] if out else f"exit code {proc.returncode}"
        raise BuildError(f"Blender's validator rejected {zip_path.name}: {last}")
    return "Blender validator (" + Path(cmd[1] if cmd[0] == sys.executable else cmd[0]).name + ")"


SMOKE_SCRIPT = r"""
import json, sys
import bpy, addon_utils
zip_path = sys.argv[1]
r = bpy.ops.extensions.package_install_files(repo="user_default", filepath=zip_path, enable_on_install=True)
mod = "bl_ext.user_default.flamecap"
enabled = addon_utils.check(mod)
info = {"install": sorted(r), "enabled": bool(enabled[0] and enabled[1]),
        "operators": [op for op in ("track_footage", "try_demo", "import_result", "cancel_track", "apply_smoothing",
                      "check_runtime", "setup_runtime", "add_flame_file", "download_flame")
                      if hasattr(bpy.types, "FLAMECAP_OT_" + op)],
        "panels": sorted(n for n in dir(bpy.types) if n.startswith("FLAMECAP_PT_")),
        "prefs": mod in bpy.context.preferences.addons,
        "scene_settings": hasattr(bpy.context.scene, "flamecap")}
print("SMOKE " + json.dumps(info))
"""


def smoke(zip_path: Path, python: str = sys.executable) -> dict:
    """Install + enable the zip in a headless bpy with a throwaway user folder; return what was found."""
    with tempfile.TemporaryDirectory(prefix="flamecap-smoke-") as home:
        env = dict(os.environ, BLENDER_USER_RESOURCES=home)
        proc = subprocess.run([python, "-c", SMOKE_SCRIPT, str(zip_path)], capture_output=True, text=True,
                              env=env, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SMOKE ")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"smoke test could not install the add-on in bpy: {tail}")
    info = json.loads(line[6:])
    if not (info["enabled"] and info["prefs"] and info["scene_settings"] and len(info["operators"]) == 9
            and info["panels"]):
        raise BuildError(f"smoke test: add-on installed but not fully registered: {info}")
    return info


def build(out: Path | None = None, validate: bool = True) -> tuple[Path, dict]:
    files = collect_files()
    wheel = build_core_wheel()
    manifest = check_manifest((ADDON_DIR / "blender_manifest.toml").read_text(encoding="utf-8"))
    scan_imports(files)
    files = sorted(files + [(RUNTIME_PREFIX + wheel.name, wheel)])
    out = out or REPO / "dist" / f"{manifest['id']}-{manifest['version']}.zip"
    write_zip(out, files)
    report = {"zip": str(out), "files": len(files), "bytes": out.stat().st_size, "core_wheel": wheel.name}
    if validate:
        report["validator"] = blender_validate(out)
    return out, report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("-o", "--output", type=Path, default=None, help="zip path (default dist/flamecap-<version>.zip)")
    ap.add_argument("--no-validate", action="store_true", help="skip Blender's validator")
    ap.add_argument("--smoke", action="store_true", help="install and enable the zip in headless bpy")
    args = ap.parse_args(argv)
    try:
        out, report = build(args.output, validate=not args.no_validate)
        if args.smoke:
            report["smoke"] = smoke(out)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
