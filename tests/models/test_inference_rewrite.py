"""The PyTorch runtime's inference rewrite (sfc_deploy.models.inference): same outputs as the model as
trained, within the fp32 tolerance of the shared table, per stage (head, SFC, tail, clip model) and on
a module with every kind of convolution; BatchNorm statistics are randomised so folding them matters.

The rewrite's code is device-agnostic; on CUDA it runs in the ``gpu`` tests of
tests/runtime/test_devices.py (the PyTorch runtime rewrites by default), which cannot run here.
"""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch
from torch import nn

from sfc_deploy.errors import ConfigError
from sfc_deploy.models.inference import (FoldedBatchNorm, InferenceConv3d, InferenceMaxPool3d, fold_kind,
                                         prepare_for_inference)
from sfc_deploy.models.parts import part_modules
from sfc_deploy.runtime import Deployment
from sfc_deploy.runtime.registry import check_runner_options, served_model
from sfc_deploy.verify import TOLERANCES, compare

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Pretrained-looking BN statistics and affine parameters (fresh ones are an identity map)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model


def assert_close(out: torch.Tensor, ref: torch.Tensor, what: str, precision: str = "fp32") -> None:
    result = compare(out, ref, precision)
    assert result["passed"], (what, TOLERANCES[precision], result)


@pytest.fixture(scope="module")
def tiny(sfc_one_thread, sfc_tiny):
    """slow8x8_tiny with trained-looking BN, and inputs of every stage (batch 2, 8 frames)."""
    model = randomise_batchnorm(sfc_tiny.model())
    torch.manual_seed(1)
    video = torch.randn(2, 3, 8, *sfc_tiny.size)
    with torch.no_grad():
        f_head = model.head(video)
        f_sfc, attention = model.sfc(f_head, return_attention=True)
    return model, video, f_head, f_sfc


@pytest.mark.parametrize("channels_last", [True, False])
def test_every_stage_matches_the_model_as_trained(tiny, channels_last: bool) -> None:
    model, video, f_head, f_sfc = tiny
    rewritten = copy.deepcopy(model)
    counts = prepare_for_inference(rewritten, channels_last=channels_last)
    # slow8x8_tiny: every conv has a unit time kernel or is (3, 1, 1); every BN follows its conv
    assert counts["conv3d"] == 0 and counts["maxpool2d"] == 1
    assert counts["batchnorm_folded"] == sum(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm3d) for m in rewritten.modules())
    ref, new = part_modules(model), part_modules(rewritten)
    clips = video[:, :, :8, :32, :32].contiguous()
    with torch.inference_mode():
        for part, inp in (("head", video), ("sfc", f_head), ("tail", f_sfc), ("clip", clips)):
            want, got = ref[part](inp), new[part](inp)
            for i, (w, g) in enumerate(zip(*(t if isinstance(t, tuple) else (t,) for t in (want, got)))):
                assert_close(g, w, f"{part}[{i}]")
        if channels_last:  # activations stay NTHWC end to end: the 2D views are free
            assert new["head"](video).is_contiguous(memory_format=torch.channels_last_3d)


class EveryConv(nn.Module):
    """Each kind of 3D convolution and pool the rewrite distinguishes, with and without a BN after it."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = nn.Conv3d(4, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
        self.frames_bn = nn.BatchNorm3d(8)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.time = nn.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0))  # with its own bias, then BN
        self.time_bn = nn.BatchNorm3d(8)
        self.time_strided = nn.Conv3d(8, 8, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0), bias=False)
        self.full = nn.Conv3d(8, 8, 3, padding=1, bias=False)  # stays 3D
        self.full_bn = nn.BatchNorm3d(8, affine=False)
        self.grouped = nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 2, 2), dilation=(1, 2, 2), groups=4)
        self.pointwise = nn.Conv3d(8, 8, 1)  # no BN after it
        self.reflect = nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1), padding_mode="reflect")  # stays 3D
        self.same = nn.Conv3d(8, 8, (3, 3, 3), padding="same")  # stays 3D
        self.time_pool = nn.MaxPool3d((2, 1, 1))  # pools over time: stays 3D
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.frames_bn(self.frames(x))))
        x = self.relu(self.time_bn(self.time(x))) + x
        x = self.time_strided(x)
        x = self.relu(self.full_bn(self.full(x)))
        x = self.pointwise(self.grouped(x))
        return self.time_pool(self.same(self.reflect(x)))


@pytest.mark.parametrize("channels_last", [True, False])
def test_every_conv_kind(channels_last: bool) -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(EveryConv(), seed=1).eval()
    kinds = {name: fold_kind(m) for name, m in model.named_children() if isinstance(m, nn.Conv3d)}
    assert kinds == {"frames": "frames", "time": "time", "time_strided": "time", "full": None, "grouped": "frames",
                     "pointwise": "frames", "reflect": None, "same": None}
    rewritten = copy.deepcopy(model)
    counts = prepare_for_inference(rewritten, channels_last=channels_last)
    assert counts == {"conv2d": 5, "conv3d": 3, "batchnorm_folded": 3, "maxpool2d": 1}
    assert isinstance(rewritten.pool, InferenceMaxPool3d) and type(rewritten.time_pool) is nn.MaxPool3d
    assert all(isinstance(getattr(rewritten, n), FoldedBatchNorm) for n in ("frames_bn", "time_bn", "full_bn"))
    for batch, time in ((1, 8), (3, 5)):
        x = torch.randn(batch, 4, time, 19, 23)
        with torch.inference_mode():
            assert_close(rewritten(x), model(x), f"batch {batch}, time {time}")


def test_conversions_after_the_rewrite_reach_the_2d_weights() -> None:
    """The 2D weight views follow ``.to(dtype)`` / memory-format changes made after the rewrite."""
    torch.manual_seed(0)
    model = randomise_batchnorm(EveryConv(), seed=2).eval()
    rewritten = copy.deepcopy(model)
    prepare_for_inference(rewritten)
    x = torch.randn(1, 4, 6, 19, 23)
    with torch.inference_mode():
        ref = model(x)
        rewritten.to(torch.bfloat16)
        assert_close(rewritten(x.bfloat16()), ref, "bf16 after the rewrite", "bf16")
        rewritten.to(torch.float32).to(memory_format=torch.contiguous_format)
        assert_close(rewritten(x), ref, "back to fp32, contiguous weights", "bf16")  # the weights went through bf16


def test_a_bn_not_fed_by_its_conv_is_refused_when_it_runs() -> None:
    class PreActivation(nn.Module):  # conv registered before the BN, but the BN normalises the input
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(4, 4, 1)
            self.bn = nn.BatchNorm3d(4)

        def forward(self, x):
            return self.conv(self.bn(x))

    model = PreActivation().eval()
    prepare_for_inference(model)
    with pytest.raises(ConfigError, match="bn was folded.*inference_rewrite=False"), torch.inference_mode():
        model(torch.randn(1, 4, 2, 5, 5))


def test_training_mode_is_refused_and_training_is_untouched(tiny) -> None:
    model = tiny[0]
    with pytest.raises(ConfigError, match="eval only.*training mode"):
        prepare_for_inference(copy.deepcopy(model).train().sfc)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    served = served_model(model, torch.float32)
    assert served is not model and isinstance(served.backbone.stem.conv, InferenceConv3d)
    # the caller's model (what training and export use) keeps its modules and every weight
    assert type(model.backbone.stem.conv) is nn.Conv3d and type(model.backbone.stem.bn) is nn.BatchNorm3d
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert served_model(model, torch.float32, inference_rewrite=False) is model


def test_runtime_option_and_pipelines(tiny) -> None:
    """The PyTorch runtime rewrites by default, serves the model as trained with inference_rewrite=False,
    and both pipelines (SFC whole and streamed with the head, dense) agree; other runtimes refuse it."""
    model, video, _, _ = tiny
    long_video = torch.randn(1, 3, 16, *video.shape[3:])
    crops = torch.randn(6, 3, 8, 32, 32)
    with Deployment.from_model(model, inference_rewrite=False) as plain:
        assert type(plain.runner("head").module.backbone.stem.conv) is nn.Conv3d
        logits, attention = plain.predict_with_attention(long_video)
        dense = plain.predict_clips(crops, videos=2)
    for options in ({}, {"head_chunk": 4}):
        with Deployment.from_model(model, **options) as dep:
            assert isinstance(dep.runner("head").module.backbone.stem.conv, InferenceConv3d)
            got, got_attention = dep.predict_with_attention(long_video)
            assert_close(got, logits, f"SFC logits {options}")
            assert_close(got_attention, attention, f"attention {options}")
            assert_close(dep.predict_clips(crops, videos=2), dense, "dense logits")
    with pytest.raises(ConfigError, match="runtime onnxruntime takes no option inference_rewrite"):
        check_runner_options("onnxruntime", {"inference_rewrite": False})


def test_bf16_within_its_tolerance(tiny) -> None:
    model, video, _, _ = tiny
    with torch.inference_mode():
        ref = model(video)
        got = served_model(model, torch.bfloat16)(video.bfloat16())
    assert_close(got, ref, "bf16 logits", "bf16")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_folds_once_from_the_fp32_parameters(tiny, dtype) -> None:
    """Served in bf16/fp16, every folded weight and bias is the fp32 fold rounded once: folding the
    parameters and statistics after rounding them to the low precision rounds twice (and differs)."""
    model = tiny[0]
    served = served_model(model, dtype)
    reference = served_model(model, torch.float32)  # the fold in fp32, not yet rounded
    convs = {n: m for n, m in served.named_modules() if isinstance(m, InferenceConv3d)}
    want = {n: m for n, m in reference.named_modules() if isinstance(m, InferenceConv3d)}
    assert convs and set(convs) == set(want)
    for name, conv in convs.items():
        assert conv.weight.dtype == dtype
        assert torch.equal(conv.weight, want[name].weight.to(dtype)), name
        if want[name].bias is not None:
            assert torch.equal(conv.bias, want[name].bias.to(dtype)), name
        if conv.kind is not None:
            assert conv.weight_view().dtype == dtype and conv.weight_view()._base is conv.weight  # views of the cast weight
    # rounding first, then folding, gives other weights somewhere: the test above can tell the two apart
    twice = copy.deepcopy(model).to(dtype).eval()
    prepare_for_inference(twice)
    assert any(not torch.equal(dict(twice.named_modules())[n].weight, c.weight) for n, c in convs.items())


def test_a_rewritten_model_pickles_and_copies_after_running(tiny) -> None:
    model, video, _, _ = tiny
    served = served_model(model, torch.float32)
    with torch.inference_mode():
        ref = served(video)
        for again in (pickle.loads(pickle.dumps(served)), copy.deepcopy(served)):
            assert_close(again(video), ref, "copied model")


def test_threads_share_the_rewritten_model(tiny) -> None:
    """The fold's run-time check is per thread: concurrent calls on one served model do not trip it."""
    model, video, _, _ = tiny
    served = served_model(model, torch.float32)
    with torch.inference_mode():
        ref = served(video)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                for _ in range(3):
                    assert_close(served(video), ref, "threaded logits")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("backbone", ["tpn50_tiny", "r2plus1d_tiny"])
def test_other_backbones_end_to_end(backbone: str) -> None:
    """The rewrite walks any module tree: the other families' SFC logits, attention and clip logits."""
    from sfc_deploy.models import create_model, get_config

    torch.manual_seed(0)
    config = get_config(backbone)
    model = randomise_batchnorm(create_model(config, tau=2.0)).eval()
    rewritten = copy.deepcopy(model)
    assert prepare_for_inference(rewritten)["batchnorm_folded"] > 0
    video = torch.randn(1, 3, 16, 32, 40)
    clip = video[:, :, : config.frames, :32, :32].contiguous()
    with torch.inference_mode():
        for i, (want, got) in enumerate(zip(model.forward_with_attention(video), rewritten.forward_with_attention(video))):
            assert_close(got, want, f"{backbone} SFC output {i}")
        assert_close(rewritten.backbone(clip), model.backbone(clip), f"{backbone} clip logits")
