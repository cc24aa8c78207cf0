"""int8 export (ONNX Runtime static quantisation, calibrated on videos): what is written, recorded,
served and refused. The default run exports the tail alone (one ONNX graph, ~8 s); the whole
model, verified with its agreement check, is ``slow``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sfc_deploy.errors import ConfigError
from sfc_deploy.export.manifest import load_manifest, sha256_of
from sfc_deploy.runtime import load, make_runner
from sfc_deploy.verify.tolerances import compare

pytestmark = pytest.mark.usefixtures("sfc_one_thread")


def _calibration_data(root: Path) -> Path:
    from sfc_deploy.data.synth import SynthOptions, write_synth_dataset

    write_synth_dataset(root, SynthOptions(classes=2, train_per_class=2, test_per_class=0, frames=64, size=(32, 40), seed=3))
    return root / "train.csv"


def _export(sfc_tiny, out: Path, data: Path, parts: tuple[str, ...], videos: int = 3) -> Path:
    from sfc_deploy.export.exporter import ExportOptions, export_model
    from sfc_deploy.export.quantize import Calibration

    options = ExportOptions(formats=("onnx",), precisions=("int8",), parts=parts, frames=sfc_tiny.raw_frames // 8,
                            size=sfc_tiny.size, raw_frames=sfc_tiny.raw_frames,
                            calibration=Calibration(str(data), videos=videos))
    export_model(sfc_tiny.model(), out, options)
    return out


@pytest.fixture(scope="module")
def int8_tail(tmp_path_factory: pytest.TempPathFactory, sfc_tiny) -> Path:
    root = tmp_path_factory.mktemp("int8_tail")
    return _export(sfc_tiny, root / "export", _calibration_data(root / "data"), ("tail",))


def test_int8_tail_is_recorded_with_its_source_and_calibration(int8_tail: Path) -> None:
    manifest = load_manifest(int8_tail)
    assert manifest.precisions == ["fp32", "int8"]  # fp32 is written too: int8 is quantised from it
    art = manifest.find("tail", "onnx", "int8", "ort")
    assert art.file == "tail.ort.int8.onnx" and art.derived_from == "tail.ort.fp32.onnx"
    assert art.sha256 == sha256_of(int8_tail / art.file)
    assert art.extra["quantized"] is True and art.extra["format"] == "QDQ"
    calibration = art.extra["calibration"]
    assert calibration["source"].endswith("train.csv") and calibration["videos"] == 3 and calibration["samples"] == 3
    on_disk = json.loads((int8_tail / "manifest.json").read_text())
    assert any(a["file"] == "tail.ort.int8.onnx" and a["precision"] == "int8" for a in on_disk["artifacts"])


def test_int8_tail_graph_has_int8_per_channel_weights(int8_tail: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_tail / "tail.ort.int8.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producers = {o: n for n in model.graph.node for o in n.output}
    assert convs
    for conv in convs:
        dq = producers[conv.input[1]]  # the weight comes from a DequantizeLinear of an int8 constant
        assert dq.op_type == "DequantizeLinear"
        weight, scale, zero = (numpy_helper.to_array(inits[n]) for n in dq.input[:3])
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],)  # per output channel
        assert not zero.any()  # symmetric
    assert {p.key: p.value for p in model.metadata_props}["sfc_deploy.precision"] == "int8"


def test_int8_tail_runs_on_onnxruntime_close_to_pytorch_but_not_fp32(int8_tail: Path, sfc_tiny) -> None:
    from sfc_deploy.verify.parity import synthetic_video

    manifest = load_manifest(int8_tail)
    model = sfc_tiny.model()
    video = synthetic_video(sfc_tiny.raw_frames, sfc_tiny.size, model.config.preprocess, seed=7)[:, :, ::8]
    with torch.no_grad():  # a video's features: int8 ranges are calibrated on videos, not on random tensors
        f_sfc = model.sfc(model.head(video))
        want = model.tail(f_sfc)
    with make_runner(manifest, manifest.find("tail", "onnx", "int8", "ort"), "onnxruntime", threads=1) as runner:
        got = runner.infer({"f_sfc": f_sfc})["logits"]
    with make_runner(manifest, manifest.find("tail", "onnx", "fp32", "ort"), "onnxruntime", threads=1) as runner:
        fp32 = runner.infer({"f_sfc": f_sfc})["logits"]
    assert compare(got, want, "int8")["passed"]
    assert compare(fp32, want, "fp32")["passed"] and not compare(got, want, "fp32")["passed"]  # it is quantised


@pytest.mark.parametrize("runtime", ["pytorch", "torchscript", "aoti", "tensorrt"])
def test_other_runtimes_refuse_int8_in_one_line(int8_tail: Path, runtime: str) -> None:
    with pytest.raises(ConfigError, match="int8 is served by the onnxruntime runtime only") as err:
        load(int8_tail, runtime, precision="int8")
    assert "\n" not in str(err.value)


# --- command line: refused before any work --------------------------------------------------------
def _cli(args: list[str]):
    from typer.testing import CliRunner

    from sfc_deploy.cli import app

    return CliRunner().invoke(app, args)


def test_int8_without_calibration_videos_is_one_line(tmp_path: Path, one_line_error) -> None:
    result = _cli(["export", "-o", str(tmp_path / "e"), "-b", "slow8x8_tiny", "--precision", "int8"])
    one_line_error(result, "--calibrate DATA")
    assert not (tmp_path / "e").exists()


def test_int8_for_another_format_is_one_line(tmp_path: Path, one_line_error) -> None:
    data = _calibration_data(tmp_path / "data")
    result = _cli(["export", "-o", str(tmp_path / "e"), "-b", "slow8x8_tiny", "-f", "torchscript", "--precision", "int8",
                   "--calibrate", str(data)])
    one_line_error(result, "int8 is written for the onnx format only")


def test_missing_calibration_list_is_one_line(tmp_path: Path, one_line_error) -> None:
    result = _cli(["export", "-o", str(tmp_path / "e"), "-b", "slow8x8_tiny", "--precision", "fp32,int8",
                   "--calibrate", str(tmp_path / "nowhere.csv")])
    one_line_error(result, "nowhere.csv", "no such file")


def test_calibration_without_int8_is_one_line(tmp_path: Path, one_line_error) -> None:
    data = _calibration_data(tmp_path / "data")
    result = _cli(["export", "-o", str(tmp_path / "e"), "-b", "slow8x8_tiny", "--calibrate", str(data)])
    one_line_error(result, "--calibrate applies to --precision int8")


def test_bench_int8_needs_an_int8_export_on_onnxruntime(one_line_error) -> None:
    one_line_error(_cli(["bench", "--precision", "int8"]), "--calibrate DATA")
    one_line_error(_cli(["bench", "--precision", "int8", "--runtime", "pytorch"]), "onnxruntime runtime only")


# --- the whole model, verified (slow: four ONNX graphs) --------------------------------------------
@pytest.fixture(scope="module")
def int8_all(tmp_path_factory: pytest.TempPathFactory, sfc_tiny) -> Path:
    root = tmp_path_factory.mktemp("int8_all")
    return _export(sfc_tiny, root / "export", _calibration_data(root / "data"), ("head", "sfc", "tail", "clip"))


@pytest.mark.slow
def test_int8_export_verifies_with_agreement(int8_all: Path) -> None:
    from sfc_deploy.verify import verify

    manifest = load_manifest(int8_all)
    assert manifest.find("sfc", "onnx", "int8", "ort").extra["quantized"] is False  # attention stays fp32
    report = verify(manifest, runtimes=["onnxruntime"], precisions=["int8"], threads=1, agreement_videos=4)
    assert report.passed, [c for c in report.checks if not c.passed]
    parts = {c.part for c in report.checks}
    assert {"head", "tail", "sfc_pipeline", "dense_pipeline", "sfc_pipeline.agreement"} <= parts
    agreement = next(c for c in report.checks if c.part == "sfc_pipeline.agreement")
    assert agreement.top1_agree is not None and "random weights" in agreement.input


@pytest.mark.slow
def test_int8_agreement_is_enforced_for_trained_weights(int8_all: Path, tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    from sfc_deploy.verify import parity, verify

    manifest = dataclasses.replace(load_manifest(int8_all), random_weights=False)
    monkeypatch.setitem(parity.MIN_TOP1_AGREEMENT, "int8", 1.01)  # unreachable: the check must fail
    report = verify(manifest, runtimes=["onnxruntime"], precisions=["int8"], graphs=["portable"], threads=1,
                    agreement_videos=2)
    failed = [c.part for c in report.checks if not c.passed]
    assert failed == ["sfc_pipeline.agreement"]


@pytest.mark.slow
def test_verify_cli_reports_int8_agreement(int8_all: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(int8_all, folder)
    result = _cli(["verify", str(folder), "--runtime", "onnxruntime", "--precision", "int8", "--graph", "portable",
                   "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "sfc_pipeline.agreement" in result.stdout and "int8" in result.stdout
