"""Signals mid-write and concurrent writers, on real ``sfc-deploy`` processes.

A command killed by SIGTERM or interrupted by SIGINT while it writes exits 143 / 130 with one line
and leaves nothing (no output, no temporary folder, no lock file); two writers to one output never
both succeed: the second fails at once, naming the first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from sfc_deploy.cli import main; main()"]
# a dataset big enough to be mid-write for a few seconds on 2 cores
SYNTH = ["synth", "--classes", "2", "--train-per-class", "12", "--test-per-class", "2", "--frames", "96",
         "--size", "64x80", "--workers", "1"]


def _default_signals() -> None:
    """In the child before exec: SIGINT/SIGTERM at their defaults. A disposition of "ignore" is
    inherited across exec and Python then installs no KeyboardInterrupt handler, so a child of a
    test process in which something (a library, an earlier test) ignored SIGINT could not be
    interrupted at all, which is what a user's shell never does to a foreground command."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_signals)


def _wait_for_partial(parent: Path, name: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until the command's temporary folder (``.NAME.partial-*``) exists: it is mid-write."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.name.startswith(f".{name}.partial-") for p in parent.iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before it was interrupted: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the command never started writing")


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_synth_killed_mid_write_leaves_nothing(tmp_path: Path, sig: int, code: int, word: str) -> None:
    proc = _start([*SYNTH, str(tmp_path / "data")], tmp_path)
    _wait_for_partial(tmp_path, "data", proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, (stderr, "SIGINT in the test process:", signal.getsignal(signal.SIGINT))
    assert word in _one_error_line(stderr)
    assert list(tmp_path.iterdir()) == []  # no dataset, no .data.partial-*, no .data.lock


def test_export_terminated_mid_write_leaves_nothing_and_keeps_the_old_folder(tmp_path: Path) -> None:
    old = tmp_path / "export"
    old.mkdir()
    (old / "keep.txt").write_text("the previous export")
    args = ["export", "--out", str(old), "--force", "--backbone", "slow8x8_tiny", "--frames", "64", "--size", "32x40",
            "-f", "onnx", "--no-verify"]
    proc = _start(args, tmp_path)
    _wait_for_partial(tmp_path, "export", proc, timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "terminated" in [line for line in stderr.splitlines() if line.strip()][-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert sorted(p.name for p in old.iterdir()) == ["keep.txt"]


def test_two_writers_to_one_folder_never_both_succeed(tmp_path: Path) -> None:
    first = _start([*SYNTH, str(tmp_path / "data")], tmp_path)
    _wait_for_partial(tmp_path, "data", first)
    # the first writer is held (alive, lock held) while the second starts: otherwise a fast machine can
    # finish the first before the second has imported torch, and there would be no race to test
    first.send_signal(signal.SIGSTOP)
    try:
        second = _start([*SYNTH, str(tmp_path / "data"), "--force"], tmp_path)  # --force does not make it a race
        _, err2 = second.communicate(timeout=60)
    finally:
        first.send_signal(signal.SIGCONT)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 2
    line = _one_error_line(err2)
    assert "is being written by pid" in line and str(first.pid) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no lock, no partial folder left
    assert (tmp_path / "data" / "train.csv").is_file()


def test_classify_killed_mid_job_resumes_without_redoing_rows(tmp_path: Path, sfc_export_ts: Path) -> None:
    import json

    from sfc_deploy.data.synth import write_counter_video
    from sfc_deploy.scale.classify import journal_path, read_rows

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(60):
        write_counter_video(videos / f"v{i:02d}.mp4", 48, (32, 40))
    out = tmp_path / "pred.parquet"
    args = ["classify", str(videos), "--export", str(sfc_export_ts), "--runtime", "torchscript", "--out", str(out),
            "--workers", "1", "--prefetch", "1", "--threads", "1"]
    proc = _start(args, tmp_path)
    journal = journal_path(out)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the job ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "terminated" in _one_error_line(stderr)
    assert not out.exists()  # no half-written predictions; the finished rows wait in the journal
    finished = {json.loads(line)["path"] for line in journal.read_text().splitlines() if line.strip().endswith("}")}
    assert 3 <= len(finished) < 60
    rerun = subprocess.run([*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)} already done" in rerun.stdout
    rows = read_rows(out)
    assert len(rows) == 60 and not any(r["error"] for r in rows) and not journal.exists()
