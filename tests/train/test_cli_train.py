"""The train, train-backbone and eval commands: a real run each, and bad options as one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sfc_deploy.cli import app

runner = CliRunner()




def test_train_then_eval_from_the_command_line(tiny_trained, tmp_path):
    bb = str(tiny_trained["backbone"])
    result = runner.invoke(app, [
        "train", str(tiny_trained["train"]), "-o", str(tmp_path / "run"), "-b", "slow8x8_tiny", "--checkpoint", bb,
        "--epochs", "1", "--batch-size", "3", "--cache-views", "1", "--no-flip", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "sfc.safetensors").is_file() and (tmp_path / "run" / "train_state.pt").is_file()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1] and {"loss", "lr", "grad_norm_mean", "train_acc"} <= set(metrics[0])
    result = runner.invoke(app, [
        "eval", str(tiny_trained["test"]), "-o", str(tmp_path / "ev"), "-b", "slow8x8_tiny", "--checkpoint", bb,
        "--sfc", f"mine={tmp_path / 'run' / 'sfc.safetensors'}", "--tau", "2,4/3", "--strategies", "single,sfc",
        "--limit", "2",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert [r["method"] for r in report["results"]] == ["single", "sfc:mine@tau=2", "sfc:mine@tau=1.33333"]
    assert len(report["labels"]) == 2 and (tmp_path / "ev" / "eval.png").is_file()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--tau", "1/2"], ("tau must be >= 1",)),
        (["--tau", "two"], ("tau must be a number",)),
        (["--pool", "mean"], ("unknown SFC pool 'mean'", "topk, avg, max")),
        (["--milestones", "8;12"], ("milestones must be comma-separated",)),
        (["--scale", "1.2"], ("--scale must be MIN,MAX",)),
        (["--scale", "1.3,1.1"], ("scale range",)),
        (["--schedule", "linear"], ("unknown schedule 'linear'",)),
        (["--resume"], ("--resume", "does not exist")),
        (["-b", "slow9x9"], ("unknown backbone 'slow9x9'",)),
    ],
)
def test_train_bad_options_give_one_line_errors(tiny_trained, tmp_path, args, fragments, one_line_error):
    base = ["train", str(tiny_trained["train"]), "-o", str(tmp_path / "run"), "-b", "slow8x8_tiny",
            "--checkpoint", str(tiny_trained["backbone"]), "--epochs", "1"]
    one_line_error(runner.invoke(app, base + args), *fragments)


def test_train_missing_data_and_backbone_errors(tmp_path, one_line_error):
    one_line_error(runner.invoke(app, ["train-backbone", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o")]))
    one_line_error(
        runner.invoke(app, ["train", str(tmp_path), "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "x.pt")]),
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--strategies", "single,dence"], ("unknown strategy dence",)),
        (["--strategies", "sfc"], ("needs at least one --sfc",)),
        (["--tau", "0.5", "--strategies", "single"], ("--tau must list values >= 1",)),
        (["--runtime", "tensorrt"], ("runs exported artifacts; pass --export DIR",)),
        (["--export", "somewhere"], ("drop --checkpoint/--sfc",)),
        (["--sfc", "=x"], ("--sfc must be NAME=PATH",)),
    ],
)
def test_eval_bad_options_give_one_line_errors(tiny_trained, tmp_path, args, fragments, one_line_error):
    base = ["eval", str(tiny_trained["test"]), "-o", str(tmp_path / "ev"), "-b", "slow8x8_tiny",
            "--checkpoint", str(tiny_trained["backbone"])]
    one_line_error(runner.invoke(app, base + args), *fragments)


def test_eval_refuses_an_sfc_checkpoint_of_another_backbone(tiny_trained, tmp_path, one_line_error):
    result = runner.invoke(app, ["eval", str(tiny_trained["test"]), "-o", str(tmp_path), "-b", "slow8x8_tiny",
                                 "--sfc", f"bad={tiny_trained['backbone']}"])
    one_line_error(result, "not an SFC checkpoint")


def test_print_settings_resolves_the_defaults_and_touches_nothing(tiny_trained, tmp_path):
    """`train --print-settings`: the options as train_state.pt would record them, every default filled in
    (distillation with a trained backbone, roll-backs), printed before any video or output is touched."""
    def settings(*extra: str) -> dict:
        result = runner.invoke(app, ["train", str(tmp_path / "no_such.csv"), "-o", str(tmp_path / "out"), "-b",
                                     "slow8x8_tiny", *extra, "--print-settings"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    trained = settings("--checkpoint", str(tiny_trained["backbone"]))
    assert (trained["distill_weight"], trained["distill_temperature"], trained["recover"]) == (0.5, 2.0, 2)
    assert "distill_weight" not in settings()  # no trained backbone: no teacher, labels alone
    assert "recover" not in settings("--recover", "0")  # as states from before roll-backs recorded it
    label_free = settings("--checkpoint", str(tiny_trained["backbone"]), "--labels", "none", "--tau", "4/3")
    assert (label_free["distill_weight"], label_free["distill_target"], label_free["tau"]) == (1.0, "standardized", 4 / 3)
    assert not (tmp_path / "out").exists()
