"""Export an SFC model to a folder of artifacts described by a manifest.

The exporter only produces artifacts: it walks the format table (:mod:`sfc_deploy.export.formats`)
and writes, per format, precision, part and variant, one file and its manifest record. Checking the
artifacts against PyTorch is verification's job (:mod:`sfc_deploy.verify`), which sits above both
export and runtime.

The folder is built under a temporary name beside the destination and renamed into place only once
every artifact is written and the manifest is complete, so an interrupted or failed export never
leaves a half-written folder behind, and two exports racing for the same destination cannot both
succeed without ``--force``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from sfc_deploy.common.atomic import atomic_dir, terminate_as_exit
from sfc_deploy.common.device import is_cuda, resolve_device
from sfc_deploy.common.environment import library_versions
from sfc_deploy.common.outputs import check_output_dir
from sfc_deploy.common.precision import EXPORT_PRECISIONS, QUANTIZED, QUANTIZED_FORMAT, torch_dtype
from sfc_deploy.errors import ArtifactError, ConfigError
from sfc_deploy.export.formats import EXPORT_FORMATS, FORMATS, Format, Variant, resolve
from sfc_deploy.export.manifest import WEIGHTS, Artifact, DenseInput, InputRecord, Manifest, TensorSpec, sha256_of
from sfc_deploy.export.parts import PARTS, build_parts, build_sfc_pieces
from sfc_deploy.export.quantize import Calibration
from sfc_deploy.export.weights import save_weights
from sfc_deploy.models.parts import copy_for_export
from sfc_deploy.models.sfc_model import SFCModel


@dataclass
class ExportOptions:
    """What to export. ``frames``/``size`` are the sampled frames and HxW the SFC graphs are built for.

    ``parts`` defaults to all four (head, sfc, tail and the clip model of the dense baseline); a
    subset serves a deployment that needs only some of them (and keeps tests fast). ``tensorrt``
    holds the engine-build options (:class:`sfc_deploy.export.tensorrt.TensorRTOptions`).
    ``device`` ("cpu", "cuda", "cuda:N", "auto") is what formats compiled for one device type
    (AOTInductor) are compiled for, and is recorded per artifact; device-portable formats (ONNX,
    TorchScript) are written the same for any device, so a CUDA export needs at least one of the former.
    ``calibration``: the videos int8 is calibrated on (precision int8 needs it; ONNX only). int8 is
    quantised from the fp32 ONNX graphs, so asking for int8 writes those too.
    ``sfc_pieces``: with the sfc part, formats that stream SFC (ONNX, TorchScript, AOTInductor) also
    write its weighted steps as files of their own (:func:`~sfc_deploy.export.parts.build_sfc_pieces`), so
    ``--head-chunk`` streams SFC too; an export without them (``export --no-sfc-pieces``) runs the
    whole-video SFC graph, and saves their export time (AOTInductor compiles four more packages).
    """

    formats: tuple[str, ...] = ("onnx",)
    parts: tuple[str, ...] = PARTS
    precisions: tuple[str, ...] = ("fp32",)
    frames: int = 36
    size: tuple[int, int] = (256, 312)
    raw_frames: int = 288
    random_weights: bool = True
    checkpoint: str | None = None
    sfc_checkpoint: str | None = None
    tensorrt: object | None = None
    device: str = "cpu"
    calibration: Calibration | None = None
    sfc_pieces: bool = True

    @property
    def float_precisions(self) -> tuple[str, ...]:
        """The precisions every format writes: the float ones asked for, plus fp32 when int8 (its source) is."""
        floats = tuple(p for p in self.precisions if p not in QUANTIZED)
        if len(floats) < len(self.precisions) and "fp32" not in floats:
            floats = ("fp32", *floats)
        return floats


def export_model(
    model: SFCModel,
    out_dir: str | Path,
    options: ExportOptions,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Export ``model`` into ``out_dir`` and return its manifest (not yet verified)."""
    out_dir = Path(out_dir)
    say = progress or (lambda _msg: None)
    check_options(out_dir, options, force)
    try:
        with terminate_as_exit(), atomic_dir(out_dir, replace=force) as work:
            manifest = _export_into(model, work, options, say)
    except FileExistsError:
        raise ConfigError(
            f"{out_dir} appeared while exporting (another export to the same --out?); pass --force to replace it "
            "or choose another --out"
        ) from None
    manifest.root = out_dir
    return manifest


def check_options(out_dir: Path, options: ExportOptions, force: bool) -> None:
    """Refuse bad options before any work: an existing output without ``force``, unknown
    precision / format / part, a format whose library or device is missing."""
    check_output_dir(out_dir, option="--out", force=force)
    for precision in options.precisions:
        if precision not in EXPORT_PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(EXPORT_PRECISIONS)}")
    check_quantized(options)
    for fmt in options.formats:
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"unknown format {fmt!r}; expected any of {', '.join(EXPORT_FORMATS)}")
        source = FORMATS[fmt].built_from
        if source and source not in options.formats:
            raise ConfigError(f"{fmt} is built from the {source} parts; export with --format {source},{fmt}")
    unknown = [p for p in options.parts if p not in PARTS]
    if unknown or not options.parts:
        raise ConfigError(f"unknown or no parts {unknown or list(options.parts)}; expected any of {', '.join(PARTS)}")
    check_device(options)
    if "tensorrt" in options.formats:
        from sfc_deploy.export.tensorrt import check_available

        check_available()


def check_quantized(options: ExportOptions) -> None:
    """int8 needs the ONNX format and calibration videos; calibration videos need int8 (one line each)."""
    quantized = [p for p in options.precisions if p in QUANTIZED]
    if not quantized:
        if options.calibration is not None:
            raise ConfigError("--calibrate applies to --precision int8 only; add --precision int8 or drop --calibrate")
        return
    if QUANTIZED_FORMAT not in options.formats:
        raise ConfigError(
            f"precision {quantized[0]} is written for the {QUANTIZED_FORMAT} format only (ONNX Runtime static "
            f"quantisation); export with --format {QUANTIZED_FORMAT}"
        )
    if options.calibration is None:
        raise ConfigError(
            f"precision {quantized[0]} needs calibration videos: pass --calibrate DATA (a dataset CSV or folder of "
            "videos like the ones the model will serve)"
        )
    options.calibration.check()  # a wrong list fails now, not after minutes of export


def check_device(options: ExportOptions) -> str:
    """The concrete device ``options.device`` names ("cpu"/"cuda:N"), refusing a CUDA export where
    no GPU is visible (one line) or where no requested format is compiled for a device (``auto``
    is not refused: it only says "the GPU if there is one")."""
    device = resolve_device(options.device)
    if is_cuda(device) and (options.device or "").strip().lower() != "auto":
        compiled = [name for name, f in FORMATS.items() if (f.compiled_for_device or f.needs_gpu) and f.exportable]
        if not any(FORMATS[f].compiled_for_device or FORMATS[f].needs_gpu for f in options.formats if f in FORMATS):
            raise ConfigError(
                f"--device {options.device} applies to formats compiled for one device ({', '.join(compiled)}); "
                f"{', '.join(options.formats)} files are device-portable: export them without --device and run "
                "them on CUDA with --device cuda (verify, bench, eval)"
            )
    return device


def file_name(part: str, fmt: Format, precision: str, variant: str) -> str:
    """``head.fp32.onnx``, ``sfc.custom.fp16.onnx``, ``tail.ort.fp32.onnx``..."""
    stem = part if variant in ("default", "portable") else f"{part}.{variant}"
    return f"{stem}.{precision}{fmt.suffix}"


def _export_into(model: SFCModel, work: Path, options: ExportOptions, say: Callable[[str], None]) -> Manifest:
    model = model.eval()
    device = check_device(options)
    save_weights(model, work / WEIGHTS)
    cfg = model.config
    metadata = {
        "backbone": cfg.to_dict(),
        "sfc": model.sfc.config.to_dict(),
        "split": model.split,
        "random_weights": options.random_weights,
    }
    reference = build_parts(model, frames=options.frames, size=options.size)
    artifacts = [_record(work, WEIGHTS, "weights", "pytorch", "fp32", reference["head"].inputs, reference["tail"].outputs)]
    parts = [p for p in PARTS if p in options.parts]
    for fmt in (FORMATS[name] for name in options.formats):
        if fmt.built_from:
            continue  # built from another format's files below
        exporter = fmt.load_exporter()
        serve = resolve(fmt.serve_writer) if fmt.serve_writer else None
        for precision in options.float_precisions:
            dtype = torch_dtype(precision)
            exported = copy_for_export(model, dtype, topk_impl=fmt.topk_impl)
            by_static = {
                static: build_parts(exported, frames=options.frames, size=options.size, dtype=dtype, static_time=static)
                for static in {v.static_time for p in parts for v in fmt.variants(p)}
            }
            jobs = [(p, v, by_static[v.static_time][p]) for p in parts for v in fmt.variants(p)]
            if fmt.sfc_pieces and options.sfc_pieces and "sfc" in parts:
                pieces = build_sfc_pieces(exported, size=options.size, dtype=dtype)
                jobs += [(name, Variant("default"), piece) for name, piece in pieces.items()]
            for part_name, variant, part in jobs:
                name = file_name(part_name, fmt, precision, variant.name)
                say(f"exporting {name}")
                on = {"device": device} if fmt.compiled_for_device else {}
                exporter(part, work / name, variant=variant.name, metadata=metadata, **on)
                artifacts.append(_record(work, name, part_name, fmt.name, precision, part.inputs, part.outputs,
                                         variant.name, device=torch.device(device).type if on else None))
                if serve is not None:
                    served = fmt.served_variant[variant.name]
                    served_name = file_name(part_name, fmt, precision, served)
                    say(f"writing {served_name}, the graph {fmt.runtime} serves")
                    serve(work / name, work / served_name)
                    artifacts.append(_record(work, served_name, part_name, fmt.name, precision, part.inputs,
                                             part.outputs, served, derived_from=name))
    if options.calibration is not None and any(p in QUANTIZED for p in options.precisions):
        from sfc_deploy.export.quantize import write_int8

        artifacts += write_int8(work, artifacts, model, calibration=options.calibration, frames=options.frames,
                                size=tuple(options.size), parts=tuple(parts),
                                served=FORMATS[QUANTIZED_FORMAT].served_variant or {}, say=say)
    for fmt in (FORMATS[name] for name in options.formats if FORMATS[name].built_from):
        from sfc_deploy.export.tensorrt import build_engines

        artifacts += build_engines(work, artifacts, replace(options, precisions=options.float_precisions), say)
    manifest = Manifest(
        root=work,
        backbone=cfg,
        sfc=model.sfc.config,
        split=model.split,
        input=InputRecord(
            raw_frames=options.raw_frames,
            frames=options.frames,
            size=tuple(options.size),
            stride=cfg.stride,
            head_streamable=cfg.head_temporal_receptive_field(model.split) == 1,
            dense=DenseInput(clips=10, crops=3, frames=cfg.frames, crop=cfg.preprocess.crop),
        ),
        artifacts=artifacts,
        formats=list(options.formats),
        parts=parts,
        precisions=[*options.float_precisions, *(p for p in options.precisions if p in QUANTIZED)],
        random_weights=options.random_weights,
        checkpoint=options.checkpoint,
        sfc_checkpoint=options.sfc_checkpoint,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        libraries=library_versions(),
    )
    manifest.save()
    return manifest


def _record(work: Path, name: str, part: str, fmt: str, precision: str, inputs: tuple[TensorSpec, ...],
            outputs: tuple[TensorSpec, ...], variant: str = "default", *, derived_from: str | None = None,
            device: str | None = None) -> Artifact:
    """The manifest record of a written file, with its sha256 (checked before every load)."""
    path = work / name
    if not path.is_file():
        raise ArtifactError(f"exporter did not write {name}")
    return Artifact(
        file=name,
        part=part,
        format=fmt,
        precision=precision,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        variant=variant,
        sha256=sha256_of(path),
        bytes=path.stat().st_size,
        derived_from=derived_from,
        device=device,
    )


__all__ = ["ExportOptions", "check_device", "check_options", "export_model", "file_name"]
