"""Devices, reduced precision and memory format of the runtime layer.

On the CPU: ``device="cpu"`` (and ``auto`` without a GPU) changes no bit; CUDA on this machine is
a one-line error; ONNX Runtime without its CUDA provider says so and names onnxruntime-gpu; bf16
runs on the PyTorch runtime only, with SFC's attention map in fp32; channels-last-3d gives the
same logits. The ``gpu`` tests run the torch runtimes on CUDA in fp32, fp16 and bf16 against the
CPU fp32 model with the one tolerance table, and check the pipelines keep tensors on the device.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sfc_deploy.errors import BackendUnavailableError, ConfigError
from sfc_deploy.export.manifest import load_manifest
from sfc_deploy.models.parts import copy_for_export
from sfc_deploy.runtime import Deployment, load, make_runner
from sfc_deploy.runtime.pipeline import to_runner
from sfc_deploy.runtime.registry import check_device
from sfc_deploy.verify import TOLERANCES, compare

pytestmark = pytest.mark.usefixtures("sfc_one_thread")

HAS_CUDA = torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only behaviour; a CUDA device is visible here")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
CL = torch.channels_last_3d


@pytest.fixture(scope="module")
def reference(sfc_one_thread, sfc_tiny):
    """Model, an 8-frame batch of 2, a 64-raw-frame video, and the model's fp32 CPU SFC logits."""
    torch.manual_seed(3)
    model = sfc_tiny.model()
    frames = torch.randn(2, 3, 8, *sfc_tiny.size)
    video = torch.randn(1, 3, sfc_tiny.raw_frames, 32, 40)
    with torch.no_grad():
        return model, frames, model(frames), video


def _ort_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


# --- devices on the CPU ---------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["pytorch", "torchscript"])
def test_device_cpu_changes_no_bit(sfc_export_ts: Path, reference, runtime: str) -> None:
    _, frames, _, video = reference
    with load(sfc_export_ts, runtime, threads=1) as plain, load(sfc_export_ts, runtime, threads=1, device="cpu") as cpu:
        assert cpu.device == "cpu" and plain.device is None
        assert cpu.runner("head").input_device == torch.device("cpu")
        for got, want in zip(cpu.predict_with_attention(frames), plain.predict_with_attention(frames)):
            assert torch.equal(got, want)
        assert torch.equal(cpu.predict_dense(video, num_clips=2), plain.predict_dense(video, num_clips=2))


@needs_no_cuda
def test_auto_is_the_cpu_without_a_gpu(sfc_export_ts: Path, reference) -> None:
    _, frames, logits, _ = reference
    with load(sfc_export_ts, "pytorch", device="auto", inference_rewrite=False) as dep:
        assert dep.device == "cpu"
        assert torch.equal(dep.predict(frames), logits)  # the model as trained, in place: no copy, no bit changed


def test_to_runner_on_the_cpu_is_the_cast_alone(sfc_export_ts: Path) -> None:
    manifest = load_manifest(sfc_export_ts)
    x = torch.randn(1, 3, 8, 32, 40)
    with make_runner(manifest, manifest.find("head", "torchscript"), "torchscript") as runner:
        assert to_runner(x, runner, torch.float32) is x  # nothing copied on the CPU
        assert torch.equal(to_runner(x, runner, torch.float16), x.to(torch.float16))


@needs_no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_one_line(sfc_export_ts: Path, device: str) -> None:
    with pytest.raises(BackendUnavailableError, match="no CUDA device is visible") as err:
        load(sfc_export_ts, "torchscript", device=device)
    assert "\n" not in str(err.value) and "--device cpu" in str(err.value)


def test_a_word_that_is_not_a_device_is_refused(sfc_export_ts: Path) -> None:
    with pytest.raises(ConfigError, match="'gpu' is not a device") as err:
        load(sfc_export_ts, "torchscript", device="gpu")
    assert "\n" not in str(err.value)


def test_onnxruntime_on_the_cpu_device_runs_the_cpu_provider(sfc_export_onnx: Path, sfc_tiny) -> None:
    manifest = load_manifest(sfc_export_onnx)
    art = manifest.find("sfc", "onnx", variant="ort")
    f_head = torch.randn(1, 64, 8, 4, 5)
    with make_runner(manifest, art, "onnxruntime", threads=1, device="cpu") as on_cpu:
        assert on_cpu.session.get_providers() == ["CPUExecutionProvider"]
        assert on_cpu.input_device == torch.device("cpu")  # ONNX Runtime takes host tensors
        got = on_cpu.infer({"f_head": f_head})
    with make_runner(manifest, art, "onnxruntime", threads=1) as default:
        want = default.infer({"f_head": f_head})
        cpu_only = default.session.get_providers() == ["CPUExecutionProvider"]
    if cpu_only:  # the default providers here are the CPU's: the same session, the same bits
        assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(ConfigError, match="device or providers, not both"):
        make_runner(manifest, art, "onnxruntime", device="cpu", providers=["CPUExecutionProvider"])


def test_onnxruntime_without_its_cuda_provider_names_onnxruntime_gpu(sfc_export_onnx: Path) -> None:
    if _ort_has_cuda():
        pytest.skip("this onnxruntime has the CUDA execution provider")
    with pytest.raises(BackendUnavailableError, match="no CUDA execution provider") as err:
        check_device("onnxruntime", "cuda:0")  # what Deployment checks after resolving --device cuda
    assert "onnxruntime-gpu" in str(err.value) and "\n" not in str(err.value)
    manifest = load_manifest(sfc_export_onnx)  # a runner made directly fails the same way
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        make_runner(manifest, manifest.find("sfc", "onnx", variant="ort"), "onnxruntime", device="cuda:0")


def test_tensorrt_on_the_cpu_is_refused() -> None:
    with pytest.raises(ConfigError, match="runs on a CUDA device only"):
        check_device("tensorrt", "cpu")


# --- precision ------------------------------------------------------------------------------------
def test_bf16_weights_keep_the_attention_in_fp32(reference) -> None:
    model = reference[0]
    bf16 = copy_for_export(model, torch.bfloat16, topk_impl="op")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    f_head = torch.randn(2, 64, 8, 4, 5).to(torch.bfloat16)
    with torch.no_grad():
        m, value = bf16.sfc.attention(f_head)
        out, m2 = bf16.sfc(f_head, return_attention=True)
    assert m.dtype == torch.float32 and m2.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert value.dtype == torch.bfloat16
    torch.testing.assert_close(m.sum(-1), torch.ones(2, 4), rtol=0, atol=1e-6)  # each slot: a distribution over T


def test_bf16_deployment_is_close_to_the_fp32_model(sfc_export_ts: Path, reference) -> None:
    model, frames, logits, _ = reference
    with load(sfc_export_ts, "pytorch", precision="bf16") as dep:
        assert next(dep.runner("head").module.parameters()).dtype == torch.bfloat16
        got, attention = dep.predict_with_attention(frames)
    assert got.dtype == torch.float32 and attention.dtype == torch.float32
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4), rtol=0, atol=1e-6)
    assert compare(got, logits, "bf16")["passed"], compare(got, logits, "bf16")
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not recast


@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime", "aoti"])
def test_bf16_on_an_exported_runtime_is_one_line(sfc_export_ts: Path, runtime: str) -> None:
    with pytest.raises(ConfigError, match="bf16 is served by the pytorch runtime only") as err:
        load(sfc_export_ts, runtime, precision="bf16")
    assert "\n" not in str(err.value)


def test_bf16_is_not_an_export_precision() -> None:
    from sfc_deploy.export.formats import parse_precisions

    with pytest.raises(ConfigError, match="bf16"):
        parse_precisions("fp32,bf16")


# --- memory format --------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["pytorch", "torchscript"])
def test_channels_last_3d_gives_the_same_logits(sfc_export_ts: Path, reference, runtime: str) -> None:
    _, frames, logits, video = reference
    with load(sfc_export_ts, runtime, threads=1) as plain:
        dense = plain.predict_dense(video, num_clips=2)
    with load(sfc_export_ts, runtime, threads=1, memory_format="channels_last_3d") as dep:
        conv = next(p for p in dep.runner("head").module.parameters() if p.dim() == 5 and p.shape[2:] != (1, 1, 1))
        assert conv.is_contiguous(memory_format=CL) and not conv.is_contiguous()  # really converted
        assert compare(dep.predict(frames), logits, "fp32")["passed"]
        assert compare(dep.predict_dense(video, num_clips=2), dense, "fp32")["passed"]


def test_channels_last_3d_leaves_the_callers_model_alone(reference) -> None:
    model, frames, logits, _ = reference
    weights = {n: (p.data_ptr(), p.is_contiguous()) for n, p in model.named_parameters()}
    with Deployment.from_model(model, memory_format="channels_last_3d") as dep:
        assert compare(dep.predict(frames), logits, "fp32")["passed"]
    assert {n: (p.data_ptr(), p.is_contiguous()) for n, p in model.named_parameters()} == weights


def test_memory_format_is_checked(sfc_export_ts: Path) -> None:
    with pytest.raises(ConfigError, match="memory_format 'nhwc'"):
        load(sfc_export_ts, "pytorch", memory_format="nhwc").runner("head")
    with pytest.raises(ConfigError, match="runtime aoti takes no option memory_format"):
        load(sfc_export_ts, "aoti", memory_format="channels_last_3d")


# --- on a GPU -------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("runtime", "precision"), [("pytorch", "fp32"), ("pytorch", "fp16"), ("pytorch", "bf16"),
                                                    ("torchscript", "fp32"), ("torchscript", "fp16")])
@pytest.mark.parametrize("memory_format", [None, "channels_last_3d"])
def test_cuda_matches_the_cpu_fp32_model(sfc_export_ts: Path, reference, runtime: str, precision: str,
                                         memory_format: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if precision == "fp32":  # cuDNN's default TF32 convolutions keep 10 significand bits: not fp32's tolerance
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    _, frames, logits, video = reference
    with load(sfc_export_ts, "pytorch", threads=1, device="cpu") as cpu:
        dense_ref = cpu.predict_dense(video, num_clips=2)
    with load(sfc_export_ts, runtime, device="cuda", precision=precision, memory_format=memory_format) as dep:
        assert dep.device.startswith("cuda:")
        got, attention = dep.predict_with_attention(frames)
        dense = dep.predict_dense(video, num_clips=2)
    assert got.device.type == "cpu" and attention.dtype == torch.float32
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4), rtol=0, atol=1e-5)
    for out, ref in ((got, logits), (dense, dense_ref)):
        result = compare(out, ref, precision)
        assert result["passed"], (TOLERANCES[precision], result)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("runtime", ["pytorch", "torchscript"])
def test_cuda_pipeline_keeps_tensors_on_the_device(sfc_export_ts: Path, reference, runtime: str) -> None:
    _, frames, _, _ = reference
    with load(sfc_export_ts, runtime, device="cuda:0", precision="fp16") as dep:
        pipeline = dep.sfc_pipeline()
        x = to_runner(frames, pipeline.head, dep.dtype)
        assert x.device.type == "cuda" and x.dtype == torch.float16
        f_head = pipeline.head.infer({"video": x})["f_head"]
        out = pipeline.sfc.infer({"f_head": f_head})
        assert f_head.device.type == out["f_sfc"].device.type == out["attention"].device.type == "cuda"
        assert out["attention"].dtype == torch.float32
        logits, _ = pipeline(x)
        assert logits.device.type == "cuda"
        clips = dep.clip_pipeline()(to_runner(torch.randn(4, 3, 8, 32, 32), dep.runner("clip"), dep.dtype))
        assert clips.device.type == "cuda"
