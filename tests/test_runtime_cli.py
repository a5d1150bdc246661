"""`edgecls predict | run | doctor` through click's CliRunner on tiny real bundles."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from test_runtime import CLASSES, build_bundle, make_images, make_video


def _cli() -> click.Group:
    """The real `edgecls` group when it registers the runtime commands, else a group made the same way."""
    try:
        from edgecls.cli import cli

        if "predict" in cli.commands:
            return cli
    except ImportError:
        pass
    from edgecls._cli_runtime import register

    group = click.Group()
    register(group)
    return group


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("cli") / "bundle", openvino=False)["root"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "images"
    make_images(folder)
    return folder


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("EDGECLS_CACHE_DIR", str(tmp_path / "cache"))
    return CliRunner()


def test_predict_json_keeps_order_with_an_error_row(runner, bundle, images):
    result = runner.invoke(_cli(), ["predict", str(bundle), str(images), "--backend", "onnxruntime", "--format",
                                    "json", "--batch", "4", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 9 and [r["source"] for r in rows] == sorted(r["source"] for r in rows)
    assert [bool(r.get("error")) for r in rows].count(True) == 1 and rows[4]["source"].endswith("img04.jpg")
    assert set(rows[0]["probabilities"]) == set(CLASSES)
    assert "9 images (1 unreadable)" in result.stderr


def test_predict_csv_to_a_file_and_table(runner, bundle, images, tmp_path):
    out = tmp_path / "res.csv"
    result = runner.invoke(_cli(), ["predict", str(bundle), str(images / "img0*.jpg"), "--format", "csv",
                                    "--out", str(out), "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "source,error,labels,cat,dog,fish" and len(lines) == 1 + 5
    result = runner.invoke(_cli(), ["predict", str(bundle), str(images / "img00.png")])
    assert result.exit_code == 0 and "img00.png" in result.stdout and "cat" in result.stdout


def test_run_video_headless_jsonl_and_save(runner, bundle, tmp_path):
    video = make_video(tmp_path / "in.mp4", frames=20)
    result = runner.invoke(_cli(), ["run", str(bundle), "--source", str(video), "--no-show", "--backend",
                                    "onnxruntime", "--jsonl", str(tmp_path / "o.jsonl"), "--save",
                                    str(tmp_path / "o.mp4")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 20 and (tmp_path / "o.mp4").stat().st_size > 0
    assert "20 frames" in result.stderr
    result = runner.invoke(_cli(), ["run", str(bundle), "--source", str(video), "--no-show", "--max-frames", "3"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3
    assert json.loads(result.stdout.splitlines()[0])["frame"] == 0


def test_errors_are_one_line_messages(runner, bundle, tmp_path):
    result = runner.invoke(_cli(), ["run", str(bundle), "--camera", "99", "--no-show"])
    assert result.exit_code == 1 and "Error: cannot open camera 99" in result.output
    result = runner.invoke(_cli(), ["predict", str(tmp_path), "x.jpg"])
    assert result.exit_code == 1 and "no manifest here" in result.output
    result = runner.invoke(_cli(), ["predict", str(bundle), "x.jpg", "--backend", "tflite"])
    assert result.exit_code == 2 and "onnxruntime" in result.output
    result = runner.invoke(_cli(), ["predict", str(bundle), "x.jpg", "--artifact", "nope"])
    assert result.exit_code == 1 and "no 'nope' artifact" in result.output


def test_doctor(runner, bundle):
    result = runner.invoke(_cli(), ["doctor", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output and "auto ->" in result.output
    result = runner.invoke(_cli(), ["doctor", "--json"])
    assert result.exit_code == 0
    assert {b["name"] for b in json.loads(result.output)["backends"]} == {"tensorrt", "onnxruntime", "openvino",
                                                                         "coreml"}
