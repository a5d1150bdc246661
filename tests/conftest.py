"""Shared fixtures: a tiny synthetic dataset made in a temp folder and a tiny real backbone."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
AQUARIUM = REPO.parent / "shared" / "datasets" / "aquarium"

# Tests run on 2 shared cores: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY_BACKBONE = "timm:test_efficientnet"
CLASSES = ("cat", "dog", "fish")  # the tiny bundles' classes
IMG = 32  # and their input size


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory):
    """Engine caches and the verified-file record go to a folder of this run, not the user's ~/.cache (subprocesses
    inherit it through the environment)."""
    before = os.environ.get("EDGECLS_CACHE_DIR")
    os.environ["EDGECLS_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgecls-cache"))
    yield
    if before is None:
        os.environ.pop("EDGECLS_CACHE_DIR", None)
    else:
        os.environ["EDGECLS_CACHE_DIR"] = before


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """click's CliRunner for the real `edgecls` commands, with a home and a cache folder of the test's own."""
    from click.testing import CliRunner

    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDGECLS_CACHE_DIR", str(tmp_path / "cache"))
    return CliRunner()


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """60 synthetic 64-px images with labels.csv (seeded split by load_dataset)."""
    from edgecls.synth import generate_synthetic

    out = tmp_path_factory.mktemp("synth") / "data"
    generate_synthetic(out, n=60, seed=0, img_size=64)
    return out


@pytest.fixture
def aquarium() -> Path:
    if not (AQUARIUM / "data.yaml").is_file():
        pytest.skip(f"real dataset absent: {AQUARIUM} (see DEVELOPERS.md; tests that need it skip elsewhere)")
    return AQUARIUM


@pytest.fixture
def tiny_config():
    """Build a TrainConfig for a seconds-long run of the tiny backbone; keyword overrides change any field."""
    from edgecls.config import build_config
    from edgecls.train.config import TrainConfig

    def make(data: Path, out: Path, **extra):
        base = dict(
            data=str(data), out=str(out), backbone=TINY_BACKBONE, pretrained=False, img_size=64, epochs=2,
            batch_size=16, workers=0, progress=False, lr=3e-3, amp=False, strategy="finetune",
        )
        base.update(extra)
        return build_config(TrainConfig, overrides=base)

    return make


# ---------------------------------------------------------------------------------------------------------------------
# tiny real bundles and images (test_runtime, test_runtime_cli, test_cli, test_bundle_security and the serve tests)


def _tiny_net(static_batch: bool = False):
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            self.head = nn.Linear(16, len(CLASSES))

        def forward(self, x):
            return self.head(self.features(x)) * 4.0  # spread the logits so labels differ between images

    torch.manual_seed(0)
    return Net().eval()


def export_onnx(path: Path, *, static_batch: bool = False) -> np.ndarray:
    """Export the tiny net to ``path``; return torch's logits for :func:`reference_input` (the parity reference)."""
    torch = pytest.importorskip("torch")
    model = _tiny_net()
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = None if static_batch else {"images": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(model, torch.zeros(1, 3, IMG, IMG), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    with torch.no_grad():
        return model(torch.from_numpy(reference_input())).numpy()


def reference_input(n: int = 5) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 3, IMG, IMG)).astype(np.float32)


def add_metadata(path: Path, manifest, thresholds) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(path))
    props = {
        "edgecls.class_names": json.dumps(list(manifest.class_names)),
        "edgecls.thresholds": json.dumps(list(thresholds)),
        "edgecls.preprocess": json.dumps(manifest.preprocess.to_dict()),
        "edgecls.manifest": manifest.to_json(),
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _quantize(src: Path, dst: Path) -> None:
    pytest.importorskip("onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"images": x[None]} for x in reference_input(8))

        def get_next(self):
            return next(self.it, None)

    dst.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns about pre-processing on the root logger
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)


def build_bundle(root: Path, *, openvino: bool) -> dict:
    """A bundle like the exporter's: onnx (fp32), onnx-int8 (Q/DQ) and, with ``openvino``, OpenVINO IRs (fp16, int8)."""
    from dataclasses import replace

    from edgecls._io import sha256_file
    from edgecls.manifest import Artifact, Manifest
    from edgecls.preprocess import PreprocessSpec

    ref = export_onnx(root / "onnx" / "model.onnx")
    _quantize(root / "onnx" / "model.onnx", root / "onnx-int8" / "model.onnx")
    thresholds = {"onnx": (0.5, 0.4, 0.6), "onnx-int8": (0.5, 0.45, 0.6), "openvino": (0.5, 0.4, 0.6),
                  "openvino-int8": (0.5, 0.45, 0.55)}
    arts = [
        Artifact("onnx", "onnx/model.onnx", "onnx", "fp32", sha256_file(root / "onnx/model.onnx"), thresholds["onnx"]),
        Artifact("onnx-int8", "onnx-int8/model.onnx", "onnx", "int8", sha256_file(root / "onnx-int8/model.onnx"),
                 thresholds["onnx-int8"], parent="onnx"),
    ]
    if openvino:
        ov = pytest.importorskip("openvino")
        ov.save_model(ov.convert_model(str(root / "onnx/model.onnx")), str(root / "openvino/model.xml"))
        ov.save_model(ov.convert_model(str(root / "onnx-int8/model.onnx")), str(root / "openvino-int8/model.xml"),
                      compress_to_fp16=False)
        arts += [
            Artifact("openvino", "openvino/model.xml", "openvino", "fp16", sha256_file(root / "openvino/model.xml"),
                     thresholds["openvino"]),
            Artifact("openvino-int8", "openvino-int8/model.xml", "openvino", "int8",
                     sha256_file(root / "openvino-int8/model.xml"), thresholds["openvino-int8"], parent="openvino"),
        ]
    manifest = Manifest(class_names=CLASSES, preprocess=PreprocessSpec(img_size=IMG), backbone="tiny",
                        thresholds=(0.5, 0.5, 0.5), input_shape=("batch", 3, IMG, IMG), output_shape=("batch", 3),
                        artifacts=tuple(arts))
    add_metadata(root / "onnx" / "model.onnx", manifest, thresholds["onnx"])
    # as the exporter does: each artifact's sha256 is of its final file (the ONNX with its metadata), and
    # details["files"] holds every file of its folder (an IR's .bin too)
    def final(a):
        files = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted((root / a.name).rglob("*"))
                 if p.is_file()}
        return replace(a, sha256=sha256_file(root / a.path), details={**a.details, "files": files})

    manifest = replace(manifest, artifacts=tuple(final(a) for a in arts))
    manifest.save(root)
    return {"root": root, "reference": ref, "manifest": manifest}


def make_images(folder: Path, n: int = 9, *, corrupt_at: int | None = 4) -> list[Path]:
    """``n`` real image files (jpg/png, varied sizes, one in a subfolder) and a truncated jpg at ``corrupt_at``."""
    import cv2

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sub = folder / "sub" if i == n - 1 else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:02d}.{'png' if i % 3 == 0 else 'jpg'}"
        h, w = 40 + 7 * i, 60 - 3 * i
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        cv2.rectangle(img, (2, 2), (w // 2, h // 2), (255 * (i % 2), 128, 255 * (i % 3 == 0)), -1)
        if i == corrupt_at:
            ok, buf = cv2.imencode(".jpg", img)
            path.write_bytes(buf.tobytes()[:150])
        else:
            cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def make_video(path: Path, frames: int = 20, size: tuple[int, int] = (96, 64), fps: float = 20.0) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), (i * 12) % 255, np.uint8)
        cv2.circle(img, (4 * i % size[0], size[1] // 2), 10, (0, 0, 255), -1)
        writer.write(img)
    writer.release()
    return path


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory) -> dict:
    return build_bundle(tmp_path_factory.mktemp("rt") / "bundle", openvino=False)


@pytest.fixture(scope="module")
def full_bundle(tmp_path_factory) -> dict:
    pytest.importorskip("openvino")
    return build_bundle(tmp_path_factory.mktemp("rt") / "bundle", openvino=True)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs") / "images"
    make_images(folder)
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# a real `edgecls serve` (uvicorn on an ephemeral 127.0.0.1 port, in a thread of the test process)


class Served:
    """A running server: its base ``url``, the :class:`edgecls.serve.Service` and an httpx ``client`` of it."""

    def __init__(self, url: str, service, client) -> None:
        self.url = url
        self.service = service
        self.client = client


def serve_bundle(bundle: Path, **settings):
    """Start ``edgecls serve BUNDLE`` (keyword settings: :class:`edgecls.serve.ServeConfig` fields) on a free
    127.0.0.1 port in a thread; a context manager that yields a :class:`Served` and stops the server (in-flight
    requests answered) on leaving."""
    import contextlib
    import threading
    import time

    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from edgecls.serve import ServeConfig, Service
    from edgecls.serve.server import bind_socket, url_of

    @contextlib.contextmanager
    def run():
        service = Service(ServeConfig(bundle=str(bundle), **{"backend": "onnxruntime", **settings}))
        sock = bind_socket("127.0.0.1", 0)
        thread = threading.Thread(target=service.serve, args=(sock,), name="test-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not service.server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                service.close()
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        url = url_of(sock)
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                yield Served(url, service, client)
        finally:
            service.stop()
            thread.join(30)
            service.close()
            sock.close()
            assert not thread.is_alive(), "the test server did not stop"

    return run()
