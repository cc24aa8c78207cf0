"""Checkpoint import: every layout round-trips to the same logits, and every failure says why in one line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from sfc_deploy.errors import CheckpointError
from sfc_deploy.models.checkpoint import (
    LAYOUTS,
    convert,
    detect_layout,
    load_canonical_state_dict,
    load_into,
    save_in_layout,
)
from sfc_deploy.models.config import Preprocess
from sfc_deploy.models.factory import create_backbone
from sfc_deploy.models.registry import get_config
from sfc_deploy.models.resnet3d import ResNet3d

NAME = "slow8x8_tiny"
CLASSES = 7  # not the config's 400: proves the class count comes from the classifier
SUFFIX = {"pytorchvideo": ".pyth", "pyslowfast": ".pyth", "mmaction2": ".pth", "tpn": ".pth", "plain": ".pt"}
# Raw keys each layout's file must hold, as the real toolboxes name them.
RAW_KEYS = {
    "pytorchvideo": [
        "blocks.0.conv.weight", "blocks.0.norm.running_var", "blocks.1.res_blocks.0.branch2.conv_a.weight",
        "blocks.4.res_blocks.2.branch2.norm_c.bias", "blocks.2.res_blocks.0.branch1_conv.weight",
        "blocks.2.res_blocks.0.branch1_norm.running_mean", "blocks.5.proj.weight", "blocks.5.proj.bias",
    ],
    "pyslowfast": [
        "s1.pathway0_stem.conv.weight", "s1.pathway0_stem.bn.running_mean", "s2.pathway0_res0.branch2.a.weight",
        "s5.pathway0_res2.branch2.c_bn.weight", "s3.pathway0_res0.branch1.weight", "s3.pathway0_res0.branch1_bn.bias",
        "head.projection.weight",
    ],
    "mmaction2": [
        "backbone.conv1.conv.weight", "backbone.conv1.bn.running_var", "backbone.layer1.0.conv1.conv.weight",
        "backbone.layer4.2.conv3.bn.weight", "backbone.layer2.0.downsample.conv.weight",
        "backbone.layer2.0.downsample.bn.running_mean", "cls_head.fc_cls.weight", "data_preprocessor.mean",
    ],
    "tpn": [
        "backbone.conv1.weight", "backbone.bn1.running_mean", "backbone.layer1.0.conv1.weight",
        "backbone.layer3.5.bn2.running_var", "backbone.layer1.0.downsample.0.weight",
        "backbone.layer1.0.downsample.1.weight", "necks.aux_head.fc.weight", "cls_head.fc_cls.bias",
    ],
    "plain": ["stem.conv.weight", "res2.0.conv_a.weight", "res2.0.shortcut_bn.running_var", "fc.weight"],
}  # fmt: skip
CONTAINER = {
    "pytorchvideo": {"model_state"},
    "pyslowfast": {"epoch", "model_state", "optimizer_state", "cfg"},
    "mmaction2": {"state_dict", "meta"},
    "tpn": {"state_dict"},
}


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights and BN statistics, so that no swapped mean/var or a/b/c can cancel out."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("weight") and tensor.dim() == 1:  # BN gamma
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (0.1 if tensor.dim() == 1 else 0.3))
    return model.eval()


@pytest.fixture(scope="module")
def source() -> ResNet3d:
    return _randomise(ResNet3d(get_config(NAME, num_classes=CLASSES)))


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def expected(source: ResNet3d, clip: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return source(clip)


def _logits(model: torch.nn.Module, clip: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(clip)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_to_the_same_logits(layout, source, clip, expected, tmp_path: Path) -> None:
    path = save_in_layout(source.state_dict(), tmp_path / f"ckpt{SUFFIX[layout]}", layout, config=source.config)
    model = create_backbone(NAME, checkpoint=path)
    assert model.config.num_classes == CLASSES
    torch.testing.assert_close(_logits(model, clip), expected)
    _, meta = load_canonical_state_dict(path)
    assert meta["layout"] == layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_saved_files_use_each_toolbox_names_and_container(layout, source, tmp_path: Path) -> None:
    path = save_in_layout(source.state_dict(), tmp_path / f"ckpt{SUFFIX[layout]}", layout, config=source.config)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # containers must stay weights-only safe
    if layout in CONTAINER:
        assert set(raw) == CONTAINER[layout]
    state = raw.get("model_state", raw.get("state_dict", raw))
    missing = [k for k in RAW_KEYS[layout] if k not in state]
    assert not missing, f"{layout} file lacks {missing}; has e.g. {list(state)[:5]}"
    assert detect_layout(state) == layout


def test_non_backbone_keys_are_dropped_and_preprocessing_recorded(source, tmp_path: Path) -> None:
    mm = save_in_layout(source.state_dict(), tmp_path / "mm.pth", "mmaction2", config=source.config)
    _, meta = load_canonical_state_dict(mm)
    assert {"data_preprocessor.mean", "data_preprocessor.std"} <= set(meta["dropped"])
    # The buffers are in 0-255 units: the same normalisation as the source's 0-1 convention.
    assert meta["preprocess"].convention == "mmaction2" and meta["preprocess"].scale == 1.0
    assert meta["preprocess"].mean == pytest.approx([0.45 * 255] * 3)

    tpn = save_in_layout(source.state_dict(), tmp_path / "tpn.pth", "tpn")
    state, meta = load_canonical_state_dict(tpn)
    assert any(k.startswith("necks.aux_head.") for k in meta["dropped"])
    assert not any(k.startswith("necks") for k in state)
    assert meta["preprocess"] == Preprocess.mmaction2()  # no buffers in TPN files: the layout decides

    pv = save_in_layout(source.state_dict(), tmp_path / "pv.pyth", "pytorchvideo")
    assert load_canonical_state_dict(pv)[1]["preprocess"] == Preprocess()


def test_tpn_repo_baseline_without_necks_loads_into_slow_only(source, clip, expected, tmp_path: Path) -> None:
    """The TPN repo's slow-only baselines have no neck at all (its TPN models' necks go to tpn50)."""
    path = save_in_layout(source.state_dict(), tmp_path / "tpn.pth", "tpn")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    torch.save({"state_dict": {k: v for k, v in raw["state_dict"].items() if not k.startswith("necks.")}}, path)
    torch.testing.assert_close(_logits(create_backbone(NAME, checkpoint=path), clip), expected)


def test_class_names_travel_from_mmaction2_meta(source, tmp_path: Path) -> None:
    names = tuple(f"action_{i}" for i in range(CLASSES))
    path = save_in_layout(
        source.state_dict(), tmp_path / "mm.pth", "mmaction2", config=source.config.replace(class_names=names)
    )
    assert create_backbone(NAME, checkpoint=path).config.class_names == names


def test_convert_to_safetensors_round_trip(source, clip, expected, tmp_path: Path) -> None:
    names = tuple("abcdefg")
    ckpt = save_in_layout(
        source.state_dict(), tmp_path / "mm.pth", "mmaction2", config=source.config.replace(class_names=names)
    )
    result = convert(ckpt, tmp_path / "out.safetensors", backbone=NAME)
    assert result.layout == "mmaction2" and result.config.num_classes == CLASSES
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left behind

    state, meta = load_canonical_state_dict(result.path)
    assert meta["layout"] == "safetensors" and meta["source_layout"] == "mmaction2"
    assert not any(k.endswith("num_batches_tracked") for k in state)
    model = create_backbone(NAME, checkpoint=result.path)
    assert model.config.class_names == names
    assert model.config.preprocess == meta["config"].preprocess
    assert model.config.preprocess.convention == "mmaction2"
    torch.testing.assert_close(_logits(model, clip), expected)
    with pytest.warns(UserWarning, match=f"converted for backbone {NAME}, loading it as slow16x4"):
        load_canonical_state_dict(result.path, backbone="slow16x4")


def test_wrong_keys_fail_with_counts(source, tmp_path: Path) -> None:
    state = dict(source.state_dict())
    state["res2.0.conv_x.weight"] = state.pop("res2.0.conv_a.weight")
    del state["res3.1.bn_b.running_var"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        create_backbone(NAME, checkpoint=tmp_path / "bad.pt")
    msg = str(err.value)
    assert "\n" not in msg
    assert "2 keys missing (res2.0.conv_a.weight, res3.1.bn_b.running_var)" in msg
    assert "1 unexpected (res2.0.conv_x.weight)" in msg
    # the closest backbone is the one requested: the message says so and gives a fix, not "try NAME" again
    assert f"it is closest to {NAME} itself" in msg and f"pass a checkpoint of this {NAME}" in msg


def test_tiny_checkpoint_as_full_backbone_suggests_tiny(source, tmp_path: Path) -> None:
    path = save_in_layout(source.state_dict(), tmp_path / "tiny.pyth", "pytorchvideo")
    with pytest.raises(CheckpointError) as err:
        create_backbone("slow8x8", checkpoint=path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "shape mismatches (stem.conv.weight: checkpoint (8, 3, 1, 7, 7) vs model (64, 3, 1, 7, 7)" in msg
    assert "pass --backbone slow8x8_tiny" in msg


def test_full_shapes_name_all_three_identical_backbones() -> None:
    with torch.device("meta"):  # full-size shapes without allocating 32M parameters
        full = ResNet3d(get_config("slow8x8")).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_into(ResNet3d(get_config(NAME)), full, source="full.pyth")
    msg = str(err.value)
    assert "\n" not in msg
    assert "slow16x4, slow32x2, slow8x8 (identical shapes" in msg


def test_classifier_size_override_is_explained(source, tmp_path: Path) -> None:
    path = save_in_layout(source.state_dict(), tmp_path / "plain.pt", "plain")
    with pytest.raises(CheckpointError, match=r"only the classifier differs: the checkpoint has 7 classes"):
        create_backbone(NAME, checkpoint=path, num_classes=5)


def test_pickled_objects_are_refused_unless_trusted(source, clip, expected, tmp_path: Path) -> None:
    path = save_in_layout(source.state_dict(), tmp_path / "pv.pyth", "pytorchvideo")
    ckpt = torch.load(path, weights_only=True)
    ckpt["args"] = argparse.Namespace(lr=0.1)  # what many training scripts pickle beside the weights
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        create_backbone(NAME, checkpoint=path)
    msg = str(err.value)
    assert "\n" not in msg and "argparse.Namespace" in msg and "--trust-checkpoint" in msg
    model = create_backbone(NAME, checkpoint=path, trust_checkpoint=True)
    torch.testing.assert_close(_logits(model, clip), expected)
    # Pre-1.6 (non-zip) files cannot be listed up front; the refusal still names the global.
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"pickles objects other than tensors \(argparse\.Namespace\)"):
        load_canonical_state_dict(path)
    assert load_canonical_state_dict(path, trust=True)[1]["layout"] == "pytorchvideo"


def test_missing_and_non_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint .*nope\.pyth not found; check the path"):
        load_canonical_state_dict(tmp_path / "nope.pyth")
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(CheckpointError, match=r"notes\.pth is not a PyTorch checkpoint \(") as err:
        load_canonical_state_dict(tmp_path / "notes.pth")
    assert "\n" not in str(err.value) and "Weights only load failed" not in str(err.value)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file"):
        load_canonical_state_dict(tmp_path / "bad.safetensors")


def test_unknown_layout_is_named(tmp_path: Path) -> None:
    torch.save({"encoder.layers.0.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"cannot tell which layout.*encoder\.layers\.0\.weight"):
        load_canonical_state_dict(tmp_path / "other.pt")


def test_data_parallel_prefix_is_stripped(source, clip, expected, tmp_path: Path) -> None:
    path = save_in_layout(source.state_dict(), tmp_path / "pv.pyth", "pytorchvideo")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_state"] = {f"module.{k}": v for k, v in ckpt["model_state"].items()}
    torch.save(ckpt, path)
    torch.testing.assert_close(_logits(create_backbone(NAME, checkpoint=path), clip), expected)
