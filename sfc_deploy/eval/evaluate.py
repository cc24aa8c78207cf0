"""Top-1/top-5 of every inference strategy on a labelled dataset, with the cost of each.

Every video is decoded once; each strategy then samples its input from the same frames through
the one video-to-input function (:func:`~sfc_deploy.data.inputs.model_input`), so the strategies
differ only in what they feed the network: ``single`` (one centre clip), ``uniform`` (N centre
clips, logits averaged), ``dense`` (10 clips x 3 crops, logits averaged: the baseline SFC replaces)
and SFC (the whole video, one pass) for each trained SFC checkpoint at each requested tau; asked
for by name, ``segments`` is SFC on S uniformly spaced segments of F consecutive sampled frames,
concatenated (paper section 6, untrimmed videos: 8 x 32 = 256 or 8 x 128 = 1024 frames).

Checkpoints and exports are evaluated by the same loop over deployments
(:class:`~sfc_deploy.runtime.pipeline.Deployment`): a PyTorch model in memory, or an export folder
on any runtime, run through the same SFC and clip pipelines that bench and verify use.

SFC weights do not depend on tau (k only sets how many query steps the pooling keeps, and the
prior's centres), so one checkpoint can be evaluated at several tau; each result records the tau
it was trained at.

Cost is GMACs per video (multiply-accumulates, counted by :mod:`sfc_deploy.bench.flops` on the
meta device), averaged over the videos.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sfc_deploy.bench.flops import dense_cost, sfc_cost
from sfc_deploy.common.environment import environment
from sfc_deploy.data.datasets import VideoList
from sfc_deploy.data.inputs import InputSpec, model_input
from sfc_deploy.data.prefetch import DEFAULT_DEPTH, DEFAULT_WORKERS, Prefetcher
from sfc_deploy.errors import ConfigError
from sfc_deploy.eval.agreement import agreement, seed_groups, seed_of, variant_key
from sfc_deploy.export.weights import model_from_manifest
from sfc_deploy.models.factory import create_model
from sfc_deploy.models.sfc import SFC
from sfc_deploy.models.sfc_model import SFCModel, read_sfc_checkpoint
from sfc_deploy.runtime.pipeline import Deployment, load
from sfc_deploy.train.common import Progress
from sfc_deploy.train.views import FrameStore

STRATEGIES = ("single", "uniform", "dense", "sfc")
#: Every strategy eval knows: the defaults, and ``segments`` (SFC on S segments of F consecutive
#: sampled frames: the paper's section 6 input for untrimmed videos), asked for by name.
ALL_STRATEGIES = (*STRATEGIES, "segments")
#: The paper's untrimmed input (table 7): 8 segments of 32 sampled frames (256 in all).
SEGMENTS = (8, 32)


@dataclass(frozen=True)
class Method:
    """One evaluated configuration: a strategy, and for SFC the checkpoint and tau."""

    name: str
    strategy: str
    tau: float | None = None
    sfc_name: str | None = None


@dataclass
class _Tally:
    method: Method
    top5: list[list[int]] = dataclasses.field(default_factory=list)
    logits: list[list[float]] = dataclasses.field(default_factory=list)  # for agreement with dense
    gmacs: list[float] = dataclasses.field(default_factory=list)


def parse_sfc_entries(values: Sequence[str]) -> dict[str, Path]:
    """``["topk=runs/topk/sfc.safetensors", "runs/avg/sfc.safetensors"]`` -> name -> path."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            path, name = value, Path(value).parent.name or Path(value).stem
        if not name or not path:
            raise ConfigError(f"--sfc must be NAME=PATH or PATH, got {value!r}")
        if name in out:
            raise ConfigError(f"--sfc name {name!r} is used twice; give each checkpoint its own NAME=PATH")
        out[name] = Path(path)
    return out


def sfc_at_tau(base: SFCModel, tau: float) -> SFCModel:
    """The same trained SFC weights run at another tau (a new module sharing the backbone)."""
    if tau == base.sfc.config.tau:
        return base
    sfc = SFC(dataclasses.replace(base.sfc.config, tau=tau))
    sfc.load_state_dict(base.sfc.state_dict())
    return SFCModel(base.backbone, sfc, split=base.split).eval()


def check_strategies(strategies: Sequence[str]) -> list[str]:
    """The strategies themselves, or a one-line error naming the unknown ones (none given is refused too)."""
    unknown = [s for s in strategies if s not in ALL_STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(f"unknown strategy {', '.join(unknown) or 'none given'}; expected some of {', '.join(ALL_STRATEGIES)}")
    return list(strategies)


def _check(videos: VideoList, strategies: Sequence[str]) -> None:
    check_strategies(strategies)
    if not len(videos):
        raise ConfigError("the evaluation list is empty; pass a CSV/folder with labelled videos")


def _clip_methods(strategies: Sequence[str], num_clips: int) -> list[Method]:
    names = {"single": "single", "uniform": f"uniform-{num_clips}", "dense": f"dense-{num_clips * 3}"}
    return [Method(names[s], s) for s in strategies if s in names]


def _sfc_methods(strategies: Sequence[str], name: str, tau: float, segments: tuple[int, int]) -> list[Method]:
    """SFC methods of one checkpoint at one tau: the whole video (sfc) and/or S x F segments."""
    out = []
    if "sfc" in strategies:
        out.append(Method(f"sfc:{name}@tau={tau:g}", "sfc", tau, name))
    if "segments" in strategies:
        out.append(Method(f"sfc-segments-{segments[0]}x{segments[1]}:{name}@tau={tau:g}", "segments", tau, name))
    return out


def _segments(strategies: Sequence[str], segments: tuple[int, int] | None) -> tuple[int, int]:
    if segments is not None and "segments" not in strategies:
        raise ConfigError("--segments/--segment-frames apply to strategy segments; add it to --strategies or drop them")
    s, f = segments or SEGMENTS
    if s < 1 or f < 1:
        raise ConfigError(f"--segments and --segment-frames must be >= 1, got {s} and {f}")
    return s, f


def evaluate(
    videos: VideoList,
    *,
    backbone: str,
    checkpoint: str | Path | None,
    sfc_checkpoints: dict[str, Path] | None = None,
    taus: Sequence[float] = (2.0,),
    strategies: Sequence[str] = STRATEGIES,
    num_clips: int = 10,
    max_frames: int | None = None,
    segments: tuple[int, int] | None = None,
    trust_checkpoint: bool = False,
    progress: Progress | None = None,
    device: str | None = None,
    workers: int = DEFAULT_WORKERS,
    prefetch: int = DEFAULT_DEPTH,
    fast_decode: bool = False,
) -> dict[str, Any]:
    """Evaluate on PyTorch; returns the report (see :func:`sfc_deploy.eval.report.write_report`).

    ``segments``: (S, F) of strategy ``segments`` (default :data:`SEGMENTS`). ``device``: "cpu" or
    "cuda:N" (videos decode on the CPU; each model is copied to the device once); None: the CPU.
    ``workers``/``prefetch``: decoding threads and videos decoded ahead of the models (each held whole).

    Raises:
        ConfigError: unknown strategy, ``sfc`` or ``segments`` without checkpoints, an empty list, or class counts
            that do not match the data.
    """
    _check(videos, strategies)
    segments = _segments(strategies, segments)
    sfc_checkpoints = dict(sfc_checkpoints or {})
    for wants in ("sfc", "segments"):
        if wants in strategies and not sfc_checkpoints:
            raise ConfigError(f"strategy {wants} needs at least one --sfc NAME=PATH (a checkpoint from `sfc-deploy train`)")
    if num_clips < 1:
        raise ConfigError(f"num_clips must be >= 1, got {num_clips}")
    base = create_model(backbone, checkpoint=checkpoint, trust_checkpoint=trust_checkpoint,
                        num_classes=None if checkpoint else len(videos.class_names))
    config = base.config
    if config.num_classes != len(videos.class_names):
        raise ConfigError(f"the backbone has {config.num_classes} classes but the data has "
                          f"{len(videos.class_names)}; evaluate on the label set it was trained on")
    clip_dep = Deployment.from_model(base, device=device)
    methods: list[tuple[Method, Deployment, SFCModel]] = [(m, clip_dep, base) for m in _clip_methods(strategies, num_clips)]
    sfc_meta: dict[str, dict[str, Any]] = {}
    if "sfc" in strategies or "segments" in strategies:
        for name, path in sfc_checkpoints.items():
            _, meta = read_sfc_checkpoint(path)
            sfc_meta[name] = {"checkpoint": str(path), **meta["sfc_config"], "split": meta["split"],
                              "train": meta["extra"].get("train")}
            trained = create_model(backbone, checkpoint=checkpoint, sfc_checkpoint=path, trust_checkpoint=trust_checkpoint,
                                   num_classes=None if checkpoint else config.num_classes)
            for tau in taus:
                model = sfc_at_tau(trained, tau)
                dep = Deployment.from_model(model, device=device)
                methods.extend((m, dep, model) for m in _sfc_methods(strategies, name, tau, segments))
    tallies = _run(videos, methods, num_clips=num_clips, max_frames=max_frames, segments=segments, progress=progress,
                   workers=workers, prefetch=prefetch, fast_decode=fast_decode)
    return {
        "runtime": "pytorch",
        "precision": "fp32",
        "fast_decode": fast_decode,
        "device": clip_dep.device or "cpu",
        "environment": environment(device=clip_dep.device or "cpu"),
        "backbone": {"name": config.name, "checkpoint": str(checkpoint) if checkpoint else None,
                     "short_side": config.preprocess.short_side, "frames": config.frames, "stride": config.stride},
        **_scores(tallies, videos, sfc_meta),
    }


def evaluate_export(
    videos: VideoList,
    export_dir: str | Path,
    *,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
    strategies: Sequence[str] = STRATEGIES,
    num_clips: int = 10,
    max_frames: int | None = None,
    segments: tuple[int, int] | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    workers: int = DEFAULT_WORKERS,
    prefetch: int = DEFAULT_DEPTH,
    fast_decode: bool = False,
) -> dict[str, Any]:
    """The same evaluation on exported artifacts: what a deployment would score, not what PyTorch would.

    Clip strategies (single, uniform, dense) run the exported clip model; ``sfc`` runs head -> SFC ->
    tail of the export (its own trained SFC weights at its exported tau), on input fitted to the
    export's fixed frame size and time axis by the same function predict and bench use. ``device``:
    "cpu" or "cuda:N" (None: the runtime's default).
    """
    _check(videos, strategies)
    segments = _segments(strategies, segments)
    with load(export_dir, runtime, precision=precision, device=device) as dep:
        manifest, config = dep.manifest, dep.config
        reference = model_from_manifest(manifest)
        if config.num_classes != len(videos.class_names):
            raise ConfigError(f"the export has {config.num_classes} classes but the data has "
                              f"{len(videos.class_names)}; evaluate on the label set it was trained on")
        sfc_meta = {"export": {"checkpoint": manifest.sfc_checkpoint or str(export_dir), **manifest.sfc.to_dict()}}
        methods = [(m, dep, reference) for m in _clip_methods(strategies, num_clips)]
        methods.extend((m, dep, reference) for m in _sfc_methods(strategies, "export", manifest.tau, segments))
        tallies = _run(videos, methods, num_clips=num_clips, max_frames=max_frames, segments=segments, progress=progress,
                       workers=workers, prefetch=prefetch, fast_decode=fast_decode)
    return {
        "runtime": runtime,
        "fast_decode": fast_decode,
        "precision": precision,
        "device": dep.device,  # None: the runtime's default
        "export": str(export_dir),
        "environment": environment(device=dep.device or "cpu"),
        "backbone": {"name": config.name, "checkpoint": manifest.checkpoint, "short_side": config.preprocess.short_side,
                     "frames": config.frames, "stride": config.stride},
        **_scores(tallies, videos, sfc_meta),
    }


#: Strategies whose input goes through SFC (head -> SFC -> tail) rather than the clip model.
SFC_INPUTS = ("sfc", "segments")


def classify(dep: Deployment, x: torch.Tensor, strategy: str) -> torch.Tensor:
    """Logits (classes,) of one video's sampled input: the SFC pipeline (sfc, segments), or the clip pipeline."""
    return dep.predict(x)[0] if strategy in SFC_INPUTS else dep.predict_clips(x)[0]


def _run(videos: VideoList, methods: list[tuple[Method, Deployment, SFCModel]], *, num_clips: int,
         max_frames: int | None, progress: Progress | None,
         segments: tuple[int, int] = SEGMENTS, workers: int = DEFAULT_WORKERS, prefetch: int = DEFAULT_DEPTH,
         fast_decode: bool = False) -> list[_Tally]:
    """The evaluation loop: decode each video once, feed every method its input, tally top-5 and cost."""
    tallies = [_Tally(m) for m, _, _ in methods]
    store = FrameStore(videos, preload=False, reference_only=fast_decode)
    options = {"single": {}, "uniform": {"num_clips": num_clips}, "dense": {"num_clips": num_clips}, "sfc": {"max_frames": max_frames},
               "segments": {"segments": segments[0], "frames_per_segment": segments[1]}}
    clip_costs: dict[tuple[int, str], float] = {}
    sfc_costs: dict[tuple[int, tuple[int, ...]], float] = {}
    with torch.no_grad(), Prefetcher(store.all_frames, range(len(store)), depth=prefetch, workers=workers,
                                     name="sfc-eval-decode") as stream:
        for got in stream:  # the next videos decode while every method runs on this one
            i, frames = got.item, got.result()  # a video that does not decode ends the evaluation, naming it
            inputs: dict[tuple, torch.Tensor] = {}
            for (method, dep, cost_model), tally in zip(methods, tallies):
                spec = dep.input_spec if method.strategy in SFC_INPUTS else InputSpec()  # clips: the crop size
                key = (method.strategy, spec)
                if key not in inputs:
                    inputs[key] = model_input(frames, method.strategy, dep.config, spec, **options[method.strategy]).tensor
                x = inputs[key]
                logits = classify(dep, x, method.strategy)
                if method.strategy in SFC_INPUTS:
                    ckey = (id(cost_model), tuple(x.shape))
                    if ckey not in sfc_costs:
                        sfc_costs[ckey] = sfc_cost(cost_model, frames=x.shape[2], size=tuple(x.shape[-2:])).gmacs
                    tally.gmacs.append(sfc_costs[ckey])
                else:
                    ckey = (id(cost_model), method.strategy)
                    if ckey not in clip_costs:
                        n, c = {"single": (1, 1), "uniform": (num_clips, 1), "dense": (num_clips, 3)}[method.strategy]
                        clip_costs[ckey] = dense_cost(cost_model, num_clips=n, num_crops=c).gmacs
                    tally.gmacs.append(clip_costs[ckey])
                tally.top5.append(logits.topk(min(5, logits.numel())).indices.tolist())
                tally.logits.append(logits.float().tolist())
            if progress is not None:
                progress("evaluate", i + 1, len(store))
    return tallies


def _scores(tallies: list[_Tally], videos: VideoList, sfc_meta: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Top-1/top-5 and mean GMACs per method, and the per-video predictions behind them."""
    labels = videos.labels
    dense = next((t for t in tallies if t.method.strategy == "dense"), None)
    results = []
    for tally in tallies:
        m = tally.method
        top1 = sum(p[0] == y for p, y in zip(tally.top5, labels)) / len(labels)
        top5 = sum(y in p for p, y in zip(tally.top5, labels)) / len(labels)
        row = {"method": m.name, "strategy": m.strategy, "top1": top1, "top5": top5,
               "gmacs": sum(tally.gmacs) / len(tally.gmacs), "videos": len(labels)}
        if m.sfc_name is not None:
            meta = sfc_meta[m.sfc_name]
            row.update({"sfc": m.sfc_name, "tau": m.tau, "trained_tau": meta["tau"], "pool": meta["pool"],
                        "prior": meta["prior"], "logit_scale": meta["logit_scale"], "sfc_checkpoint": meta["checkpoint"],
                        "seed": seed_of(meta)})
        if dense is not None and tally is not dense:
            row.update(agreement(tally.logits, dense.logits, labels))
        results.append(row)
    return {
        "class_names": list(videos.class_names),
        "videos": [str(p) for p, _ in videos],
        "labels": labels,
        "results": results,
        "agreement_with": dense.method.name if dense is not None else None,
        "seed_groups": seed_groups(results, {name: variant_key(meta) for name, meta in sfc_meta.items()}),
        "predictions": {t.method.name: [p[0] for p in t.top5] for t in tallies},
    }
