"""``sfc-deploy serve``: an export behind HTTP (Ray Serve) until Ctrl-C or SIGTERM.

Thin: the options, the export (manifest and sha256) and the port are checked before Ray starts, so
a mistake is one line and exit 2 at once; the work is :mod:`sfc_deploy.scale.serve`.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from sfc_deploy.cli.options import FastDecodeOpt, SegmentFramesOpt, SegmentsOpt, segments_pair


def _wait_for_a_signal() -> str:
    """Block until SIGINT or SIGTERM (handlers installed after Ray's own, restored afterwards)."""
    stop = threading.Event()
    received: list[str] = []

    def handler(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return received[0]


def serve_cmd(
    export: Annotated[Path, typer.Option("--export", help="The export folder to serve (sfc-deploy export).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8000,
    runtime: Annotated[str, typer.Option(help="onnxruntime, torchscript, aoti, tensorrt or pytorch.")] = "onnxruntime",
    precision: Annotated[str, typer.Option(help="fp32 or fp16; bf16 with --runtime pytorch (the weights converted at load).")] = "fp32",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="Intra-op threads per replica (default: its CPUs).")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Copies of the model, each loading the export once.")] = 1,
    cpus_per_replica: Annotated[float, typer.Option("--cpus-per-replica", help="CPUs each replica reserves.")] = 1.0,
    gpus_per_replica: Annotated[float, typer.Option("--gpus-per-replica", help="GPUs each replica reserves (runtimes with a device then run on cuda).")] = 0.0,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest request body; larger ones get 413.")] = 100.0,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, help="Most decoded videos the model takes together (1: no batching).")] = 8,
    batch_wait_ms: Annotated[float, typer.Option("--batch-wait-ms", min=0, help="How long a batch waits to fill (0: it takes what queued while the model was busy).")] = 0.0,
    max_ongoing: Annotated[int, typer.Option("--max-ongoing", min=1, help="Most requests a replica holds at once (the memory bound).")] = 16,
    top: Annotated[int, typer.Option("--top", min=1, help="Classes per answer.")] = 5,
    max_frames: Annotated[int | None, typer.Option("--max-frames", min=1, help="Most sampled frames per video (longer: segments).")] = None,
    segments: SegmentsOpt = None,
    segment_frames: SegmentFramesOpt = None,
    fast_decode: FastDecodeOpt = False,
    address: Annotated[str | None, typer.Option("--address", help="An existing Ray cluster (default: start a local Ray with this machine's CPUs).")] = None,
) -> None:
    """Serve an export over HTTP until Ctrl-C or SIGTERM: POST /predict (a video upload, multipart field
    'file', or JSON {"path": ...}) and GET /health.

    Example: curl -F file=@clip.mp4 http://127.0.0.1:8000/predict. A request may ask for untrimmed-video
    segments with ?segments=S&segment_frames=F (default: --segments/--segment-frames, else the whole video). Errors in a request are answered
    as JSON {"error": ...} with a 4xx status and the server carries on. Exit 0 after a clean shutdown.
    """
    from sfc_deploy.scale.serve import ServeOptions, start_server

    options = ServeOptions(runtime=runtime, precision=precision, threads=threads, replicas=replicas,
                           cpus_per_replica=cpus_per_replica, gpus_per_replica=gpus_per_replica,
                           max_upload_mb=max_upload_mb, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
                           max_ongoing=max_ongoing, top=top, max_frames=max_frames,
                           segments=segments_pair(segments, segment_frames), fast_decode=fast_decode)

    def starting(message: str) -> None:
        # called once the checks passed and ray.serve is imported (which sets its logger to INFO):
        # Serve's INFO lines stay in its log files, the URL printed below is what a user needs
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        typer.echo(message, err=True)

    try:  # checks the options, the export and the port before Ray starts
        server = start_server(export, host=host, port=port, options=options, address=address, announce=starting)
    except SystemExit as exc:  # Ray's own SIGTERM handler while it starts
        if exc.code == signal.SIGTERM:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    try:
        typer.echo(f"serving at {server.url} (POST {server.url}/predict, GET {server.url}/health); "
                   f"ready in {server.startup_s:.1f} s; Ctrl-C or SIGTERM stops it")
        got = _wait_for_a_signal()
    finally:
        server.stop()
    typer.echo(f"stopped ({got}): Serve{' and Ray' if server.owns_ray else ''} shut down")


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``sfc-deploy`` app."""
    app.command("serve")(serve_cmd)
