"""Formats as data: one row per format with everything that differs between them.

A row names the file suffix, the runtime that serves it, the function that writes it and the runner
class that loads it ("module:attribute", resolved lazily so that ``import sfc_deploy`` never needs
TensorRT, and so that this export-layer table names runners without importing the runtime layer),
the SFC graph variants it holds, how TopK is lowered in it, what it needs (a GPU, a library), the
options its runner takes, and where it comes from when it is built from another format.

The exporter (:mod:`sfc_deploy.export.exporter`) and the runtime registry
(:mod:`sfc_deploy.runtime.registry`) walk this table; neither has a branch per format.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sfc_deploy.common.parsing import parse_choices
from sfc_deploy.common.precision import EXPORT_PRECISIONS, RUNTIME_PRECISIONS
from sfc_deploy.errors import ConfigError

#: the SFC graph variants a user chooses between (``--graph``); ONNX formats have both
SFC_GRAPHS = ("portable", "custom")


@dataclass(frozen=True)
class Variant:
    """One file a format writes per part and precision. ``static_time`` fixes the time axis."""

    name: str
    static_time: bool = False
    graph: str = "portable"  # which SFC graph (portable/custom) this file implements


@dataclass(frozen=True)
class Format:
    """One export format and the runtime that serves it."""

    name: str
    suffix: str
    runtime: str
    description: str
    exporter: str | None  # "module:function" writing one part; None: written by the exporter itself
    runner: str  # "module:Class" of the runtime layer
    topk_impl: str = "op"  # "op": the custom op (ONNX, eager); "aten": plain aten ops (C++ loaders)
    sfc_variants: tuple[Variant, ...] = (Variant("default"),)
    needs_gpu: bool = False
    needs_library: str | None = None
    built_from: str | None = None  # built from another format's files (TensorRT from ONNX)
    served_variant: dict[str, str] | None = None  # variant written -> variant the runtime loads
    serve_writer: str | None = None  # "module:function(src, dst)" writing the served file from the written one
    runner_options: tuple[str, ...] = ("threads",)
    exportable: bool = True
    library: str = "torch"  # the distribution whose version a result on this runtime names
    compiled_for_device: bool = False  # machine code for one device type (export --device); else device-portable
    sfc_pieces: bool = False  # also writes SFC's weighted steps, which its runtime streams over time (export.parts)

    def variants(self, part: str) -> tuple[Variant, ...]:
        """The files this format writes for ``part`` (SFC may have several graphs, others one)."""
        return self.sfc_variants if part == "sfc" else (Variant("default"),)

    def serves(self, part: str, graph: str) -> str:
        """The artifact variant this format's runtime loads for ``part`` and SFC graph ``graph``."""
        written = next((v.name for v in self.variants(part) if v.graph == graph), self.variants(part)[0].name)
        return (self.served_variant or {}).get(written, written)

    def has_graph(self, graph: str) -> bool:
        return any(v.graph == graph for v in self.sfc_variants)

    def load_exporter(self):
        if self.exporter is None:
            raise ConfigError(f"format {self.name!r} is not written by an exporter of its own")
        return resolve(self.exporter)


def resolve(ref: str) -> Any:
    """``"package.module:attr"`` -> the object (imported now, not when the table is read)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "onnx", ".onnx", "onnxruntime",
            "ONNX (dynamo exporter); SFC twice: portable and sfc::TopKTemporalPool; plus the graphs ONNX Runtime serves",
            exporter="sfc_deploy.export.onnx:export_onnx",
            runner="sfc_deploy.runtime.onnxruntime_runner:OnnxRuntimeRunner",
            sfc_variants=(Variant("portable"), Variant("custom", static_time=True, graph="custom")),
            # ONNX Runtime serves graphs rewritten for it at export time (sfc_deploy.export.ort_graph)
            served_variant={"default": "ort", "portable": "ort", "custom": "ort-custom"},
            serve_writer="sfc_deploy.export.ort_graph:write_ort_graph",
            # device: "cpu" or "cuda:N", run on that device's execution provider (onnxruntime-gpu for CUDA)
            runner_options=("threads", "providers", "optimization", "shrink_arena", "cpu_arena", "device"),
            library="onnxruntime",
            sfc_pieces=True,  # streams SFC with --head-chunk (runtime.sfc_stream)
        ),
        Format(
            "torchscript", ".ts", "torchscript", "TorchScript trace, loadable from C++",
            exporter="sfc_deploy.export.torchscript:export_torchscript",
            runner="sfc_deploy.runtime.torchscript_runner:TorchScriptRunner",
            topk_impl="aten",
            sfc_variants=(Variant("default", static_time=True),),  # a trace freezes TopK's k
            runner_options=("threads", "device", "memory_format"),  # memory_format: channels_last_3d
            sfc_pieces=True,  # no TopK in the pieces: their traces take any time length (export.torchscript)
        ),
        Format(
            "aoti", ".pt2", "aoti", "AOTInductor package, loadable from C++",
            exporter="sfc_deploy.export.aoti:export_aoti",
            runner="sfc_deploy.runtime.aoti_runner:AOTIRunner",
            topk_impl="aten",
            # aten TopK (stable sort, narrow to k = round(T/tau)) raises guards on T that torch.export
            # cannot prove for every T, so the package is specialised to the export's T
            sfc_variants=(Variant("default", static_time=True),),
            runner_options=("threads", "device"),
            compiled_for_device=True,  # a CPU or a CUDA package (export --device), recorded in the manifest
            sfc_pieces=True,  # no TopK in the pieces: compiled with a dynamic time axis (export.aoti)
        ),
        Format(
            "tensorrt", ".engine", "tensorrt", "TensorRT engine built from the ONNX parts (GPU + TensorRT)",
            exporter=None,
            runner="sfc_deploy.runtime.tensorrt_runner:TensorRTRunner",
            sfc_variants=(Variant("portable"), Variant("custom", static_time=True, graph="custom")),
            needs_gpu=True, needs_library="tensorrt", built_from="onnx",
            runner_options=("device", "plugin_library", "threads"),  # threads: accepted, TensorRT runs on the GPU
            library="tensorrt",
        ),
        Format(
            "pytorch", ".safetensors", "pytorch", "the exact weights every artifact came from, served by eager PyTorch",
            exporter=None,
            runner="sfc_deploy.runtime.torch_runner:PyTorchRunner",
            # inference_rewrite: BN folding, unit-time 3D convs as 2D (sfc_deploy.models.inference); False: as trained
            runner_options=("threads", "device", "memory_format", "inference_rewrite"),
            exportable=False,
        ),
    )
}
#: formats a user can ask ``export`` for
EXPORT_FORMATS = tuple(name for name, f in FORMATS.items() if f.exportable)
#: runtime name -> the format it runs
RUNTIME_FORMAT = {f.runtime: f.name for f in FORMATS.values()}
RUNTIMES = tuple(RUNTIME_FORMAT)


def format_of_runtime(runtime: str) -> Format:
    return FORMATS[RUNTIME_FORMAT[check_runtime(runtime)]]


def parse_formats(values: Iterable[str] | str) -> list[str]:
    """'onnx,torchscript' or ['onnx', 'aoti'] -> validated list, order kept, duplicates dropped."""
    return parse_choices(values, EXPORT_FORMATS, "format")


def parse_precisions(values: Iterable[str] | str) -> list[str]:
    """'fp32,fp16' or ['fp32', 'int8'] -> validated list, order kept, duplicates dropped."""
    return parse_choices(values, tuple(EXPORT_PRECISIONS), "precision")


def parse_runtime_precisions(values: Iterable[str] | str) -> list[str]:
    """As :func:`parse_precisions`, also taking the precisions no file is written in (bf16: the pytorch
    runtime converts the weights at load), for commands that serve an export rather than write one."""
    return parse_choices(values, tuple(RUNTIME_PRECISIONS), "precision")


def check_runtime(runtime: str) -> str:
    """The runtime name itself, or a one-line error listing the known ones."""
    if runtime not in RUNTIME_FORMAT:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIME_FORMAT)}")
    return runtime


def check_graph(graph: str, runtime: str | None = None, *, what: str = "SFC graph") -> str:
    """An SFC graph name that exists and, given a runtime, that its format has."""
    if graph not in SFC_GRAPHS:
        raise ConfigError(f"unknown {what} {graph!r}; expected one of {', '.join(SFC_GRAPHS)}")
    if runtime is not None and not format_of_runtime(runtime).has_graph(graph):
        having = [r for r, f in RUNTIME_FORMAT.items() if FORMATS[f].has_graph(graph)]
        raise ConfigError(
            f"the {graph}-op SFC graph is ONNX-only; it does not apply to --runtime {runtime} (use {' or '.join(having)})"
        )
    return graph
