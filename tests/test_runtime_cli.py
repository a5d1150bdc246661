"""`edgecls predict | run | doctor` through click's CliRunner on tiny real bundles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from test_runtime import CLASSES, build_bundle, make_images, make_video


def _cli() -> click.Group:
    """The real `edgecls` group when it registers the runtime commands, else a group made the same way."""
    try:
        from edgecls.cli import cli

        if "predict" in cli.commands:
            return cli
    except ImportError:
        pass
    from edgecls.cli.runtime import register

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
    assert re.search(r"engine latency \d+\.\d ms \(p50\), throughput \d+\.\d FPS", result.stderr), result.stderr
    result = runner.invoke(_cli(), ["run", str(bundle), "--source", str(video), "--no-show", "--max-frames", "3"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 3
    assert json.loads(result.stdout.splitlines()[0])["frame"] == 0


@pytest.fixture
def silent_server():
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte; yields (port, accept times)."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[float] = []
    conns = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            conns.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()
    for conn in conns:
        conn.close()


def test_run_gives_up_on_a_stream_that_connects_but_sends_nothing(runner, bundle, silent_server):
    """An http:// MJPEG URL whose server accepts and stays silent: each try waits --frame-timeout, the waits between
    tries grow (0.5 s, then 1 s), and after --reconnect-tries the run ends with one line (it used to sit in OpenCV's
    30 s open timeout, then fail without a retry; a stream that opened and stalled was reopened forever)."""
    import time

    port, accepted = silent_server
    url = f"http://127.0.0.1:{port}/video.mjpg"
    start = time.monotonic()
    result = runner.invoke(_cli(), ["run", str(bundle), "--source", url, "--no-show", "--backend", "onnxruntime",
                                    "--reconnect-tries", "2", "--frame-timeout", "1"])
    elapsed = time.monotonic() - start
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.output and len(errors) == 1, result.output
    assert "reopening in 0.5 s (try 1 of 2)" in result.output and "reopening in 1.0 s (try 2 of 2)" in result.output
    assert (f"Error: {url} stopped delivering frames and could not be reopened after 2 tries (0.5, 1 s apart)"
            in result.output), result.output
    assert "--reconnect-tries" in result.output and "--frame-timeout (1 s)" in result.output
    assert len(accepted) == 3, accepted  # the first open and two reopen tries, each connected
    gaps = [b - a for a, b in zip(accepted, accepted[1:])]
    assert 1.3 < gaps[0] < 2.5 and gaps[1] > gaps[0] + 0.3, gaps  # 1 s timeout + 0.5 s, then 1 s timeout + 1 s
    assert elapsed < 15


def test_errors_are_one_line_messages(runner, bundle, tmp_path):
    result = runner.invoke(_cli(), ["run", str(bundle), "--camera", "99", "--no-show"])
    assert result.exit_code == 1 and "Error: cannot open camera 99" in result.output
    result = runner.invoke(_cli(), ["predict", str(tmp_path), "x.jpg"])
    assert result.exit_code == 1 and "no manifest here" in result.output
    result = runner.invoke(_cli(), ["predict", str(bundle), "x.jpg", "--backend", "tflite"])
    assert result.exit_code == 2 and "onnxruntime" in result.output
    result = runner.invoke(_cli(), ["predict", str(bundle), "x.jpg", "--artifact", "nope"])
    assert result.exit_code == 1 and "no 'nope' artifact" in result.output


def test_an_explicit_backend_that_is_missing_is_an_error_not_another_backend(runner, bundle, images):
    from edgecls._deps import has

    if has("tensorrt"):
        pytest.skip("tensorrt is installed here")
    for command in (["predict", str(bundle), str(images)], ["doctor", str(bundle), "--load"]):
        result = runner.invoke(_cli(), [*command, "--backend", "tensorrt"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert 'pip install "edgecls[tensorrt]"' in result.output and "available here: onnxruntime (cpu)" in \
            result.output, result.output


def test_predict_scores_against_true_labels(runner, bundle, images, tmp_path):
    """--truth: the summary counts the images whose predicted labels are all right and the label accuracy, over the
    known labels of the images the label file lists (NA left out); unreadable and unlisted images are not scored."""
    import shutil

    folder = tmp_path / "imgs"
    shutil.copytree(images, folder)
    result = runner.invoke(_cli(), ["predict", str(bundle), str(folder), "--backend", "onnxruntime", "--format",
                                    "json", "--no-progress"])
    predicted = {Path(r["source"]).name: set(r["labels"]) for r in json.loads(result.stdout) if "error" not in r}
    rows = ["filename,cat,dog,fish"]
    for i in range(8):  # img08 (in sub/) has no row; img04 is the corrupt one
        name = next(p.name for p in folder.glob(f"img{i:02d}.*"))
        truth = {c: int(c in predicted.get(name, set())) for c in ("cat", "dog", "fish")}
        if i == 3:
            truth["cat"] = 1 - truth["cat"]
        if i == 5:
            truth["dog"], truth["fish"] = 1 - truth["dog"], 1 - truth["fish"]
        cells = [str(truth[c]) for c in ("cat", "dog", "fish")]
        if i == 6:
            cells[2] = "NA"
        rows.append(f"{name}," + ",".join(cells))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    result = runner.invoke(_cli(), ["predict", str(bundle), str(folder), "--backend", "onnxruntime",
                                    "--truth", str(folder / "labels.csv"), "--no-progress"])
    assert result.exit_code in (0, 3), result.output  # 3: an unreadable input, where that exit code exists
    assert (f"scored against {folder / 'labels.csv'}: 5 of 7 images exactly right, label accuracy 0.850 "
            "(17/20 labels); 2 image(s) not scored") in result.stderr, result.stderr
    (folder / "other.csv").write_text("filename,cat,cow,fish\nimg00.png,1,0,0\n")
    result = runner.invoke(_cli(), ["predict", str(bundle), str(folder), "--backend", "onnxruntime", "--truth",
                                    str(folder / "other.csv")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert (f"Error: --truth {folder / 'other.csv'}: its classes (cat, cow, fish) are not the bundle's (cat, dog, "
            "fish)") in result.output
    # a header in another order, or none at all, is read in the bundle's class order
    (folder / "reordered.csv").write_text("\n".join(
        ["filename,fish,cat,dog"] + [f"{r.split(',')[0]},{r.split(',')[3]},{r.split(',')[1]},{r.split(',')[2]}"
                                     for r in rows[1:]]) + "\n")
    (folder / "bare.csv").write_text("\n".join(rows[1:]) + "\n")
    for truth in (folder / "reordered.csv", folder / "bare.csv"):
        result = runner.invoke(_cli(), ["predict", str(bundle), str(folder), "--backend", "onnxruntime",
                                        "--truth", str(truth), "--no-progress"])
        assert "5 of 7 images exactly right, label accuracy 0.850 (17/20 labels)" in result.stderr, result.output


def test_make_demo_says_what_it_installs_and_scores_the_new_images(tmp_path):
    """The install step prints one line and nothing else (run for real, with a stand-in python that installs
    nothing); the demo scores its 8 new images against their labels and no longer needs an FP16 budget flag."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("needs make")
    repo = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 0\n")
    (venv / "bin" / "python").chmod(0o755)
    done = subprocess.run(["make", "-s", "-C", str(repo), "install", f"VENV={venv}"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"installing edgecls[all,dev] into {venv}: about 2 minutes"]
    plan = subprocess.run(["make", "-n", "-C", str(repo), "demo", f"VENV={venv}"], capture_output=True, text=True,
                          timeout=60).stdout
    assert f"{venv}/bin/edgecls predict bundles/demo data/synth-new --format table --truth data/synth-new/labels.csv" \
        in plan and "--fp16-tolerance" not in plan


def test_doctor(runner, bundle):
    result = runner.invoke(_cli(), ["doctor", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output and "auto ->" in result.output
    result = runner.invoke(_cli(), ["doctor", "--json"])
    assert result.exit_code == 0
    assert {b["name"] for b in json.loads(result.output)["backends"]} == {"tensorrt", "onnxruntime", "openvino",
                                                                         "coreml", "litert"}


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
from edgecls.runtime.files import collect_images
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
