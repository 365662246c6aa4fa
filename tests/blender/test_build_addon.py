"""build_addon.py: deterministic zip with the contract vendored, Blender's validator, smoke install."""
from __future__ import annotations

import zipfile

import pytest

import build_addon

pytestmark = pytest.mark.blender


def test_zip_is_deterministic_and_vendors_the_contract(tmp_path, addon_zip):
    a, rep = build_addon.build(tmp_path / "a.zip", validate=False)
    b, _ = build_addon.build(tmp_path / "b.zip", validate=False)
    assert a.read_bytes() == b.read_bytes() == addon_zip.read_bytes()
    with zipfile.ZipFile(a) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert "blender_manifest.toml" in names and "__init__.py" in names
        assert "_vendor/flamecap_contract/result.py" in names
        assert "_vendor/flamecap_contract/conventions.py" in names
        assert rep["core_wheel"].startswith("flamecap-") and "core_wheel/" + rep["core_wheel"] in names
        import io
        with zipfile.ZipFile(io.BytesIO(zf.read("core_wheel/" + rep["core_wheel"]))) as wh:
            wnames = wh.namelist()
            assert "flamecap/cli.py" in wnames and "flamecap/contract/result.py" in wnames
            meta = wh.read(next(n for n in wnames if n.endswith(".dist-info/METADATA"))).decode()
            assert "Requires-Python:" in meta and "Requires-Dist: torch" in meta
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert {zi.date_time for zi in zf.infolist()} == {build_addon.FIXED_TIME}


def test_blender_validator_is_used_and_accepts_the_zip(tmp_path):
    assert build_addon.find_blender_validator() is not None
    _, rep = build_addon.build(tmp_path / "v.zip", validate=True)
    assert rep["validator"].startswith("Blender validator")


def test_manifest_checks_reject_bad_fields():
    good = (build_addon.ADDON_DIR / "blender_manifest.toml").read_text()
    assert build_addon.check_manifest(good)["id"] == "flamecap"
    with pytest.raises(build_addon.BuildError, match="lacks"):
        build_addon.check_manifest(good.replace('maintainer = ', 'x_maintainer = '))
    with pytest.raises(build_addon.BuildError, match="semantic"):
        build_addon.check_manifest(good.replace('version = "0.1.0"', 'version = "one"'))
    with pytest.raises(build_addon.BuildError, match="TOML"):
        build_addon.check_manifest("id = ")


def test_blender_validator_rejects_a_bad_manifest(tmp_path):
    good = (build_addon.ADDON_DIR / "blender_manifest.toml").read_text()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("blender_manifest.toml", good.replace('blender_version_min = "4.2.0"',
                                                          'blender_version_min = "banana"'))
        zf.writestr("__init__.py", "")
    with pytest.raises(build_addon.BuildError, match="validator rejected"):
        build_addon.blender_validate(bad)


def test_import_scan_refuses_torch(tmp_path):
    p = tmp_path / "x.py"
    p.write_text("import numpy\nfrom torch import nn\n")
    with pytest.raises(build_addon.BuildError, match="torch"):
        build_addon.scan_imports([("x.py", p)])


def test_cli_smoke_installs_and_enables(tmp_path):
    assert build_addon.main(["-o", str(tmp_path / "s.zip"), "--smoke"]) == 0
