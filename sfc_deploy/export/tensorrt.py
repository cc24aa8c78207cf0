"""TensorRT engines built from the exported ONNX parts.

UNVERIFIED AGAINST A REAL TENSORRT: TensorRT cannot be installed where this was written (SPEC
section 5). It follows the documented Python API of TensorRT 10 and 11; the planning below it
(which engines, which profiles, which typing mode, the refusals) is plain Python and tested.

One engine per ONNX part and precision: ``head``, ``sfc`` (portable graph: native TopK layers),
``sfc.custom`` (the ``sfc::TopKTemporalPool`` node, built with the plugin library), ``tail`` and
the dense ``clip`` model, so the bench compares SFC and 30-crop on the same runtime.

Precision, two modes:

* **strongly typed** (TensorRT 11, where it is the only mode; opt-in on 10.x): every tensor has
  the type the ONNX graph gives it. The fp16 ONNX export already computes q.k^T and the softmax
  in fp32 (SFC casts before the bmm), so the fp16 engine keeps them fp32 by construction.
* **weakly typed** (TensorRT 10 default): the fp16 engine is built from the fp16 ONNX with
  ``BuilderFlag.FP16``; every layer whose output the graph declares fp32 (the attention logits,
  the prior, the softmax) is pinned to fp32 with ``OBEY_PRECISION_CONSTRAINTS``, so TensorRT
  cannot quietly move the softmax to fp16.

Optimisation profiles come from the artifacts' symbolic dims (``batch``, ``time``, ``k``) and
:class:`TensorRTOptions`; a timing cache per TensorRT version and GPU makes rebuilds fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sfc_deploy.common.atomic import atomic_write_bytes
from sfc_deploy.errors import BackendUnavailableError, ConfigError
from sfc_deploy.export.manifest import Artifact, sha256_of

#: How many crops the dense baseline runs per video (10 clips x 3 crops): the clip engine's opt batch.
DENSE_BATCH = 30
ENGINE_SUFFIX = ".engine"
Dims = tuple[int, ...]


@dataclass(frozen=True)
class TensorRTOptions:
    """Knobs of the engine build. The defaults suit one video at a time at the exported length.

    Attributes:
        max_batch: largest batch of the SFC parts' profiles (videos per call).
        max_time: largest time length (sampled frames); default 4x the exported ``frames``, i.e.
            videos up to 4x as long as the one the export was sized for.
        workspace_gib: builder workspace limit.
        strongly_typed: None picks per version (11: required; 10: weak typing with builder
            flags); True asks for strong typing on 10.x too.
        plugin: for the custom SFC graph: "auto" builds it when the plugin library loads and
            says so when it does not; "require" makes a missing plugin an error; "skip" never builds it.
        plugin_library: the ``libsfc_trt_plugins.so``; default from ``$SFC_TRT_PLUGIN_LIB`` or build/.
        timing_cache: cache file; default ``~/.cache/sfc-deploy/tensorrt/<version>-<gpu>.timing``.
    """

    max_batch: int = 4
    max_time: int | None = None
    workspace_gib: float = 4.0
    strongly_typed: bool | None = None
    plugin: str = "auto"
    plugin_library: str | None = None
    timing_cache: str | None = None

    def __post_init__(self) -> None:
        if self.plugin not in ("auto", "require", "skip"):
            raise ConfigError(f"plugin={self.plugin!r}; expected auto, require or skip")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch={self.max_batch}; expected >= 1")
        if self.workspace_gib <= 0:
            raise ConfigError(f"workspace_gib={self.workspace_gib}; expected > 0")


@dataclass(frozen=True)
class EnginePlan:
    """One engine to build: the ONNX artifact it comes from and the profile of each input."""

    source: Artifact
    file: str
    needs_plugin: bool
    profiles: dict[str, tuple[Dims, Dims, Dims]] = field(default_factory=dict)


# --- planning (no TensorRT needed) -----------------------------------------------------------


def check_available() -> None:
    """Raise a one-line error when TensorRT engines cannot be built on this machine."""
    try:
        import tensorrt  # noqa: F401, PLC0415 - optional backend
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            f"--format tensorrt needs TensorRT and an NVIDIA GPU, and `import tensorrt` fails here "
            f"({type(exc).__name__}: {exc}); export onnx here and build engines on the GPU machine "
            "(sfc-deploy export --format onnx,tensorrt there)"
        ) from None
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "--format tensorrt needs a CUDA GPU and none is visible (torch.cuda.is_available() is False)"
        )


def tensorrt_major(version: str) -> int:
    """``"10.13.3.9"`` -> 10; refuses versions this module was not written for."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise BackendUnavailableError(f"cannot read the TensorRT version {version!r}") from None
    if major < 10:
        raise BackendUnavailableError(
            f"TensorRT {version} is too old: the engine builder and the IPluginV3 plugin need "
            "TensorRT >= 10.0; install TensorRT 10 or 11"
        )
    return major


def use_strong_typing(version: str, requested: bool | None) -> bool:
    """Strong typing on TensorRT >= 11 (weak typing was removed there), weak by default on 10."""
    major = tensorrt_major(version)
    if major >= 11:
        if requested is False:
            raise ConfigError(
                f"strongly_typed=False is impossible on TensorRT {version}: 11.x removed weak typing "
                "(BuilderFlag.FP16); leave strongly_typed unset, precision comes from the ONNX graph"
            )
        return True
    return bool(requested)


def engine_file_name(source: Artifact) -> str:
    """The exporter's naming rule with the engine suffix: ``sfc.custom.fp16.engine``."""
    stem = source.part if source.variant in ("default", "portable") else f"{source.part}.{source.variant}"
    return f"{stem}.{source.precision}{ENGINE_SUFFIX}"


def read_tau(onnx_path: Path) -> float:
    """SFC's tau from the ONNX metadata_props the exporter writes (``sfc_deploy.sfc``)."""
    import onnx  # noqa: PLC0415

    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    try:
        return float(json.loads(props["sfc_deploy.sfc"])["tau"])
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{onnx_path} has no usable sfc_deploy.sfc metadata ({exc}); re-export it with sfc-deploy export"
        ) from None


def dim_ranges(
    *, frames: int, tau: float, settings: TensorRTOptions
) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of each symbolic dim the parts use, for the SFC parts."""
    from sfc_deploy.export.parts import MAX_BATCH, MAX_TIME, min_time  # noqa: PLC0415
    from sfc_deploy.models.sfc import compressed_length  # noqa: PLC0415

    t_min = min_time(tau)
    t_max = settings.max_time if settings.max_time is not None else 4 * frames
    if not t_min <= frames <= t_max <= MAX_TIME:
        raise ConfigError(
            f"time profile min {t_min} <= opt {frames} <= max {t_max} <= {MAX_TIME} does not hold; "
            f"set max_time between {frames} and {MAX_TIME}"
        )
    if settings.max_batch > MAX_BATCH:
        raise ConfigError(f"max_batch={settings.max_batch} exceeds the exported limit {MAX_BATCH}")
    return {
        "batch": (1, 1, settings.max_batch),
        "time": (t_min, frames, t_max),
        "k": tuple(compressed_length(t, tau) for t in (t_min, frames, t_max)),  # type: ignore[misc]
    }


def profile_for(source: Artifact, ranges: dict[str, tuple[int, int, int]]) -> dict[str, tuple[Dims, Dims, Dims]]:
    """min/opt/max shapes of every input of ``source``; the dense clip model is sized for 30 crops."""
    ranges = dict(ranges)
    if source.part == "clip":
        top = max(DENSE_BATCH, ranges["batch"][2])
        ranges["batch"] = (1, DENSE_BATCH, top)
    out: dict[str, tuple[Dims, Dims, Dims]] = {}
    for spec in source.inputs:
        shapes: list[list[int]] = [[], [], []]
        for dim in spec.shape:
            if isinstance(dim, int):
                triple: tuple[int, int, int] = (dim, dim, dim)
            elif dim in ranges:
                triple = ranges[dim]
            else:
                raise ConfigError(
                    f"{source.file}: input {spec.name!r} has a symbolic dim {dim!r} with no profile; "
                    f"known: {', '.join(ranges)}"
                )
            for i in range(3):
                shapes[i].append(triple[i])
        out[spec.name] = (tuple(shapes[0]), tuple(shapes[1]), tuple(shapes[2]))
    return out


def plan_engines(
    artifacts: list[Artifact],
    precisions: tuple[str, ...] | list[str],
    *,
    frames: int,
    tau: float,
    settings: TensorRTOptions,
) -> list[EnginePlan]:
    """Which engines to build from which ONNX files, with their profiles.

    Raises:
        ConfigError: no ONNX part of a requested precision (engines are built from ONNX).
    """
    from sfc_deploy.export.parts import PARTS  # noqa: PLC0415

    ranges = dim_ranges(frames=frames, tau=tau, settings=settings)
    plans: list[EnginePlan] = []
    for precision in precisions:
        # SFC's streaming pieces are ONNX Runtime's (export.parts.build_sfc_pieces): the engines are the four parts
        sources = [a for a in artifacts if a.format == "onnx" and a.precision == precision and a.derived_from is None
                   and a.part in PARTS]
        if not sources:
            raise ConfigError(
                f"TensorRT engines are built from the ONNX parts, and there is no {precision} ONNX; "
                f"export with --format onnx,tensorrt --precision {precision}"
            )
        for src in sources:
            custom = src.variant == "custom"
            if custom and settings.plugin == "skip":
                continue
            plans.append(EnginePlan(src, engine_file_name(src), custom, profile_for(src, ranges)))
    return plans


def default_timing_cache(version: str, gpu: str) -> Path:
    """One timing cache per TensorRT version and GPU model (its entries are only valid there)."""
    safe = "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in f"{version}-{gpu}")
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "sfc-deploy" / "tensorrt" / f"{safe}.timing"


def gpu_info() -> dict[str, str]:
    """Name and compute capability of the current CUDA device, as recorded in each engine's extra."""
    import torch  # noqa: PLC0415

    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


# --- building (TensorRT) ---------------------------------------------------------------------


def build_engines(
    work: Path, artifacts: list[Artifact], options: Any, say: Callable[[str], None]
) -> list[Artifact]:
    """Build every planned engine into ``work``; called by the exporter after the ONNX parts.

    ``options`` is the exporter's ExportOptions; its optional ``tensorrt`` attribute (a
    :class:`TensorRTOptions`) overrides the defaults.
    """
    from sfc_deploy.export.tensorrt_plugin import import_tensorrt, load_plugin_library  # noqa: PLC0415

    check_available()
    trt = import_tensorrt()
    settings: TensorRTOptions = options.tensorrt or TensorRTOptions()
    strong = use_strong_typing(trt.__version__, settings.strongly_typed)
    sfc_onnx = next((a for a in artifacts if a.format == "onnx" and a.part == "sfc"), None)
    if sfc_onnx is None:
        raise ConfigError("TensorRT engines are built from the ONNX parts; export with --format onnx,tensorrt")
    tau = read_tau(work / sfc_onnx.file)
    plans = plan_engines(artifacts, options.precisions, frames=options.frames, tau=tau, settings=settings)

    plugin_path: str | None = None
    if any(p.needs_plugin for p in plans):
        try:
            plugin_path = str(load_plugin_library(settings.plugin_library))
        except BackendUnavailableError as exc:
            if settings.plugin == "require":
                raise
            say(f"skipping the custom-op SFC engines: {exc}")
            plans = [p for p in plans if not p.needs_plugin]

    device = gpu_info()
    cache_path = Path(settings.timing_cache) if settings.timing_cache else default_timing_cache(trt.__version__, device["gpu"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    probe = builder.create_builder_config()
    timing_cache = probe.create_timing_cache(cache_bytes)

    out: list[Artifact] = []
    for plan in plans:
        say(f"building {plan.file} ({'strongly' if strong else 'weakly'} typed, TensorRT {trt.__version__})")
        plan_bytes, pinned = _build_one(trt, builder, logger, work / plan.source.file, plan, strong, settings, timing_cache)
        atomic_write_bytes(work / plan.file, plan_bytes)
        extra = {
            "tensorrt": trt.__version__,
            **device,
            "typing": "strong" if strong else "weak",
            "source": plan.source.file,
            "profiles": {name: [list(s) for s in shapes] for name, shapes in plan.profiles.items()},
            "fp32_pinned_layers": pinned,
            "plugin": plugin_path if plan.needs_plugin else None,
            "timing_cache": str(cache_path),
            "settings": asdict(settings),
        }
        out.append(
            Artifact(
                file=plan.file,
                part=plan.source.part,
                format="tensorrt",
                precision=plan.source.precision,
                inputs=plan.source.inputs,
                outputs=plan.source.outputs,
                variant=plan.source.variant,
                sha256=sha256_of(work / plan.file),
                bytes=(work / plan.file).stat().st_size,
                extra=extra,
            )
        )
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cache_path, bytes(timing_cache.serialize()))
    return out


def _build_one(
    trt: Any,
    builder: Any,
    logger: Any,
    onnx_path: Path,
    plan: EnginePlan,
    strong: bool,
    settings: TensorRTOptions,
    timing_cache: Any,
) -> tuple[bytes, int]:
    """Parse one ONNX file and build its serialized engine; returns (plan bytes, fp32-pinned layers)."""
    flags = 0
    if strong and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # ignored (always on) in 11.x
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file: external weights resolve
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        hint = " (is the plugin library loaded?)" if plan.needs_plugin else ""
        raise ConfigError(f"TensorRT cannot parse {onnx_path.name}{hint}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * (1 << 30)))
    config.set_timing_cache(timing_cache, False)
    pinned = 0
    if plan.source.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: an "fp32" engine would run TF32 convs
    if not strong and plan.source.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32_layers(trt, network)

    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConfigError(
            f"TensorRT failed to build {plan.file} from {onnx_path.name} (see the log above); "
            f"profiles were {plan.profiles}"
        )
    return bytes(serialized), pinned


def _pin_fp32_layers(trt: Any, network: Any) -> int:
    """Weak typing: keep every layer the ONNX graph computes in fp32 (attention, softmax) in fp32."""
    skip = {getattr(trt.LayerType, name) for name in ("CONSTANT", "SHAPE", "CAST") if hasattr(trt.LayerType, name)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in skip or layer.num_outputs == 0:
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if all(o.dtype == trt.float32 for o in outputs):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned




__all__ = [
    "TensorRTOptions",
    "EnginePlan",
    "check_available",
    "build_engines",
    "plan_engines",
    "profile_for",
    "dim_ranges",
    "use_strong_typing",
    "engine_file_name",
]
