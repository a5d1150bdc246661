"""Pixel-input artifacts (``-u8`` targets): uint8 NHWC pixels in, the scaling, mean/std, channel order and layout
change inside the engine. They must give the probabilities of their float-input twins, carry the input kind in the
manifest, be chosen by ``auto``, and be fed pixels by every front-end; old bundles (no ``input`` field) still load.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecls.errors import ConfigError
from edgecls.manifest import Manifest
from edgecls.preprocess import (
    FLOAT_INPUT,
    PIXELS_BGR,
    PIXELS_RGB,
    Preprocessor,
    PreprocessSpec,
    pixels_to_tensor,
    preprocess,
    tensor_to_pixels,
)
from tests.conftest import make_images, make_video

TWINS = {"onnx-u8": "onnx", "onnx-int8-u8": "onnx-int8", "openvino-u8": "openvino",
         "openvino-int8-u8": "openvino-int8"}


# ---------------------------------------------------------------------------------------------------------------------
# which twin auto picks, per engine and device (no model)


def test_the_pixel_twin_comes_first_only_where_the_device_prefers_it():
    from edgecls.manifest import Artifact
    from edgecls.runtime import backends
    from edgecls.runtime.plan import order_artifacts

    arts = [Artifact(n, f"{n}/model.{ext}", fmt, p, "0" * 64, (0.5,), input=kind) for n, ext, fmt, p, kind in (
        ("onnx", "onnx", "onnx", "fp32", FLOAT_INPUT), ("onnx-u8", "onnx", "onnx", "fp32", PIXELS_BGR),
        ("onnx-int8", "onnx", "onnx", "int8", FLOAT_INPUT), ("onnx-int8-u8", "onnx", "onnx", "int8", PIXELS_BGR),
        ("openvino-int8-u8", "xml", "openvino", "int8", PIXELS_BGR),
        ("openvino-int8", "xml", "openvino", "int8", FLOAT_INPUT))]
    names = [a.name for a in order_artifacts(arts, ("onnx",), int8_fast=True)]
    assert names == ["onnx-int8-u8", "onnx-int8", "onnx-u8", "onnx"]
    names = [a.name for a in order_artifacts(arts, ("onnx",), int8_fast=True, pixels_first=False)]
    assert names == ["onnx-int8", "onnx-int8-u8", "onnx", "onnx-u8"]
    assert [a.name for a in order_artifacts(arts, ("openvino", "onnx"), True)][:2] == ["openvino-int8-u8",
                                                                                       "openvino-int8"]
    # the one source of truth: each backend's device says whether its pixel twin runs no slower
    for name, want in (("onnxruntime", {"cpu": False}), ("openvino", {"CPU": True})):
        status = backends.probe(name)
        if not status.usable:
            continue
        got = {c.device: c.pixels_first for c in backends.backend_module(name).candidates(status)}
        assert all(got[d] == w for d, w in want.items() if d in got), (name, got)
        assert all(v for d, v in got.items() if d not in want)  # GPUs and NPUs: a quarter of the bytes to move


# ---------------------------------------------------------------------------------------------------------------------
# the Preprocessor's pixel mode (no engine)


@pytest.mark.parametrize("resize", ["squash", "shorter"])
def test_pixels_are_the_float_tensor_before_normalisation(tmp_path, resize):
    spec = PreprocessSpec(img_size=32, resize=resize, crop_pct=0.875 if resize == "shorter" else 1.0)
    paths = [p for p in make_images(tmp_path, n=6, corrupt_at=None)]
    for kind in (PIXELS_BGR, PIXELS_RGB):
        pre = Preprocessor(spec, output=kind)
        out = np.zeros((len(paths), 32, 32, 3), np.uint8)
        for i, p in enumerate(paths):
            assert np.shares_memory(pre(p, out[i]), out)
        floats = np.stack([preprocess(p, spec) for p in paths])
        assert np.array_equal(pixels_to_tensor(out, spec, kind), floats)  # bit for bit
        assert np.array_equal(tensor_to_pixels(floats, spec, kind), out)
    assert np.array_equal(out[..., ::-1], np.stack([Preprocessor(spec, output=PIXELS_BGR)(p) for p in paths]))


def test_pixel_preprocessor_checks_its_output_buffer():
    spec = PreprocessSpec(img_size=32)
    pre = Preprocessor(spec, output=PIXELS_BGR)
    with pytest.raises(ConfigError, match=r"uint8 \(32, 32, 3\)"):
        pre(np.zeros((40, 50, 3), np.uint8), np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ConfigError, match="unknown input kind 'uint16'"):
        Preprocessor(spec, output="uint16")


# ---------------------------------------------------------------------------------------------------------------------
# a real export with every pixel-input target and its float twin


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from edgecls.export import ExportConfig, export
    from edgecls.synth import generate_synthetic
    from edgecls.train.checkpoint import save_checkpoint
    from tests.test_export import _train_tiny

    root = tmp_path_factory.mktemp("pixels")
    data = root / "data"
    generate_synthetic(data, n=40, img_size=64, seed=0)
    save_checkpoint(_train_tiny(data, steps=30), root / "tiny.pt")
    targets = tuple(n for pair in TWINS.items() for n in pair)
    # INT8 of a seconds-trained model on 12 images is a coin toss against its budget: allowed here (tested apart)
    result = export(ExportConfig(checkpoint=str(root / "tiny.pt"), targets=targets, data=str(data),
                                 out=str(root / "bundle"), allow_parity_failure=True))
    return {"root": result.bundle, "data": data, "result": result}


def _images(bundle) -> list[str]:
    return sorted(str(p) for p in Path(bundle["data"]).rglob("*") if p.suffix in (".jpg", ".png"))[:16]


def test_manifest_records_the_input_kind_and_the_prefix(bundle):
    manifest = Manifest.load(bundle["root"])
    for pixels, twin in TWINS.items():
        art, float_art = manifest.artifact(pixels), manifest.artifact(twin)
        assert (art.input, float_art.input) == (PIXELS_BGR, FLOAT_INPUT)
        assert art.format == float_art.format and art.precision == float_art.precision
        assert art.details["input"] == PIXELS_BGR and art.details["input_prefix"]
        assert art.parity and "not_run" not in art.parity and art.thresholds  # parity-checked, thresholds re-tuned
    raw = json.loads((Path(bundle["root"]) / "manifest.json").read_text())
    assert {a["name"]: a["input"] for a in raw["artifacts"]}["onnx-u8"] == "uint8-nhwc-bgr"


def test_float_pixel_artifacts_pass_the_fp32_parity_like_their_twins(bundle):
    reports = bundle["result"].reports
    for name in ("onnx-u8",):
        assert reports[name].passed and reports[name].max_abs_diff <= 1e-5
        assert reports[name].max_abs_diff == pytest.approx(reports[TWINS[name]].max_abs_diff, abs=1e-6)
    assert reports["openvino-u8"].max_abs_diff == pytest.approx(reports["openvino"].max_abs_diff, abs=1e-5)


@pytest.mark.parametrize("pixels,backend", [("onnx-u8", "onnxruntime"), ("onnx-int8-u8", "onnxruntime"),
                                            ("openvino-u8", "openvino"), ("openvino-int8-u8", "openvino"),
                                            ("onnx-u8", "openvino")])
def test_pixel_artifacts_give_their_twins_probabilities(bundle, pixels, backend):
    from edgecls.runtime import Classifier

    images = _images(bundle)
    with Classifier(bundle["root"], backend, artifact=pixels) as clf, \
            Classifier(bundle["root"], backend, artifact=TWINS[pixels]) as twin:
        assert clf.pixels and clf.backend.pixels and not twin.pixels
        assert clf.info()["input"] == PIXELS_BGR and clf.backend.info()["input"] == "uint8 NHWC pixels"
        p = np.stack([r.probs for r in clf.predict_batch(images)])
        q = np.stack([r.probs for r in twin.predict_batch(images)])
        # FP32 and FP16-weight IRs: the same float tensor reaches the same graph; INT8: a pixel-unit rounding of
        # the prefix may move one activation by a quantization step
        assert np.abs(p - q).max() <= (1e-5 if "int8" not in pixels else 2e-2)
        # the float tensor still works with a pixel artifact (rounded back to the pixels it was made from)
        tensors = np.stack([preprocess(i, clf.spec) for i in images])
        assert np.abs(clf.probs(tensors) - p).max() <= 1e-6


def test_auto_prefers_the_pixel_artifact_where_its_engine_runs_it_no_slower(bundle):
    """OpenVINO (and GPUs) get the -u8 twin; ONNX Runtime's CPU provider the float-input one, which was measured no
    slower there (its Cast/Transpose/Mul kernels cost what the numpy normalisation saves)."""
    from edgecls.runtime import plan

    manifest = Manifest.load(bundle["root"])
    choices = plan.plan(manifest, Path(bundle["root"]))
    assert choices
    for c in choices:
        pixels = c.candidate is not None and c.candidate.pixels_first
        assert c.artifact.name.endswith("-u8") == pixels, (c.backend, c.device, c.artifact.name)
        assert ("uint8 pixels in" in c.reason) == pixels
    cpu = [c for c in choices if (c.backend, c.device) == ("onnxruntime", "cpu")]
    assert cpu and cpu[0].artifact.name in TWINS.values() and "twin no faster" in cpu[0].reason
    ov = [c for c in choices if c.backend == "openvino"]
    assert all(c.artifact.name.endswith("-u8") for c in ov)
    explicit = plan.plan(manifest, Path(bundle["root"]), backend="onnxruntime")
    assert not explicit[0].artifact.name.endswith("-u8")  # the same rule with the backend named
    only_float = plan.plan(manifest, Path(bundle["root"]), backend="onnxruntime", artifact="onnx")
    assert only_float[0].artifact.name == "onnx"  # --artifact still picks exactly what is asked for


def test_folder_predict_and_video_run_feed_pixels(bundle, tmp_path):
    from edgecls.runtime import Classifier
    from edgecls.runtime.files import predict_files
    from edgecls.runtime.stream import parse_source, stream_frames

    images = _images(bundle)
    video = make_video(tmp_path / "clip.mp4", frames=12)
    with Classifier(bundle["root"], "onnxruntime", artifact="onnx-u8", mode="throughput") as clf, \
            Classifier(bundle["root"], "onnxruntime", artifact="onnx") as twin:
        got = [r.probs for r in predict_files(clf, images, batch=4, workers=2)]
        want = [r.probs for r in predict_files(twin, images, batch=4, workers=2)]
        assert np.abs(np.stack(got) - np.stack(want)).max() <= 1e-6
        frames = [f.prediction.probs for f in stream_frames(clf, parse_source(source=str(video)), max_batch=4)]
        twins = [f.prediction.probs for f in stream_frames(twin, parse_source(source=str(video)), max_batch=4)]
        assert len(frames) == 12 and np.abs(np.stack(frames) - np.stack(twins)).max() <= 1e-6


def test_the_server_decodes_into_pixels(bundle):
    from edgecls.runtime import Classifier
    from edgecls.serve.app import _preprocess

    data = Path(_images(bundle)[0]).read_bytes()
    with Classifier(bundle["root"], "onnxruntime", artifact="onnx-u8") as clf:
        x = _preprocess(data, clf.spec, "a.jpg", None, clf.input_kind)
        assert x.dtype == np.uint8 and x.shape == (clf.spec.img_size, clf.spec.img_size, 3)
        y = _preprocess(data, clf.spec, "a.jpg", None, FLOAT_INPUT)
        assert np.array_equal(pixels_to_tensor(x[None], clf.spec, clf.input_kind)[0], y)


def test_edgecls_parity_rechecks_pixel_artifacts(bundle, tmp_path):
    from edgecls.export import check_bundle

    copy = tmp_path / "b"
    shutil.copytree(bundle["root"], copy)
    check = check_bundle(copy, bundle["data"], artifacts=["onnx-u8", "openvino-u8"], write=False)
    first = bundle["result"].reports
    for name in ("onnx-u8", "openvino-u8"):
        assert check.reports[name].max_abs_diff == pytest.approx(first[name].max_abs_diff, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# old and broken manifests


def _edit_manifest(root: Path, edit) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_bundle_without_the_input_field_is_float_nchw(bundle, tmp_path):
    from edgecls.runtime import Classifier

    copy = tmp_path / "old"
    shutil.copytree(bundle["root"], copy)

    def strip(data):
        data["artifacts"] = [a for a in data["artifacts"] if a["name"] == "onnx"]
        for a in data["artifacts"]:
            del a["input"]

    _edit_manifest(copy, strip)
    assert Manifest.load(copy).artifact("onnx").input == FLOAT_INPUT
    with Classifier(copy, "onnxruntime") as clf:
        assert not clf.pixels and clf.predict(_images(bundle)[0]).probs.shape == (len(clf.class_names),)


def test_a_bad_input_kind_is_a_one_line_error(bundle, tmp_path, runner):
    from edgecls.cli.app import cli

    copy = tmp_path / "bad"
    shutil.copytree(bundle["root"], copy)
    _edit_manifest(copy, lambda d: d["artifacts"][0].update(input="uint16-nchw"))
    with pytest.raises(ConfigError, match="unknown input kind 'uint16-nchw'; valid: float32-nchw") as err:
        Manifest.load(copy)
    assert "\n" not in str(err.value) and "artifacts[0]" in str(err.value)
    result = runner.invoke(cli, ["predict", str(copy), _images(bundle)[0]])
    assert result.exit_code != 0 and "unknown input kind 'uint16-nchw'" in result.output
    assert "Traceback" not in result.output


def test_a_manifest_that_misstates_the_input_is_refused(bundle, tmp_path):
    from edgecls.runtime import Classifier

    copy = tmp_path / "lie"
    shutil.copytree(bundle["root"], copy)
    _edit_manifest(copy, lambda d: [a.update(input=FLOAT_INPUT) for a in d["artifacts"] if a["name"] == "onnx-u8"])
    with pytest.raises(ConfigError, match="takes uint8 NHWC pixels; the manifest and the model disagree"):
        Classifier(copy, "onnxruntime", artifact="onnx-u8")


def test_a_bench_row_times_a_pixel_artifact_on_its_pixels(bundle, tmp_path):
    """``edgecls bench`` feeds a -u8 artifact the pixels of the eval tensors (converted once, before timing), and its
    logits are the float twin's."""
    from edgecls.bench._worker import RowSpec, measure
    from edgecls.preprocess import preprocess_paths

    manifest = Manifest.load(bundle["root"])
    images = preprocess_paths([Path(p) for p in _images(bundle)], manifest.preprocess, what="the test")
    np.save(tmp_path / "images.npy", images)
    logits = {}
    for name in ("onnx-u8", "onnx"):
        art = manifest.artifact(name)
        spec = RowSpec(label=name, kind="backend", model=str(Path(bundle["root"]) / art.path), backend="onnxruntime",
                       device="cpu", precision="f32", artifact=name, batches=(1, 4), warmup=1, iters=2,
                       min_seconds=0.0, max_seconds=0.2, images=str(tmp_path / "images.npy"),
                       input_shape=images.shape[1:], logits_out=str(tmp_path / f"{name}.npy"), input=art.input,
                       preprocess=manifest.preprocess.to_dict())
        assert measure(spec)["throughput"]["4"] > 0
        logits[name] = np.load(tmp_path / f"{name}.npy")
    assert np.abs(logits["onnx-u8"] - logits["onnx"]).max() <= 1e-5


@pytest.mark.parametrize("name,backend", [("onnx-u8", "onnxruntime"), ("openvino-u8", "openvino")])
def test_a_bare_pixel_model_file_knows_its_input(bundle, tmp_path, name, backend):
    """A -u8 model file without its bundle: the manifest embedded in its metadata says it takes pixels."""
    from edgecls.runtime import Classifier

    src = Path(bundle["root"]) / Manifest.load(bundle["root"]).artifact(name).path
    for f in src.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    image = _images(bundle)[0]
    with Classifier(tmp_path / src.name, backend) as bare, Classifier(bundle["root"], backend, artifact=name) as full:
        assert bare.input_kind == PIXELS_BGR
        assert np.abs(bare.predict(image).probs - full.predict(image).probs).max() <= 1e-6


def test_a_real_server_runs_a_pixel_artifact(bundle):
    """`edgecls serve` on a -u8 artifact: /v1/classify decodes into pixels, /v2 infer's float tensor is rounded back
    to them, and both answer what `predict` answers."""
    from edgecls.runtime import Classifier
    from tests.conftest import serve_bundle

    images = [Path(p) for p in _images(bundle)[:3]]
    with Classifier(bundle["root"], "onnxruntime", artifact="onnx") as twin:
        want = np.stack([twin.predict(p).probs for p in images])
        tensors = np.stack([preprocess(p, twin.spec) for p in images])
    with serve_bundle(bundle["root"], artifact="onnx-u8") as served:
        c = served.client
        for path, probs in zip(images, want):
            r = c.post("/v1/classify", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
            assert r.status_code == 200, r.text
            assert r.json()["artifact"] == "onnx-u8"
            got = np.array([r.json()["probabilities"][n] for n in twin.class_names])
            assert np.abs(got - probs).max() <= 1e-5
        request = {"inputs": [{"name": "images", "shape": list(tensors.shape), "datatype": "FP32",
                               "data": tensors.ravel().tolist()}], "outputs": [{"name": "probabilities"}]}
        r = c.post(f"/v2/models/{Path(bundle['root']).name}/infer", json=request)
        assert r.status_code == 200, r.text
        got = np.asarray(r.json()["outputs"][0]["data"]).reshape(len(images), -1)
        assert np.abs(got - want).max() <= 1e-5
