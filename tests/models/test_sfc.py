import pytest
import torch

import sfc_deploy
from sfc_deploy.errors import CheckpointError, ConfigError
from sfc_deploy.models import SFC, SFCConfig, compressed_length, parse_tau, save_sfc_checkpoint


@pytest.mark.parametrize(("t", "tau", "k"), [(36, 1, 36), (36, 4 / 3, 27), (36, 2, 18), (36, 4, 9), (7, 2, 4), (3, 8, 1)])
def test_compressed_length_rounds_half_up(t, tau, k):
    assert compressed_length(t, tau) == k


def test_tau_parsing_accepts_fractions_and_refuses_below_one():
    assert parse_tau("4/3") == pytest.approx(4 / 3)
    with pytest.raises(ConfigError, match="tau must be >= 1"):
        SFCConfig(channels=8, tau=0.5)
    with pytest.raises(ConfigError, match="number >= 1"):
        parse_tau("two")


@pytest.mark.parametrize("pool", ["topk", "avg", "max"])
@pytest.mark.parametrize("kqv", ["abs", "head", "abs_all"])
def test_output_shapes_for_every_ablation(pool, kqv):
    sfc = SFC(SFCConfig(channels=16, tau=2, pool=pool, kqv=kqv)).eval()
    f = torch.randn(2, 16, 10, 8, 10)
    out, m = sfc(f, return_attention=True)
    h, w = (4, 5) if kqv == "abs_all" else (8, 10)
    assert out.shape == (2, 16, 5, h, w)
    assert m.shape == (2, 5, 10) and m.dtype == torch.float32
    torch.testing.assert_close(m.sum(-1), torch.ones(2, 5))


@pytest.mark.parametrize(("kernel", "extra"), [("3x3x3", 27), ("3x1x1", 3), ("1x1x1", 1)])
def test_theta_kernel_sets_theta_size(kernel, extra):
    sfc = SFC(SFCConfig(channels=8, theta_kernel=kernel))
    assert sfc.theta_q.weight.shape == (8, 8, *map(int, kernel.split("x")))
    assert sfc.theta_q.weight.numel() == 8 * 8 * extra


def test_output_is_a_convex_mix_of_head_features():
    """v = F_head untouched: each output step is a weighted average of the input steps."""
    sfc = SFC(SFCConfig(channels=8, tau=2)).eval()
    f = torch.randn(1, 8, 6, 4, 4)
    out, m = sfc(f, return_attention=True)
    expected = torch.einsum("nkt,ncthw->nckhw", m, f)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_softmax_runs_in_fp32_for_half_inputs():
    sfc = SFC(SFCConfig(channels=8, tau=2)).eval().to(torch.bfloat16)
    out, m = sfc(torch.randn(1, 8, 6, 4, 4, dtype=torch.bfloat16), return_attention=True)
    assert out.dtype == torch.bfloat16 and m.dtype == torch.float32


def test_positional_prior_starts_as_stride_tau_subsampling():
    sfc = SFC(SFCConfig(channels=8, tau=4, prior=True)).eval()
    with torch.no_grad():
        for conv in (sfc.theta_q, sfc.theta_k):
            conv.weight.zero_()
            conv.bias.zero_()
        _, m = sfc(torch.randn(1, 8, 16, 4, 4), return_attention=True)
    # centres c(t') = (t' + 0.5) * 4 - 0.5 = 1.5, 5.5, 9.5, 13.5: each output step averages the
    # stride-4 window it stands for.
    top2 = m[0].topk(2, dim=-1).indices.sort(-1).values.tolist()
    assert top2 == [[1, 2], [5, 6], [9, 10], [13, 14]]
    windows = torch.stack([m[0, j, 4 * j : 4 * j + 4].sum() for j in range(4)])
    assert (windows > 0.95).all()


def test_chunked_head_is_identical_to_whole_head():
    model = sfc_deploy.create_model("slow8x8_tiny", num_classes=3)
    video = torch.randn(1, 3, 13, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(model.head(video, chunk=4), model.head(video), rtol=0, atol=0)


def test_training_updates_only_sfc_and_keeps_bn_frozen():
    torch.manual_seed(0)
    model = sfc_deploy.create_model("slow8x8_tiny", num_classes=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 8, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("sfc.") for k in changed)
    assert not model.backbone.training and model.sfc.training


def test_sfc_checkpoint_round_trip_and_refusal(tmp_path):
    model = sfc_deploy.create_model("slow8x8_tiny", num_classes=3, tau=4, pool="max")
    path = save_sfc_checkpoint(model, tmp_path / "sfc.safetensors")
    again = sfc_deploy.create_model("slow8x8_tiny", num_classes=3, sfc_checkpoint=path)
    assert again.sfc.config == model.sfc.config
    for a, b in zip(model.sfc.state_dict().values(), again.sfc.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="trained for backbone 'slow8x8_tiny' \\(3 classes\\)"):
        sfc_deploy.create_model("slow8x8_tiny", num_classes=5, sfc_checkpoint=path)
    with pytest.raises(CheckpointError, match="does not exist"):
        sfc_deploy.create_model("slow8x8_tiny", sfc_checkpoint=tmp_path / "nope.safetensors")


def test_sfc_exports_with_a_dynamic_time_axis():
    sfc = SFC(SFCConfig(channels=8, tau=2)).eval()
    t = torch.export.Dim("t", min=4, max=1024)
    ep = torch.export.export(sfc, (torch.randn(1, 8, 12, 4, 4),), dynamic_shapes={"f_head": {2: t}})
    f = torch.randn(1, 8, 21, 4, 4)
    torch.testing.assert_close(ep.module()(f), sfc(f))
    assert ep.module()(f).shape[2] == 11
