"""``classify --engine ray`` on a real local Ray (2 CPUs): the same rows as the local engine.

Ray Data runs the actor pool in separate worker processes, each loading the export once; the rows
must equal the local engine's row for row (a corrupt video included: its row carries the error),
and a job killed under one engine resumes under the other without redoing finished rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sfc_deploy.cli import app
from sfc_deploy.scale.classify import ClassifyOptions, RayOptions, classify, journal_path, read_rows
from sfc_deploy.scale.sources import resolve_inputs

ray = pytest.importorskip("ray", reason="the scale extra (pip install 'sfc-deploy[scale]') is not installed")
OPTS = ClassifyOptions(runtime="torchscript", top=3)
RAY = RayOptions(workers=2, cpus_per_worker=1)


pytestmark = pytest.mark.usefixtures("ray_exclusive")  # no other module's Ray beside this one (tests/conftest.py)


@pytest.fixture(scope="module")
def local_ray(ray_exclusive):
    """A local Ray with 2 CPUs for this module, stopped at its end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b):
        assert bool(x["error"]) == bool(y["error"]), (x, y)
        assert x["top1"] == y["top1"] and x["peak_frames"] == y["peak_frames"] and x["num_frames"] == y["num_frames"]
        assert [c["class"] for c in x["topk"]] == [c["class"] for c in y["topk"]]
        assert [c["prob"] for c in x["topk"]] == pytest.approx([c["prob"] for c in y["topk"]], abs=1e-6)


def test_ray_engine_gives_the_local_engines_rows(local_ray, sfc_export_ts: Path, videos: Path, tmp_path: Path) -> None:
    """... also when each actor takes its videos two at a time (--batch 2: same-shape videos in one call)."""
    from dataclasses import replace

    paths = resolve_inputs(videos)
    local = classify(paths, sfc_export_ts, tmp_path / "local.parquet", OPTS)
    remote = classify(paths, sfc_export_ts, tmp_path / "ray.parquet", replace(OPTS, batch=2), engine="ray", ray=RAY)
    assert (remote["engine"], remote["succeeded"], remote["failed"]) == ("ray", 4, 1) and local["failed"] == 1
    _same_rows(read_rows(tmp_path / "ray.parquet"), read_rows(tmp_path / "local.parquet"))
    broken = next(r for r in read_rows(tmp_path / "ray.parquet") if r["path"].endswith("broken.mp4"))
    assert "broken.mp4" in broken["error"] and broken["top1"] is None


def test_a_job_killed_under_one_engine_resumes_under_the_other(local_ray, sfc_export_ts: Path, videos: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sfc_deploy.runtime.pipeline import Deployment

    paths = resolve_inputs(videos)
    out = tmp_path / "pred.parquet"
    real, calls = Deployment.predict_with_attention, []

    def dies_on_the_third(self, frames):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, frames)

    monkeypatch.setattr(Deployment, "predict_with_attention", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        classify(paths, sfc_export_ts, out, OPTS)
    monkeypatch.setattr(Deployment, "predict_with_attention", real)
    finished = [json.loads(line)["path"] for line in journal_path(out).read_text().splitlines()]
    summary = classify(paths, sfc_export_ts, out, OPTS, engine="ray", ray=RAY)
    assert summary["skipped"] == len(finished) == 3 and summary["classified"] == 2
    clean = tmp_path / "clean.parquet"
    classify(paths, sfc_export_ts, clean, OPTS)
    _same_rows(read_rows(out), read_rows(clean))


def test_cli_engine_ray(local_ray, sfc_export_ts: Path, videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    result = CliRunner().invoke(app, ["classify", str(videos), "--export", str(sfc_export_ts), "--runtime", "torchscript",
                                      "--out", str(out), "--engine", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "5 videos: 4 classified, 1 failed" in result.stdout and len(read_rows(out)) == 5


@pytest.mark.parametrize(("args", "fragment"), [
    (["--address", "auto"], "apply to --engine ray only"),
    (["--engine", "spark"], "unknown --engine 'spark'"),
])
def test_cli_engine_options_that_do_not_apply(sfc_export_ts: Path, videos: Path, tmp_path: Path, args, fragment) -> None:
    result = CliRunner().invoke(app, ["classify", str(videos), "--export", str(sfc_export_ts), "--out",
                                      str(tmp_path / "p.parquet"), *args])
    assert result.exit_code == 2 and fragment in result.stderr and list(tmp_path.iterdir()) == []
