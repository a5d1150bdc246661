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
    assert result.exit_code == 3, result.output  # issue 10: an unreadable input exits 3, every row still written
    rows = json.loads(result.stdout)
    assert len(rows) == 9 and [r["source"] for r in rows] == sorted(r["source"] for r in rows)
    assert [bool(r.get("error")) for r in rows].count(True) == 1 and rows[4]["source"].endswith("img04.jpg")
    assert set(rows[0]["probabilities"]) == set(CLASSES)
    assert "9 images (1 unreadable)" in result.stderr


def test_predict_csv_to_a_file_and_table(runner, bundle, images, tmp_path):
    out = tmp_path / "res.csv"
    result = runner.invoke(_cli(), ["predict", str(bundle), str(images / "img0*.jpg"), "--format", "csv",
                                    "--out", str(out), "--backend", "onnxruntime"])
    assert result.exit_code == 3, result.output  # img04.jpg is corrupt (issue 10: exit 3, its row is written)
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


def _copy_images(images, folder, names=("img00.png", "img01.jpg", "img02.jpg")):
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    return [shutil.copy(images / n, folder / n) for n in names]


def test_predict_exit_codes(runner, bundle, images, tmp_path):
    good = _copy_images(images, tmp_path / "good")
    base = ["predict", str(bundle), "--backend", "onnxruntime", "--format", "jsonl"]
    result = runner.invoke(_cli(), [*base, *map(str, good)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(_cli(), [*base, str(good[0]), str(tmp_path / "missing.jpg"), str(good[1])])
    assert result.exit_code == 3, result.output
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(rows) == 3 and [bool(r.get("error")) for r in rows] == [False, True, False]
    assert "image file not found" in rows[1]["error"]
    result = runner.invoke(_cli(), [*base, str(good[0]), "--batch", "0"])
    assert result.exit_code == 2  # usage error, as click reports it
    result = runner.invoke(_cli(), ["predict", str(tmp_path / "good"), str(good[0])])
    assert result.exit_code == 1 and "Error:" in result.output  # a failure: not a bundle
    help_text = runner.invoke(_cli(), ["predict", "--help"]).output
    assert "Exit status" in help_text and "3  every row was written" in help_text


def test_outputs_that_are_inputs_are_refused(runner, bundle, images, tmp_path):
    import os

    good = _copy_images(images, tmp_path / "in")
    before = {p: open(p, "rb").read() for p in good}
    (tmp_path / "link.png").symlink_to(good[0])
    os.link(good[1], tmp_path / "hard.jpg")
    base = ["predict", str(bundle), "--backend", "onnxruntime", "--format", "csv"]
    for out in (good[0], tmp_path / "link.png", tmp_path / "hard.jpg"):
        result = runner.invoke(_cli(), [*base, str(tmp_path / "in"), "--out", str(out)])
        assert result.exit_code == 1, (out, result.output)
        assert "is the same file as the input" in result.output and "Traceback" not in result.output
    result = runner.invoke(_cli(), [*base, str(good[2]), "--out", str(bundle / "manifest.json")])
    assert result.exit_code == 1 and "inside the bundle" in result.output
    assert {p: open(p, "rb").read() for p in good} == before
    assert json.loads((bundle / "manifest.json").read_text())

    video = make_video(tmp_path / "in.mp4", frames=4)
    data = video.read_bytes()
    (tmp_path / "v.mp4").symlink_to(video)
    run = ["run", str(bundle), "--source", str(video), "--no-show", "--backend", "onnxruntime"]
    cases = [(["--save", str(video)], "--save"), (["--jsonl", str(tmp_path / "v.mp4")], "--jsonl"),
             (["--save", str(tmp_path / "o.mp4"), "--jsonl", str(tmp_path / "o.mp4")], "writes the same file")]
    for args, expected in cases:
        result = runner.invoke(_cli(), [*run, *args])
        assert result.exit_code == 1 and expected in result.output, (args, result.output)
    assert video.read_bytes() == data and not (tmp_path / "o.mp4").exists()


_LIST = """
import json, sys
from edgecls.runtime.pipeline import collect_images
print(json.dumps([collect_images([p]) for p in sys.argv[1:]]))
"""


def test_symlink_loops_are_walked_once_and_never_hang(images, tmp_path):
    import subprocess
    import sys

    root = tmp_path / "photos"
    _copy_images(images, root / "a", names=("img00.png",))
    _copy_images(images, root / "b", names=("img01.jpg", "img02.jpg"))
    (root / "a" / "up").symlink_to(root)  # two loops through each other
    (root / "b" / "back").symlink_to(root / "a")
    (root / "b" / "same.jpg").symlink_to(root / "b" / "img01.jpg")  # a second name for one file
    patterns = [str(root), str(root / "**" / "*.jpg"), str(root / "**")]
    proc = subprocess.run([sys.executable, "-c", _LIST, *patterns], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder, jpgs, everything = json.loads(proc.stdout)
    assert sorted(map(os_name, folder)) == ["img00.png", "img01.jpg", "img02.jpg"]
    assert sorted(map(os_name, jpgs)) == ["img01.jpg", "img02.jpg"]
    assert sorted(map(os_name, everything)) == ["img00.png", "img01.jpg", "img02.jpg"]


def os_name(path):
    from pathlib import Path

    return Path(path).name


def test_a_fifo_is_an_error_row_and_never_opened(bundle, images, tmp_path):
    import os
    import subprocess
    import sys

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    folder = tmp_path / "in"
    _copy_images(images, folder, names=("img00.png", "img02.jpg"))
    os.mkfifo(folder / "img01.jpg")  # opening this would block until a writer comes: none ever does
    cmd = [sys.executable, "-m", "edgecls.cli", "predict", str(bundle), str(folder), str(folder / "img01.jpg"),
           "--backend", "onnxruntime", "--format", "jsonl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [os_name(r["source"]) for r in rows] == ["img00.png", "img01.jpg", "img02.jpg", "img01.jpg"]
    assert [bool(r.get("error")) for r in rows] == [False, True, False, True]
    assert "not a regular file (a FIFO)" in rows[1]["error"]
