"""SFC.forward_streamed equals SFC.forward (fp32 tolerance of verify), and holds no full-length tensor."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sfc_deploy.errors import ConfigError
from sfc_deploy.models import SFC, SFCConfig
from sfc_deploy.runtime import Deployment
from sfc_deploy.verify.tolerances import compare


def _assert_same(got: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> None:
    for name, g, r in zip(("output", "attention"), got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        stats = compare(g, r, "fp32")
        assert stats["passed"], (name, stats)


def _sfc(**config) -> SFC:
    torch.manual_seed(0)
    sfc = SFC(SFCConfig(channels=8, **config)).eval()
    if sfc.prior_gain is not None:
        with torch.no_grad():
            sfc.prior_gain.fill_(0.7)  # a prior that matters next to the random logits
    return sfc


@pytest.mark.parametrize("pool", ["topk", "avg", "max"])
@pytest.mark.parametrize("kqv", ["abs", "head", "abs_all"])
@pytest.mark.parametrize("prior", [False, True])
def test_streamed_equals_unstreamed_for_every_variant(pool: str, kqv: str, prior: bool) -> None:
    sfc = _sfc(pool=pool, kqv=kqv, prior=prior, tau=2)
    torch.manual_seed(1)
    for t in (1, 5, 12):
        f = torch.randn(2, 8, t, 6, 7)
        with torch.no_grad():
            ref = sfc(f, return_attention=True)
            for chunk in (1, 4, 5, 16):  # 4 and 5 do not divide 5 or 12; 16 is one chunk
                _assert_same(sfc.forward_streamed(f, chunk=chunk, return_attention=True), ref)


@pytest.mark.parametrize("theta_kernel", ["3x3x3", "1x1x1"])
@pytest.mark.parametrize("tau", [4 / 3, 4])
def test_streamed_equals_unstreamed_for_other_theta_kernels_and_taus(theta_kernel: str, tau: float) -> None:
    sfc = _sfc(theta_kernel=theta_kernel, tau=tau)
    f = torch.randn(1, 8, 11, 6, 6)
    with torch.no_grad():
        _assert_same(sfc.forward_streamed(f, chunk=3, return_attention=True), sfc(f, return_attention=True))


@pytest.mark.parametrize("kqv", ["abs", "head"])
def test_topk_ties_go_to_the_lower_index_across_chunks(kqv: str) -> None:
    """Constant and few-valued inputs make TopK all ties; the chunked pool keeps the same frames."""
    sfc = _sfc(kqv=kqv, tau=2)
    torch.manual_seed(2)
    few_values = torch.randint(0, 3, (1, 8, 9, 4, 4)).float()
    for f in (torch.ones(1, 8, 9, 4, 4), few_values):
        with torch.no_grad():
            ref = sfc(f, return_attention=True)
            for chunk in (2, 4):
                _assert_same(sfc.forward_streamed(f, chunk=chunk, return_attention=True), ref)


def test_the_pooled_query_is_the_ops_selection_bit_for_bit() -> None:
    """kqv=head with an identity theta_q: the query is the pooled F_head itself, so the streamed
    pool must pick exactly the frames the whole-axis op picks (ties included)."""
    from sfc_deploy.models.sfc_stream import _query

    sfc = _sfc(kqv="head", tau=2, theta_kernel="1x1x1")
    with torch.no_grad():
        sfc.theta_q.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1, 1))
        sfc.theta_q.bias.zero_()
    torch.manual_seed(3)
    f = torch.randint(0, 4, (2, 8, 13, 3, 5)).float()
    k = 7
    expected = torch.ops.sfc.topk_temporal_pool(f, k).transpose(1, 2).flatten(2)
    for chunk in (1, 3, 13):
        got = _query(sfc.stream_pieces(), list(f.split(chunk, dim=2)), k, chunk)
        assert torch.equal(got, expected)


def test_chunks_may_come_from_a_generator_or_a_callable() -> None:
    sfc = _sfc(tau=2)
    f = torch.randn(1, 8, 10, 6, 6)
    with torch.no_grad():
        ref = sfc(f, return_attention=True)
        uneven = lambda: (f[:, :, a:b] for a, b in ((0, 3), (3, 4), (4, 10)))  # noqa: E731
        _assert_same(sfc.forward_streamed(uneven(), chunk=4, return_attention=True), ref)
        _assert_same(sfc.forward_streamed(uneven, chunk=4, return_attention=True), ref)
        assert sfc.forward_streamed(f, chunk=4).shape == ref[0].shape


def test_refusals_are_one_line_config_errors() -> None:
    sfc = _sfc(tau=2)
    f = torch.randn(1, 8, 4, 4, 4)
    for bad in (0, 2.5):
        with pytest.raises(ConfigError, match="chunk must be a whole number"):
            sfc.forward_streamed(f, chunk=bad)
    with pytest.raises(ConfigError, match="no head features"):
        sfc.forward_streamed(iter(()), chunk=2)
    with pytest.raises(ConfigError, match="eval mode"):
        sfc.train().forward_streamed(f, chunk=2)


class _LargestTensor(TorchDispatchMode):
    """The largest tensor any op returns while active (elements)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


def test_no_full_length_intermediate_is_created() -> None:
    """The whole-video forward creates F_head-sized intermediates; streamed, nothing larger than the
    output (k of T frames) exists beyond the chunks, whatever T is."""
    sfc = _sfc(tau=4)
    t, chunk = 64, 4
    f_head_numel = 8 * t * 6 * 6
    chunks = [torch.randn(1, 8, chunk, 6, 6) for _ in range(t // chunk)]
    with torch.no_grad():
        whole = _LargestTensor()
        with whole:
            sfc(torch.cat(chunks, 2))
        streamed = _LargestTensor()
        with streamed:
            out = sfc.forward_streamed(iter(chunks), chunk=chunk)
    assert whole.largest >= f_head_numel
    assert streamed.largest == out.numel() == f_head_numel // 4


def test_pytorch_deployment_streams_head_and_sfc_together(sfc_tiny) -> None:
    model = sfc_tiny.model()
    torch.manual_seed(4)
    frames = torch.randn(1, 3, 11, *sfc_tiny.size)
    with torch.no_grad():
        logits, attention = model.forward_with_attention(frames)
    with Deployment.from_model(model, head_chunk=3, stream_sfc_from=0) as dep:  # head chunks 3, 3, 3, 2
        pipe = dep.sfc_pipeline()
        assert pipe.streams_sfc and pipe.streams_sfc_at(1)
        f_head_numel = math.prod(model.head(frames).shape)
        probe = _LargestTensor()
        with probe:
            got = dep.predict_with_attention(frames)
        _assert_same(got, (logits, attention))
        assert probe.largest < f_head_numel  # the full F_head never exists as one tensor
    with Deployment.from_model(model, head_chunk=3) as dep:  # the default: SFC streams from 72 sampled frames
        assert not dep.sfc_pipeline().streams_sfc_at(11)
        probe = _LargestTensor()
        with probe:
            _assert_same(dep.predict_with_attention(frames), (logits, attention))
        assert probe.largest >= f_head_numel  # the head chunks were joined for the whole-video SFC
    with pytest.raises(ConfigError, match="--stream-sfc-from"):
        Deployment.from_model(model, head_chunk=3, stream_sfc_from=-1)
    with Deployment.from_model(model) as dep:  # no head_chunk: the whole-video path
        assert not dep.sfc_pipeline().streams_sfc



def _copied_elements(fn) -> tuple[torch.Tensor, int]:
    """fn()'s result and the largest tensor (in elements) any aten::copy_ wrote while it ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        out = fn()
    sizes = [math.prod(e.input_shapes[0]) for e in prof.events() if e.name == "aten::copy_" and e.input_shapes]
    return out, max(sizes, default=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_is_applied_without_copying_the_value_in_either_layout(channels_last: bool) -> None:
    # channels-last-3d is the PyTorch runtime's CPU layout: M applied as C batches of (T, H*W) matrices
    # copied every batch out of NTHWC memory (512 copies, 9% of slow8x8's SFC on the CPU)
    sfc = _sfc(tau=2)
    torch.manual_seed(2)
    f = torch.randn(2, 8, 12, 6, 7)
    if channels_last:
        f = f.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        m, value = sfc.attention(f)
        ref = torch.einsum("nkt,ncthw->nckhw", m.double(), value.double())
        whole, whole_copied = _copied_elements(lambda: sfc(f))
        streamed, streamed_copied = _copied_elements(lambda: sfc.forward_streamed(f, chunk=5))
    for out, copied in ((whole, whole_copied), (streamed, streamed_copied)):
        assert compare(out, ref.float(), "fp32")["passed"]
        assert out.is_contiguous(memory_format=torch.channels_last_3d) == channels_last  # the value's layout kept
    assert whole_copied < value.numel()  # the matrix product read the value where it lies


def test_head_chunks_of_mixed_layouts_give_the_same_output() -> None:
    sfc = _sfc(tau=2, kqv="head")  # the value is the head chunks themselves, as they come
    torch.manual_seed(3)
    f = torch.randn(2, 8, 12, 6, 7)
    last = f.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        ref = sfc(f, return_attention=True)
        for chunks in ([last[:, :, :5], f[:, :, 5:]], [f[:, :, :5], last[:, :, 5:]]):
            _assert_same(sfc.forward_streamed(chunks, chunk=5, return_attention=True), ref)
