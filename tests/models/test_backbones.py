import pytest
import torch

import sfc_deploy
from sfc_deploy.errors import ConfigError, UnknownBackboneError
from sfc_deploy.models import get_config
from sfc_deploy.runtime import Deployment


def test_registry_lists_paper_backbones_and_tiny():
    assert {"slow8x8", "slow16x4", "slow32x2", "slow8x8_tiny"} <= set(sfc_deploy.list_backbones())


def test_unknown_backbone_suggests_close_matches():
    with pytest.raises(UnknownBackboneError, match="did you mean slow8x8"):
        sfc_deploy.create_backbone("slow8x9")


@pytest.mark.parametrize("name", ["slow8x8", "slow16x4", "slow32x2"])
def test_full_size_parameter_count_matches_spec(name):
    with torch.device("meta"):
        model = sfc_deploy.create_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == 32_454_096


def test_config_carries_clip_and_preprocessing():
    cfg = get_config("slow16x4")
    assert (cfg.frames, cfg.stride, cfg.clip_span) == (16, 4, 64)
    assert cfg.preprocess.mean == (0.45, 0.45, 0.45) and cfg.preprocess.crop == 256
    assert cfg.stage_channels("res3") == 512 and cfg.stage_channels("stem") == 64
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_head_receptive_field_is_one_frame_up_to_res3():
    cfg = get_config("slow8x8")
    assert [cfg.head_temporal_receptive_field(s) for s in ("stem", "res2", "res3", "res4")] == [1, 1, 1, 13]


@pytest.mark.parametrize("split", ["stem", "res2", "res3", "res4"])
def test_head_then_tail_is_the_whole_network(split):
    torch.manual_seed(0)
    model = sfc_deploy.create_backbone("slow8x8_tiny", num_classes=5)
    clip = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        whole = model(clip)
        split_out = model.forward_tail(model.forward_head(clip, split), split)
    assert whole.shape == (2, 5)
    torch.testing.assert_close(split_out, whole, rtol=0, atol=0)


def test_head_output_shape_at_paper_split():
    model = sfc_deploy.create_backbone("slow8x8_tiny")
    f = model.forward_head(torch.randn(1, 3, 6, 64, 78))
    assert f.shape == (1, 64, 6, 8, 10)  # H/8, ceil(W/8)


def test_unknown_split_is_refused():
    with pytest.raises(ConfigError, match="expected one of stem, res2, res3, res4"):
        sfc_deploy.create_backbone("slow8x8_tiny", split="res5")


def test_dense_baseline_averages_thirty_crops():
    torch.manual_seed(0)
    sfc_model = sfc_deploy.create_model("slow8x8_tiny", num_classes=4)
    model, cfg = sfc_model.backbone, sfc_model.config
    video = torch.randn(1, 3, 80, cfg.preprocess.crop, cfg.preprocess.crop + 40)
    with Deployment.from_model(sfc_model, dense_batch=7) as dep:  # the one dense path
        out = dep.predict_dense(video)
    # Recompute clip 3, crop 2 by hand and check it is part of the average.
    from sfc_deploy.data.crops import clip_starts

    starts = clip_starts(80, 64, 10)
    assert starts == [0, 2, 4, 5, 7, 9, 11, 12, 14, 16]
    crops = []
    with torch.no_grad():
        for s in starts:
            frames = video[:, :, s : s + 64 : 8]
            for left in (0, 20, 40):
                crops.append(model(frames[..., :, left : left + 256]))
    torch.testing.assert_close(out, torch.stack(crops).mean(0), rtol=1e-5, atol=1e-5)


def test_bottleneck_adds_its_residual_in_place_with_the_same_values_and_gradients():
    """The sum lands in bn_c's output (benchmarks/eager_cpu/residual_add_ab.md): no fresh tensor per
    block, and the same forward and backward as relu(bn_c(...) + identity)."""
    from sfc_deploy.models.resnet3d import Bottleneck

    torch.manual_seed(0)
    block = Bottleneck(8, 4, 16, spatial_stride=2, temporal_kernel=3).train()
    x = torch.randn(2, 8, 4, 6, 6, requires_grad=True)

    def out_of_place(b, inp):  # written out, not through branches(): the test does not trust the code it checks
        y = b.relu(b.bn_a(b.conv_a(inp)))
        y = b.relu(b.bn_b(b.conv_b(y)))
        return torch.relu(b.bn_c(b.conv_c(y)) + b.shortcut_bn(b.shortcut_conv(inp)))

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        got = block(x)
    names = {e.name for e in prof.events()}
    assert "aten::add_" in names and "aten::add" not in names
    got.square().sum().backward()
    grads = [p.grad.clone() for p in (x, *block.parameters())]
    x.grad = None
    block.zero_grad()
    want = out_of_place(block, x)  # the BatchNorm statistics move twice; each pass uses its own batch's
    want.square().sum().backward()
    torch.testing.assert_close(got, want)
    for g, p in zip(grads, (x, *block.parameters())):
        torch.testing.assert_close(g, p.grad)
