"""Vendored shared code. ``build_addon.py`` copies ``core/flamecap/contract`` into the add-on zip as
``_vendor/flamecap_contract``; in a source checkout (tests, scripts) :func:`load_contract` loads the same
files from ``core/flamecap/contract`` under the same module name, so both paths run identical code."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

_NAME = __name__ + ".flamecap_contract"


def load_contract():
    """The ``flamecap.contract`` package (numpy + stdlib only), vendored or from the source checkout."""
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    try:
        return importlib.import_module(_NAME)
    except ModuleNotFoundError as exc:
        if exc.name != _NAME:
            raise
    src = Path(__file__).resolve().parents[2] / "core" / "flamecap" / "contract"
    if not (src / "__init__.py").is_file():
        raise ImportError("the FlameCap add-on has no vendored contract; rebuild it with build_addon.py")
    spec = importlib.util.spec_from_file_location(_NAME, src / "__init__.py",
                                                  submodule_search_locations=[str(src)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(_NAME, None)
        raise
    return module


def load_contract_module(name: str):
    """A submodule of the contract (e.g. ``"smoothing"``); ``None`` when this build does not have it."""
    load_contract()
    try:
        return importlib.import_module(f"{_NAME}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{_NAME}.{name}":
            return None
        raise
