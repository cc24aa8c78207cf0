"""Export formats as data: name, file suffix, whether it needs a GPU, the runtime that runs it.

Each format's exporter is a small module; :mod:`sfc_deploy.export.exporter` walks this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfc_deploy.errors import ConfigError


@dataclass(frozen=True)
class Format:
    """One export format: its file suffix, whether building it needs a GPU, the runtime that runs it."""

    name: str
    suffix: str
    needs_gpu: bool
    runtime: str
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", ".onnx", False, "onnxruntime", "ONNX (dynamo exporter); SFC twice: portable and sfc::TopKTemporalPool"),
        Format("torchscript", ".ts", False, "torchscript", "TorchScript trace, loadable from C++"),
        Format("aoti", ".pt2", False, "aoti", "AOTInductor package, loadable from C++"),
        Format("tensorrt", ".engine", True, "tensorrt", "TensorRT engine built from the ONNX parts (GPU + TensorRT)"),
    )
}
#: runtime name -> the format it runs ("pytorch" runs the saved weights)
RUNTIME_FORMAT = {"pytorch": "pytorch", **{f.runtime: f.name for f in FORMATS.values()}}


def parse_formats(values: list[str] | str) -> list[str]:
    """'onnx,torchscript' or ['onnx', 'aoti'] -> validated list, order kept, duplicates dropped."""
    items = values.split(",") if isinstance(values, str) else [v for s in values for v in s.split(",")]
    out: list[str] = []
    for item in (i.strip().lower() for i in items if i.strip()):
        if item not in FORMATS:
            raise ConfigError(f"unknown format {item!r}; expected any of {', '.join(FORMATS)}")
        if item not in out:
            out.append(item)
    if not out:
        raise ConfigError(f"no format given; expected any of {', '.join(FORMATS)}")
    return out


def parse_precisions(values: list[str] | str) -> list[str]:
    """'fp32,fp16' or ['fp32', 'fp16'] -> validated list, order kept, duplicates dropped."""
    from sfc_deploy.export.manifest import PRECISIONS

    items = values.split(",") if isinstance(values, str) else [v for s in values for v in s.split(",")]
    out: list[str] = []
    for item in (i.strip().lower() for i in items if i.strip()):
        if item not in PRECISIONS:
            raise ConfigError(f"unknown precision {item!r}; expected any of {', '.join(PRECISIONS)}")
        if item not in out:
            out.append(item)
    if not out:
        raise ConfigError(f"no precision given; expected any of {', '.join(PRECISIONS)}")
    return out


def check_runtime(runtime: str) -> str:
    """The runtime name itself, or a one-line error listing the known ones."""
    if runtime not in RUNTIME_FORMAT:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIME_FORMAT)}")
    return runtime
