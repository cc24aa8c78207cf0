"""A client of ``sfc-deploy serve`` in the standard library only, so callers install nothing.

    from sfc_deploy.scale.client import predict_file, predict_path
    predict_file("http://127.0.0.1:8000", "clip.mp4")["top1"]      # uploads the file
    predict_path("http://127.0.0.1:8000", "/data/clip.mp4")         # a file the server reads itself

Both return the server's JSON answer as a dict; an error answer (4xx/5xx) raises
:class:`ServerError` carrying the status and the server's one-line message.
"""

from __future__ import annotations

import json
import os
import uuid
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sfc_deploy.errors import SfcError


class ServerError(SfcError):
    """The server answered with an error status; ``status`` is it, the message is the server's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status = status


def _endpoint(url: str, route: str, segments: tuple[int, int] | None = None) -> str:
    """``route`` on the server at ``url``; with ``segments`` (S, F), the query that asks for them."""
    base = url.rstrip("/")
    for known in ("/predict", "/health"):
        if base.endswith(known):
            base = base[: -len(known)]
    if segments is None:
        return base + route
    return base + route + "?" + urllib.parse.urlencode({"segments": segments[0], "segment_frames": segments[1]})


def _send(request: urllib.request.Request, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            message = body.decode("utf-8", "replace").strip()[:500] or exc.reason
        raise ServerError(exc.code, str(message)) from None
    except urllib.error.URLError as exc:
        raise SfcError(f"cannot reach {request.full_url} ({exc.reason}); is sfc-deploy serve running?") from None


def encode_multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """(body, content type) of a ``multipart/form-data`` request carrying one file."""
    boundary = f"sfc-{uuid.uuid4().hex}"
    safe = filename.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{safe}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode("utf-8")
    return head + data + f"\r\n--{boundary}--\r\n".encode("ascii"), f"multipart/form-data; boundary={boundary}"


def predict_file(url: str, path: str | os.PathLike, *, timeout: float = 120.0,
                 segments: tuple[int, int] | None = None) -> dict[str, Any]:
    """Upload the video ``path`` to ``url`` (the server's base URL) and return its prediction;
    ``segments`` (S, F): classify S uniformly spaced segments of F sampled frames (untrimmed video)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SfcError(f"cannot read {path} ({exc.strerror or exc})") from None
    body, content_type = encode_multipart("file", path.name, data)
    request = urllib.request.Request(_endpoint(url, "/predict", segments), data=body, method="POST",
                                     headers={"Content-Type": content_type})
    return _send(request, timeout)


def predict_path(url: str, path: str | os.PathLike, *, timeout: float = 120.0,
                 segments: tuple[int, int] | None = None) -> dict[str, Any]:
    """Ask the server at ``url`` to classify ``path`` on its own file system (made absolute here);
    ``segments`` as for :func:`predict_file`."""
    body = json.dumps({"path": os.path.abspath(path)}).encode("utf-8")
    request = urllib.request.Request(_endpoint(url, "/predict", segments), data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    return _send(request, timeout)


def health(url: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """The server's ``GET /health`` answer (what it serves); raises if it is not up."""
    return _send(urllib.request.Request(_endpoint(url, "/health")), timeout)


__all__ = ["ServerError", "encode_multipart", "health", "predict_file", "predict_path"]
