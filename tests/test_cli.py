"""The real `edgecls` CLI through click's CliRunner: one-line errors, flags over YAML, real training."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgecls.cli import cli

TINY = ["--backbone", "timm:test_efficientnet", "--no-pretrained", "--img-size", "64", "--workers", "0",
        "--no-progress", "--no-amp", "--batch-size", "16"]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return CliRunner()


def test_help_lists_commands(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("train", "evaluate", "data", "backbones"):
        assert name in result.output


def test_train_with_yaml_and_flags_then_evaluate(runner, synth_small, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 5\nstrategy: full\nlr: 0.003\n")
    run = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(synth_small), "--out", str(run), "--config", str(config),
                                 "--epochs", "1", *TINY])
    assert result.exit_code == 0, result.output
    assert "checkpoint:" in result.output and "mAP" in result.output
    saved = (run / "config.yaml").read_text()
    assert "epochs: 1" in saved and "strategy: full" in saved and "lr: 0.003" in saved

    result = runner.invoke(cli, ["evaluate", str(run), str(synth_small), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["split"] == "test" and 0.0 <= report["tuned"]["map"] <= 1.0


def test_errors_are_one_line(runner, tmp_path, synth_small):
    cases = [
        (["train", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "no such file or folder"),
        (["train", str(synth_small), "--out", str(tmp_path / "r"), "--pos-weight", "1,2"], "--pos-weight has 2 values"),
        (["train", str(synth_small), "--out", str(tmp_path / "r"), "--backbone", "resnet5"], "resnet50"),
        (["train", str(synth_small)], "out"),
        (["evaluate", str(tmp_path / "missing"), str(synth_small)], "no such checkpoint file or run folder"),
        (["train", "--resume", str(tmp_path)], "no last.pt and config.yaml there"),
    ]
    for args, expected in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code != 0, args
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_unknown_choice_is_a_usage_error(runner, synth_small, tmp_path):
    result = runner.invoke(cli, ["train", str(synth_small), "--out", str(tmp_path / "r"), "--strategy", "frozen"])
    assert result.exit_code == 2 and "'frozen' is not one of" in result.output


def test_data_synth_and_inspect(runner, tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(cli, ["data", "synth", str(out), "--n", "24", "--img-size", "48"])
    assert result.exit_code == 0, result.output
    assert (out / "labels.csv").is_file()
    again = runner.invoke(cli, ["data", "synth", str(out), "--n", "24"])
    assert again.exit_code == 1 and "--force" in again.output
    result = runner.invoke(cli, ["data", "inspect", str(out)])
    assert result.exit_code == 0 and "pos_weight" in result.output and "circle" in result.output
    stats = json.loads(runner.invoke(cli, ["data", "inspect", str(out), "--json"]).output)
    assert stats["num_images"] == 24


def test_backbones_lists_the_registry(runner):
    result = runner.invoke(cli, ["backbones"])
    assert result.exit_code == 0
    assert "efficientnet_lite0" in result.output and "resnet50" in result.output
