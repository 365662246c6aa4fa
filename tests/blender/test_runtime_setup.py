"""Set Up Runtime's decisions (which Python, which torch, which wheel), without downloading anything; the end to
end run against the package index is test_ui_prefs.py::test_set_up_runtime_from_a_clean_user_folder."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

import pytest

import build_addon

pytestmark = pytest.mark.blender

from blender_addon import runtime as prefs  # noqa: E402  (stdlib only: no bpy in this process)


def test_requires_python_of_the_bundled_wheel_is_the_projects():
    wheel = build_addon.build_core_wheel()
    want = tomllib.loads((build_addon.REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    got = prefs.wheel_requires_python(str(wheel))
    assert sorted(got.replace(" ", "").split(",")) == sorted(want.replace(" ", "").split(","))
    with zipfile.ZipFile(build_addon.build(None, validate=False)[0]) as zf:
        assert f"core_wheel/{wheel.name}" in zf.namelist()


@pytest.mark.parametrize("version, spec, ok", [
    ((3, 11, 7), ">=3.11,<3.12", True), ((3, 13, 0), ">=3.11,<3.12", False), ((3, 13, 0), ">=3.11,<3.14", True),
    ((3, 10, 9), ">=3.11", False), ((3, 11, 2), "==3.11.*", True), ((3, 12, 0), "==3.11.*", False),
    ((3, 12, 1), "!=3.12.1", False), ((3, 12, 0), "", True)])
def test_python_supported(version, spec, ok):
    assert prefs.python_supported(version, spec) is ok


def test_find_base_python_picks_a_supported_one_or_says_what_to_do(tmp_path):
    exe = prefs.find_base_python(">=3.11,<3.12")
    out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    assert out.stdout.strip() == "(3, 11)"
    with pytest.raises(RuntimeError) as e:
        prefs.find_base_python("<3.0")
    msg = str(e.value)
    assert "\n" not in msg and "no Python <3.0 found" in msg and "set Base Python" in msg
    with pytest.raises(RuntimeError, match="Base Python .* the FlameCap core needs Python <3.0"):
        prefs.find_base_python("<3.0", preferred=sys.executable)


def test_steps_prefer_cpu_torch_without_an_nvidia_gpu(tmp_path):
    cpu = prefs.setup_runtime_steps(str(tmp_path / "rt"), "/usr/bin/python3.11", "/x/flamecap-0.1.0-py3-none-any.whl",
                                    gpu=False)
    gpu = prefs.setup_runtime_steps(str(tmp_path / "rt"), "/usr/bin/python3.11", "/x/flamecap-0.1.0-py3-none-any.whl",
                                    gpu=True)
    assert [w for w, _ in cpu][0] == "creating the runtime venv" and cpu[0][1][:3] == ["/usr/bin/python3.11", "-m", "venv"]
    assert "CPU-only" in cpu[2][0] and "MB" in cpu[2][0] and "CUDA" in gpu[2][0] and "GB" in gpu[2][0]
    if prefs.TORCH_CPU_INDEX:
        assert cpu[2][1][-2:] == ["--extra-index-url", prefs.TORCH_CPU_INDEX]
    assert "--extra-index-url" not in gpu[2][1]
    assert cpu[-1][1][-1].endswith(".whl") and cpu[-1][1][0] == prefs.venv_python(str(tmp_path / "rt"))
