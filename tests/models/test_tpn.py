"""tpn50: TPN (slow-only R50 8x8 + temporal pyramid neck + TPNHead) in mmaction2's layout.

The oracle is independent of the package: :func:`mmaction2_tpn_state` writes a checkpoint's keys and
shapes from mmaction2's ``tpn_slowonly_r50`` config (ResNet3dSlowOnly, TPN neck with its auxiliary
head, TPNHead) and :func:`mmaction2_tpn_forward` runs those weights with ``torch.nn.functional``
alone, following mmaction2's ``necks/tpn.py`` and ``heads/tpn_head.py``. Importing the file and
running the package's model must give the same logits. :func:`tpn_repo_state` renames those weights
as the decisionforce/TPN repository names them, so its checkpoints meet the same oracle.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

import sfc_deploy
from sfc_deploy.errors import CheckpointError
from sfc_deploy.models import get_config
from sfc_deploy.models.checkpoint import load_canonical_state_dict, save_in_layout

TINY = "tpn50_tiny"
CLASSES = 6
MM_MEAN, MM_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


# ------------------------------------------------------------------------------------ the oracle


def mmaction2_tpn_shapes(cfg, classes: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of an mmaction2 TPN-slowonly checkpoint (``state_dict``), aux head included."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_module(prefix, cout, cin, kernel, *, bn=True):
        shapes[f"{prefix}.conv.weight"] = (cout, cin, *kernel)
        if bn:
            for p in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.bn.{p}"] = (cout,)
            shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    conv_module("backbone.conv1", cfg.stem_channels, 3, (1, 7, 7))
    cin = cfg.stem_channels
    for layer, (mid, out, depth, kt) in enumerate(zip(cfg.mids, cfg.widths, cfg.depths, cfg.temporal_kernels), start=1):
        for j in range(depth):
            p = f"backbone.layer{layer}.{j}"
            conv_module(f"{p}.conv1", mid, cin, (kt, 1, 1))  # inflate (0, 0, 1, 1), style 3x1x1
            conv_module(f"{p}.conv2", mid, mid, (1, 3, 3))
            conv_module(f"{p}.conv3", out, mid, (1, 1, 1))
            if j == 0:
                conv_module(f"{p}.downsample", out, cin, (1, 1, 1))
            cin = out
    c4, c5 = cfg.widths[2], cfg.widths[3]
    # neck=dict(type='TPN', in_channels=(c4, c5), out_channels=c4, spatial_modulation out c5, level fusion
    # mid (c4, c4) out c5, temporal/level-fusion convs groups=32, aux_head on res4)
    for step in range(int(math.log2(c5 // c4))):
        conv_module(f"neck.spatial_modulation.spatial_modulation.0.{step}", c4 * 2 ** (step + 1), c4 * 2**step, (1, 3, 3))
    for i in range(2):
        conv_module(f"neck.temporal_modulation_ops.{i}.conv", c4, c5 // 32, (3, 1, 1), bn=False)
    conv_module("neck.downsample_ops.0.conv", c4, c4, (3, 1, 1), bn=False)
    for fusion in ("level_fusion_1", "level_fusion_2"):
        for i in range(2):
            conv_module(f"neck.{fusion}.downsamples.{i}.conv", c4, c4 // 32, (1, 1, 1))
        conv_module(f"neck.{fusion}.fusion_conv", c5, 2 * c4, (1, 1, 1))
    conv_module("neck.pyramid_fusion", c5, 2 * c5, (1, 1, 1))
    conv_module("neck.aux_head.conv", 2 * c4, c4, (1, 3, 3))
    shapes["neck.aux_head.fc.weight"], shapes["neck.aux_head.fc.bias"] = (classes, 2 * c4), (classes,)
    shapes["cls_head.fc_cls.weight"], shapes["cls_head.fc_cls.bias"] = (classes, c5), (classes,)
    return shapes


def mmaction2_tpn_state(cfg, classes: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in those shapes, scaled so activations neither vanish nor explode."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in mmaction2_tpn_shapes(cfg, classes).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith(("running_var", ".bn.weight")):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("running_mean", ".bias")):
            state[key] = torch.randn(shape, generator=g) * 0.1
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
    state["data_preprocessor.mean"] = torch.tensor(MM_MEAN).view(3, 1, 1, 1)
    state["data_preprocessor.std"] = torch.tensor(MM_STD).view(3, 1, 1, 1)
    return state


def mmaction2_tpn_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, *, frames: int) -> torch.Tensor:
    """mmaction2's Recognizer3D(ResNet3dSlowOnly, TPN, TPNHead) at test time, from its own keys."""

    def cm(p, x, *, stride=1, padding=0, groups=1, bn=True, relu=True):
        x = F.conv3d(x, sd[f"{p}.conv.weight"], stride=stride, padding=padding, groups=groups)
        if bn:
            x = F.batch_norm(x, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                             sd[f"{p}.bn.bias"], False, 0.0, 1e-5)
        return F.relu(x) if relu else x

    x = cm("backbone.conv1", x, stride=(1, 2, 2), padding=(0, 3, 3))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    feats = []
    for layer in range(1, 5):
        j = 0
        while f"backbone.layer{layer}.{j}.conv1.conv.weight" in sd:
            p = f"backbone.layer{layer}.{j}"
            s = 2 if layer > 1 and j == 0 else 1
            kt = sd[f"{p}.conv1.conv.weight"].shape[2]
            y = cm(f"{p}.conv1", x, padding=(kt // 2, 0, 0))
            y = cm(f"{p}.conv2", y, stride=(1, s, s), padding=(0, 1, 1))
            y = cm(f"{p}.conv3", y, relu=False)
            identity = cm(f"{p}.downsample", x, stride=(1, s, s), relu=False) if j == 0 else x
            x = F.relu(y + identity)
            j += 1
        feats.append(x)
    levels = [cm("neck.spatial_modulation.spatial_modulation.0.0", feats[2], stride=(1, 2, 2), padding=(0, 1, 1)), feats[3]]
    tm = [
        F.max_pool3d(cm(f"neck.temporal_modulation_ops.{i}.conv", v, padding=(1, 0, 0), groups=32, bn=False, relu=False),
                     (frames, 1, 1), (frames, 1, 1), ceil_mode=True)
        for i, v in enumerate(levels)
    ]
    outs = [tm[0] + tm[1], tm[1]]  # top-down, nn.Upsample(scale_factor=1)

    def level_fusion(name, xs):
        ys = [cm(f"neck.{name}.downsamples.{i}.conv", v, groups=32) for i, v in enumerate(xs)]
        return cm(f"neck.{name}.fusion_conv", torch.cat(ys, 1))

    top_down = level_fusion("level_fusion_1", outs)
    outs[1] = outs[1] + cm("neck.downsample_ops.0.conv", outs[0], padding=(1, 0, 0), bn=False, relu=False)  # cascade
    bottom_up = level_fusion("level_fusion_2", outs)
    y = cm("neck.pyramid_fusion", torch.cat([top_down, bottom_up], 1))
    # TPNHead, fcn_test: AdaptiveAvgPool3d(1) then fc_cls as a 1x1x1 conv
    return F.linear(y.mean(dim=(2, 3, 4)), sd["cls_head.fc_cls.weight"], sd["cls_head.fc_cls.bias"])


@pytest.fixture(scope="module")
def mm_checkpoint(tmp_path_factory) -> tuple:
    """An mmaction2 TPN checkpoint of tpn50_tiny's shapes on disk, and its state dict."""
    state = mmaction2_tpn_state(get_config(TINY), CLASSES)
    path = tmp_path_factory.mktemp("tpn") / "tpn_slowonly_tiny.pth"
    torch.save({"state_dict": state, "meta": {"dataset_meta": {"classes": [f"c{i}" for i in range(CLASSES)]}}}, path)
    return path, state


def tpn_repo_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under decisionforce/TPN's names (``mmaction/models/tenons``), written from that
    repository's modules, not from the package's table.

    ``ResNet_SlowFast`` holds bare Conv3d/BatchNorm3d (``conv1``/``bn1``, ``layerN.j.convK``/``bnK``,
    ``downsample.0``/``.1``); the ``TPN`` neck sits under ``necks.``, with bare convs in
    ``TemporalModulation`` and ``Downampling`` (``.conv``, ``.norm``), ``nn.Sequential`` fusion convs
    (``.0``/``.1``), ``downsampling_ops``, ``pyramid_fusion_op`` and ``AuxHead.convs``. Its forward fuses
    the top-down flow with ``level_fusion_op2`` and the (cascaded) bottom-up flow with ``level_fusion_op``:
    mmaction2's ``level_fusion_1`` and ``level_fusion_2``. No ``data_preprocessor``: it normalises in
    its data pipeline.
    """
    rules = (
        (r"backbone\.conv1\.conv\.", "backbone.conv1."), (r"backbone\.conv1\.bn\.", "backbone.bn1."),
        (r"(layer\d\.\d+)\.conv(\d)\.conv\.", r"\1.conv\2."), (r"(layer\d\.\d+)\.conv(\d)\.bn\.", r"\1.bn\2."),
        (r"\.downsample\.conv\.", ".downsample.0."), (r"\.downsample\.bn\.", ".downsample.1."),
        (r"neck\.aux_head\.conv\.", "neck.aux_head.convs."),
        (r"_ops\.(\d)\.conv\.conv\.", r"_ops.\1.conv."), (r"neck\.downsample_ops\.", "neck.downsampling_ops."),
        (r"\.downsamples\.(\d)\.conv\.conv\.", r".ops.\1.conv."), (r"\.downsamples\.(\d)\.conv\.bn\.", r".ops.\1.norm."),
        (r"\.level_fusion_1\.", ".level_fusion_op2."), (r"\.level_fusion_2\.", ".level_fusion_op."),
        (r"(fusion_conv|pyramid_fusion)\.conv\.", r"\1.0."), (r"(fusion_conv|pyramid_fusion)\.bn\.", r"\1.1."),
        (r"neck\.pyramid_fusion\.", "neck.pyramid_fusion_op."), (r"^neck\.", "necks."),
    )  # fmt: skip
    out = {}
    for key, value in sd.items():
        if not key.startswith("data_preprocessor."):
            for pattern, replacement in rules:
                key = re.sub(pattern, replacement, key)
            out[key] = value
    return out


@pytest.fixture(scope="module")
def tpn_repo_checkpoint(tmp_path_factory, mm_checkpoint):
    """The mmaction2 checkpoint's weights as a decisionforce/TPN ``r50f8s8`` TPN file of tpn50_tiny's shapes."""
    path = tmp_path_factory.mktemp("tpn_repo") / "tpn_r50f8s8_tiny.pth"
    torch.save({"state_dict": tpn_repo_state(mm_checkpoint[1])}, path)
    return path


# ---------------------------------------------------------------------------------------- tests


def test_registered_with_mmaction2_preprocessing():
    assert {"tpn50", "tpn50_tiny"} <= set(sfc_deploy.list_backbones())
    cfg = get_config("tpn50")
    assert (cfg.family, cfg.frames, cfg.stride, cfg.widths) == ("tpn", 8, 8, (256, 512, 1024, 2048))
    pre = cfg.preprocess
    assert (pre.convention, pre.scale, pre.mean, pre.std) == ("mmaction2", 1.0, MM_MEAN, MM_STD)
    assert (pre.short_side, pre.crop) == (256, 256)  # mmaction2's test pipeline: Resize(-1, 256), ThreeCrop(256)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_full_size_module_has_mmaction2s_keys_and_shapes():
    """The tpn50 neck and classifier are mmaction2's, tensor for tensor (aux head aside); the backbone
    is slow-only R50 (its mapping has its own tests)."""
    cfg = get_config("tpn50")
    with torch.device("meta"):
        model = sfc_deploy.create_backbone("tpn50")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    theirs = {k: v for k, v in mmaction2_tpn_shapes(cfg, 400).items() if not k.endswith("num_batches_tracked")}
    neck_theirs = {k: v for k, v in theirs.items() if k.startswith("neck.") and not k.startswith("neck.aux_head.")}
    assert {k: v for k, v in ours.items() if k.startswith("neck.")} == neck_theirs
    assert ours["fc.weight"] == theirs["cls_head.fc_cls.weight"] == (400, 2048)
    neck_params = sum(math.prod(v) for k, v in neck_theirs.items() if not k.endswith(("running_mean", "running_var")))
    assert sum(p.numel() for p in model.parameters()) == 32_454_096 + neck_params == 71_800_272  # slow-only R50 + neck


@pytest.mark.parametrize("frames", [8, 5])
def test_imported_mmaction2_checkpoint_matches_mmaction2s_forward(mm_checkpoint, frames):
    """Import drops the aux head and the preprocessing buffers (recorded instead) and computes what
    mmaction2 computes, on a dense clip (8 frames: the temporal pool collapses time) and on a
    shorter time axis than the pool (what SFC's compressed features look like to the tail)."""
    path, state = mm_checkpoint
    model = sfc_deploy.create_backbone(TINY, checkpoint=path)
    assert model.config.num_classes == CLASSES and model.config.class_names[0] == "c0"
    assert model.config.preprocess.mean == MM_MEAN and model.config.preprocess.scale == 1.0
    x = torch.randn(2, 3, frames, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(x), mmaction2_tpn_forward(state, x, frames=8)
    assert want.abs().max() > 0.1  # the random weights keep the logits alive
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_import_drops_only_the_aux_head(mm_checkpoint):
    path, _ = mm_checkpoint
    state, meta = load_canonical_state_dict(path, backbone=TINY)
    assert meta["layout"] == "mmaction2"
    dropped = {k for k in meta["dropped"] if not k.endswith("num_batches_tracked")}
    assert dropped == {"data_preprocessor.mean", "data_preprocessor.std", "neck.aux_head.conv.conv.weight",
                       "neck.aux_head.conv.bn.weight", "neck.aux_head.conv.bn.bias", "neck.aux_head.conv.bn.running_mean",
                       "neck.aux_head.conv.bn.running_var", "neck.aux_head.fc.weight", "neck.aux_head.fc.bias"}
    assert "neck.pyramid_fusion.conv.weight" in state and "fc.weight" in state


@pytest.mark.parametrize("split", ["stem", "res2", "res3", "res4"])
def test_head_then_tail_is_the_whole_network(mm_checkpoint, split):
    model = sfc_deploy.create_backbone(TINY, checkpoint=mm_checkpoint[0])
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tail(model.forward_head(clip, split), split), model(clip), rtol=0, atol=0)


def test_sfc_model_runs_the_neck_on_the_compressed_features(mm_checkpoint):
    """SFC after res3 (the default): the tail (res4, res5, neck, head) runs on T/tau frames."""
    model = sfc_deploy.create_model(TINY, checkpoint=mm_checkpoint[0], tau=2.0)
    video = torch.randn(1, 3, 18, 64, 80)
    with torch.no_grad():
        f = model.head(video)
        out, attention = model.forward_with_attention(video)
        by_hand = model.backbone.forward_tail(model.sfc(f))
    assert f.shape == (1, 64, 18, 8, 10) and attention.shape == (1, 9, 18)
    torch.testing.assert_close(out, by_hand, rtol=0, atol=0)


def test_round_trip_through_save_in_layout(tmp_path, mm_checkpoint):
    model = sfc_deploy.create_backbone(TINY, checkpoint=mm_checkpoint[0])
    path = save_in_layout(model.state_dict(), tmp_path / "again.pth", "mmaction2", config=model.config)
    again = sfc_deploy.create_backbone(TINY, checkpoint=path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=0, atol=0)


def test_slow_only_checkpoint_as_tpn_names_the_closest_backbone(tmp_path):
    slow = sfc_deploy.create_backbone("slow8x8_tiny", num_classes=CLASSES)
    path = save_in_layout(slow.state_dict(), tmp_path / "slow.pth", "mmaction2")
    with pytest.raises(CheckpointError, match=r"keys missing \(neck\..*pass --backbone slow8x8_tiny"):
        sfc_deploy.create_backbone(TINY, checkpoint=path)


def test_tpn_checkpoint_as_slow_only_names_tpn(mm_checkpoint):
    with pytest.raises(CheckpointError, match=r"unexpected \(neck\..*pass --backbone tpn50_tiny"):
        sfc_deploy.create_backbone("slow8x8_tiny", checkpoint=mm_checkpoint[0])


def test_tpn_checkpoint_as_slow_only_fails_in_one_line_on_the_cli(mm_checkpoint, tmp_path, one_line_error):
    from typer.testing import CliRunner

    from sfc_deploy.cli import app

    result = CliRunner().invoke(app, ["convert", str(mm_checkpoint[0]), "-o", str(tmp_path / "x.safetensors"), "-b", "slow8x8_tiny"])
    one_line_error(result, "does not fit backbone slow8x8_tiny", "pass --backbone tpn50_tiny")
    assert not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------------ the TPN repo's checkpoints


def test_tpn_repo_checkpoint_matches_mmaction2s_forward(tpn_repo_checkpoint, mm_checkpoint):
    """A TPN-repo TPN checkpoint imports into tpn50 whole: ``necks.*`` lands on the neck, only the aux
    head is dropped, and the logits are mmaction2's for the same weights. The two level fusions have the
    same shapes, so a swapped pair would load too; only these logits tell."""
    raw = torch.load(tpn_repo_checkpoint, weights_only=True)["state_dict"]
    assert {"necks.level_fusion_op2.ops.1.norm.running_var", "necks.pyramid_fusion_op.1.bias",
            "necks.temporal_modulation_ops.1.conv.weight", "necks.aux_head.convs.conv.weight"} <= set(raw)
    state, meta = load_canonical_state_dict(tpn_repo_checkpoint, backbone=TINY)
    assert meta["layout"] == "tpn" and not any(k.startswith("necks.") for k in state)
    assert set(meta["dropped"]) == {k for k in raw if k.startswith("necks.aux_head.") or k.endswith("num_batches_tracked")}
    model = sfc_deploy.create_backbone(TINY, checkpoint=tpn_repo_checkpoint)
    x = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(x), mmaction2_tpn_forward(mm_checkpoint[1], x, frames=8)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_tpn_repo_layout_round_trips(tmp_path, mm_checkpoint):
    """tpn50 random weights -> the TPN repo's names (with an aux head, as its files have) -> tpn50:
    the same tensors and logits, and the file's neck names are the TPN repo's own."""
    model = sfc_deploy.create_backbone(TINY, checkpoint=mm_checkpoint[0])
    path = save_in_layout(model.state_dict(), tmp_path / "tpn.pth", "tpn", config=model.config)
    raw = torch.load(path, weights_only=True)["state_dict"]
    theirs = tpn_repo_state(mm_checkpoint[1])
    not_aux = lambda keys: {k for k in keys if not k.startswith("necks.aux_head.")}  # noqa: E731
    assert not_aux(raw) == not_aux(theirs) and any(k.startswith("necks.aux_head.") for k in raw)
    again = sfc_deploy.create_backbone(TINY, checkpoint=path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=0, atol=0)
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        ("missing", ["1 keys missing (neck.pyramid_fusion.conv.weight)"]),
        ("renamed", ["1 keys missing (neck.level_fusion_2.fusion_conv.conv.weight)",
                     "1 unexpected (necks.level_fusion_op.fusion_conv.conv.weight)"]),
        ("extra", ["1 unexpected (necks.temporal_modulation_ops.0.conv.bias)"]),
    ],
)  # fmt: skip
def test_tpn_repo_neck_key_wrong_or_missing_fails_in_one_line(
    tpn_repo_checkpoint, tmp_path, one_line_error, edit, fragments
):
    """A neck tensor absent, under a name the TPN repo does not use, or one tpn50 has no place for (a conv
    bias): the loader's usual one-line error, nothing written."""
    from typer.testing import CliRunner

    from sfc_deploy.cli import app

    state = torch.load(tpn_repo_checkpoint, weights_only=True)["state_dict"]
    if edit == "missing":
        del state["necks.pyramid_fusion_op.0.weight"]
    elif edit == "renamed":
        state["necks.level_fusion_op.fusion_conv.conv.weight"] = state.pop("necks.level_fusion_op.fusion_conv.0.weight")
    else:
        width = state["necks.temporal_modulation_ops.0.conv.weight"].shape[0]
        state["necks.temporal_modulation_ops.0.conv.bias"] = torch.zeros(width)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    out = tmp_path / "x.safetensors"
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "bad.pth"), "-o", str(out), "-b", TINY])
    one_line_error(result, "does not fit backbone tpn50_tiny", *fragments)
    assert not out.exists()
    with pytest.raises(CheckpointError, match=re.escape(fragments[0])):
        sfc_deploy.create_backbone(TINY, checkpoint=tmp_path / "bad.pth")


def test_tpn_repo_tpn_checkpoint_as_slow_only_names_tpn(tpn_repo_checkpoint):
    """Its neck is no longer dropped for a slow-only backbone: the classifier was trained on the neck's output."""
    with pytest.raises(CheckpointError, match=r"unexpected \(neck\..*pass --backbone tpn50_tiny"):
        sfc_deploy.create_backbone("slow8x8_tiny", checkpoint=tpn_repo_checkpoint)


# ---------------------------------------------------------------------------- Table 2 (info)


def test_info_reproduces_table2_where_the_paper_can_be_followed():
    """Paper Table 2, TPN-50 8x8: dense 1977 GMACs / 71.8M, SFC 359 GMACs / 85.7M (288 raw frames,
    256x312). Dense and both parameter counts reproduce within 3%; the SFC parameters only with SFC
    after res4 (an SFC module of res4's width, 14.2M, as 85.7 - 71.8 implies), so the paper row is
    keyed there. SFC GMACs do not reproduce: measured 341.3 after res4 (5% under 359) and 277.4 after
    res3 (the default split); both are pinned here."""
    import json

    from typer.testing import CliRunner

    from sfc_deploy.bench.flops import sfc_cost
    from sfc_deploy.cli import app

    result = CliRunner().invoke(app, ["info", "-b", "tpn50", "--split", "res4", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    dense, sfc = report["dense"], report["sfc"]
    assert (dense["paper_gmacs"], sfc["paper_gmacs"], sfc["paper_params_m"]) == (1977, 359, 85.7)
    assert abs(dense["gmacs"] / 1977 - 1) < 0.03 and abs(dense["params_m"] / 71.8 - 1) < 0.03
    assert abs(sfc["params_m"] / 85.7 - 1) < 0.03
    assert dense["gmacs"] == pytest.approx(1970.0, abs=0.1)
    assert sfc["gmacs"] == pytest.approx(341.3, abs=0.1) and sfc["params_m"] == pytest.approx(85.968, abs=0.001)
    with torch.device("meta"):
        res3 = sfc_deploy.create_model("tpn50", split="res3", tau=2.0)
    cost = sfc_cost(res3, frames=36, size=(256, 312))
    assert cost.gmacs == pytest.approx(277.4, abs=0.1) and cost.params_m == pytest.approx(75.345, abs=0.001)
    assert cost.by_part["tail"] == pytest.approx(132.4, abs=0.1)  # res4, res5 and the neck on 18 frames
