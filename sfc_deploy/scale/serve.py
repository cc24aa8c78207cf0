"""``sfc-deploy serve``: an export behind HTTP on Ray Serve, one prediction per request.

Routes (JSON in, JSON out; every error is ``{"error": "one line"}`` with a 4xx or 5xx status and the
server carries on):

* ``POST /predict`` with a video upload (``multipart/form-data``, field ``file``; or the raw bytes
  as ``application/octet-stream`` / ``video/*``), or a JSON body ``{"path": "/abs/video.mp4"}``
  naming a file the server itself can read. The answer carries what a ``sfc-deploy classify`` row
  does (top classes with their probabilities, the most-attended frames and their timestamps,
  decode and model seconds) and how many videos shared the model call (see :func:`response`).
  ``?segments=S&segment_frames=F`` reads the video as the paper's untrimmed-video input (section 6:
  S uniformly spaced segments of F sampled frames) instead of the server's default.
* ``GET /health``: answers once the export is loaded (a replica takes requests only after its
  constructor loaded it), with what is served.

Each replica (:class:`SFCService`) loads the export once, on its runtime and precision, with its
runtime's intra-op threads matched to the CPUs it reserves, and decodes every video as classify does
(:func:`~sfc_deploy.scale.rows.decode`: the one video-to-input function of predict, eval and bench).
Uploads go to a temporary file (PyAV reads paths), deleted as soon as it is decoded; bodies over
``max_upload_mb`` are refused with 413 (from ``Content-Length`` before reading, or while reading),
and a replica holds at most ``max_ongoing`` requests, so its memory is bounded by both.

Batching: requests decode on a small pool of threads while the model runs on a thread of its own;
decoded videos meet in :func:`ray.serve.batch`, which hands the model up to ``max_batch_size`` of
them at a time. Videos of one shape are stacked along the batch axis and run as one model call:
with a fixed time axis (TorchScript, AOTInductor, the custom-op ONNX graph) every video has the
export's shape, since every exported head also fixes the frame size. Videos of different shapes
(different lengths on a dynamic-time ONNX export) cannot be stacked; they run one after the other
in the same batch. What a stacked call buys depends on the model and device: fewer, larger calls
amortise per-call overhead and fill a GPU; on a CPU the convolutions cost about the same per video
either way. ``benchmarks/serve/`` measures it against ``max_batch_size=1`` on the tiny test export
(where the model is a small part of a request's cost); no other speed-up is claimed.

A JSON ``path`` is decoded with the server's permissions: keep the default host (127.0.0.1) or
serve on a network you trust.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import torch

from sfc_deploy.common.environment import usable_cores
from sfc_deploy.common.text import one_line
from sfc_deploy.data.inputs import InputSpec, ModelInput, check_segments
from sfc_deploy.data.video import VideoInfo
from sfc_deploy.errors import BackendUnavailableError, ConfigError, SfcError
from sfc_deploy.runtime.pipeline import Deployment, load
from sfc_deploy.scale.rows import check_frame_options, class_names, decode, gpu_device, run_batch, summarize

APP_NAME = "sfc-deploy"
ROUTES = {"/predict": "POST", "/health": "GET"}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """What each replica serves and how many replicas there are.

    Attributes:
        runtime, precision, threads: the deployment (as for predict); ``threads`` None: one
            intra-op thread per CPU the replica reserves.
        replicas: copies of the model, each loading the export once (a Ray actor each).
        cpus_per_replica, gpus_per_replica: what each replica reserves; with GPUs, runtimes that
            take a device run on ``cuda``.
        max_upload_mb: largest request body (upload or JSON); larger ones get 413.
        max_batch_size: most decoded videos handed to the model together (1: no batching).
        batch_wait_ms: how long a batch waits to fill before it runs anyway; 0 (default): it takes
            what queued while the model was busy and adds no latency at low load.
        max_ongoing: most requests a replica holds at once (decoding, queued or in the model);
            more wait in Serve's queue. It bounds memory: each holds a body and a decoded video.
        top: classes per response; peaks: most-attended frames per response.
        max_frames: most sampled frames per video (longer videos become segments); None: all.
        segments: (S, F): every video as S uniformly spaced segments of F consecutive sampled
            frames (paper section 6, untrimmed videos) unless a request asks otherwise; None: the
            whole video. A request picks its own with ``?segments=S&segment_frames=F``.
        fast_decode: decode reference frames only (``--fast-decode``).
    """

    runtime: str = "onnxruntime"
    precision: str = "fp32"
    threads: int | None = None
    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_upload_mb: float = 100.0
    max_batch_size: int = 8
    batch_wait_ms: float = 0.0
    max_ongoing: int = 16
    top: int = 5
    peaks: int = 3
    max_frames: int | None = None
    segments: tuple[int, int] | None = None
    fast_decode: bool = False

    def __post_init__(self) -> None:
        if self.segments is not None:  # a list after the JSON round trip to the replicas
            object.__setattr__(self, "segments", tuple(self.segments))

    def check(self) -> None:
        for name in ("replicas", "max_batch_size", "max_ongoing", "top", "peaks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.cpus_per_replica <= 0 or self.gpus_per_replica < 0:
            raise ConfigError(f"--cpus-per-replica must be > 0 and --gpus-per-replica >= 0, got "
                              f"{self.cpus_per_replica:g}, {self.gpus_per_replica:g}")
        if self.max_upload_mb <= 0:
            raise ConfigError(f"--max-upload-mb must be > 0, got {self.max_upload_mb:g}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"--batch-wait-ms must be >= 0, got {self.batch_wait_ms:g}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        check_frame_options(self.max_frames, self.segments)

    def runner_options(self) -> dict[str, Any]:
        """What each replica passes to ``load``: its threads, and ``cuda`` where it reserves a GPU."""
        options: dict[str, Any] = {"threads": self.threads or max(1, int(self.cpus_per_replica))}
        device = gpu_device(self.runtime, self.gpus_per_replica)
        if device is not None:
            options["device"] = device
        return options


class HttpError(Exception):
    """A request that gets ``{"error": message}`` with ``status`` (never a crashed replica)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# --- the replica -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A request's video fitted to the model, its probe and the seconds decoding took."""

    fitted: ModelInput
    info: VideoInfo
    decode_s: float


class SFCService:
    """One replica: the export loaded once, requests decoded on threads, the model fed in batches."""

    def __init__(self, export_dir: str, options_json: str) -> None:
        from ray import serve

        self.options = ServeOptions(**json.loads(options_json))
        runner = self.options.runner_options()
        torch.set_num_threads(runner["threads"])
        self.export_dir = export_dir
        self.dep = load(export_dir, self.options.runtime, precision=self.options.precision, **runner)
        self.dep.check(("head", "sfc", "tail"))
        self.spec = self.dep.input_spec
        self.names = class_names(self.dep)
        self.limit = int(self.options.max_upload_mb * 2**20)
        # the model has a thread of its own, so a batch never queues behind decoding requests
        self._decoders = ThreadPoolExecutor(max(2, runner["threads"]), thread_name_prefix="sfc-decode")
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="sfc-model")
        # per replica: a bound method batched here, so the sizes are this deployment's options
        self._model = serve.batch(max_batch_size=self.options.max_batch_size,
                                  batch_wait_timeout_s=self.options.batch_wait_ms / 1000)(self._model_batch)
        self._warm_up()

    def _warm_up(self) -> None:
        """Calls on a blank input of the served shape, so the first request is not the slow one."""
        frames = self.spec.frames or self.dep.config.frames
        h, w = self.spec.size or (self.dep.config.preprocess.crop,) * 2
        try:
            for _ in range(2):  # TorchScript's profiling executor optimises on the second call
                self.dep.predict_with_attention(torch.zeros(1, 3, frames, h, w))
        except Exception:  # noqa: BLE001 - warm-up only; a real request reports its own error
            log.warning("warm-up call failed", exc_info=True)

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: release the threads and the runtime's sessions."""
        for pool in (getattr(self, "_decoders", None), getattr(self, "_model_thread", None)):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if getattr(self, "dep", None) is not None:
            self.dep.close()

    async def __call__(self, request) -> Any:
        from starlette.responses import JSONResponse

        route, method = request.url.path.rstrip("/") or "/", request.method
        try:
            if route not in ROUTES:
                raise HttpError(404, f"no route {route}; the routes are POST /predict and GET /health")
            if method != ROUTES[route]:
                raise HttpError(405, f"{route} takes {ROUTES[route]}, got {method}")
            if route == "/health":
                return JSONResponse(self.health())
            return JSONResponse(await self.predict(request))
        except HttpError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except Exception as exc:  # noqa: BLE001 - the server keeps serving; the error is the answer
            log.exception("request failed")
            return JSONResponse({"error": f"internal {type(exc).__name__}: {one_line(exc)}"}, status_code=500)

    def health(self) -> dict[str, Any]:
        config = self.dep.config
        return {"status": "ok", "export": self.export_dir, "backbone": config.name, "runtime": self.dep.runtime,
                "precision": self.dep.precision, "classes": config.num_classes,
                "input": {"frames": self.spec.frames, "size": list(self.spec.size) if self.spec.size else None},
                "segments": list(self.options.segments) if self.options.segments else None,
                "max_upload_mb": self.options.max_upload_mb, "max_batch_size": self.options.max_batch_size}

    async def predict(self, request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        segments = request_segments(dict(request.query_params), self.spec, self.options.segments)
        if kind == "application/json":
            body = await self._body(request)
            video, decoded = await self._off_loop(self._decoders, self._decode_path, _json_path(body), segments)
        elif kind == "multipart/form-data":
            body = await self._body(request)
            name, data = multipart_file(request.headers["content-type"], body)
            del body
            video, decoded = name, await self._off_loop(self._decoders, self._decode_upload, name, data, segments)
        elif kind == "application/octet-stream" or kind.startswith("video/"):
            data = await self._body(request)
            video, decoded = "upload", await self._off_loop(self._decoders, self._decode_upload, "upload", data,
                                                            segments)
        else:
            raise HttpError(415, f"content type {kind or 'none'!r}: send multipart/form-data (field 'file'), "
                                 "application/octet-stream or application/json {\"path\": ...}")
        result = await self._model(decoded.fitted.tensor)
        if isinstance(result, BaseException):
            raise HttpError(500, f"model: {type(result).__name__}: {one_line(result)}")
        logits, attention, model_s, batch = result
        return response(video, decoded, logits, attention, self.names, model_s=model_s, batch=batch,
                        top=self.options.top, peaks=self.options.peaks, segments=segments)

    async def _body(self, request) -> bytes:
        """The request body, refused with 413 once it passes the limit (declared or streamed)."""
        declared = request.headers.get("content-length", "")
        too_big = f"the request body is larger than --max-upload-mb {self.options.max_upload_mb:g} MB"
        if declared.isdigit() and int(declared) > self.limit:
            raise HttpError(413, too_big)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limit:
                raise HttpError(413, too_big)
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, path: str, segments: tuple[int, int] | None) -> Decoded:
        max_frames = None if segments else self.options.max_frames  # segments replace whole-video input
        return Decoded(*decode(path, self.dep.config, self.spec, max_frames, segments,  # classify's decoding
                               reference_only=self.options.fast_decode))

    def _decode_path(self, path: str, segments: tuple[int, int] | None) -> tuple[str, Decoded]:
        if not os.path.isabs(path):
            raise HttpError(400, f"path {path!r} is relative; send an absolute path on the server's file system")
        if not os.path.isfile(path):
            raise HttpError(404, f"no file {path} on the server")
        try:
            return path, self._decode(path, segments)
        except SfcError as exc:
            raise HttpError(422, one_line(exc)) from None

    def _decode_upload(self, name: str, data: bytes, segments: tuple[int, int] | None) -> Decoded:
        if not data:
            raise HttpError(400, f"the upload {name!r} is empty")
        suffix = Path(name).suffix if Path(name).suffix[1:].isalnum() else ""
        fd, tmp = tempfile.mkstemp(prefix="sfc-serve-", suffix=suffix[:8])
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return self._decode(tmp, segments)
        except SfcError as exc:
            raise HttpError(422, one_line(exc).replace(tmp, name)) from None
        finally:
            os.unlink(tmp)

    async def _model_batch(self, tensors: list[torch.Tensor]) -> list[Any]:
        return await self._off_loop(self._model_thread, run_batch, self.dep, tensors)

    @staticmethod
    async def _off_loop(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on ``pool``, so the event loop keeps taking requests meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def response(video: str, decoded: Decoded, logits: torch.Tensor, attention: torch.Tensor, names: Sequence[str], *,
             model_s: float, batch: int, top: int = 5, peaks: int = 3,
             segments: tuple[int, int] | None = None) -> dict[str, Any]:
    """The JSON answer for one video: classify's row (top classes, attended frames, timings), and
    ``batch``, the videos that shared the model call (``model_s`` is that call's time);
    ``segments``: [S, F] when the video was read as segments, else null."""
    indices = decoded.fitted.sampled.frame_indices[0]
    fps = decoded.info.fps
    return {"video": video, **summarize(logits, attention, indices, fps, names, top=top, peaks=peaks),
            "num_frames": decoded.info.num_frames, "fps": fps, "sampled_frames": len(indices),
            "decode_s": decoded.decode_s, "model_s": model_s, "batch": batch,
            "segments": list(segments) if segments else None}


def request_segments(query: dict[str, str], spec: InputSpec, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """The (S, F) a request asks for with ``?segments=S&segment_frames=F`` (both or neither), else
    the server's default; 400 for anything else, or for S x F that the export's time axis refuses."""
    unknown = sorted(set(query) - {"segments", "segment_frames"})
    if unknown:
        raise HttpError(400, f"unknown query parameter {unknown[0]!r}; /predict takes segments=S&segment_frames=F")
    if not query:
        return default
    if set(query) != {"segments", "segment_frames"}:
        raise HttpError(400, "send segments=S and segment_frames=F together (e.g. ?segments=8&segment_frames=32)")
    try:
        s, f = int(query["segments"]), int(query["segment_frames"])
    except ValueError:
        raise HttpError(400, f"segments and segment_frames must be whole numbers, got {query['segments']!r}, "
                             f"{query['segment_frames']!r}") from None
    if min(s, f) < 1:
        raise HttpError(400, f"segments and segment_frames must be >= 1, got {s}, {f}")
    if spec.frames is not None and s * f != spec.frames:
        raise HttpError(400, f"segments={s}&segment_frames={f} gives {s * f} frames but this export's SFC graph takes "
                             f"exactly {spec.frames}; send S x F = {spec.frames}")
    return s, f


def _json_path(body: bytes) -> str:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"the body is not JSON ({exc}); send {{\"path\": \"/abs/video.mp4\"}}") from None
    if not isinstance(value, dict) or not isinstance(value.get("path"), str) or not value["path"]:
        raise HttpError(400, "the JSON body needs a \"path\" string: {\"path\": \"/abs/video.mp4\"}")
    return value["path"]


def multipart_file(content_type: str, body: bytes, field: str = "file") -> tuple[str, bytes]:
    """(filename, bytes) of form field ``field`` of a ``multipart/form-data`` body (RFC 7578).

    Found with ``bytes.find``, so the only copy made is the field's content.
    """
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise HttpError(400, "multipart/form-data without a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    at = body.find(delimiter)
    while at >= 0 and not body.startswith(b"--", at + len(delimiter)):  # "--boundary--" closes the body
        start = at + len(delimiter)
        head_end = body.find(b"\r\n\r\n", start)
        end = body.find(b"\r\n" + delimiter, head_end + 4) if head_end >= 0 else -1
        if end < 0:
            raise HttpError(400, "a multipart body cut short (a section without headers or without its boundary)")
        headers = HeaderParser().parsestr(body[start:head_end].decode("latin-1").strip())
        if headers.get_param("name", header="content-disposition") == field:
            return headers.get_filename() or "upload", body[head_end + 4 : end]
        at = end + 2
    raise HttpError(400, f"the multipart body has no field {field!r}; send the video as {field}=@video.mp4")


# --- the server --------------------------------------------------------------------------------


def import_serve():
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise BackendUnavailableError(
            f"serve needs Ray Serve ({exc}); pip install 'sfc-deploy[scale]' (or pip install 'ray[serve]')"
        ) from exc
    return ray, serve


def check_export(export_dir: str | Path, options: ServeOptions) -> None:
    """The export has the SFC parts for the runtime and precision, and its files match their sha256."""
    from sfc_deploy.runtime.pipeline import check_export as check

    export_dir = Path(export_dir)
    if not (export_dir / "manifest.json").is_file():
        raise ConfigError(f"--export {export_dir} is not an export folder (no manifest.json); run sfc-deploy export first")
    check(export_dir, options.runtime, options.precision)


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, if ``host:port`` cannot be bound (in use, not this machine's address)."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"--host {host}: cannot resolve it ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port "
                              "or stop what uses it") from None


@dataclass
class Server:
    """A running ``serve``: its URL, and ``stop()`` (also on leaving a ``with`` block)."""

    url: str
    options: ServeOptions
    owns_ray: bool
    owns_serve: bool
    startup_s: float
    stopped: bool = False

    def stop(self) -> None:
        """Delete the application; shut Serve and Ray down where this server started them."""
        if self.stopped:
            return
        self.stopped = True
        ray, serve = import_serve()
        try:
            if self.owns_serve:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            if self.owns_ray:
                ray.shutdown()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(
    export_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServeOptions = ServeOptions(),
    address: str | None = None,
    num_cpus: int | None = None,
    announce: Callable[[str], None] | None = None,
) -> Server:
    """Serve ``export_dir`` on ``http://host:port`` and return once every replica has loaded it.

    The options, the export (manifest and sha256 of the parts) and the port are checked before Ray
    starts. Without ``address`` (and without a Ray already running in this process) a local Ray
    is started with ``num_cpus`` (default: this machine's usable cores) and stopped by
    :meth:`Server.stop`; replicas that this Ray could never place are refused. With ``address`` the
    replicas run on that cluster (they must read the export folder at the same absolute path), and
    Serve's host and port apply only if Serve is not already running there (``url`` assumes they
    do). ``announce`` hears one line when the checks passed and Ray starts.
    """
    options.check()
    export_dir = Path(export_dir).resolve()
    check_export(export_dir, options)
    if options.segments is not None:  # against a fixed time axis: one line now, not a 400 on every request
        with load(export_dir, options.runtime, precision=options.precision) as dep:
            check_segments(dep.input_spec, *options.segments)
    ray, serve = import_serve()
    owns_ray = not ray.is_initialized()
    local = address is None  # a Ray on this machine (started here, or already in this process)
    if owns_ray and local:  # a fresh Ray runs no Serve yet: the port and CPUs are known before it starts
        _check_resources({"CPU": num_cpus or usable_cores(), "GPU": float("inf")}, options)
        check_port(host, port)
    if announce is not None:
        where = f"the Ray cluster at {address}" if address else "a local Ray" if owns_ray else "this process's Ray"
        announce(f"export checked; starting {options.replicas} replica(s) of {export_dir.name} "
                 f"({options.runtime} {options.precision}) on {where} ...")
    t0 = time.perf_counter()
    if owns_ray:
        init: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus or usable_cores()}
        ray.init(**init, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        status = serve.status()
        if APP_NAME in status.applications:
            raise ConfigError(f"this Ray's Serve already runs an {APP_NAME} application; stop that server first")
        if local:  # a cluster that autoscales may add nodes; this Ray will not
            _check_resources(ray.cluster_resources(), options)
            if not owns_ray and not status.proxies:
                check_port(host, port)
    except BaseException:
        if owns_ray:
            ray.shutdown()
        raise
    server = Server(url=f"http://{_url_host(host)}:{port}", options=options, owns_ray=owns_ray,
                    owns_serve=not status.proxies, startup_s=0.0)
    try:
        quiet = {"log_level": "WARNING", "enable_access_log": False}
        serve.start(http_options={"host": host, "port": port}, logging_config=quiet)
        fields = asdict(options)
        deployment = serve.deployment(
            SFCService, name="sfc", num_replicas=options.replicas, max_ongoing_requests=options.max_ongoing,
            ray_actor_options={"num_cpus": options.cpus_per_replica, "num_gpus": options.gpus_per_replica},
        )
        serve.run(deployment.bind(str(export_dir), json.dumps(fields)), name=APP_NAME, route_prefix="/",
                  logging_config=quiet)
    except BaseException as exc:
        server.stop()
        if isinstance(exc, Exception) and not isinstance(exc, SfcError):
            raise SfcError(f"serve did not start: {type(exc).__name__}: {one_line(exc)}") from exc
        raise
    server.startup_s = time.perf_counter() - t0
    return server


def _check_resources(have: dict[str, float], options: ServeOptions) -> None:
    """Replicas that could never be placed would leave ``serve.run`` waiting forever: refuse them."""
    for what, each in (("CPU", options.cpus_per_replica), ("GPU", options.gpus_per_replica)):
        need = options.replicas * each
        if need > have.get(what, 0.0) + 1e-9:
            raise ConfigError(f"{options.replicas} replicas x {each:g} {what}s need {need:g} {what}s; this Ray has "
                              f"{have.get(what, 0.0):g}: lower --replicas or --{what.lower()}s-per-replica")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


__all__ = ["APP_NAME", "ROUTES", "HttpError", "SFCService", "ServeOptions", "Server", "check_export", "check_port",
           "multipart_file", "response", "run_batch", "start_server"]
