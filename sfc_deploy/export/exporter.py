"""Export an SFC model to a folder of artifacts with a manifest, then verify it against PyTorch.

The folder is built under a temporary name beside the destination and renamed into place only
once every artifact is written and the manifest is complete, so an interrupted or failed export
never leaves a half-written folder behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import signal
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sfc_deploy.errors import ArtifactError, ConfigError
from sfc_deploy.export.formats import FORMATS
from sfc_deploy.export.manifest import (
    MANIFEST_VERSION,
    PRECISIONS,
    Artifact,
    Manifest,
    current_umask,
    library_versions,
    sha256_of,
)
from sfc_deploy.export.parts import PARTS, Part, build_parts
from sfc_deploy.models.config import BackboneConfig
from sfc_deploy.models.sfc import SFCConfig
from sfc_deploy.models.sfc_model import SFCModel

WEIGHTS = "model.safetensors"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class ExportOptions:
    """What to export. ``frames``/``size`` are the sampled frames and HxW the SFC graphs are built for.

    ``parts`` defaults to all four (head, sfc, tail and the clip model of the dense baseline); a
    subset serves a deployment that needs only some of them (and keeps tests fast).
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
    verify: bool = True


def save_weights(model: SFCModel, path: Path) -> None:
    """The exact weights every artifact came from: verify's reference and the pytorch runtime."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {
        "backbone_config": model.config.to_json(),
        "sfc_config": model.sfc.config.to_json(),
        "split": model.split,
    }
    save_file(state, str(path), metadata=meta)


def model_from_manifest(manifest: Manifest, *, check: bool = True) -> SFCModel:
    """Rebuild the exact PyTorch model an export folder was made from (the verification reference)."""
    from safetensors.torch import load_file

    from sfc_deploy.models.resnet3d import ResNet3d
    from sfc_deploy.models.sfc import SFC

    data = manifest.data
    art = manifest.find("weights", "pytorch")
    path = manifest.path_of(art, check=check)
    model = SFCModel(
        ResNet3d(BackboneConfig.from_dict(data["backbone"]), split=data["split"]),
        SFC(SFCConfig.from_dict(data["sfc"])),
        split=data["split"],
    )
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def _variants(fmt: str, part: str) -> list[tuple[str, bool]]:
    """(variant, static_time) pairs to export for a format and part."""
    if fmt == "onnx" and part == "sfc":
        return [("portable", False), ("custom", True)]
    if fmt == "torchscript" and part == "sfc":
        return [("default", True)]  # a trace freezes the size arithmetic of TopK's k
    if fmt == "aoti" and part == "sfc":
        # the aten TopK (stable sort, narrow to k = round(T/tau)) raises guards on T that
        # torch.export cannot prove for every T, so the package is specialised to the export's T
        return [("default", True)]
    return [("default", False)]


def _file_name(part: str, fmt: str, precision: str, variant: str) -> str:
    stem = part if variant in ("default", "portable") else f"{part}.{variant}"
    return f"{stem}.{precision}{FORMATS[fmt].suffix}"


def _export_one(fmt: str, part: Part, path: Path, *, variant: str, precision: str, metadata: dict) -> None:
    if fmt == "onnx":
        from sfc_deploy.export.onnx import export_onnx

        export_onnx(part, path, variant=variant, metadata=metadata)
    elif fmt == "torchscript":
        from sfc_deploy.export.torchscript import export_torchscript

        export_torchscript(part, path, metadata=metadata)
    elif fmt == "aoti":
        from sfc_deploy.export.aoti import export_aoti

        export_aoti(part, path)
    else:  # pragma: no cover - the table and this dispatch are kept in step by a test
        raise ConfigError(f"no exporter for format {fmt!r}")


def export_model(
    model: SFCModel,
    out_dir: str | Path,
    options: ExportOptions,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Export ``model`` into ``out_dir``; returns the manifest (with parity results if verified)."""
    out_dir = Path(out_dir)
    say = progress or (lambda _msg: None)
    check_options(out_dir, options, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        with _terminate_as_exit():
            manifest = _export_into(model, work, options, say)
            if options.verify:
                from sfc_deploy.export.verify import verify

                say("verifying every artifact against PyTorch")
                report = verify(manifest, progress=say)
                manifest.data["parity"] = report.to_dict()
                manifest.save()
            _normal_permissions(work)
            _replace_dir(work, out_dir)
        manifest.root = out_dir
        return manifest
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _terminate_as_exit():
    """Turn SIGTERM into SystemExit while exporting, so ``finally`` removes the work folder
    (the default action would kill the process and leave a partial folder behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, _frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_options(out_dir: Path, options: ExportOptions, force: bool) -> None:
    """Refuse bad options before any work: an existing folder without ``force``, unknown
    precision / format / part, TensorRT where it cannot be built."""
    if out_dir.exists() and not force:
        raise ConfigError(f"{out_dir} already exists; pass --force to replace it or choose another --out")
    for precision in options.precisions:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    for fmt in options.formats:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown format {fmt!r}; expected any of {', '.join(FORMATS)}")
    unknown = [p for p in options.parts if p not in PARTS]
    if unknown or not options.parts:
        raise ConfigError(f"unknown or no parts {unknown or list(options.parts)}; expected any of {', '.join(PARTS)}")
    if "tensorrt" in options.formats:
        from sfc_deploy.export.tensorrt import check_available

        check_available()


def _normal_permissions(work: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; give the finished folder the umask's permissions
    like any other output, so other users and services (the C++ runner) can read it."""
    mask = current_umask()
    work.chmod(0o777 & ~mask)
    for path in work.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~mask)


def _replace_dir(work: Path, out_dir: Path) -> None:
    """Move the finished folder into place; an old one is removed only after the new one is there."""
    backup = None
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.old-{_dt.datetime.now().strftime('%H%M%S%f')}")
        out_dir.rename(backup)
    work.rename(out_dir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _export_into(model: SFCModel, work: Path, options: ExportOptions, say) -> Manifest:
    model = model.eval()
    save_weights(model, work / WEIGHTS)
    cfg = model.config
    metadata = {
        "backbone": cfg.to_dict(),
        "sfc": model.sfc.config.to_dict(),
        "split": model.split,
        "random_weights": options.random_weights,
    }
    artifacts: list[Artifact] = []
    reference = build_parts(model, frames=options.frames, size=options.size)
    artifacts.append(
        _record(work, WEIGHTS, "weights", "pytorch", "fp32", reference["head"].inputs, reference["tail"].outputs)
    )
    for fmt in options.formats:
        if fmt == "tensorrt":
            continue  # built from the ONNX files below
        for precision in options.precisions:
            exported = copy_for_export(model, DTYPES[precision], topk_impl="op" if fmt == "onnx" else "aten")
            by_static = {
                static: build_parts(
                    exported, frames=options.frames, size=options.size, dtype=DTYPES[precision], static_time=static
                )
                for static in (False, True)
            }
            for part_name in (p for p in PARTS if p in options.parts):
                for variant, static in _variants(fmt, part_name):
                    part = by_static[static][part_name]
                    name = _file_name(part_name, fmt, precision, variant)
                    say(f"exporting {name}")
                    _export_one(fmt, part, work / name, variant=variant, precision=precision, metadata=metadata)
                    artifacts.append(_record(work, name, part_name, fmt, precision, part.inputs, part.outputs, variant))
    if "tensorrt" in options.formats:
        from sfc_deploy.export.tensorrt import build_engines

        artifacts += build_engines(work, artifacts, options, say)
    data = {
        "manifest_version": MANIFEST_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "random_weights": options.random_weights,
        "checkpoint": options.checkpoint,
        "sfc_checkpoint": options.sfc_checkpoint,
        "backbone": cfg.to_dict(),
        "preprocess": cfg.to_dict()["preprocess"],
        "sfc": model.sfc.config.to_dict(),
        "split": model.split,
        "tau": model.sfc.config.tau,
        "input": {
            "raw_frames": options.raw_frames,
            "frames": options.frames,
            "size": list(options.size),
            "stride": cfg.stride,
            "head_streamable": cfg.head_temporal_receptive_field(model.split) == 1,
            "dense": {"clips": 10, "crops": 3, "frames": cfg.frames, "crop": cfg.preprocess.crop},
        },
        "formats": list(options.formats),
        "parts": [p for p in PARTS if p in options.parts],
        "precisions": list(options.precisions),
        "artifacts": [a.to_dict() for a in artifacts],
        "libraries": library_versions(),
    }
    manifest = Manifest(root=work, data=data)
    manifest.save()
    return manifest


def copy_for_export(model: SFCModel, dtype: torch.dtype, *, topk_impl: str) -> SFCModel:
    """A copy in ``dtype`` whose TopK is the custom op ("op", for ONNX) or plain aten ops ("aten",
    for TorchScript/AOTInductor, which C++ loads without the Python op). The original is untouched."""
    import copy

    clone = copy.deepcopy(model).to(dtype)
    clone.sfc.topk_impl = topk_impl
    return clone.eval()


def _record(work, name, part, fmt, precision, inputs, outputs, variant="default", extra=None) -> Artifact:
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
        extra=extra or {},
    )


__all__ = ["ExportOptions", "check_options", "copy_for_export", "export_model", "model_from_manifest"]
