"""The stage profile (sfc_deploy.bench.stages): its stages add up to bench's whole-video cost, and
its profiled passes sort time into convolutions, layout copies and the rest.

No timing is asserted: only that the stages are the right passes of the right size.
"""

from __future__ import annotations

import pytest
import torch

from sfc_deploy.bench.flops import dense_cost, sfc_cost
from sfc_deploy.bench.stages import CPU_CONVOLUTIONS, _category, measure_stages, profile_stage, served_stages, stage_macs
from sfc_deploy.models import create_model, get_config
from sfc_deploy.runtime import Deployment

FRAMES, SIZE = 8, (32, 40)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model(get_config("slow8x8_tiny"), tau=2.0, split="res3").eval()


@pytest.mark.parametrize(("videos", "chunk", "crops"), [(1, 4, 6), (2, 8, 15), (3, 2, 30)])
def test_stages_add_up_to_the_whole_video_cost(model, videos, chunk, crops) -> None:
    """head x (frames / chunk) + sfc + tail per video is bench's SFC cost; the clip model x 30 / crops
    is the dense cost: a wrong input shape or pass count changes the sums."""
    with Deployment.from_model(model, threads=1) as dep:
        stages = served_stages(dep, frames=FRAMES, size=SIZE, chunk=chunk, crops=crops, videos=videos)
        assert stages["head"].example.shape == (videos, 3, chunk, *SIZE)
        assert stages["clip"].example.shape[0] == crops and stages["clip"].example.dtype == dep.dtype
        per_video = {name: stage_macs(s) * s.passes_per_video for name, s in stages.items()}
    whole = sfc_cost(model, frames=FRAMES, size=SIZE)
    for part in ("head", "sfc", "tail"):
        assert per_video[part] / 1e9 == pytest.approx(whole.by_part[part], rel=1e-9)
    assert per_video["clip"] / 1e9 == pytest.approx(dense_cost(model).gmacs, rel=1e-9)


def test_only_the_pytorch_runtime_has_stages(sfc_export_ts) -> None:
    from sfc_deploy.errors import ConfigError
    from sfc_deploy.runtime import load

    with load(sfc_export_ts, runtime="torchscript", threads=1) as dep, \
            pytest.raises(ConfigError, match="profiled on the pytorch runtime, not torchscript; load the export with "
                                             "runtime='pytorch'"):
        served_stages(dep, frames=FRAMES, size=SIZE, chunk=4, crops=2)


def test_served_stages_run_the_served_modules(model) -> None:
    """The head stage is the runtime's (rewritten) module, its example on the deployment's dtype."""
    with Deployment.from_model(model, threads=1, precision="bf16") as dep:
        stages = served_stages(dep, frames=FRAMES, size=SIZE, chunk=4, crops=2)
        assert stages["head"].fn is dep.runner("head").module
        assert stages["sfc"].example.dtype == torch.bfloat16
        assert stages["head"].module is not stages["head"].fn  # MACs are counted on the model as trained


def test_profile_sorts_time_into_categories(model) -> None:
    with Deployment.from_model(model, threads=1) as dep:
        stages = served_stages(dep, frames=FRAMES, size=SIZE, chunk=4, crops=2)
        prof = profile_stage(stages["tail"], "cpu")
    assert sum(prof["shares"].values()) == pytest.approx(1.0)
    assert prof["shares"]["convolution"] > 0
    assert prof["top_convolutions"] and all(c["name"] in CPU_CONVOLUTIONS for c in prof["top_convolutions"])
    assert "top_kernels" not in prof  # the CPU has no kernels of its own to list


@pytest.mark.parametrize(("name", "category"), [
    ("void cudnn::ops::nchwToNhwcKernel<__half, __half, float, false, true, (cudnnKernelDataType_t)0>(...)", "layout copies"),
    ("void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::direct_copy_kernel_cuda", "layout copies"),
    ("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "convolution"),
    ("aten::mkldnn_convolution", "convolution"),
    ("aten::copy_", "layout copies"),
    ("aten::sort", "other"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::clamp_min_scalar_kernel", "other"),
])
def test_kernel_categories(name, category) -> None:
    assert _category(name) == category


def test_measure_stages_per_video_sums(model) -> None:
    with Deployment.from_model(model, threads=1) as dep:
        stages = served_stages(dep, frames=FRAMES, size=SIZE, chunk=4, crops=6, videos=2)
        result = measure_stages(stages, "cpu", peak_gflops=100.0, warmup=1, repeats=2, profile=False)
    s = result["stages"]
    assert all(len(v["seconds"]) == 2 and v["median_ms"] > 0 for v in s.values())
    assert result["sfc_ms_per_video"] == pytest.approx(sum(s[p]["median_ms"] * stages[p].passes_per_video
                                                           for p in ("head", "sfc", "tail")))
    assert result["speedup"] == pytest.approx(s["clip"]["ms_per_video"] / result["sfc_ms_per_video"])
    head = s["head"]
    assert head["peak_fraction"] == pytest.approx(2 * head["gmacs_per_pass"] / (head["median_ms"] / 1e3) / 100.0)  # GFLOP/s
