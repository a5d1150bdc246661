"""`edgecls predict --engine ray` (edgecls.scale) on a real local Ray, a two-node Ray cluster and a local S3 server.

One local Ray (2 CPUs) serves the whole module (and the pytest session); the two-node cluster and the driver that is
killed run in subprocesses. Every test compares with local `edgecls predict` on the same bundle and files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'edgecls[ray]')")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from test_runtime import CLASSES, build_bundle  # noqa: E402

from edgecls.cli import cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUCKET = "edgecls-scale"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto in server mode on 127.0.0.1 (a free port), with the AWS environment pointing at it; started before Ray so
    that Ray's workers inherit that environment as a cluster's nodes would have theirs. None without moto."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    server.stop()
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def local_ray(s3_server):
    """The one local Ray of the test run: 2 CPUs, no dashboard; its GCS address (for a second driver)."""
    if ray.is_initialized():
        ray.shutdown()
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *([before] if before else [])])  # workers: this edgecls
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 << 20, logging_level="WARNING",
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("scale") / "bundle", openvino=False)["root"]


def make_images(folder: Path, n: int, *, size: tuple[int, int] = (64, 48), corrupt: bool = True) -> list[Path]:
    """``n`` real JPEG/PNG files of varied content (some in a subfolder) and, with ``corrupt``, one truncated JPEG."""
    import cv2

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sub = folder / "sub" if i % 5 == 4 else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:03d}.{'png' if i % 4 == 0 else 'jpg'}"
        w, h = size[0] + (i % 7), size[1] + (i % 3)
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        cv2.rectangle(img, (2, 2), (w // 2, h // 2), (255 * (i % 2), 128, 255 * (i % 3 == 0)), -1)
        cv2.imwrite(str(path), img)
        paths.append(path)
    if corrupt:
        ok, buf = cv2.imencode(".jpg", img)
        (folder / "broken.jpg").write_bytes(buf.tobytes()[:120])
        paths.append(folder / "broken.jpg")
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scale") / "images"
    make_images(folder, 23)
    return folder


def local_rows(bundle: Path, sources: list[str]) -> dict[str, dict]:
    """Local `edgecls predict` rows (jsonl), by path."""
    from edgecls.runtime.commands import predict_paths

    out = io.StringIO()
    predict_paths(bundle, sources, fmt="jsonl", stdout=out)
    return {row["source"]: row for row in map(json.loads, out.getvalue().splitlines())}


def assert_same_rows(rows: list[dict], reference: dict[str, dict], *, path_of=lambda p: p) -> None:
    """Every reference input exactly once, the same labels and errors, probabilities within 1e-6."""
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "an input has two rows"
    assert sorted(path_of(p) for p in paths) == sorted(reference)
    for row in rows:
        ref = reference[path_of(row["path"])]
        assert row["labels"] == ref["labels"], row
        assert row["error"] == (None if ref.get("error") is None else ref["error"].replace(
            path_of(row["path"]), row["path"]))
        for name in CLASSES:
            if ref.get("error") is None:
                assert abs(row[f"prob_{name}"] - ref["probabilities"][name]) <= 1e-6, (row, ref)
            else:
                assert row[f"prob_{name}"] is None
        assert row["artifact"] and row["backend"]


def read_rows(out: Path) -> list[dict]:
    files = sorted(out.glob("part-*.parquet"))
    assert files, f"no output files in {out}"
    return [row for f in files for row in pq.read_table(f).to_pylist()]


# ---------------------------------------------------------------------------------------------------------------------
# no Ray needed


def test_scale_never_imports_torch(images, tmp_path):
    """edgecls.scale (and the worker's module) import neither torch nor, until a job runs, ray."""
    code = textwrap.dedent(f"""
        import sys
        import edgecls.scale, edgecls.scale.job, edgecls.cli.runtime
        from edgecls.scale import list_inputs
        before = "ray" in sys.modules
        n = len(list_inputs([{str(images)!r}]))
        print(before, "torch" in sys.modules, n)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "24"]


def test_worker_cpu_requests_always_leave_room_for_reads():
    from edgecls.errors import ConfigError
    from edgecls.scale import plan_workers
    from edgecls.scale.cluster import READ_CPUS, RESERVE_PER_NODE

    default = plan_workers(None, 2, cluster_cpus=2, nodes=1)  # the defaults on a 2-core machine
    assert (default.min_workers, default.max_workers, default.cpus) == (1, 1, 1.5)
    two = plan_workers((2, 2), 1, cluster_cpus=2, nodes=1)  # the stall of the issue: 2 workers x 1 CPU on 2 cores
    assert two.cpus == 0.75
    assert plan_workers((2, 2), 1, cluster_cpus=2, nodes=2).cpus == 0.5
    assert plan_workers((1, 8), 2, cluster_cpus=160, nodes=10).cpus == 2.0
    for cpus, nodes in ((1, 1), (2, 1), (2, 2), (4, 1), (16, 1), (160, 10), (1600, 100)):
        for threads in (1, 2, 4):
            for workers in (None, (1, 1), (2, 2), (1, 3), (nodes * 8, nodes * 8)):
                try:
                    plan = plan_workers(workers, threads, cluster_cpus=cpus, nodes=nodes)
                except ConfigError:
                    continue
                left = cpus - plan.cpus * plan.max_workers
                assert left >= RESERVE_PER_NODE * nodes - 1e-9 and left / nodes >= READ_CPUS, (cpus, nodes, plan)
                assert plan.cpus <= threads
    with pytest.raises(ConfigError, match="too many"):
        plan_workers((64, 64), 1, cluster_cpus=2, nodes=1)


def test_sources_sorted_unique_and_listings(images, tmp_path):
    from edgecls.errors import ConfigError
    from edgecls.scale import list_inputs

    listing = tmp_path / "list.csv"
    listing.write_text("other,file\n" + "\n".join(f"{i},{p}" for i, p in enumerate(
        [images / "img001.jpg", "../missing.jpg", images / "img001.jpg"])) + "\n")
    inputs = list_inputs([str(images / "sub"), str(images / "*.png"), str(images / "sub"), str(listing)],
                         path_column="file")
    assert list(inputs.paths) == sorted(inputs.paths) and len(set(inputs.paths)) == len(inputs.paths)
    assert str(images / "img001.jpg") in inputs.paths and os.path.normpath(tmp_path / "../missing.jpg") in inputs.paths
    assert {Path(p).name for p in inputs.paths if "/sub/" in p} == {p.name for p in (images / "sub").iterdir()}
    with pytest.raises(ConfigError, match="no column 'path'.*--path-column"):
        list_inputs([str(listing)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images found"):
        list_inputs([str(tmp_path / "empty")])


# ---------------------------------------------------------------------------------------------------------------------
# one local Ray


def test_cli_default_settings_finish_on_2_cpus_with_the_rows_of_local_predict(local_ray, runner, bundle, images,
                                                                              tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(cli, ["predict", str(bundle), str(images), "--engine", "ray", "--out", str(out),
                                 "--block-size", "5"])
    assert result.exit_code == 3, result.output  # every row written; the broken file is an error row
    assert "24 images (1 error rows)" in result.output and "5 of 5 blocks written" in result.output
    assert "worker " in result.output and "img/s" in result.output
    rows = read_rows(out)
    assert_same_rows(rows, local_rows(bundle, [str(images)]))
    table = pq.read_table(sorted(out.glob("part-*.parquet"))[0])
    assert table.column_names == ["path", "labels", *(f"prob_{c}" for c in CLASSES), "error", "artifact", "backend"]
    assert table.schema.field("labels").type == pa.list_(pa.string())
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)  # blocks of the sorted inputs, in order
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert "not a readable image" in broken["error"] and broken["labels"] == []

    again = runner.invoke(cli, ["predict", str(bundle), str(images), "--engine", "ray", "--out", str(out),
                                "--block-size", "5"])
    assert again.exit_code == 0, again.output  # nothing left to do
    assert "0 of 5 blocks written, 5 already complete" in again.output
    other = runner.invoke(cli, ["predict", str(bundle), str(images), "--engine", "ray", "--out", str(out),
                                "--block-size", "4"])
    assert other.exit_code == 1 and "holds the results of another job" in other.output


def test_predict_dataset_is_a_ray_dataset_of_rows(local_ray, bundle, images):
    from edgecls.scale import ScaleConfig, predict_dataset, result_columns

    ds = predict_dataset(bundle, [images], ScaleConfig(workers="2", threads_per_worker=1, batch=4))
    assert isinstance(ds, ray.data.Dataset)
    ok = ds.filter(lambda row: row["error"] is None)
    rows = ok.take_all()
    assert len(rows) == 23
    reference = {k: v for k, v in local_rows(bundle, [str(images)]).items() if "error" not in v}
    assert_same_rows([{**r, "labels": list(r["labels"])} for r in rows], reference)
    assert list(rows[0]) == result_columns(CLASSES)


def test_csv_listing_and_text_formats(local_ray, runner, bundle, images, tmp_path):
    listing = tmp_path / "listing.csv"
    names = sorted(p.name for p in images.glob("img*.jpg"))[:6]
    listing.write_text("file\n" + "\n".join([*(f"{images.name}/{n}" for n in names), "gone.jpg"]) + "\n")
    (tmp_path / images.name).symlink_to(images)
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"out-{fmt}"
        result = runner.invoke(cli, ["predict", str(bundle), str(listing), "--engine", "ray", "--path-column", "file",
                                     "--format", fmt, "--out", str(out), "--workers", "1"])
        assert result.exit_code == 3, result.output
        (part,) = out.glob(f"part-*.{fmt}")
        if fmt == "csv":
            import csv

            rows = list(csv.DictReader(part.open()))
            assert rows[0].keys() == {"path", "labels", *(f"prob_{c}" for c in CLASSES), "error", "artifact",
                                      "backend"}
        else:
            rows = [json.loads(line) for line in part.read_text().splitlines()]
        assert len(rows) == 7 and sum(bool(r["error"]) for r in rows) == 1
        gone = next(r for r in rows if r["path"].endswith("gone.jpg"))
        assert gone["error"] == f"{tmp_path / 'gone.jpg'}: image file not found"
        first = next(r for r in rows if r["path"].endswith(names[0]))
        ref = local_rows(bundle, [str(images / names[0])])[str(images / names[0])]
        got = float(first["prob_cat"])
        assert abs(got - ref["probabilities"]["cat"]) <= 1e-6


def test_a_crashed_worker_is_retried_and_every_input_is_written_once(local_ray, bundle, images, tmp_path):
    from edgecls.scale import Predictor, ScaleConfig, run

    flag = tmp_path / "crash-once"
    flag.write_text("x")

    class CrashOnce(Predictor):  # defined here, so Ray pickles it by value
        def __call__(self, batch):
            if flag.exists():
                flag.unlink()
                os._exit(1)  # the worker process dies: a real crash
            return super().__call__(batch)

    out = tmp_path / "out"
    summary = run(bundle, [images], ScaleConfig(out=str(out), workers="1", threads_per_worker=1, block_size=6,
                                                batch=4), predictor=CrashOnce)
    assert not flag.exists()  # the crash happened
    assert summary.written == 24 and summary.blocks == 4
    steps = [summary.timeline[k] for k in ("listed", "connected", "planned", "checked", "first_row", "end")]
    assert steps == sorted(steps)  # the start-up breakdown: the driver's steps in order
    done = [w for w in summary.worker_timeline.values() if "first_batch" in w]
    assert done and all(w["init"] <= w["imported"] <= w["loaded"] <= w["called"] <= w["first_batch"] for w in done)
    assert_same_rows(read_rows(out), local_rows(bundle, [str(images)]))


def test_kill_9_the_driver_then_rerun_resumes_exactly_once(local_ray, runner, bundle, tmp_path):
    folder = tmp_path / "many"
    make_images(folder, 160, size=(320, 240), corrupt=False)
    out = tmp_path / "out"
    args = ["predict", str(bundle), str(folder), "--engine", "ray", "--out", str(out), "--block-size", "2",
            "--batch", "2", "--workers", "1", "--threads-per-worker", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-m", "edgecls.cli", *args, "--address", local_ray], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("part-*.parquet")):
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no block was written in 120 s"
            time.sleep(0.01)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert 1 <= len(before) < 80, f"{len(before)} of 80 blocks were written before the kill"

    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"{80 - len(before)} of 80 blocks written, {len(before)} already complete" in result.output
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before  # complete blocks were not rewritten
    rows = read_rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == 160 and len(set(paths)) == 160  # no duplicates, no gaps
    assert sorted(paths) == sorted(str(p) for p in folder.rglob("*.*"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_bad_input_is_one_line_before_any_work(local_ray, runner, bundle, images, tmp_path):
    def error(*extra):
        result = runner.invoke(cli, ["predict", *extra])
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        return lines[0]

    out = str(tmp_path / "out")
    assert "no such bundle folder" in error(str(tmp_path / "nope"), str(images), "--engine", "ray", "--out", out)
    (tmp_path / "notabundle").mkdir()
    assert "no manifest here" in error(str(tmp_path / "notabundle"), str(images), "--engine", "ray", "--out", out)
    tampered = _tampered_copy(bundle, tmp_path / "tampered")
    line = error(str(tampered), str(images), "--engine", "ray", "--out", out)  # the driver reads only the manifest
    assert "a worker cannot open it" in line and "does not match the manifest" in line
    port = _free_port()
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in error(
        str(bundle), str(images), "--engine", "ray", "--out", out, "--address", f"127.0.0.1:{port}")
    (tmp_path / "afile").write_text("x")
    assert "cannot write there" in error(str(bundle), str(images), "--engine", "ray", "--out",
                                         str(tmp_path / "afile" / "out"))
    (tmp_path / "empty").mkdir()
    assert "no images found" in error(str(bundle), str(tmp_path / "empty"), "--engine", "ray", "--out", out)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("part-*"))
    usage = runner.invoke(cli, ["predict", str(bundle), str(images), "--engine", "ray"])
    assert usage.exit_code == 2 and "give --out" in usage.output
    local_only = runner.invoke(cli, ["predict", str(bundle), str(images), "--block-size", "3"])
    assert local_only.exit_code == 2 and "--block-size: for --engine ray only" in local_only.output


def test_s3_source_bundle_and_output_on_a_local_s3_server(local_ray, s3_server, runner, bundle, images, tmp_path):
    if s3_server is None:
        pytest.skip("moto is not installed (pip install 'moto[server]')")
    boto3 = pytest.importorskip("boto3")
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(images.rglob("*.*")):
        s3.upload_file(str(path), BUCKET, f"photos/{path.relative_to(images).as_posix()}")
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"bundles/tiny/{path.relative_to(bundle).as_posix()}")

    result = runner.invoke(cli, ["predict", f"s3://{BUCKET}/bundles/tiny", f"s3://{BUCKET}/photos",
                                 "--engine", "ray", "--out", f"s3://{BUCKET}/results/run1", "--block-size", "10",
                                 "--workers", "2", "--threads-per-worker", "1"])
    assert result.exit_code == 3, result.output
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/run1/")["Contents"])
    parts = [k for k in keys if k.rsplit("/", 1)[-1].startswith("part-")]
    assert len(parts) == 3 and "results/run1/_edgecls_job.json" in keys
    rows = []
    for key in parts:
        rows += pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())).to_pylist()
    prefix = f"s3://{BUCKET}/photos/"
    assert_same_rows(rows, local_rows(bundle, [str(images)]),
                     path_of=lambda p: str(images / p.removeprefix(prefix)))

    missing = runner.invoke(cli, ["predict", str(bundle), str(images), "--engine", "ray",
                                  "--out", "s3://no-such-bucket-here/out"])
    assert missing.exit_code == 1 and "cannot write there" in missing.output, missing.output


def _tampered_copy(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` whose ONNX model files have one flipped bit (their sha256 no longer matches)."""
    shutil.copytree(bundle, dest)
    for model in dest.rglob("model.onnx"):
        data = bytearray(model.read_bytes())
        data[-8] ^= 1
        model.write_bytes(bytes(data))
    return dest


def test_two_nodes_give_the_same_rows(bundle, images, tmp_path):
    """ray.cluster_utils.Cluster, 2 nodes x 1 CPU, in its own process (one process joins one cluster)."""
    tampered = _tampered_copy(bundle, tmp_path / "tampered")
    code = textwrap.dedent(f"""
        import json, ray
        from ray.cluster_utils import Cluster
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "object_store_memory": 150 << 20,
                                                                 "include_dashboard": False}})
        cluster.add_node(num_cpus=1, object_store_memory=150 << 20)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        from edgecls.errors import ConfigError
        from edgecls.scale import ScaleConfig, run
        try:  # two nodes: the bundle check is a task on a worker
            run({str(tampered)!r}, [{str(images)!r}], ScaleConfig(out={str(tmp_path / "bad")!r}))
            refused = ""
        except ConfigError as exc:
            refused = str(exc)
        s = run({str(bundle)!r}, [{str(images)!r}], ScaleConfig(out={str(tmp_path / "out")!r}, workers="2",
                threads_per_worker=1, block_size=8, batch=4))
        print(json.dumps({{"nodes": s.plan.nodes, "cpus": s.plan.cpus,
                           "written": s.written, "refused": refused}}))
        ray.shutdown()
        cluster.shutdown()
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    refused = facts.pop("refused")
    assert "a worker cannot open it" in refused and "does not match the manifest" in refused, refused
    assert facts == {"nodes": 2, "cpus": 0.5, "written": 24}
    assert_same_rows(read_rows(tmp_path / "out"), local_rows(bundle, [str(images)]))


def test_a_pixel_input_artifact_gives_the_rows_of_its_float_twin(local_ray, bundle, images, tmp_path):
    """A worker on a -u8 artifact decodes into uint8 pixels (normalised in the engine) and writes the rows local
    `edgecls predict` writes with the float artifact."""
    pytest.importorskip("onnx")
    import shutil
    from dataclasses import replace

    from edgecls._io import sha256_file
    from edgecls.export.targets.onnx import add_pixel_input
    from edgecls.manifest import Manifest
    from edgecls.preprocess import PIXELS_BGR
    from edgecls.runtime.commands import predict_paths
    from edgecls.scale import ScaleConfig, predict_dataset

    root = tmp_path / "bundle"
    shutil.copytree(bundle, root)
    manifest = Manifest.load(root)
    (root / "onnx-u8").mkdir()
    shutil.copy(root / "onnx" / "model.onnx", root / "onnx-u8" / "model.onnx")
    add_pixel_input(root / "onnx-u8" / "model.onnx", manifest.preprocess, kind=PIXELS_BGR)
    digest = sha256_file(root / "onnx-u8" / "model.onnx")
    art = replace(manifest.artifact("onnx"), name="onnx-u8", path="onnx-u8/model.onnx", sha256=digest,
                  input=PIXELS_BGR, details={"files": {"onnx-u8/model.onnx": digest}})
    replace(manifest, artifacts=(*manifest.artifacts, art)).save(root)
    out = io.StringIO()
    predict_paths(root, [str(images)], artifact="onnx", fmt="jsonl", stdout=out)
    reference = {r["source"]: r for r in map(json.loads, out.getvalue().splitlines()) if "error" not in r}
    ds = predict_dataset(root, [images], ScaleConfig(workers="1", threads_per_worker=1, batch=4, artifact="onnx-u8"))
    rows = [r for r in ds.take_all() if r["error"] is None]
    assert {r["artifact"] for r in rows} == {"onnx-u8"}
    assert_same_rows([{**r, "labels": list(r["labels"])} for r in rows], reference)
