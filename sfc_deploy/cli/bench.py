"""``sfc-deploy bench``: SFC against 30-crop dense sampling, side by side, on one runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sfc_deploy.cli.options import (BackboneOpt, DeviceOpt, FastDecodeOpt, FramesOpt, SegmentFramesOpt, SegmentsOpt, SizeOpt, parse_size,
                                    segments_pair)
from sfc_deploy.common.outputs import check_output_file
from sfc_deploy.common.parsing import split_list
from sfc_deploy.data.prefetch import DEFAULT_DEPTH, DEFAULT_WORKERS
from sfc_deploy.errors import ConfigError


def parse_int_list(value: str, option: str) -> tuple[int, ...]:
    """'30,10,5' -> (30, 10, 5); anything else is a one-line error naming the option."""
    try:
        items = tuple(int(v) for v in split_list(value))
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers like 30,10,5, got {value!r}") from None
    if not items:
        raise ConfigError(f"{option} is empty; give comma-separated integers like 30,10,5")
    return items


def parse_taus(value: str) -> tuple[float, ...]:
    """'1,4/3,2,4' -> (1.0, 1.333, 2.0, 4.0), each checked like --tau everywhere else."""
    from sfc_deploy.models.sfc import parse_tau

    taus = tuple(parse_tau(v) for v in split_list(value))
    if not taus:
        raise ConfigError(f"--tau is empty; give one value or a sweep like 1,4/3,2,4, got {value!r}")
    return tuple(dict.fromkeys(taus))


def bench_device(text: str, runtime: str) -> str:
    """``--device`` resolved for ``runtime``: an explicit CUDA device must be visible (one line otherwise);
    ``auto`` picks CUDA only for runtimes that can run there."""
    from rich.console import Console

    from sfc_deploy.bench.suite import GPU_MEMORY_RUNTIMES
    from sfc_deploy.common.device import resolve_device

    on_gpu = runtime in GPU_MEMORY_RUNTIMES
    if (text or "auto").strip().lower() == "auto" and not on_gpu:
        return "cpu"
    resolved = resolve_device(text, announce=Console(stderr=True).print)
    if resolved != "cpu" and not on_gpu:
        raise ConfigError(f"sfc-deploy bench runs runtime {runtime} on the CPU only (GPU memory is read from torch's "
                          f"allocator); use --runtime {', '.join(GPU_MEMORY_RUNTIMES)} with --device {text}")
    return resolved


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        export_dir: Annotated[Path | None, typer.Argument(help="An export folder; default: export slow8x8 at the paper's settings into the cache.")] = None,
        runtime: Annotated[str, typer.Option("--runtime", "-r", help="onnxruntime, pytorch, torchscript, aoti, tensorrt.")] = "onnxruntime",
        precision: Annotated[str, typer.Option("--precision", "-p", help="fp32 or fp16 (both strategies); bf16 on --runtime pytorch; int8 of an export folder on onnxruntime.")] = "fp32",
        threads: Annotated[int | None, typer.Option("--threads", "-t", help="Intra-op threads for both strategies (default: physical cores).")] = None,
        videos: Annotated[int, typer.Option("--videos", "-n", help="Timed videos per repeat and strategy.")] = 2,
        warmup: Annotated[int, typer.Option("--warmup", help="Warm-up videos (the first is the memory measurement).")] = 1,
        repeats: Annotated[int, typer.Option("--repeats", help="Times the timed videos are run.")] = 1,
        batch_size: Annotated[str, typer.Option("--batch-size", help="Dense crops per batch to try; the fastest is kept.")] = "30,10",
        head_chunk: Annotated[int | None, typer.Option("--head-chunk", help="Stream SFC's head over time in chunks of N frames (0: whole video; default: 12 where the head can stream).")] = None,
        stream_sfc_from: Annotated[int | None, typer.Option("--stream-sfc-from", help="With --head-chunk: SFC itself streams with the head chunks on videos of at least N sampled frames; shorter ones run the faster whole-video SFC graph (default: 72, i.e. 576 raw frames at stride 8; 0: always).")] = None,
        tau: Annotated[str, typer.Option("--tau", help="SFC compression ratio, or a sweep like 1,4/3,2,4 (default export only).")] = "2",
        video: Annotated[list[Path] | None, typer.Option("--video", help="Real video files (decode included in the timing); repeatable.")] = None,
        labels: Annotated[Path | None, typer.Option("--labels", help="A labelled video list (dataset CSV, UCF101 split folder, class folders): decode included, adds top-1 (Figure 5 with --tau sweeps).")] = None,
        segments: SegmentsOpt = None,
        segment_frames: SegmentFramesOpt = None,
        lengths: Annotated[str | None, typer.Option("--lengths", help="Also measure peak memory at these raw-frame lengths, e.g. 144,288,576,1152.")] = None,
        backbone: BackboneOpt = "slow8x8",
        frames: FramesOpt = 288,
        size: SizeOpt = "256x312",
        cache: Annotated[Path | None, typer.Option("--cache", help="Folder for default exports (default: $SFC_DEPLOY_CACHE or ./cache).")] = None,
        json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
        markdown_out: Annotated[Path | None, typer.Option("--markdown", help="Write the table as Markdown.")] = None,
        plot_out: Annotated[Path | None, typer.Option("--plot", help="Write a PNG: throughput, memory, and sweeps.")] = None,
        verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the default export against PyTorch (minutes at full size; `sfc-deploy verify DIR` does it later).")] = False,
        device: DeviceOpt = "cpu",
        sfc_batch: Annotated[str, typer.Option("--sfc-batch", help="SFC videos stacked per forward pass to try, e.g. 1,4,16,32 (synthetic input); the fastest is timed.")] = "1",
        dense_videos: Annotated[str, typer.Option("--dense-videos", help="Dense: also try the 30 crops of N videos in one forward, e.g. 1,2,4 (synthetic input).")] = "1",
        cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs", help="Capture each SFC pass and dense clip batch in a CUDA graph (pytorch runtime on CUDA).")] = False,
        channels_last: Annotated[bool, typer.Option("--channels-last", help="Run the torch runners in channels-last-3d memory format.")] = False,
        as_trained: Annotated[bool, typer.Option("--as-trained", help="pytorch runtime: serve both strategies as trained, without the inference rewrite (BatchNorm folded, unit-time 3D convs as 2D); to measure what the rewrite gives.")] = False,
        trial_passes: Annotated[int, typer.Option("--trial-passes", min=1, help="Timed passes per setting of a batch sweep.")] = 3,
        peak_seconds: Annotated[float, typer.Option("--peak-seconds", min=0.01, help="Seconds spent measuring the matmul peak (the best of its repetitions; at least three run).")] = 2.0,
        workers: Annotated[int, typer.Option("--workers", min=1, help="--video/--labels end to end: decoding threads working ahead of the model.")] = DEFAULT_WORKERS,
        prefetch: Annotated[int, typer.Option("--prefetch", min=1, help="--video/--labels end to end: most videos decoded ahead (the memory bound).")] = DEFAULT_DEPTH,
        fast_decode: FastDecodeOpt = False,
    ) -> None:
        """Videos/s, latency, peak memory and GMACs of SFC against 30-crop dense sampling, same weights and runtime."""
        from sfc_deploy.bench.suite import BenchOptions
        from sfc_deploy.export.formats import check_runtime
        from sfc_deploy.common.precision import QUANTIZED, check_runtime_precision

        check_runtime(runtime)
        check_runtime_precision(precision, runtime)  # bf16: the pytorch runtime only; int8: onnxruntime only
        if precision in QUANTIZED:
            if export_dir is None:  # the cache's export has no calibration videos
                raise ConfigError(f"--precision {precision} benches an export folder: sfc-deploy export --out DIR "
                                  f"--precision fp32,{precision} --calibrate DATA, then sfc-deploy bench DIR")
        device = bench_device(device, runtime)
        if export_dir is not None and not (export_dir / "manifest.json").is_file():
            raise ConfigError(f"{export_dir} is not an export folder (no manifest.json); run sfc-deploy export --out {export_dir} first, or omit it")
        for option, out in (("--json", json_out), ("--markdown", markdown_out), ("--plot", plot_out)):
            if out is not None:
                check_output_file(out, option=option)
        files, classes = tuple(video or ()), ()
        if labels is not None:
            from sfc_deploy.data.datasets import load_video_list

            if files:
                raise ConfigError("pass either --video files or a --labels list, not both")
            listed = load_video_list(labels)
            if not len(listed):
                raise ConfigError(f"{labels} lists no videos; point --labels at a dataset CSV or folder with videos")
            files, classes = tuple(p for p, _ in listed), tuple(c for _, c in listed)
            videos = len(files)  # every labelled video is timed (and scored) once per repeat
        opts = BenchOptions(
            export_dir=export_dir,
            backbone=backbone,
            taus=parse_taus(tau),
            raw_frames=frames,
            size=parse_size(size),
            runtime=runtime,
            precision=precision,
            threads=threads,
            videos=videos,
            warmup=warmup,
            repeats=repeats,
            batch_sizes=parse_int_list(batch_size, "--batch-size"),
            head_chunk=12 if head_chunk is None else head_chunk or None,
            head_chunk_given=head_chunk is not None,
            stream_sfc_from=stream_sfc_from,
            video_files=files,
            labels=classes,
            lengths=parse_int_list(lengths, "--lengths") if lengths else (),
            segments=segments_pair(segments, segment_frames),
            cache_dir=cache,
            verify_export=verify,
            device=device,
            sfc_batch=parse_int_list(sfc_batch, "--sfc-batch"),
            dense_videos=parse_int_list(dense_videos, "--dense-videos"),
            cuda_graphs=cuda_graphs,
            channels_last=channels_last,
            inference_rewrite=not as_trained,
            trial_passes=trial_passes,
            peak_seconds=peak_seconds,
            workers=workers,
            prefetch=prefetch,
            fast_decode=fast_decode,
        )
        opts.check()
        if export_dir is not None:  # a damaged or incomplete export fails here, before the progress bar and the workers
            from sfc_deploy.runtime.pipeline import check_export

            check_export(export_dir, runtime, precision, parts=("head", "sfc", "tail", "clip"))
        run_and_report(opts, json_out=json_out, markdown_out=markdown_out, plot_out=plot_out)


def run_and_report(opts, *, json_out: Path | None = None, markdown_out: Path | None = None,
                   plot_out: Path | None = None) -> dict:
    """Run the bench with a rich progress bar, write the requested files, end with the table."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from sfc_deploy.bench.report import print_table, write_json, write_markdown
    from sfc_deploy.bench.suite import run_bench

    err = Console(stderr=True)
    # videos per worker: memory video + extra warm-ups + (dense) batch trials + timed
    per_sfc = opts.warmup + opts.videos * opts.repeats
    per_dense = per_sfc + (len(opts.batch_sizes) if len(opts.batch_sizes) > 1 else 0)
    if opts.device != "cpu" or max(opts.sfc_batch + opts.dense_videos) > 1:  # batch sweeps: timed passes per setting
        per_sfc = opts.warmup + opts.videos * opts.repeats + opts.trial_passes * len(set(opts.sfc_batch))
        dense_settings = len(set(opts.batch_sizes)) + len({v for v in opts.dense_videos if v > 1})
        per_dense = opts.warmup + opts.videos * opts.repeats + opts.trial_passes * dense_settings
    if opts.video_files:  # the timed videos again, end to end
        per_sfc, per_dense = per_sfc + opts.videos * opts.repeats, per_dense + opts.videos * opts.repeats
    total = per_dense + per_sfc * len(opts.taus) + len(opts.lengths) * (2 if opts.head_chunk else 1)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} videos"),
                  TimeElapsedColumn(), console=err, transient=False) as bar:
        task = bar.add_task("starting", total=total)

        def progress(kind: str, data: dict) -> None:
            if kind == "message":
                bar.update(task, description=data["text"])
            elif data.get("event") == "video":
                bar.advance(task)
                bar.update(task, description=f"{data['label']}: {data['kind']} video {data['seconds']:.2f} s")

        report = run_bench(opts, progress)
    if json_out:
        write_json(report, json_out)
    if markdown_out:
        write_markdown(report, markdown_out)
    if plot_out:
        from sfc_deploy.bench.plot import write_plot

        write_plot(report, plot_out)
    for label, path in (("JSON", json_out), ("Markdown", markdown_out), ("plot", plot_out)):
        if path:
            err.print(f"wrote {label} to {path}")
    print_table(report)
    return report
