"""AOTInductor CUDA packages: ``export --format aoti --device cuda``, the device in the manifest,
the runner's refusal of a package on the wrong device, and verify on the package's device.

On every machine: ``--device cuda`` without a GPU is one line (exit 2) before any work; a CUDA
export of device-portable formats only is refused (one line naming the formats that apply); an
AOTInductor artifact recorded as CUDA is refused on the CPU by the runner (one line) and reported
as not run by verify (with the reason); manifests without the field still load. ``gpu``: a tiny
model exported to AOTInductor CUDA fp16 through the CLI (which verifies it), then checked per stage
and end to end against the fp32 PyTorch model with the fp16 row of the tolerance table.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.errors import BackendUnavailableError, ConfigError
from sfc_deploy.export.exporter import ExportOptions, check_device
from sfc_deploy.export.manifest import Artifact, load_manifest, sha256_of
from sfc_deploy.runtime import load, make_runner
from sfc_deploy.verify import TOLERANCES, compare, verify

pytestmark = pytest.mark.usefixtures("sfc_one_thread")

runner = CliRunner()
TINY = ["--backbone", "slow8x8_tiny", "--frames", "64", "--size", "32x40", "--num-classes", "5"]
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour; a CUDA device is visible")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")




# --- every machine ------------------------------------------------------------------------------


@needs_no_cuda
def test_export_device_cuda_without_gpu_is_one_line_before_work(tmp_path: Path, one_line_error) -> None:
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", "--out", str(out), *TINY, "-f", "aoti", "-p", "fp16", "--device", "cuda"])
    one_line_error(result, "--device cuda", "no CUDA device is visible", "--device cpu")
    assert not out.exists()


def test_export_device_not_a_device_is_one_line(tmp_path: Path, one_line_error) -> None:
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "e"), *TINY, "-f", "aoti", "--device", "gpu0"])
    one_line_error(result, "--device 'gpu0' is not a device")


def test_cuda_export_of_device_portable_formats_only_is_refused(monkeypatch) -> None:
    """With a GPU visible (stood in for by the resolver), ONNX/TorchScript alone gain nothing from
    --device cuda: refused, naming the formats compiled for a device; with aoti it is accepted."""
    import sfc_deploy.export.exporter as exporter

    monkeypatch.setattr(exporter, "resolve_device", lambda text: "cuda:0")
    with pytest.raises(ConfigError, match=r"applies to formats compiled for one device \(aoti, tensorrt\); "
                                          r"onnx, torchscript files are device-portable"):
        check_device(ExportOptions(formats=("onnx", "torchscript"), device="cuda"))
    assert check_device(ExportOptions(formats=("onnx", "aoti"), device="cuda")) == "cuda:0"
    assert check_device(ExportOptions(formats=("onnx",), device="auto")) == "cuda:0"  # auto: not a request for CUDA


def test_cpu_export_options_are_unchanged() -> None:
    assert ExportOptions().device == "cpu"
    assert check_device(ExportOptions(formats=("onnx", "torchscript"))) == "cpu"


def test_cuda_packages_take_their_weights_from_torchs_allocator() -> None:
    """bench counts a model's weights with torch.cuda.memory_allocated; a CUDA package compiled with
    AOTInductor's default cudaMalloc's its own, which that counter never sees. The setting must exist
    in this torch (a rename in an upgrade fails here, not as a silently wrong memory figure on a GPU)."""
    from sfc_deploy.export.aoti import inductor_configs

    assert inductor_configs("cuda") == {"aot_inductor.weight_use_caching_allocator": True}
    assert inductor_configs("cuda:1") == inductor_configs("cuda")
    assert inductor_configs("cpu") == {}  # a CPU package's weights are host memory either way


def test_artifact_device_round_trips_and_old_records_load() -> None:
    art = Artifact("sfc.fp16.pt2", "sfc", "aoti", "fp16", (), (), device="cuda")
    assert Artifact.from_dict(art.to_dict()) == art
    old = art.to_dict()
    del old["device"]  # a manifest written before the field existed
    assert Artifact.from_dict(old).device is None


@pytest.fixture
def cuda_aoti_folder(tmp_path: Path, sfc_export_ts: Path) -> Path:
    """A copy of the TorchScript export whose manifest also lists AOTInductor fp32 files recorded as
    compiled for CUDA (placeholder bytes: every refusal below happens before a package is read)."""
    root = tmp_path / "export"
    shutil.copytree(sfc_export_ts, root)
    data = json.loads((root / "manifest.json").read_text())
    for art in [a for a in data["artifacts"] if a["format"] == "torchscript" and a["precision"] == "fp32"]:
        name = art["file"].replace(".ts", ".pt2")
        (root / name).write_bytes(b"placeholder for a CUDA package")
        data["artifacts"].append({**art, "file": name, "format": "aoti", "device": "cuda",
                                  "sha256": sha256_of(root / name), "bytes": (root / name).stat().st_size})
    data["formats"].append("aoti")
    (root / "manifest.json").write_text(json.dumps(data))
    return root


def test_cuda_package_on_the_cpu_is_refused_in_one_line(cuda_aoti_folder: Path) -> None:
    manifest = load_manifest(cuda_aoti_folder)
    art = manifest.find("head", "aoti")
    assert art.device == "cuda"
    with pytest.raises(ConfigError) as info:
        make_runner(manifest, art, "aoti", device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "head.fp32.pt2 is an AOTInductor package compiled for cuda; it cannot run on cpu" in message
    assert "--device cuda" in message and "re-export with --format aoti --device cpu" in message
    with pytest.raises(ConfigError, match="compiled for cuda; it cannot run on cpu"):
        load(cuda_aoti_folder, runtime="aoti").predict(torch.randn(1, 3, 8, 32, 40))


def test_cpu_package_on_cuda_is_refused_in_one_line(cuda_aoti_folder: Path) -> None:
    """The other way round: a package recorded as CPU (or recorded before the field: None) asked to
    run on CUDA. The refusal is the runner's own check, before CUDA is touched."""
    manifest = load_manifest(cuda_aoti_folder)
    for device in ("cpu", None):
        art = dataclasses.replace(manifest.find("tail", "aoti"), device=device)
        with pytest.raises(ConfigError, match=r"compiled for cpu; it cannot run on cuda:0: run it with --device cpu, "
                                              r"or re-export with --format aoti --device cuda"):
            make_runner(manifest, art, "aoti", device="cuda:0")


@needs_no_cuda
def test_verify_reports_a_cuda_package_as_not_run_here(cuda_aoti_folder: Path) -> None:
    report = verify(load_manifest(cuda_aoti_folder), runtimes=["aoti", "torchscript"], precisions=["fp32"],
                    dense_clips=1, threads=1)
    assert [(n.runtime, n.precision) for n in report.not_run] == [("aoti", "fp32")]
    assert "no CUDA device is visible" in report.not_run[0].reason
    assert report.checks and all(c.runtime == "torchscript" and c.device is None for c in report.checks)
    assert report.passed and report.topk_cuda is None
    with pytest.raises(BackendUnavailableError, match="no CUDA device is visible"):
        verify(load_manifest(cuda_aoti_folder), runtimes=["aoti"], device="cuda")


def test_verify_on_the_cpu_names_the_device_the_package_needs(cuda_aoti_folder: Path) -> None:
    report = verify(load_manifest(cuda_aoti_folder), runtimes=["aoti"], precisions=["fp32"], device="cpu",
                    dense_clips=1)
    assert not report.checks and len(report.not_run) == 1
    assert "compiled for cuda, not cpu; verify with --device cuda" in report.not_run[0].reason


@needs_no_cuda
def test_verify_cli_device_cuda_without_gpu_is_one_line(cuda_aoti_folder: Path, one_line_error) -> None:
    result = runner.invoke(app, ["verify", str(cuda_aoti_folder), "--device", "cuda", "--no-record"])
    one_line_error(result, "no CUDA device is visible")


def test_verify_device_cpu_runs_there_and_records_it(sfc_export_ts: Path) -> None:
    report = verify(load_manifest(sfc_export_ts), runtimes=["torchscript"], precisions=["fp32"], device="cpu",
                    dense_clips=1, threads=1)
    assert report.passed and not report.not_run
    assert {c.device for c in report.checks} == {"cpu"}
    assert "topk_cuda" not in report.to_dict()


@pytest.mark.slow
def test_cpu_aoti_export_records_cpu_and_runs(tmp_path: Path, sfc_tiny) -> None:
    """The exporter hands the device to the AOTInductor exporter and records it (tail only: ~1 min)."""
    out = sfc_tiny.export(tmp_path / "export", ("aoti",), parts=("tail",))
    manifest = load_manifest(out)
    art = manifest.find("tail", "aoti")
    assert art.device == "cpu"
    assert [a.device for a in manifest.artifacts if a.format != "aoti"] == [None]  # the weights: portable
    f_sfc = torch.randn(1, *[d if isinstance(d, int) else 4 for d in art.inputs[0].shape[1:]])
    with make_runner(manifest, art, "aoti") as r, torch.no_grad():
        torch.testing.assert_close(r.infer({"f_sfc": f_sfc})["logits"], sfc_tiny.model().tail(f_sfc), rtol=1e-4, atol=1e-5)


# --- GPU ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda_fp16_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """head, sfc and tail exported to AOTInductor CUDA fp16 through the CLI, which verifies them."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    out = tmp_path_factory.mktemp("aoti_cuda") / "export"
    result = runner.invoke(app, ["export", "--out", str(out), *TINY, "-f", "aoti", "-p", "fp16", "--device", "cuda",
                                 "--parts", "head,sfc,tail"])
    assert result.exit_code == 0, result.output  # exit 1: a parity check failed (the table is in the output)
    assert "0 failed, 0 not run" in result.stdout, result.stdout
    return out


@pytest.mark.gpu
@needs_gpu
def test_cuda_fp16_export_records_the_device_and_verifies_on_it(cuda_fp16_export: Path) -> None:
    manifest = load_manifest(cuda_fp16_export)
    packages = [a for a in manifest.artifacts if a.format == "aoti"]
    assert sorted(a.file for a in packages) == ["head.fp16.pt2", "sfc.fp16.pt2", "tail.fp16.pt2"]
    assert {a.device for a in packages} == {"cuda"}
    assert all(a.device is None for a in manifest.artifacts if a.format != "aoti")
    parity = manifest.parity
    assert parity["passed"] and not parity["not_run"]
    assert {c["part"] for c in parity["checks"]} >= {"head", "sfc", "tail", "sfc_pipeline"}
    assert all(c["device"].startswith("cuda") for c in parity["checks"])
    assert "topk_cuda" not in parity  # the packages compute TopK with aten ops: the op (and its kernel) is not called


@pytest.mark.gpu
@needs_gpu
def test_cuda_fp16_package_per_stage_and_end_to_end(cuda_fp16_export: Path) -> None:
    """Each package on CUDA against the fp32 PyTorch model on the CPU, and the SFC pipeline end to end,
    within the fp16 row of the one tolerance table; the CPU refuses the packages."""
    from sfc_deploy.export.weights import model_from_manifest

    manifest = load_manifest(cuda_fp16_export)
    model = model_from_manifest(manifest).eval()
    torch.manual_seed(0)
    video = torch.randn(2, 3, 8, 32, 40)
    with torch.no_grad():
        f_head = model.head(video)
        f_sfc, attention = model.sfc(f_head, return_attention=True)
        logits = model.tail(f_sfc)
    stages = {"head": ({"video": video}, {"f_head": f_head}),
              "sfc": ({"f_head": f_head}, {"f_sfc": f_sfc, "attention": attention}),
              "tail": ({"f_sfc": f_sfc}, {"logits": logits})}
    for part, (feed, want) in stages.items():
        with make_runner(manifest, manifest.find(part, "aoti", "fp16"), "aoti", device="cuda:0") as r:
            got = r.infer({k: v.half() for k, v in feed.items()})
        for name, ref in want.items():
            assert got[name].device.type == "cuda"
            stats = compare(got[name], ref, "fp16")
            assert stats["passed"], (part, name, stats, TOLERANCES["fp16"])
    with load(cuda_fp16_export, runtime="aoti", precision="fp16", device="cuda") as dep:
        got = dep.predict(video)
    assert compare(got, logits, "fp16")["passed"]
    assert (got.float().cpu().argmax(-1) == logits.argmax(-1)).all()
    with pytest.raises(ConfigError, match="compiled for cuda; it cannot run on cpu"):
        load(cuda_fp16_export, runtime="aoti", precision="fp16").predict(video)


@pytest.mark.gpu
@needs_gpu
def test_cuda_package_weights_are_counted_by_torch(cuda_fp16_export: Path) -> None:
    """Loading a CUDA package raises torch.cuda.memory_allocated by at least its fp16 weights (the
    inductor_configs setting), as loading the PyTorch runtime's parts does: bench's memory rows compare."""
    from sfc_deploy.export.weights import model_from_manifest

    manifest = load_manifest(cuda_fp16_export)
    weights = sum(p.numel() * 2 for p in model_from_manifest(manifest).backbone.parameters())  # fp16 bytes
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    runners = [make_runner(manifest, manifest.find(part, "aoti", "fp16"), "aoti", device="cuda:0")
               for part in ("head", "tail")]  # the backbone's weights, split between head and tail
    for r in runners:
        r.activate()
    torch.cuda.synchronize()
    loaded = torch.cuda.memory_allocated() - before
    for r in runners:
        r.deactivate()
    assert loaded >= 0.9 * weights, (loaded, weights)


@pytest.mark.gpu
@needs_gpu
def test_verify_device_cuda_runs_portable_artifacts_on_cuda(sfc_export_ts: Path) -> None:
    """TorchScript traced on the CPU is device-portable (loaded with map_location=cuda) and the PyTorch
    runtime runs the op on CUDA: both verified on the GPU, fp32 (TF32 off) and fp16, against the CPU
    fp32 reference; the report names the TopK implementation the op ran."""
    report = verify(load_manifest(sfc_export_ts), runtimes=["torchscript", "pytorch"], device="cuda", dense_clips=1)
    failed = [(c.runtime, c.precision, c.part, c.max_abs, c.error) for c in report.checks if not c.passed]
    assert report.passed and not report.not_run and not failed, (failed, report.not_run)
    assert {c.device for c in report.checks} == {f"cuda:{torch.cuda.current_device()}"}
    from sfc_deploy.ops import cuda_implementation_record

    assert report.topk_cuda == cuda_implementation_record()  # "kernel" where the library is built
