"""`edgecls export` and `edgecls parity` through click's CliRunner on a group with only these commands."""

from __future__ import annotations

import json

import click
import pytest

from edgecls.cli.export import register

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cli():
    group = click.Group()
    register(group)
    return group


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


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_failed_parity_never_replaces_an_existing_parity_failed_folder(cli, runner, tiny, tmp_path):
    ckpt, data = tiny
    out = tmp_path / "b"
    theirs = tmp_path / "b.parity-failed"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("my inspection notes")
    args = ["export", str(ckpt), "-t", "onnx", "--data", str(data), "--out", str(out), "--fp32-tolerance", "1e-12"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "broke their parity budget" in result.output
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]
    second = tmp_path / "b.parity-failed-2"
    assert (second / "parity.json").is_file() and str(second) in result.output
    result = runner.invoke(cli, args)  # an earlier failed export's folder is kept too
    assert result.exit_code == 1 and (tmp_path / "b.parity-failed-3" / "parity.json").is_file()
    assert (second / "parity.json").is_file() and not out.exists()


def test_leftovers_of_a_killed_export_are_removed_by_the_next_export(cli, runner, tiny, tmp_path):
    import os

    ckpt, data = tiny
    pid = _dead_pid()
    left = [tmp_path / f".b.{pid}-abcd1234.partial", tmp_path / f".b.{pid}-efgh5678.work",
            tmp_path / ".b.x1y2z3_w.old", tmp_path / ".b.q1w2e3r4.partial"]  # the last two: names before the pid
    for p in left:
        (p / "onnx").mkdir(parents=True)
        (p / "onnx" / "model.onnx").write_bytes(b"half")
    running = tmp_path / f".b.{os.getpid()}-abcd1234.partial"  # an export still running over the same path
    running.mkdir()
    kept = [tmp_path / ".b.backup", tmp_path / ".c.abcd1234.partial", running]  # not ours, or not over b
    for p in kept[:2]:
        p.mkdir()
    result = runner.invoke(cli, ["export", str(ckpt), "-t", "onnx", "--data", str(data), "--out",
                                 str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in left) and all(p.is_dir() for p in kept)
    assert not list(tmp_path.glob(".b.*.work")) and not list(tmp_path.glob(".b.*.old"))


def test_resize_numerics_portable_goes_into_the_bundle(cli, runner, tiny, tmp_path):
    """The checkpoint's spec is native (as every checkpoint made before the field); --resize-numerics portable gives
    the bundle portable preprocessing, with its reference and parity made through it."""
    from edgecls.train.checkpoint import load_checkpoint

    ckpt, data = tiny
    assert load_checkpoint(ckpt).preprocess.resize_numerics == "native"
    out = tmp_path / "bundle"
    result = runner.invoke(cli, ["export", str(ckpt), "-t", "onnx", "--data", str(data), "--out", str(out),
                                 "--resize-numerics", "portable"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["preprocess"]["resize_numerics"] == "portable"
    assert "portable numerics" in (out / "README.md").read_text()
    result = runner.invoke(cli, ["parity", str(out), str(data), "--no-write"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(cli, ["export", str(ckpt), "-t", "onnx", "--data", str(data), "--out", str(tmp_path / "b2"),
                              "--resize-numerics", "exact"])
    assert bad.exit_code != 0 and "'exact' is not one of 'native', 'portable'" in bad.output
    assert "Traceback" not in bad.output
