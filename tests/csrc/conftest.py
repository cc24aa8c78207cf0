"""One cached CMake build of csrc/ shared by the tests in this folder.

Configured once in ``build/pytest-csrc`` (git-ignored) with everything this machine can build
(CUDA kernel where nvcc exists, the C++ runner against the torch wheel's libtorch); each test
builds only the targets it needs, so reruns only relink and one configure serves every test.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "pytest-csrc"


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def csrc_build(exclusive_lock) -> Callable[..., Path]:
    """``csrc_build("target", ...)`` builds those targets and returns the build directory."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not on PATH")
    with exclusive_lock("csrc-build"):  # make test's two pytest workers may both build (tests/conftest.py)
        if not (BUILD / "CMakeCache.txt").is_file():
            import torch

            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            _run([cmake, "-S", str(REPO / "csrc"), "-B", str(BUILD), *generator, "-DCMAKE_BUILD_TYPE=Release",
                  "-DCMAKE_CUDA_ARCHITECTURES=80", f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"])

    def build(*targets: str) -> Path:
        with exclusive_lock("csrc-build"):
            _run([cmake, "--build", str(BUILD), "-j", "2", "--target", *targets])
        return BUILD

    return build
