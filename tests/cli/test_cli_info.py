import json

from typer.testing import CliRunner

from sfc_deploy.cli import app

runner = CliRunner()


def test_info_json_reports_paper_settings():
    result = runner.invoke(app, ["info", "--backbone", "slow8x8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["inputs"]["raw_frames"] == 288 and report["inputs"]["sfc_frames"] == 36
    assert abs(report["dense"]["gmacs"] / 1643 - 1) < 0.03
    assert abs(report["sfc"]["gmacs"] / 247 - 1) < 0.03
    assert report["dense"]["params_m"] < report["sfc"]["params_m"]
    assert report["sfc"]["paper_gmacs"] == 247
    assert report["gmacs_ratio"] == report["dense"]["gmacs"] / report["sfc"]["gmacs"]


def test_info_table_and_options():
    result = runner.invoke(app, ["info", "--tau", "4/3", "--split", "res4", "--theta-kernel", "1x1x1", "--frames", "128", "--size", "128x160"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "SFC tau=1.33" in result.stdout and "128 raw -> 16x128x160" in result.stdout


def test_info_list():
    result = runner.invoke(app, ["info", "--list"])
    assert "slow8x8_tiny" in result.stdout.split()


def test_info_bad_values_fail_with_one_line():
    for args, message in [
        (["--backbone", "slow8x9"], "did you mean slow8x8"),
        (["--tau", "0.5"], "tau must be >= 1"),
        (["--size", "256"], "--size must look like 256x312"),
        (["--split", "res5"], "unknown split 'res5'"),
        (["--theta-kernel", "2x2x2"], "unknown SFC theta_kernel"),
    ]:
        result = runner.invoke(app, ["info", *args])
        assert result.exit_code == 2, args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
