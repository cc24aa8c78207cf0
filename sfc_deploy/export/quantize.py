"""int8 graphs for ONNX Runtime's CPU provider, calibrated on frames sampled from the user's videos.

``export --precision int8 --calibrate DATA`` writes, beside the fp32 ONNX files it is made from:

* ``head.ort.int8.onnx``, ``tail.ort.int8.onnx``, ``clip.ort.int8.onnx``: ONNX Runtime static
  quantisation (``onnxruntime.quantization.quantize_static``) of the graphs ONNX Runtime serves in
  fp32 (``*.ort.fp32.onnx``, :mod:`sfc_deploy.export.ort_graph`), in QDQ format: weights int8,
  symmetric, per output channel; activations uint8, asymmetric, per tensor, their ranges from the
  calibration videos (``minmax``: the observed min/max). ONNX Runtime fuses each
  DequantizeLinear -> Conv -> QuantizeLinear into a QLinearConv at session creation; uint8
  activations x int8 weights is its fast path on x86-64 (AVX2, AVX512-VNNI). The folded graphs
  are quantised rather than the ``*.fp32.onnx`` ones: their unit-time convolutions are 2D ones,
  which ONNX Runtime has int8 kernels for (benchmarks/int8 has the measurement).
* ``sfc.ort.int8.onnx`` (and ``sfc.ort-custom.int8.onnx``): the fp32 SFC graphs, unchanged. The
  attention (TopK over time, q.k^T over C*h*w dimensions, the softmax, M.v) stays fp32, and so do
  the convolutions feeding it: SFC is ~16% of the MACs, and its logits are the quantity int8 would
  hurt most.

Calibration: ``videos`` files spread evenly over DATA (any list ``eval`` takes: a dataset CSV, a
class-folder tree, a UCF101 split), each sampled the way the part is fed in deployment: the SFC
input (the whole video at the model's stride, fitted to the export's frames and size) for the head,
the fp32 PyTorch model's SFC output of it for the tail, and two clips (centre crops, evenly spaced in
time, one sample each) for the clip model of the dense baseline. The head has no temporal receptive field at the default split, so
its input is fed in chunks of frames (same statistics, a fraction of the memory of the calibrator,
which keeps every intermediate tensor of a sample).

Every int8 file is recorded in the manifest like the others (sha256, precision ``int8``,
``derived_from`` the fp32 graph) with the calibration source, the number of videos and samples and
the quantisation settings in its ``extra``. ONNX Runtime alone serves it
(:func:`sfc_deploy.common.precision.check_runtime_precision`), and verification holds it to the
int8 row of the tolerance table and to top-1 agreement with fp32 on a synthetic set.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from sfc_deploy.common.precision import QUANTIZED_FORMAT
from sfc_deploy.errors import BackendUnavailableError, ConfigError, VideoError
from sfc_deploy.export.manifest import Artifact, sha256_of

INT8 = "int8"
#: parts whose graphs are quantised; SFC's stays fp32 (module doc)
QUANTIZED_PARTS = ("head", "tail", "clip")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: most frames of one head calibration sample (the head's input is cut in chunks: module doc)
HEAD_CHUNK = 12
#: clips per video calibrating the clip model
CLIP_SAMPLES = 2


@dataclass(frozen=True)
class Calibration:
    """Where the activation ranges come from: ``source`` (DATA), how many of its videos, and how."""

    source: str
    videos: int = 16
    method: str = "minmax"

    def check(self) -> list[Path]:
        """The calibration videos (spread evenly over the list), or a one-line error before any work."""
        from sfc_deploy.data.datasets import load_video_list

        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
        if self.videos < 1:
            raise ConfigError(f"--calibrate-videos must be at least 1, got {self.videos}")
        if not Path(self.source).exists():
            raise ConfigError(
                f"--calibrate {self.source}: no such file or folder; pass a dataset CSV, a class-folder tree or "
                "a UCF101 split folder of videos like the ones the model will serve"
            )
        items = load_video_list(self.source)
        paths = [path for path, _ in items]
        count = min(self.videos, len(paths))
        picks = np.linspace(0, len(paths) - 1, count).round().astype(int)
        return [paths[i] for i in dict.fromkeys(picks.tolist())]


def check_available() -> None:
    """ONNX Runtime's quantisation tools are importable (they come with onnxruntime)."""
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"int8 export needs onnxruntime's quantisation tools ({exc}); pip install onnxruntime"
        ) from exc


def calibration_feeds(model, videos: list[Path], *, frames: int, size: tuple[int, int],
                      parts: tuple[str, ...], say: Callable[[str], None]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Per quantised part, the input samples of the calibration videos (module doc)."""
    from sfc_deploy.data.inputs import InputSpec, model_input

    cfg = model.config
    feeds: dict[str, list[dict[str, np.ndarray]]] = {part: [] for part in parts}
    streamable = cfg.head_temporal_receptive_field(model.split) == 1
    for i, path in enumerate(videos):
        say(f"calibration video {i + 1}/{len(videos)}: {path.name}")
        try:
            if "head" in parts or "tail" in parts:
                x = model_input(path, "sfc", cfg, InputSpec(size=tuple(size)), max_frames=frames).tensor
                if "head" in parts:
                    step = HEAD_CHUNK if streamable else x.shape[2]
                    feeds["head"] += [{"video": x[:, :, t:t + step].numpy()} for t in range(0, x.shape[2], step)]
                if "tail" in parts:
                    with torch.no_grad():
                        feeds["tail"].append({"f_sfc": model.sfc(model.head(x)).numpy()})
            if "clip" in parts:
                crops = model_input(path, "uniform", cfg, num_clips=CLIP_SAMPLES).tensor
                feeds["clip"] += [{"clip": crops[j:j + 1].numpy()} for j in range(crops.shape[0])]
        except VideoError as exc:
            raise VideoError(f"calibration video {path}: {exc}") from exc
    return feeds


def quantize_graph(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], *, method: str = "minmax",
                   op_types: tuple[str, ...] | None = None) -> dict:
    """Quantise the ONNX graph ``src`` into ``dst`` (QDQ, int8 symmetric per-channel weights, uint8
    activations) with ``feeds`` as calibration samples; returns the settings, for the manifest."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        """The samples, one range at a time (the calibrator then holds one sample's tensors, not all)."""

        def __init__(self) -> None:
            self.set_range(0, len(feeds))

        def __len__(self) -> int:
            return len(feeds)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(feeds[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    calibrate_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
    reader = Reader()
    with tempfile.TemporaryDirectory(prefix="sfc-int8-", dir=dst.parent) as tmp:
        out = Path(tmp) / dst.name
        quantize_static(
            str(src), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, calibrate_method=calibrate_method,
            op_types_to_quantize=list(op_types) if op_types else None,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                           # calibrate one sample at a time, merging ranges (histograms) as it goes: the
                           # calibrator keeps every intermediate tensor of what it is given at once
                           "CalibStridedMinMax": 1},
        )
        _stamp(out, src)
        out.replace(dst)
    return {"format": "QDQ", "weights": "int8, symmetric, per channel", "activations": "uint8, asymmetric, per tensor",
            "calibration_method": method, "quantizer": "onnxruntime.quantization.quantize_static"}


def _stamp(path: Path, src: Path) -> None:
    """Precision and provenance into the graph's metadata_props (beside the source's)."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({"sfc_deploy.precision": INT8, "sfc_deploy.quantized_from": src.name,
                  "sfc_deploy.quantized_from_sha256": sha256_of(src)})
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def write_int8(work: Path, artifacts: list[Artifact], model, *, calibration: Calibration, frames: int,
               size: tuple[int, int], parts: tuple[str, ...], served: dict[str, str],
               say: Callable[[str], None]) -> list[Artifact]:
    """Write the int8 files of ``parts`` into ``work`` from the fp32 graphs ONNX Runtime serves
    (among ``artifacts``), calibrated on ``calibration``'s videos; returns their manifest records.

    ``served``: variant written -> variant ONNX Runtime serves (the ONNX row of the format table).
    """
    check_available()
    videos = calibration.check()
    sources = [a for a in artifacts if a.format == QUANTIZED_FORMAT and a.precision == "fp32"
               and a.part in parts and a.variant in set(served.values())]
    if not sources:
        raise ConfigError("int8 is quantised from the fp32 ONNX graphs; export with --format onnx")
    quantized = tuple(p for p in QUANTIZED_PARTS if any(a.part == p for a in sources))
    feeds = calibration_feeds(model, videos, frames=frames, size=size, parts=quantized, say=say)
    records: list[Artifact] = []
    for src in sources:
        name = src.file.replace(".fp32.", f".{INT8}.")
        dst = work / name
        extra: dict
        if src.part in quantized:
            say(f"quantising {src.file} -> {name} ({len(feeds[src.part])} calibration samples)")
            settings = quantize_graph(work / src.file, dst, feeds[src.part], method=calibration.method)
            extra = {"quantized": True, **settings, "calibration": {
                "source": str(calibration.source), "videos": len(videos), "samples": len(feeds[src.part])}}
        else:
            say(f"writing {name}: the fp32 SFC graph (attention stays fp32)")
            shutil.copyfile(work / src.file, dst)
            extra = {"quantized": False, "why": "SFC's attention stays fp32: this is the fp32 graph"}
        records.append(replace(src, file=name, precision=INT8, sha256=sha256_of(dst), bytes=dst.stat().st_size,
                               derived_from=src.file, extra=extra))
    return records


__all__ = ["CALIBRATION_METHODS", "Calibration", "INT8", "QUANTIZED_PARTS", "calibration_feeds", "quantize_graph",
           "write_int8"]
