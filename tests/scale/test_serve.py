"""``sfc-deploy serve`` on a real local Ray (2 CPUs): real mp4 files over HTTP from concurrent clients.

One server for the module (Ray's start-up costs ~10 s on 2 cores), started in-process through the
library API on a free port with the tiny TorchScript export. Its answers must equal
``predict``'s on the same export and runtime; every bad request gets a 4xx JSON error and the next
request still succeeds; at the end it shuts down with Ray and frees its port. The CLI is tested for
its one-line errors before Ray starts, and once end to end (a subprocess stopped with SIGTERM).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.data.synth import write_counter_video
from sfc_deploy.errors import ConfigError
from sfc_deploy.eval.predict import from_export, predict_video
from sfc_deploy.scale.client import ServerError, encode_multipart, health, predict_file, predict_path
from sfc_deploy.scale.serve import HttpError, ServeOptions, multipart_file, start_server

ray = pytest.importorskip("ray", reason="the scale extra (pip install 'sfc-deploy[scale]') is not installed")
pytest.importorskip("ray.serve", reason="the scale extra (pip install 'sfc-deploy[scale]') is not installed")
# ray_exclusive: no other module's Ray beside this one's servers (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("ray_exclusive", "sfc_one_thread")
GOOD = ("v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4")
LIMIT_MB = 0.25


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _temporaries() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("sfc-serve-*")}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real mp4 files of different lengths and widths (the export centre-crops to 32x40), a
    corrupt one and a text file."""
    root = tmp_path_factory.mktemp("videos")
    for i, frames in enumerate((40, 64, 90, 24)):
        write_counter_video(root / GOOD[i], frames, (32, 40 + 8 * (i % 2)))
    (root / "broken.mp4").write_bytes(b"\x00\x01not a video" * 50)
    (root / "notes.txt").write_text("not a video at all\n")
    return root


@pytest.fixture(scope="module")
def server(ray_exclusive, sfc_export_ts: Path):
    """``serve`` of the tiny TorchScript export on a local Ray of 2 CPUs; stopped (again) at the end."""
    options = ServeOptions(runtime="torchscript", max_upload_mb=LIMIT_MB, max_batch_size=4, batch_wait_ms=50)
    before = _temporaries()
    srv = start_server(sfc_export_ts, host="127.0.0.1", port=free_port(), options=options, num_cpus=2)
    srv.temporaries_before = before
    yield srv
    srv.stop()


def test_health_answers_once_the_model_is_loaded(server) -> None:
    answer = health(server.url)
    assert answer["status"] == "ok" and answer["runtime"] == "torchscript" and answer["precision"] == "fp32"
    assert answer["classes"] == 10 and answer["input"] == {"frames": 8, "size": [32, 40]}


def test_concurrent_clients_get_predicts_answers(server, sfc_export_ts: Path, videos: Path) -> None:
    with from_export(sfc_export_ts, runtime="torchscript") as predictor:
        expected = {name: predict_video(predictor, videos / name, top=5) for name in GOOD}
    jobs = [(send, name) for _ in range(2) for name in GOOD for send in (predict_file, predict_path)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda job: job[0](server.url, videos / job[1]), jobs))
    for (send, name), answer in zip(jobs, answers):
        pred = expected[name]
        assert answer["video"] == (name if send is predict_file else str(videos / name))
        assert answer["top1"] == pred.top[0].name
        assert [c["class"] for c in answer["topk"]] == [c.name for c in pred.top]
        assert [c["index"] for c in answer["topk"]] == [c.index for c in pred.top]
        assert [c["prob"] for c in answer["topk"]] == pytest.approx([c.prob for c in pred.top], abs=1e-5)
        assert answer["peak_frames"] == [pred.frame_indices[i] for i in pred.peaks(3)]
        assert answer["num_frames"] == pred.num_frames and answer["fps"] == pred.fps
        assert answer["decode_s"] > 0 and answer["model_s"] > 0 and 1 <= answer["batch"] <= 4
    assert max(a["batch"] for a in answers) > 1  # four clients at once: requests met in one model call


@pytest.mark.parametrize("send", [predict_file, predict_path])
def test_a_request_for_segments_gets_predicts_segments_answer(server, sfc_export_ts: Path, videos: Path, send) -> None:
    """``?segments=S&segment_frames=F`` (the export's 8 frames as 2 x 4): predict's answer with the same segments."""
    name = GOOD[2]  # 90 frames: the segments are spread over the video, not its first 8 sampled frames
    with from_export(sfc_export_ts, runtime="torchscript") as predictor:
        expected = predict_video(predictor, videos / name, top=5, segments=(2, 4))
        whole = predict_video(predictor, videos / name, top=5)
    answer = send(server.url, videos / name, segments=(2, 4))
    assert answer["segments"] == [2, 4] and answer["sampled_frames"] == 8
    assert answer["peak_frames"] == [expected.frame_indices[i] for i in expected.peaks(3)]
    assert [c["prob"] for c in answer["topk"]] == pytest.approx([c.prob for c in expected.top], abs=1e-5)
    assert expected.frame_indices != whole.frame_indices  # the segments read other frames than the whole video
    assert send(server.url, videos / name)["segments"] is None  # no query: the server's default (whole video)


def _post(url: str, body: bytes, content_type: str, query: str = "") -> tuple[int, dict]:
    request = urllib.request.Request(url + "/predict" + (f"?{query}" if query else ""), data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _upload(url: str, name: str, data: bytes) -> tuple[int, dict]:
    return _post(url, *encode_multipart("file", name, data))


def _file(name: str):
    return lambda url, v: _upload(url, name, (v / name).read_bytes())


def _json(body: bytes):
    return lambda url, v: _post(url, body.replace(b"VIDEOS", str(v).encode()), "application/json")


@pytest.mark.parametrize(("send", "status", "fragment"), [
    pytest.param(_file("broken.mp4"), 422, "broken.mp4: cannot be opened", id="corrupt-upload"),
    pytest.param(_file("notes.txt"), 422, "notes.txt", id="text-upload"),
    pytest.param(lambda url, v: _upload(url, "empty.mp4", b""), 400, "is empty", id="empty-upload"),
    pytest.param(lambda url, v: _post(url, *encode_multipart("video", "v0.mp4", b"x")), 400, "no field 'file'",
                 id="no-file-field"),
    pytest.param(lambda url, v: _post(url, b"x", "multipart/form-data"), 400, "without a boundary", id="no-boundary"),
    pytest.param(_json(b'{"path": "VIDEOS/missing.mp4"}'), 404, "no file", id="missing-path"),
    pytest.param(_json(b'{"path": "v0.mp4"}'), 400, "is relative", id="relative-path"),
    pytest.param(_json(b"{not json"), 400, "not JSON", id="bad-json"),
    pytest.param(_json(b'{"file": 1}'), 400, 'needs a "path"', id="json-without-path"),
    pytest.param(lambda url, v: _post(url, b"x", "text/plain"), 415, "content type 'text/plain'", id="wrong-content-type"),
    pytest.param(lambda url, v: _upload(url, "big.mp4", b"\x00" * int(LIMIT_MB * 2**20 + 1)), 413,
                 "--max-upload-mb 0.25", id="over-the-limit"),
    pytest.param(lambda url, v: _post(url, (v / "v0.mp4").read_bytes(), "video/mp4",
                                      "segments=3&segment_frames=2"), 400, "gives 6 frames but this export's SFC graph takes exactly 8",
                 id="segments-off-the-time-axis"),
    pytest.param(lambda url, v: _post(url, (v / "v0.mp4").read_bytes(), "video/mp4", "segments=2"), 400,
                 "together", id="segments-alone"),
    pytest.param(lambda url, v: _post(url, b"x", "video/mp4", "segments=two&segment_frames=4"), 400,
                 "whole numbers", id="segments-not-a-number"),
    pytest.param(lambda url, v: _post(url, b"x", "video/mp4", "frames=8"), 400,
                 "unknown query parameter 'frames'", id="unknown-query"),
])
def test_a_bad_request_gets_a_4xx_and_the_next_one_succeeds(server, videos: Path, send, status, fragment) -> None:
    code, answer = send(server.url, videos)
    assert code == status and list(answer) == ["error"] and fragment in answer["error"], (code, answer)
    assert "sfc-serve-" not in answer["error"]  # the temporary file's name never leaks into a message
    assert predict_file(server.url, videos / "v1.mp4")["top1"]


def test_a_chunked_upload_is_cut_off_at_the_limit(server, videos: Path) -> None:
    """No Content-Length to refuse up front: the body is counted as it streams in."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=60)
    chunks = (b"\x00" * 2**16 for _ in range(int(LIMIT_MB * 16) + 2))
    conn.request("POST", "/predict", body=chunks, headers={"Content-Type": "application/octet-stream"},
                 encode_chunked=True)
    answer = conn.getresponse()
    assert answer.status == 413 and "max-upload-mb" in json.loads(answer.read())["error"]
    conn.close()
    raw = (videos / "v2.mp4").read_bytes()  # the raw-bytes upload itself works
    assert _post(server.url, raw, "video/mp4")[1]["num_frames"] == 90


def test_routes_and_methods(server) -> None:
    for path, method, status in (("/nothing", "GET", 404), ("/predict", "GET", 405), ("/health", "POST", 405)):
        request = urllib.request.Request(server.url + path, method=method, data=b"" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == status and "error" in json.loads(info.value.read())
    with pytest.raises(ServerError, match="server answered 404: no file"):
        predict_path(server.url, "/no/such/video.mp4")


def test_multipart_parsing_is_byte_exact() -> None:
    data = bytes(range(256)) * 3 + b"\r\n--not-the-boundary\r\n\r\n"
    body, content_type = encode_multipart("file", 'we"ird.mp4', data)
    assert multipart_file(content_type, body) == ("we_ird.mp4", data)
    with pytest.raises(HttpError, match="no field 'other'"):
        multipart_file(content_type, body, field="other")
    # what browsers and curl send too: a preamble, another field first, a quoted boundary
    form = (b"preamble\r\n--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.mp4\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n" + data + b"\r\n--B--\r\n")
    assert multipart_file('multipart/form-data; boundary="B"', form) == ("c.mp4", data)
    with pytest.raises(HttpError, match="cut short"):
        multipart_file("multipart/form-data; boundary=B", form[: len(form) // 2])


def test_a_second_server_on_the_same_ray_is_refused(server, sfc_export_ts: Path, videos: Path) -> None:
    with pytest.raises(ConfigError, match="already runs an sfc-deploy application"):
        start_server(sfc_export_ts, port=free_port(), options=ServeOptions(runtime="torchscript"))
    assert ray.is_initialized() and predict_file(server.url, videos / "v3.mp4")["num_frames"] == 24


def test_the_server_shuts_down_cleanly(server, videos: Path) -> None:
    """Last in the module: stop() ends Serve and the Ray it started, frees the port, leaves no upload."""
    port = int(server.url.rsplit(":", 1)[1])
    assert port_open(port) and ray.is_initialized()
    server.stop()
    assert not ray.is_initialized()
    deadline = time.monotonic() + 15
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_open(port)
    assert _temporaries() <= server.temporaries_before  # every upload's temporary file was deleted
    server.stop()  # idempotent: the fixture stops it again


# --- the CLI -----------------------------------------------------------------------------------


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


@pytest.fixture
def ray_must_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the checks failed")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.usefixtures("ray_must_not_start")
def test_cli_errors_are_one_line_before_ray_starts(sfc_export_ts: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    _one_line_error(runner.invoke(app, ["serve", "--export", str(tmp_path)]), "no manifest.json")
    _one_line_error(runner.invoke(app, ["serve", "--export", str(sfc_export_ts), "--port", "0"]), "'--port'")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        _one_line_error(runner.invoke(app, ["serve", "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                            "--port", port]), f"cannot listen on 127.0.0.1:{port}")
    _one_line_error(runner.invoke(app, ["serve", "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                        "--replicas", "64"]), "64 replicas x 1 CPUs need 64 CPUs")
    _one_line_error(runner.invoke(app, ["serve", "--export", str(sfc_export_ts), "--max-upload-mb", "0"]),
                    "--max-upload-mb must be > 0")
    _one_line_error(runner.invoke(app, ["serve", "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                        "--segments", "3", "--segment-frames", "2"]), "takes exactly 8 frames")
    _one_line_error(runner.invoke(app, ["serve", "--export", str(sfc_export_ts), "--segments", "3"]),
                    "--segments needs --segment-frames")
    _one_line_error(runner.invoke(app, ["serve", "--export", str(sfc_export_ts), "--runtime", "onnxruntime"]),
                    "onnx")  # the TorchScript-only export has no ONNX parts: the manifest says so


def test_cli_serves_until_sigterm(sfc_export_ts: Path, videos: Path, tmp_path: Path) -> None:
    """The command end to end in its own process: ready line, a prediction, SIGTERM, exit 0, port freed."""
    port = free_port()
    env = {**os.environ, "SFC_DEPLOY_DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    err = tmp_path / "stderr.txt"
    proc = subprocess.Popen([sys.executable, "-c", "from sfc_deploy.cli import main; main()", "serve", "--export",
                             str(sfc_export_ts), "--runtime", "torchscript", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=err.open("w"), text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("serving at" in line for line in lines) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(f"serving at http://127.0.0.1:{port}" in line for line in lines), (lines, proc.poll())
        assert predict_file(f"http://127.0.0.1:{port}", videos / "v0.mp4")["num_frames"] == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    reader.join(timeout=5)
    assert proc.returncode == 0, err.read_text()
    assert any("stopped (SIGTERM): Serve and Ray shut down" in line for line in lines), lines
    assert not port_open(port)


def test_a_replica_or_actor_that_reserves_a_gpu_runs_there() -> None:
    """Ray makes a reserved GPU the only one its replica or actor sees: "cuda" (never placed without one)."""
    from sfc_deploy.scale.rows import gpu_device

    assert ServeOptions(runtime="torchscript", gpus_per_replica=1).runner_options()["device"] == "cuda"
    assert "device" not in ServeOptions(runtime="torchscript").runner_options()
    assert gpu_device("pytorch", 0.5) == "cuda" and gpu_device("onnxruntime", 0) is None
