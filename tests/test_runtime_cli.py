"""`edgecls predict | run | doctor` through click's CliRunner on tiny real bundles."""

from __future__ import annotations

import json
import re

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


def test_doctor(runner, bundle):
    result = runner.invoke(_cli(), ["doctor", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output and "auto ->" in result.output
    result = runner.invoke(_cli(), ["doctor", "--json"])
    assert result.exit_code == 0
    assert {b["name"] for b in json.loads(result.output)["backends"]} == {"tensorrt", "onnxruntime", "openvino",
                                                                         "coreml"}
