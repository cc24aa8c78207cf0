"""CMake finds TensorRT through TENSORRT_ROOT (configure only: TensorRT itself is not installed here).

A stand-in prefix with the two files CMake looks for (include/NvInfer.h, lib/libnvinfer.so) must
switch the plugin and the TensorRT C++ runner on; an empty prefix must switch them off with a
message saying how to fix it. Nothing is compiled, so no TensorRT result is implied.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CMAKE = shutil.which("cmake")

pytestmark = [
    pytest.mark.skipif(CMAKE is None, reason="cmake not on PATH"),
    pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH (the plugin needs the CUDA kernel)"),
]


def _configure(build: Path, tensorrt_root: Path) -> str:
    proc = subprocess.run(
        [CMAKE, "-S", str(REPO / "csrc"), "-B", str(build), "-DSFC_WITH_TORCH_RUNNER=OFF",
         "-DCMAKE_CUDA_ARCHITECTURES=80", f"-DTENSORRT_ROOT={tensorrt_root}"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _targets(build: Path) -> str:
    proc = subprocess.run([CMAKE, "--build", str(build), "--target", "help"], capture_output=True, text=True, check=False)
    return proc.stdout


def test_tensorrt_root_switches_the_plugin_on_and_off(tmp_path: Path) -> None:
    build = tmp_path / "build"
    # No TensorRT under the prefix: skipped, with the fix in the message.
    log = _configure(build, tmp_path / "nothing-here")
    assert "TensorRT plugin skipped" in log and "pass -DTENSORRT_ROOT=<prefix>" in log
    assert "sfc_trt_plugins" not in _targets(build)

    # The same build dir reconfigured with a prefix holding what CMake looks for.
    root = tmp_path / "TensorRT-stand-in"
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "include" / "NvInfer.h").write_text("// stand-in: configure only\n")
    (root / "lib" / "libnvinfer.so").write_bytes(b"")
    log = _configure(build, root)
    assert f"sfc: TensorRT plugin: {root / 'include'}" in log
    assert "sfc: TensorRT C++ runner sfc_trt_classify" in log
    targets = _targets(build)
    assert "sfc_trt_plugins" in targets and "sfc_trt_classify" in targets
