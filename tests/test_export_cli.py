"""`edgecls export` and `edgecls parity` through click's CliRunner on a group with only these commands."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from edgecls._cli_export import register

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cli():
    group = click.Group()
    register(group)
    return group


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from edgecls.synth import generate_synthetic
    from edgecls.train.checkpoint import save_checkpoint
    from tests.test_export import _train_tiny

    root = tmp_path_factory.mktemp("cli")
    generate_synthetic(root / "data", n=40, img_size=64, seed=0)
    save_checkpoint(_train_tiny(root / "data", steps=30), root / "tiny.pt")
    return root / "tiny.pt", root / "data"


def _no_engine() -> bool:
    from edgecls.export.targets.tensorrt import engine_support

    return not engine_support()[0]


def test_export_then_parity_reproduces_the_report(cli, runner, tiny, tmp_path):
    ckpt, data = tiny
    out = tmp_path / "bundle"
    result = runner.invoke(cli, ["export", str(ckpt), "-t", "onnx", "-t", "tensorrt", "--data", str(data), "--out",
                                 str(out), "--max-batch", "8"])
    assert result.exit_code == 0, result.output
    assert "artifact" in result.output and "onnx" in result.output and f"bundle: {out}" in result.output
    if _no_engine():
        assert "note: tensorrt: no TensorRT engine built here" in result.output and "trtexec" in result.output
        assert json.loads((out / "tensorrt" / "engine.json").read_text())["max_batch"] == 8
    before = json.loads((out / "parity.json").read_text())

    result = runner.invoke(cli, ["parity", str(out), str(data)])
    assert result.exit_code == 0, result.output
    after = json.loads((out / "parity.json").read_text())
    assert set(after["artifacts"]) == set(before["artifacts"])
    for name, old in before["artifacts"].items():
        new = after["artifacts"][name]
        assert new["max_abs_diff"] == pytest.approx(old["max_abs_diff"], abs=1e-7) and new["passed"] == old["passed"]

    result = runner.invoke(cli, ["export", str(ckpt), "-t", "onnx", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 1 and "already exists; pass --force" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_errors_are_one_line(cli, runner, tiny, tmp_path):
    ckpt, data = tiny
    base = ["--data", str(data), "--out", str(tmp_path / "b")]
    cases = [
        (["export", str(ckpt), "-t", "onnx-int9", *base], "did you mean 'onnx-int8'"),
        (["export", str(ckpt), "-t", "onnx", "--calib-size", "5", *base], "--calib-size does not apply"),
        (["export", str(tmp_path / "nope.pt"), "-t", "onnx", *base], "no such checkpoint file or run folder"),
        (["export", str(ckpt), "-t", "onnx", "--max-map-drop", "-1", *base], "max_map_drop must be"),
        (["parity", str(tmp_path), str(data)], "no manifest here"),
    ]
    if _no_engine():
        cases.append((["export", str(ckpt), "-t", "tensorrt", "--require-engine", *base], "--require-engine"))
    for args, expected in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "b").exists()


def test_broken_budget_exits_non_zero_with_the_report(cli, runner, tiny, tmp_path):
    ckpt, data = tiny
    out = tmp_path / "b"
    result = runner.invoke(cli, ["export", str(ckpt), "-t", "onnx", "--data", str(data), "--out", str(out),
                                 "--fp32-tolerance", "1e-12"])
    assert result.exit_code == 1 and "broke their parity budget" in result.output and "FAILED" in result.output
    assert not out.exists() and (tmp_path / "b.parity-failed" / "parity.json").is_file()
