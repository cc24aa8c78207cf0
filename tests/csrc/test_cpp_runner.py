"""The C++ runner (csrc/runner): built against the libtorch inside the torch wheel, it loads an
export folder's head, SFC and tail and must return the logits PyTorch returns.

The CMake build is shared and cached (tests/csrc/conftest.py) so that reruns only relink: the
first build of the runner costs about 35 s on 2 cores (one libtorch translation unit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CMAKE = shutil.which("cmake")
# Explicit tolerance: the same fp32 graphs run by libtorch in two processes; only thread-count
# dependent reduction order differs.
RTOL, ATOL = 1e-4, 1e-5

pytestmark = pytest.mark.skipif(CMAKE is None, reason="cmake not on PATH")


@pytest.fixture(scope="module")
def classify_exe(csrc_build) -> Path:
    """The sfc_classify program, from the shared cached build (tests/csrc/conftest.py)."""
    exe = csrc_build("sfc_classify") / "runner" / "sfc_classify"
    if not exe.is_file():
        pytest.skip("CMake did not configure the C++ runner (Torch not found; see the configure log)")
    return exe


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model exported to TorchScript, and the PyTorch model it came from."""
    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.models.factory import create_model

    torch.manual_seed(0)
    model = create_model("slow8x8_tiny", num_classes=5)
    out = tmp_path_factory.mktemp("cpp_export") / "export"
    export_model(model, out, ExportOptions(formats=("torchscript",), frames=8, size=(32, 40), raw_frames=64))
    return out, model


def _classify(exe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False, env=env, timeout=120)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("container", ["pt", "bin"])
def test_cpp_logits_equal_pytorch(classify_exe, exported, tmp_path, batch, container) -> None:
    folder, model = exported
    video = torch.randn(batch, 3, 8, 32, 40, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = model(video).numpy()
    if container == "pt":
        src = tmp_path / "video.pt"
        torch.save(video, src)
        shape_args: list[str] = []
    else:
        src = tmp_path / "video.bin"
        src.write_bytes(video.numpy().astype("<f4").tobytes())
        shape_args = ["--shape", ",".join(map(str, video.shape))]
    out = tmp_path / "logits.bin"
    proc = _classify(classify_exe, "--export", str(folder), "--input", str(src), *shape_args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(out, dtype="<f4").reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("row ")]
    assert [int(r.split()[3]) for r in rows] == want.argmax(1).tolist()


def test_cpp_refuses_bad_input_in_one_line(classify_exe, exported, tmp_path) -> None:
    folder, _ = exported
    bad = tmp_path / "short.bin"
    bad.write_bytes(b"\0" * 12)
    proc = _classify(classify_exe, "--export", str(folder), "--input", str(bad), "--shape", "1,3,8,32,40")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "needs 122880" in proc.stderr, proc.stderr

    proc = _classify(classify_exe, "--export", str(tmp_path), "--input", str(bad))
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr, proc.stderr

    proc = _classify(classify_exe, "--export", str(folder), "--input", str(bad), "--format", "onnx")
    assert proc.returncode == 2 and "expected torchscript or aoti" in proc.stderr, proc.stderr


def test_cpp_wrong_time_length_is_explained(classify_exe, exported, tmp_path) -> None:
    """The traced SFC part has a fixed time axis: another length would run with the wrong k, so it is refused."""
    folder, _ = exported
    src = tmp_path / "video.pt"
    torch.save(torch.randn(1, 3, 12, 32, 40), src)
    proc = _classify(classify_exe, "--export", str(folder), "--input", str(src))
    assert proc.returncode == 2, proc.stderr
    assert "traced for 8" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.slow
def test_cpp_aoti_logits_equal_pytorch(classify_exe, tmp_path) -> None:
    """AOTInductor packages through AOTIModelPackageLoader (slow: the AOTI export takes ~3 min on 2 cores)."""
    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.models.factory import create_model

    torch.manual_seed(0)
    model = create_model("slow8x8_tiny", num_classes=5)
    folder = tmp_path / "export"
    # the C++ runner does not stream SFC: its pieces' four packages would only add compile time
    export_model(model, folder, ExportOptions(formats=("aoti",), frames=8, size=(32, 40), raw_frames=64, sfc_pieces=False))
    video = torch.randn(1, 3, 8, 32, 40)
    with torch.no_grad():
        want = model(video).numpy()
    src, out = tmp_path / "video.pt", tmp_path / "logits.bin"
    torch.save(video, src)
    proc = _classify(classify_exe, "--export", str(folder), "--format", "aoti", "--input", str(src), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.fromfile(out, dtype="<f4").reshape(want.shape), want, rtol=RTOL, atol=ATOL)
