"""``sfc-deploy export`` and ``sfc-deploy verify`` through CliRunner: results, bad options, exits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sfc_deploy.cli import app

pytestmark = pytest.mark.usefixtures("sfc_one_thread")

runner = CliRunner()
TINY = ["--backbone", "slow8x8_tiny", "--frames", "64", "--size", "32x40", "--num-classes", "5"]


def _one_line_error(result, *fragments: str, after_work: bool = False) -> None:
    """Exit 2 and one ``error:`` line (the last one, after any progress lines when work started)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    if not after_work:
        assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_export_writes_a_verified_folder(tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", "--out", str(out), *TINY, "-f", "torchscript", "--parts", "sfc,tail"])
    assert result.exit_code == 0, result.output
    assert "RANDOM backbone weights" in result.stderr
    assert "passed, 0 failed" in result.stdout and "tolerances: fp32: rtol" in result.stdout
    data = json.loads((out / "manifest.json").read_text())
    assert data["parity"]["passed"] and data["input"]["raw_frames"] == 64 and data["input"]["frames"] == 8
    pieces = {f"{p}.fp32.ts" for p in ("sfc_abs", "sfc_theta_q", "sfc_theta_k", "sfc_normalise")}  # SFC streamed
    assert {a["file"] for a in data["artifacts"]} == {"model.safetensors", "sfc.fp32.ts", "tail.fp32.ts", *pieces}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp folder left beside it
    from sfc_deploy.common.atomic import current_umask

    assert (out.stat().st_mode & 0o777) == 0o777 & ~current_umask()  # not mkdtemp's private 0700
    assert ((out / "manifest.json").stat().st_mode & 0o777) == 0o666 & ~current_umask()


def test_export_no_sfc_pieces_writes_the_whole_sfc_graph_only(tmp_path: Path) -> None:
    """--no-sfc-pieces: no streaming pieces (the default writes them, test above); deployments of the
    folder run the whole-video SFC graph."""
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", "--out", str(out), *TINY, "-f", "torchscript", "--parts", "sfc",
                                 "--no-sfc-pieces", "--no-verify"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "manifest.json").read_text())
    assert {a["file"] for a in data["artifacts"]} == {"model.safetensors", "sfc.fp32.ts"}


def test_existing_out_is_refused_without_force(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "export"), *TINY, "-f", "torchscript"])
    _one_line_error(result, "already exists", "--force")
    assert list((tmp_path / "export").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-f", "onnx,tflite"], ("unknown format 'tflite'", "onnx, torchscript, aoti, tensorrt")),
        (["-p", "fp32,int4"], ("unknown precision 'int4'", "fp32, fp16, int8")),
        (["--parts", "head,neck"], ("unknown or no parts",)),
        (["--size", "32by40"], ("--size must look like 256x312",)),
        (["--backbone", "slow8x9"], ("unknown backbone 'slow8x9'", "did you mean")),
    ],
)
def test_bad_export_options_fail_in_one_line_and_write_nothing(tmp_path: Path, args, fragments) -> None:
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "export"), *TINY, *args])
    _one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_no_half_written_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sfc_deploy.errors import ArtifactError
    from sfc_deploy.export import torchscript

    def broken(part, path, **kwargs):
        path.write_bytes(b"half")
        raise ArtifactError(f"could not write {path.name}")

    monkeypatch.setattr(torchscript, "export_torchscript", broken)
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "export"), *TINY, "-f", "torchscript"])
    _one_line_error(result, "could not write head.fp32.ts", after_work=True)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def ts_copy(sfc_export_ts: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sfc_export_ts, tmp_path / "export"))


def test_verify_passes_and_records_parity(ts_copy: Path) -> None:
    result = runner.invoke(app, ["verify", str(ts_copy), "-p", "fp32", "--dense-clips", "1"])
    assert result.exit_code == 0, result.output
    assert "0 failed, 0 not run" in result.stdout and "dense_pipeline" in result.stdout
    parity = json.loads((ts_copy / "manifest.json").read_text())["parity"]
    assert parity["passed"] and {c["precision"] for c in parity["checks"]} == {"fp32"}


def test_verify_exits_1_when_a_tolerance_is_exceeded(ts_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sfc_deploy.runtime.torchscript_runner import TorchScriptRunner

    real = TorchScriptRunner._infer_impl

    def off_by_a_little(self, feed):  # an artifact whose numbers drift by 1% of their scale
        return {k: v + 0.01 * v.abs().max() for k, v in real(self, feed).items()}

    monkeypatch.setattr(TorchScriptRunner, "_infer_impl", off_by_a_little)
    result = runner.invoke(app, ["verify", str(ts_copy), "-p", "fp32", "--dense-clips", "1", "--no-record"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout and "\n0 passed, " in result.stdout and " failed, 0 not run" in result.stdout
    assert "parity" not in json.loads((ts_copy / "manifest.json").read_text())


def test_verify_refuses_a_tampered_folder(ts_copy: Path) -> None:
    with open(ts_copy / "sfc.fp32.ts", "ab") as f:
        f.write(b"\0")
    result = runner.invoke(app, ["verify", str(ts_copy), "-p", "fp32"])
    _one_line_error(result, "sfc.fp32.ts does not match its sha256")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-r", "tvm"], ("unknown runtime 'tvm'", "onnxruntime")),
        (["-p", "int4"], ("unknown precision 'int4'",)),
        (["-r", "torchscript", "-g", "custom"], ("custom-op SFC graph is ONNX-only",)),
        (["-g", "fastest"], ("unknown SFC graph 'fastest'",)),
    ],
)
def test_bad_verify_options_fail_in_one_line(sfc_export_ts: Path, args, fragments) -> None:
    _one_line_error(runner.invoke(app, ["verify", str(sfc_export_ts), *args]), *fragments)


def test_verify_on_a_folder_without_manifest(tmp_path: Path) -> None:
    _one_line_error(runner.invoke(app, ["verify", str(tmp_path)]), "has no manifest.json")


def test_verify_exits_1_naming_a_graph_that_does_not_load(sfc_export_onnx: Path, tmp_path: Path) -> None:
    """A broken graph whose sha256 the manifest records (a bad exporter, not a tampered file) is a
    failure with exit 1 naming the file, never "not run"."""
    from sfc_deploy.export.manifest import sha256_of

    folder = Path(shutil.copytree(sfc_export_onnx, tmp_path / "broken"))
    served = folder / "sfc.ort.fp32.onnx"
    served.write_bytes(served.read_bytes()[: served.stat().st_size // 2])  # a truncated protobuf
    manifest = json.loads((folder / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["file"] == served.name:
            art["sha256"], art["bytes"] = sha256_of(served), served.stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["verify", str(folder), "-p", "fp32", "-g", "portable", "--no-record"])
    assert result.exit_code == 1, result.output
    assert "sfc.ort.fp32.onnx" in result.stdout and "FAILED" in result.stdout
    assert " 0 not run" in result.stdout  # the broken graph is not excused as "not run"
