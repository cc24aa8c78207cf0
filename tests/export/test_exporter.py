"""The export folder: manifest contents, per-format metadata, integrity, and atomic writing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
import torch

from sfc_deploy.errors import ArtifactError, ConfigError, SfcError
from sfc_deploy.export import exporter
from sfc_deploy.export.exporter import ExportOptions, export_model
from sfc_deploy.export.weights import model_from_manifest
from sfc_deploy.export.manifest import MANIFEST_VERSION, load_manifest, sha256_of
from sfc_deploy.export.onnx import DOMAIN, OP_TYPE, check_onnx
from sfc_deploy.export.parts import PARTS, SFC_PIECES
from sfc_deploy.export.torchscript import EXTRA_FILE

pytestmark = pytest.mark.usefixtures("sfc_one_thread")

SIZE = (32, 40)  # tests/conftest.py SIZE


def test_manifest_records_everything_a_runtime_needs(sfc_export_ts: Path) -> None:
    data = json.loads((sfc_export_ts / "manifest.json").read_text())
    assert data["manifest_version"] == MANIFEST_VERSION
    assert data["random_weights"] is True
    assert data["backbone"]["name"] == "slow8x8_tiny" and data["backbone"]["num_classes"] == 10
    assert data["preprocess"] == data["backbone"]["preprocess"] and data["preprocess"]["crop"] == 32
    assert data["split"] == "res3" and data["tau"] == 2.0 and data["sfc"]["tau"] == 2.0
    assert data["input"]["frames"] == 8 and data["input"]["size"] == list(SIZE)
    assert data["input"]["head_streamable"] is True
    assert {"torch", "python", "onnx", "onnxruntime"} <= set(data["libraries"])
    files = {a["file"]: a for a in data["artifacts"]}
    expected = {f"{p}.{prec}.ts" for p in (*PARTS, *SFC_PIECES) for prec in ("fp32", "fp16")}
    assert set(files) == expected | {"model.safetensors"}
    for name, art in files.items():
        assert art["sha256"] == sha256_of(sfc_export_ts / name)
        assert art["bytes"] == (sfc_export_ts / name).stat().st_size
        assert art["inputs"] and art["outputs"]
    head = files["head.fp16.ts"]
    assert head["part"] == "head" and head["format"] == "torchscript" and head["precision"] == "fp16"
    assert head["inputs"] == [{"name": "video", "shape": ["batch", 3, "time", 32, 40], "dtype": "float16"}]
    assert head["outputs"][0]["name"] == "f_head" and head["outputs"][0]["shape"][:3] == ["batch", 64, "time"]
    sfc = files["sfc.fp32.ts"]  # a trace freezes T: the time axis is recorded as fixed
    assert sfc["inputs"][0]["shape"][2] == 8
    assert [o["name"] for o in sfc["outputs"]] == ["f_sfc", "attention"]
    assert sfc["outputs"][1]["dtype"] == "float32"  # the attention softmax stays fp32
    assert files["sfc.fp16.ts"]["outputs"][1]["dtype"] == "float32"
    assert files["clip.fp32.ts"]["inputs"][0]["shape"] == ["batch", 3, 8, 32, 32]
    theta = files["sfc_theta_k.fp32.ts"]  # SFC's pieces keep time dynamic: TorchScript streams SFC with them
    assert theta["part"] == "sfc_theta_k" and theta["inputs"][0]["shape"][2] == "halo_time"
    assert theta["outputs"][0]["shape"][2] == "time"
    assert data["parts"] == ["head", "sfc", "tail", "clip"]  # the pieces are artifacts of the sfc part


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_carries_metadata_as_extra_file(sfc_export_ts: Path) -> None:
    extra = {EXTRA_FILE: ""}
    torch.jit.load(str(sfc_export_ts / "tail.fp32.ts"), _extra_files=extra)
    meta = json.loads(extra[EXTRA_FILE])
    assert meta["part"] == "tail" and meta["split"] == "res3" and meta["backbone"]["name"] == "slow8x8_tiny"
    assert meta["sfc"]["tau"] == 2.0


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_has_no_python_custom_op(sfc_export_ts: Path) -> None:
    """C++ loads these files: the SFC's TopK must be plain aten ops, not torch.ops.sfc."""
    graph = str(torch.jit.load(str(sfc_export_ts / "sfc.fp32.ts")).inlined_graph)
    assert "sfc::" not in graph and "aten::sort" in graph


def test_weights_rebuild_the_exported_model(sfc_export_ts: Path, sfc_tiny) -> None:
    model = model_from_manifest(load_manifest(sfc_export_ts))
    x = torch.randn(1, 3, 8, *SIZE)
    with torch.no_grad():
        assert torch.equal(model(x), sfc_tiny.model()(x))


def test_onnx_graphs_pass_full_check_and_carry_metadata(sfc_export_onnx: Path) -> None:
    manifest = load_manifest(sfc_export_onnx)
    arts = {a.variant: a for a in manifest.artifacts if a.format == "onnx" and a.part == "sfc" and a.derived_from is None}
    assert set(arts) == {"portable", "custom"}
    served = {a.variant: a for a in manifest.artifacts
              if a.format == "onnx" and a.part == "sfc" and a.derived_from is not None}  # the pieces: test_sfc_stream_ort
    assert {v: a.derived_from for v, a in served.items()} == {"ort": "sfc.fp32.onnx", "ort-custom": "sfc.custom.fp32.onnx"}
    for art in served.values():  # recorded and hashed like every artifact, and saying what they came from
        props = {p.key: p.value for p in onnx.load(str(manifest.path_of(art))).metadata_props}
        assert props["sfc_deploy.served_by"] == "onnxruntime" and props["sfc_deploy.derived_from"] == art.derived_from
    for variant, art in arts.items():
        path = manifest.path_of(art)
        check_onnx(path)
        model = onnx.load(str(path))
        props = {p.key: p.value for p in model.metadata_props}
        assert props["sfc_deploy.part"] == "sfc" and props["sfc_deploy.variant"] == variant
        assert props["sfc_deploy.manifest_version"] == str(MANIFEST_VERSION)
        assert json.loads(props["sfc_deploy.backbone"])["name"] == "slow8x8_tiny"
        assert props["sfc_deploy.split"] == "res3"
        assert [i.name for i in model.graph.input] == ["f_head"]
        assert [o.name for o in model.graph.output] == ["f_sfc", "attention"]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param  # dynamic batch
        if variant == "portable":
            assert dims[2].dim_param, "the portable graph keeps a dynamic time axis"
            assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
            assert {"TopK", "GatherElements"} <= {n.op_type for n in model.graph.node}
        else:
            assert dims[2].dim_value == 8, "the custom graph's k is an attribute: fixed time axis"
            (node,) = [n for n in model.graph.node if n.domain == DOMAIN]
            assert node.op_type == OP_TYPE
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs == {"k": 4, "axis": 2, "plugin_namespace": b"sfc", "plugin_version": b"1"}
            assert any(o.domain == DOMAIN and o.version == 1 for o in model.opset_import)


def test_existing_folder_is_refused_without_force(tmp_path: Path, sfc_tiny) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        export_model(sfc_tiny.model(), tmp_path / "out", ExportOptions(formats=("torchscript",)))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (ExportOptions(formats=("torchscript",), precisions=("int4",)), "unknown precision 'int4'"),
        (ExportOptions(formats=("torchscript",), precisions=("int8",)), "int8 is written for the onnx format only"),
        (ExportOptions(formats=("tflite",)), "unknown format 'tflite'"),
        (ExportOptions(formats=("torchscript",), parts=("neck",)), "unknown or no parts"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path: Path, options: ExportOptions, match: str, sfc_tiny) -> None:
    with pytest.raises(ConfigError, match=match):
        export_model(sfc_tiny.model(), tmp_path / "out", options)
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_no_half_written_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sfc_tiny) -> None:
    """A failing export removes its work folder; with --force the old folder survives untouched."""
    from sfc_deploy.export import torchscript

    calls = []
    real = torchscript.export_torchscript  # the format table resolves its exporter at export time

    def fail_on_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise SfcError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(torchscript, "export_torchscript", fail_on_second)
    options = ExportOptions(formats=("torchscript",), frames=8, size=SIZE, raw_frames=64, parts=("tail", "clip"))
    with pytest.raises(SfcError, match="simulated"):
        export_model(sfc_tiny.model(), tmp_path / "out", options)
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "out"
    old.mkdir()
    (old / "keep.txt").write_text("old export")
    calls.clear()
    with pytest.raises(SfcError, match="simulated"):
        export_model(sfc_tiny.model(), old, options, force=True)
    assert sorted(os.listdir(tmp_path)) == ["out"] and (old / "keep.txt").read_text() == "old export"


def test_tampered_artifact_is_refused(sfc_export_ts: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(sfc_export_ts, folder)
    with open(folder / "tail.fp32.ts", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    manifest = load_manifest(folder)
    with pytest.raises(ArtifactError, match="does not match its sha256") as exc:
        manifest.path_of(manifest.find("tail", "torchscript"))
    assert "\n" not in str(exc.value) and "re-run sfc-deploy export" in str(exc.value)
