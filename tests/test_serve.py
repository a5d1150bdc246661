"""`edgecls serve` on a tiny real bundle: a real uvicorn server on an ephemeral 127.0.0.1 port (conftest.serve_bundle),
real HTTP requests (httpx, and raw sockets where a request must stay half-sent), the real `edgecls predict` to
compare with; a real `edgecls serve` subprocess for SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from conftest import CLASSES, IMG, build_bundle, make_images, serve_bundle

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

REPO = Path(__file__).resolve().parents[1]


def _auto_choice() -> tuple[str, str]:
    """What auto runs of the test bundle (ONNX Runtime only): its INT8 artifact where this CPU runs INT8 fast
    (VNNI/AMX, Arm dot products), else the FP32 one (a Zen 3 without VNNI)."""
    from edgecls.runtime.backends import cpu_int8_support

    return ("onnx-int8", "int8") if cpu_int8_support()[0] else ("onnx", "fp32")


AUTO_ARTIFACT, AUTO_PRECISION = _auto_choice()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("serve") / "bundle", openvino=False)["root"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """9 images (jpg/png, varied sizes); img04.jpg is a truncated JPEG."""
    return make_images(tmp_path_factory.mktemp("serve") / "images")


@pytest.fixture(scope="module")
def readable(images) -> list[Path]:
    return [p for p in images if p.name != "img04.jpg"]


@pytest.fixture(scope="module")
def server(bundle):
    with serve_bundle(bundle) as served:
        yield served


@pytest.fixture(scope="module")
def predicted(bundle, images, tmp_path_factory) -> dict[str, dict[str, float]]:
    """`edgecls predict --format json` on the same files: file name -> probabilities."""
    from click.testing import CliRunner

    from edgecls.cli import cli

    result = CliRunner().invoke(cli, ["predict", str(bundle), *map(str, images), "--backend", "onnxruntime",
                                      "--format", "json", "--no-progress"])
    assert result.exit_code == 3, result.output  # img04.jpg is unreadable
    return {Path(r["source"]).name: r["probabilities"] for r in json.loads(result.stdout) if not r.get("error")}


def _close(a: dict[str, float], b: dict[str, float], atol: float = 1e-6) -> bool:
    return set(a) == set(b) and all(abs(a[k] - b[k]) <= atol for k in a)


def _still_serves(served, image: Path) -> None:
    r = served.client.post("/v1/classify", content=image.read_bytes(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text


def _metrics(served) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    r = served.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


# ---------------------------------------------------------------------------------------------------------------------
# the API


def test_classify_multipart_and_raw_body_equal_edgecls_predict(server, readable, predicted):
    for path in readable:
        multipart = server.client.post("/v1/classify", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
        raw = server.client.post("/v1/classify", content=path.read_bytes(),
                                 headers={"content-type": "image/png" if path.suffix == ".png" else "image/jpeg"})
        for r in (multipart, raw):
            assert r.status_code == 200, r.text
            body = r.json()
            assert _close(body["probabilities"], predicted[path.name]), (path.name, body, predicted[path.name])
            assert body["labels"] == [c for c in CLASSES if body["probabilities"][c] >= body["thresholds"][c]]
            assert body["artifact"] == AUTO_ARTIFACT and body["backend"] == "onnxruntime"
            assert body["precision"] == AUTO_PRECISION and body["server_ms"]["total"] > 0
        assert multipart.json()["source"] == path.name and raw.json()["source"] == "body"
    # some label is on somewhere, so the labels check above is not vacuous
    on = [server.client.post("/v1/classify", files={"file": (p.name, p.read_bytes())}).json()["labels"]
          for p in readable]
    assert any(on) or all(max(predicted[p.name].values()) < 0.45 for p in readable)


def test_batch_answers_every_file_in_order_with_an_error_entry(server, images, predicted):
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images]
    r = server.client.post("/v1/classify/batch", files=files)
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert [row["source"] for row in rows] == [p.name for p in images]
    bad = [row for row in rows if "error" in row]
    assert [row["source"] for row in bad] == ["img04.jpg"] and "not a readable image" in bad[0]["error"]
    for row in rows:
        if "error" not in row:
            assert _close(row["probabilities"], predicted[row["source"]]), row


def test_model_route(server, bundle):
    from edgecls._io import sha256_file

    info = server.client.get("/v1/model").json()
    assert info["class_names"] == list(CLASSES)
    # the artifact's own thresholds (onnx-int8's differ from onnx's in the bundle of tests/conftest.py)
    assert info["thresholds"] == ({"cat": 0.5, "dog": 0.45, "fish": 0.6} if AUTO_ARTIFACT == "onnx-int8" else
                                  {"cat": 0.5, "dog": 0.4, "fish": 0.6})
    assert info["preprocess"]["img_size"] == IMG and info["artifact"]["name"] == AUTO_ARTIFACT
    assert info["precision"] == AUTO_PRECISION and info["name"] == "bundle"
    assert info["bundle_sha256"] == sha256_file(bundle / "manifest.json")
    assert "parity" in info


def test_kserve_v2_infer_on_the_preprocessed_tensor(server, readable, predicted):
    from edgecls.preprocess import PreprocessSpec, preprocess

    c = server.client
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert c.get("/v2/health/live").status_code == 200
    meta = c.get("/v2/models/bundle").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, IMG, IMG]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"]
    assert c.get("/v2/models/bundle/ready").json()["ready"] is True

    spec = PreprocessSpec.from_dict(meta["parameters"]["preprocess"])
    x = np.stack([preprocess(p, spec) for p in readable[:3]])
    request = {"id": "r1", "inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}
    r = c.post("/v2/models/bundle/infer", json=request)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "r1" and r.json()["model_name"] == "bundle"
    assert out["logits"]["shape"] == [3, len(CLASSES)] and out["logits"]["datatype"] == "FP32"
    logits = np.asarray(out["logits"]["data"]).reshape(3, -1)
    probs = np.asarray(out["probabilities"]["data"]).reshape(3, -1)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-6)
    for row, path in zip(probs, readable[:3]):
        assert _close(dict(zip(CLASSES, map(float, row))), predicted[path.name]), path
    # nested data, one requested output
    nested = {"inputs": [{"name": "images", "shape": [1, 3, IMG, IMG], "datatype": "FP32", "data": x[:1].tolist()}],
              "outputs": [{"name": "probabilities"}]}
    r = c.post("/v2/models/bundle/infer", json=nested)
    assert r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["probabilities"]
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], probs[0], atol=1e-6)
    # errors: unknown model 404, bad shape / datatype / output 400, each naming the problem
    r = c.post("/v2/models/other/infer", json=request)
    assert r.status_code == 404 and "unknown model 'other'" in r.json()["error"]
    assert c.get("/v2/models/other").status_code == 404
    for change, words in ((dict(shape=[3, 3, IMG + 1, IMG]), "input shape"), (dict(datatype="INT8"), "FP32"),
                          (dict(data=[1.0, 2.0]), "shape"), (dict(name="x"), "unknown input 'x'")):
        bad = {"inputs": [{**request["inputs"][0], **change}]}
        r = c.post("/v2/models/bundle/infer", json=bad)
        assert r.status_code == 400 and words in r.json()["error"], (change, r.text)
    r = c.post("/v2/models/bundle/infer", json={**request, "outputs": [{"name": "boxes"}]})
    assert r.status_code == 400 and "'boxes'" in r.json()["error"]
    r = c.post("/v2/models/bundle/infer", json={"inputs": "nope"})
    assert r.status_code == 400 and "inputs" in r.json()["error"]


def test_health_and_metrics_counters_move(server, readable):
    c = server.client
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json()["status"] == "ready"
    before = _metrics(server)
    key = ("edgecls_http_requests_total", (("method", "POST"), ("route", "/v1/classify"), ("status", "200")))
    bad_key = ("edgecls_http_requests_total", (("method", "POST"), ("route", "/v1/classify"), ("status", "415")))
    for path in readable[:3]:
        _still_serves(server, path)
    c.post("/v1/classify", content=b"text", headers={"content-type": "text/plain"})
    after = _metrics(server)
    assert after[key] - before.get(key, 0) == 3
    assert after[bad_key] - before.get(bad_key, 0) == 1
    assert after[("edgecls_batch_size_count", ())] - before[("edgecls_batch_size_count", ())] == 3
    assert after[("edgecls_images_total", ())] - before[("edgecls_images_total", ())] == 3
    assert after[("edgecls_engine_seconds_sum", ())] > before[("edgecls_engine_seconds_sum", ())]
    latency = ("edgecls_http_request_seconds_count", (("route", "/v1/classify"),))
    assert after[latency] - before[latency] == 4
    assert after[("edgecls_queue_depth", ())] == 0
    assert ("edgecls_camera_fps", ()) not in after  # no live view attached


def test_openapi_lists_every_route(server):
    schema = server.client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/v1/classify", "/v1/classify/batch", "/v1/model", "/v2/models/{name}/infer", "/v2/health/ready",
            "/healthz", "/readyz", "/metrics"} <= paths
    assert "multipart/form-data" in schema["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    docs = server.client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower() and "http://" not in docs.text and "https://" not in docs.text, docs.text
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):  # served from the package: /docs works offline
        assert f"/docs/{name}" in docs.text
        answer = server.client.get(f"/docs/{name}")
        assert answer.status_code == 200 and len(answer.content) > 10_000
    assert server.client.get("/docs/index.html").status_code == 404  # only the fixed names
    assert server.client.get("/docs/..%2Fmanifest.json").status_code == 404


# ---------------------------------------------------------------------------------------------------------------------
# bad input, limits, backpressure: the answer names the problem and the server keeps serving


def _half_sent(url: str, *, path: str = "/v1/classify", length: int = 100_000, chunked: bool = False,
               first: bytes = b"\xff\xd8\xff") -> socket.socket:
    """A request whose headers and first body bytes are sent, the rest not (yet)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    size = b"Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n".encode()
    sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n" + size +
                 b"\r\n" + first)
    return sock


def _response(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_bad_bodies_415_422_each_named(server, readable):
    c = server.client
    cases = [
        (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported Content-Type 'text/plain'"),
        (dict(content=b"hello"), 415, "no Content-Type"),
        (dict(content=b"\xff\xd8\xff\xe0 not really", headers={"content-type": "image/jpeg"}), 422,
         "not a readable image"),
        (dict(content=b"", headers={"content-type": "image/png"}), 422, "empty image"),
        (dict(files={"image": ("a.jpg", readable[0].read_bytes())}), 422, "no 'file' field (fields found: 'image')"),
        (dict(files=[("file", ("a.jpg", b"1")), ("file", ("b.jpg", b"2"))]), 422, "/v1/classify/batch"),
        (dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}), 422,
         "multipart"),
        (dict(content=b"x", headers={"content-type": "multipart/form-data"}), 422, "boundary"),
    ]
    for kwargs, status, words in cases:
        r = c.post("/v1/classify", **kwargs)
        assert r.status_code == status and words in r.json()["error"], (kwargs, r.status_code, r.text)
        _still_serves(server, readable[0])
    r = c.post("/v1/classify/batch", content=readable[0].read_bytes(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = c.post("/v1/classify/batch", files={"other": ("a", b"1")})
    assert r.status_code == 422 and "'files'" in r.json()["error"]
    assert c.get("/nope").status_code == 404 and c.get("/v1/classify").status_code == 405


def test_413_over_max_upload_mb_while_the_body_streams(bundle, readable):
    with serve_bundle(bundle, max_upload_mb=0.5, max_files=2) as served:
        # declared too large: refused before a byte of the body is read
        sock = _half_sent(served.url, length=600_000)
        status, _, body = _response(sock)
        sock.close()
        assert status == 413 and "Content-Length 600000" in json.loads(body)["error"]
        # chunked, no length: 0.6 MB sent of a body that never ends, yet the answer comes (checked as it streams)
        sock = _half_sent(served.url, chunked=True, first=b"")
        chunk = b"%x\r\n%s\r\n" % (100_000, b"\0" * 100_000)
        for _ in range(6):
            sock.sendall(chunk)
        status, _, body = _response(sock)
        sock.close()
        assert status == 413 and "over --max-upload-mb 0.5 MB" in json.loads(body)["error"]
        # a JSON body (KServe) is held to the same limit
        big = {"inputs": [{"name": "images", "shape": [1, 3, IMG, IMG], "datatype": "FP32", "data": [0.5] * 200_000}]}
        r = served.client.post("/v2/models/bundle/infer", json=big)
        assert r.status_code == 413
        r = served.client.post("/v2/models/bundle/infer", content=iter([json.dumps(big).encode()]),
                               headers={"content-type": "application/json"})  # chunked: caught as it streams
        assert r.status_code == 413 and "over --max-upload-mb" in r.json()["error"], r.text
        r = served.client.post("/v1/classify/batch", files=[("files", (p.name, p.read_bytes())) for p in readable[:3]])
        assert r.status_code == 413 and "--max-files 2" in r.json()["error"]
        _still_serves(served, readable[0])
        assert served.client.get("/readyz").status_code == 200


def test_503_with_retry_after_when_the_queue_is_full(bundle, readable):
    """max_queue=1 and a long max_wait_ms: a half-sent request S is on its way, so the batch formed by request A
    waits for it (up to 10 s); A fills the queue, so C is answered 503 at once. When S's client goes, A runs."""
    with serve_bundle(bundle, max_queue=1, max_batch=8, max_wait_ms=10_000) as served:
        batcher = served.service.batcher
        slow = _half_sent(served.url)
        _wait_for(lambda: batcher.coming == 1, "the half-sent request to be announced")
        with concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(base_url=served.url, timeout=30) as other:
            first = pool.submit(other.post, "/v1/classify", content=readable[0].read_bytes(),
                                headers={"content-type": "image/jpeg"})
            _wait_for(lambda: batcher.depth == 1, "request A to wait in the queue")
            r = served.client.post("/v1/classify", content=readable[1].read_bytes(),
                                   headers={"content-type": "image/jpeg"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert "--max-queue 1" in r.json()["error"]
            assert not first.done()
            slow.close()  # S's client gives up: nothing more is coming, A's batch runs
            assert first.result(timeout=30).status_code == 200
        _still_serves(served, readable[0])
        counts = _metrics(served)
        assert counts[("edgecls_http_requests_total", (("method", "POST"), ("route", "/v1/classify"),
                                                       ("status", "503")))] == 1


def test_504_when_a_request_times_out(bundle, readable):
    """request_timeout 1 s and a long max_wait_ms: half-sent requests S1 (before A) and S2 (after A) keep A's batch
    waiting; S1 times out first, but S2 is still on its way when A's second is up, so A is answered 504."""
    with serve_bundle(bundle, request_timeout=1.0, max_batch=8, max_wait_ms=60_000) as served:
        batcher = served.service.batcher
        s1 = _half_sent(served.url)
        _wait_for(lambda: batcher.coming == 1, "S1 to be announced")
        with concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(base_url=served.url, timeout=30) as other:
            first = pool.submit(other.post, "/v1/classify", content=readable[0].read_bytes(),
                                headers={"content-type": "image/jpeg"})
            _wait_for(lambda: batcher.depth == 1, "request A to wait in the queue")
            s2 = _half_sent(served.url)
            _wait_for(lambda: batcher.coming == 2, "S2 to be announced")
            r = first.result(timeout=30)
        assert r.status_code == 504 and "--request-timeout 1 s" in r.json()["error"], r.text
        for s in (s1, s2):
            status, _, _ = _response(s)
            assert status == 504  # a client too slow to send its body times out as well
            s.close()
        _wait_for(lambda: batcher.depth == 0, "the timed-out request to leave the queue")
        _still_serves(served, readable[0])


def test_api_key_bearer_or_cookie_health_open(bundle, readable):
    with serve_bundle(bundle, api_key="s3cret") as served:
        c = served.client
        image = readable[0].read_bytes()
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic czNjcmV0"},
                        {"authorization": "Bearer s3cret2"}):
            r = c.post("/v1/classify", content=image, headers={"content-type": "image/jpeg", **headers})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
            assert "API key" in r.json()["error"]
        for path in ("/v1/model", "/metrics", "/openapi.json", "/docs", "/v2/models/bundle"):
            assert c.get(path).status_code == 401, path
        for path in ("/healthz", "/readyz", "/v2/health/ready", "/v2/health/live"):
            assert c.get(path).status_code == 200, path
        ok = {"content-type": "image/jpeg", "authorization": "Bearer s3cret"}
        assert c.post("/v1/classify", content=image, headers=ok).status_code == 200
        assert c.get("/metrics", headers={"authorization": "bearer s3cret"}).status_code == 200
        with httpx.Client(base_url=served.url, cookies={"edgecls_api_key": "s3cret"}) as browser:
            assert browser.get("/v1/model").status_code == 200
        with httpx.Client(base_url=served.url, cookies={"edgecls_api_key": "nope"}) as browser:
            assert browser.get("/v1/model").status_code == 401


# ---------------------------------------------------------------------------------------------------------------------
# the command


def test_non_loopback_host_needs_a_key_or_insecure(runner, bundle, monkeypatch):
    from edgecls.cli import cli
    from edgecls.serve.config import ServeConfig, check_exposure, is_loopback

    monkeypatch.delenv("EDGECLS_API_KEY", raising=False)
    result = runner.invoke(cli, ["serve", str(bundle), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: --host 0.0.0.0 is reachable")
    assert "--api-key" in result.output and "--insecure" in result.output
    assert [is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost", "0.0.0.0", "10.0.0.1",
                                     "example.com", "::")] == [True] * 5 + [False] * 4
    check_exposure(ServeConfig(bundle="b", host="0.0.0.0", insecure=True))
    check_exposure(ServeConfig(bundle="b", host="0.0.0.0", api_key="k"))


def test_config_errors_are_one_line(runner, bundle, tmp_path):
    from edgecls.cli import cli

    bad = tmp_path / "serve.yaml"
    bad.write_text(f"bundle: {bundle}\nmax_batchh: 4\n")
    cases = [
        (["serve", "--config", str(bad)], "unknown key 'max_batchh'; did you mean 'max_batch'?"),
        (["serve", str(bundle), "--max-batch", "0"], "--max-batch must be >= 1"),
        (["serve", str(bundle), "--camera", "0", "--source", "x.mp4"], "--camera or --source, not both"),
        (["serve", str(bundle), "--api-key", " "], "--api-key is empty"),
        (["serve"], "serve needs a bundle"),
        (["serve", str(tmp_path / "missing")], "no such bundle"),
    ]
    for args, words in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output, result.output
    # YAML and flags share one definition: flags override the file
    from edgecls.config import build_config
    from edgecls.serve import ServeConfig

    good = tmp_path / "good.yaml"
    good.write_text(f"bundle: {bundle}\nmax-batch: 4\nmax_wait_ms: 2\nsource: cam.mp4\nheartbeat: 5\n")
    cfg = build_config(ServeConfig, yaml_path=good, overrides={"max_batch": 2})
    assert (cfg.max_batch, cfg.max_wait_ms, cfg.source, cfg.heartbeat, cfg.live) == (2, 2.0, "cam.mp4", 5.0, True)


def _start_cli_server(bundle: Path, *args: str, env_extra: dict | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EDGECLS_API_KEY", None)
    env.update(env_extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "edgecls.cli", "serve", str(bundle), "--port", "0", "--backend",
                             "onnxruntime", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.match(r"serving .* on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError("the server did not start:\n" + "".join(seen))


def test_sigterm_finishes_the_request_in_flight_and_exits_0(bundle, readable):
    proc, url = _start_cli_server(bundle)
    try:
        with httpx.Client(base_url=url) as c:
            assert c.get("/readyz").status_code == 200
        image = readable[0].read_bytes()
        sock = _half_sent(url, length=len(image), first=image[:100])
        from prometheus_client.parser import text_string_to_metric_families

        def in_flight() -> float:
            text = httpx.get(url + "/metrics").text
            return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                        if s.name == "edgecls_requests_in_progress")

        _wait_for(lambda: in_flight() >= 2, "the half-sent request to reach its route")  # it and this scrape
        proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                httpx.get(url + "/healthz", timeout=1)
                return False
            except httpx.TransportError:
                return True

        _wait_for(refused, "the server to stop taking connections")
        sock.sendall(image[100:])
        status, _, body = _response(sock)
        sock.close()
        assert status == 200, body
        assert set(json.loads(body)["probabilities"]) == set(CLASSES)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "SIGTERM: finishing the requests in flight" in out and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_api_key_from_the_environment(bundle):
    proc, url = _start_cli_server(bundle, env_extra={"EDGECLS_API_KEY": "from-env"})
    try:
        assert httpx.get(url + "/v1/model").status_code == 401
        assert httpx.get(url + "/v1/model", headers={"authorization": "Bearer from-env"}).status_code == 200
        assert httpx.get(url + "/healthz").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_the_serve_package_imports_no_torch(bundle, tmp_path):
    """`edgecls[runtime,serve]`: importing the package and serving a bundle (app, batcher, one request) import no
    torch."""
    import cv2

    probe = tmp_path / "probe.png"
    cv2.imwrite(str(probe), np.full((20, 30, 3), 200, np.uint8))
    code = textwrap.dedent(f"""
        import sys, threading, time
        import edgecls.serve
        from edgecls.serve import ServeConfig, Service
        from edgecls.serve.server import bind_socket, url_of
        import httpx
        service = Service(ServeConfig(bundle={str(bundle)!r}, backend="onnxruntime"))
        sock = bind_socket("127.0.0.1", 0)
        t = threading.Thread(target=service.serve, args=(sock,), daemon=True)
        t.start()
        while not service.server.started:
            time.sleep(0.02)
        image = open({str(probe)!r}, "rb").read()
        r = httpx.post(url_of(sock) + "/v1/classify", content=image, headers={{"content-type": "image/png"}})
        assert r.status_code == 200, r.text
        service.stop(); t.join(30); service.close()
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm"))
        print("torch-free" if not bad else bad)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "torch-free", out.stdout
