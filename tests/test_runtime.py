"""The lean runtime on tiny real models: ONNX Runtime and OpenVINO backends, Classifier, pipelines, streams.

torch only builds the tiny models here (pytest.importorskip); the runtime itself must never import it, which a
subprocess test proves.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

# the tiny bundles and images live in conftest.py (shared with the CLI, security and serve tests); the names
# stay importable from here for the modules that import them from test_runtime
from conftest import (  # noqa: F401
    CLASSES,
    IMG,
    add_metadata,
    build_bundle,
    export_onnx,
    make_images,
    make_video,
    reference_input,
)

from edgecls.errors import ConfigError, DataError, MissingDependency, UnsupportedOption

REPO = Path(__file__).resolve().parents[1]


def _copy(bundle: dict, dst: Path) -> Path:
    shutil.copytree(bundle["root"], dst)
    return dst


# ---------------------------------------------------------------------------------------------------------------------
# backends


def test_onnxruntime_backend_matches_torch_for_any_batch(onnx_bundle):
    from edgecls.runtime import open_backend

    x = reference_input()
    with open_backend(onnx_bundle["root"] / "onnx/model.onnx", backend="onnxruntime", precision_hint="fp32") as b:
        assert (b.name, b.device, b.precision) == ("onnxruntime", "CPUExecutionProvider", "f32")
        assert (b.input_name, b.output_name) == ("images", "logits")
        np.testing.assert_allclose(b.infer(x), onnx_bundle["reference"], atol=1e-4)
        np.testing.assert_allclose(b.infer(x[:1]), onnx_bundle["reference"][:1], atol=1e-4)
        assert b.infer(x[:0]).shape == (0, len(CLASSES))
        info = b.info()
        assert info["providers"] == ["CPUExecutionProvider"] and info["load_seconds"] >= 0
    with open_backend(onnx_bundle["root"] / "onnx-int8/model.onnx", backend="onnxruntime") as q:
        assert q.precision == "int8"
        assert np.abs(q.infer(x) - onnx_bundle["reference"]).max() < 0.5


def test_onnxruntime_threads_and_bad_device(onnx_bundle):
    from edgecls.runtime import open_backend

    path = onnx_bundle["root"] / "onnx/model.onnx"
    b = open_backend(path, backend="onnxruntime", threads=1)
    assert b.info()["threads"] == 1
    with pytest.raises(UnsupportedOption, match="no cuda execution provider.*available: cpu"):
        open_backend(path, backend="onnxruntime", device="cuda")
    with pytest.raises(UnsupportedOption, match="f16 only with the tensorrt provider"):
        open_backend(path, backend="onnxruntime", precision_hint="fp16")
    with pytest.raises(UnsupportedOption, match="no quantized"):
        open_backend(path, backend="onnxruntime", precision_hint="int8")


def test_openvino_backend_f32_parity_and_resolved_precision(full_bundle):
    from edgecls.runtime import open_backend
    from edgecls.runtime.backends import cpu_flags

    x = reference_input()
    onnx_path = full_bundle["root"] / "onnx/model.onnx"
    with open_backend(onnx_path, backend="openvino", device="CPU", precision_hint="fp32") as b:
        assert (b.name, b.device, b.precision) == ("openvino", "CPU", "f32")
        np.testing.assert_allclose(b.infer(x), full_bundle["reference"], atol=1e-4)
        np.testing.assert_allclose(b.infer(x[:2]), full_bundle["reference"][:2], atol=1e-4)
    ir = open_backend(full_bundle["root"] / "openvino/model.xml", backend="openvino", precision_hint="f32")
    np.testing.assert_allclose(ir.infer(x), full_bundle["reference"], atol=1e-3)  # fp16-compressed weights
    default = open_backend(onnx_path, backend="openvino")  # the CPU's own default: bf16 where AVX512_BF16/AMX exist
    expected = "bf16" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "f32"
    assert default.precision == default.info()["inference_precision"] == expected
    quant = open_backend(full_bundle["root"] / "openvino-int8/model.xml", backend="openvino")
    assert quant.precision == "int8"


def test_openvino_rejects_a_precision_the_cpu_changes(full_bundle):
    from edgecls.runtime import open_backend
    from edgecls.runtime.backends.openvino import _caps

    if "FP16" in _caps("CPU"):
        pytest.skip("this CPU runs f16 natively")
    with pytest.raises(UnsupportedOption, match="cannot run f16 here.*valid: f32"):
        open_backend(full_bundle["root"] / "onnx/model.onnx", backend="openvino", precision_hint="fp16")


def test_openvino_static_batch_model_is_made_dynamic(tmp_path):
    pytest.importorskip("openvino")
    from edgecls.runtime import open_backend

    ref = export_onnx(tmp_path / "static.onnx", static_batch=True)
    b = open_backend(tmp_path / "static.onnx", backend="openvino", precision_hint="f32")
    np.testing.assert_allclose(b.infer(reference_input()), ref, atol=1e-4)


def test_openvino_caches_the_compiled_model_per_model_and_settings(full_bundle, tmp_path, monkeypatch):
    """The compiled model is cached under the user's cache dir, keyed by the model files' sha256, OpenVINO's version,
    the device and the settings: the second load imports it and answers the same; another model or other settings
    miss; a blob that does not match its record, or the cache turned off, compiles again."""
    from edgecls.runtime import open_backend

    monkeypatch.setenv("EDGECLS_CACHE_DIR", str(tmp_path / "cache"))
    model = shutil.copytree(full_bundle["root"] / "openvino-int8", tmp_path / "m") / "model.xml"
    x = reference_input()

    def load(path=model, **kw):
        b = open_backend(path, backend="openvino", device="CPU", mode="throughput", **kw)
        return b, b.infer(x), b.info()

    first, ref, info = load()
    assert info["engine_cache_hit"] is False and Path(info["engine_cache"]).is_file()
    blob = Path(info["engine_cache"])
    record = json.loads(blob.with_suffix(".json").read_text())
    assert record["key"]["model_sha256"] == __import__("hashlib").sha256(model.read_bytes()).hexdigest()
    assert record["key"]["openvino"] == info["version"] and record["key"]["device"] == "CPU"
    second, out, info2 = load()
    assert info2["engine_cache_hit"] is True and info2["engine_cache"] == str(blob)
    np.testing.assert_array_equal(out, ref)
    assert (second.precision, second.input_shape, second.pixels, second.input_name, second.streams) == \
        (first.precision, first.input_shape, first.pixels, first.input_name, first.streams)
    _, _, other = load(threads=1)  # other settings: another entry
    assert other["engine_cache_hit"] is False and other["engine_cache"] != str(blob)

    data = bytearray(blob.read_bytes())  # a blob that is not the one its record vouches for: compiled again
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    _, out, info3 = load()
    assert info3["engine_cache_hit"] is False
    np.testing.assert_array_equal(out, ref)
    assert load()[2]["engine_cache_hit"] is True  # and written whole again

    float_ir = full_bundle["root"] / "openvino"  # another model under the same file name: its own entry
    for name in ("model.xml", "model.bin"):
        shutil.copyfile(float_ir / name, model.parent / name)
    _, out, info4 = load()
    assert info4["engine_cache_hit"] is False and info4["engine_cache"] != str(blob)
    np.testing.assert_allclose(out, full_bundle["reference"], atol=0.05)

    monkeypatch.setenv("EDGECLS_OPENVINO_CACHE", "0")
    assert load()[2]["engine_cache"] is None
    monkeypatch.delenv("EDGECLS_OPENVINO_CACHE")
    (tmp_path / "file").write_text("")  # a cache dir that cannot be made: the model still loads
    monkeypatch.setenv("EDGECLS_CACHE_DIR", str(tmp_path / "file"))
    _, out, info5 = load()
    assert info5["engine_cache_hit"] is False
    np.testing.assert_allclose(out, full_bundle["reference"], atol=0.05)


def test_unknown_backend_lists_the_valid_names(onnx_bundle):
    from edgecls.runtime import Classifier, open_backend

    with pytest.raises(ConfigError, match=r"unknown backend 'onnxrt'; valid: auto, tensorrt, onnxrun.*did you mean"):
        open_backend(onnx_bundle["root"] / "onnx/model.onnx", backend="onnxrt")
    with pytest.raises(ConfigError, match="valid: auto, tensorrt, onnxruntime, openvino, coreml"):
        Classifier(onnx_bundle["root"], backend="tflite")


def test_tensorrt_not_installed_names_the_extra(onnx_bundle):
    from edgecls._deps import has
    from edgecls.runtime import open_backend

    if has("tensorrt"):
        pytest.skip("tensorrt is installed here")
    with pytest.raises(MissingDependency, match=r'pip install "edgecls\[tensorrt\]"'):
        open_backend(onnx_bundle["root"] / "onnx/model.onnx", backend="tensorrt")


def test_explicit_tensorrt_without_it_is_an_error_that_says_what_runs_here(onnx_bundle, image_dir):
    """Asked-for and got must match: an explicit TensorRT that is not installed never becomes another engine (such as
    ONNX Runtime's TensorRT provider); the error names the extra and the backends this machine does run."""
    from edgecls._deps import has
    from edgecls.runtime import Classifier, available_backends, open_backend
    from edgecls.runtime.backends import tensorrt as trt_backend

    if has("tensorrt"):
        pytest.skip("tensorrt is installed here")
    here = ", ".join(f"{s.name} ({', '.join(s.devices)})" for s in available_backends() if s.usable)
    assert "onnxruntime (cpu)" in here
    expected = r'pip install "edgecls\[tensorrt\]".*; available here: ' + re.escape(here) + "$"
    with pytest.raises(MissingDependency, match=expected):
        Classifier(onnx_bundle["root"], backend="tensorrt")
    with pytest.raises(MissingDependency, match=expected):
        open_backend(onnx_bundle["root"] / "onnx/model.onnx", backend="tensorrt")
    if not has("cuda") and not has("cuda.bindings"):  # the backend itself: no cuda-python, no other engine either
        with pytest.raises(MissingDependency, match=r"needs cuda-python.*available here: " + re.escape(here)):
            trt_backend.load(onnx_bundle["root"] / "onnx/model.onnx", device=None, threads=None, precision=None)


def test_plan_is_public_and_the_classifier_loads_its_first_choice(onnx_bundle):
    from edgecls.manifest import Manifest
    from edgecls.runtime import Choice, Classifier, plan

    root = onnx_bundle["root"]
    manifest = Manifest.load(root)
    choices = plan.plan(manifest, root, backend="onnxruntime")
    assert len(choices) == 1 and isinstance(choices[0], Choice)
    first = choices[0]
    assert first.backend == "onnxruntime" and first.reason.startswith("onnxruntime as requested; artifact ")
    assert first.path == plan.model_path(root, first.artifact, "onnxruntime")
    assert first.precision == plan.precision_for(first.artifact, "onnxruntime")
    with Classifier(root, backend="onnxruntime") as clf:
        assert (clf.artifact, clf.choice.path, clf.backend.precision, clf.reason) == \
            (first.artifact, first.path, first.precision, first.reason)
    every, not_run = plan.plan_all(manifest, root, backends=("onnxruntime",))
    assert [(c.artifact.name, c.backend, c.device, c.precision) for c in every] == \
        [("onnx", "onnxruntime", "cpu", "f32"), ("onnx-int8", "onnxruntime", "cpu", "int8")] and not_run == []
    assert {c.path for c in every} == {root / "onnx/model.onnx", root / "onnx-int8/model.onnx"}


def test_emulate_qdq_goes_through_open_backend(onnx_bundle):
    from edgecls.runtime import open_backend

    path = onnx_bundle["root"] / "onnx-int8/model.onnx"
    with open_backend(path, backend="onnxruntime", emulate_qdq=True) as emulated:
        assert emulated.info()["qdq"].startswith("emulated")
        np.testing.assert_allclose(emulated.infer(reference_input()), onnx_bundle["reference"], atol=0.5)
    for backend in ("auto", "openvino"):
        with pytest.raises(ConfigError, match=f"emulate_qdq needs the onnxruntime backend, not '{backend}'"):
            open_backend(path, backend=backend, emulate_qdq=True)


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnx(onnx_bundle, tmp_path, monkeypatch):
    from edgecls.runtime import open_backend
    from edgecls.runtime.backends import probe

    if not probe("tensorrt").usable:
        pytest.skip(f"TensorRT needs an NVIDIA GPU with tensorrt and cuda-python: {probe('tensorrt').reason}")
    monkeypatch.setenv("EDGECLS_CACHE_DIR", str(tmp_path))
    b = open_backend(onnx_bundle["root"] / "onnx/model.onnx", backend="tensorrt", precision_hint="f32")
    np.testing.assert_allclose(b.infer(reference_input()), onnx_bundle["reference"], atol=1e-3)
    assert list(tmp_path.glob("tensorrt/*.engine"))
    again = open_backend(onnx_bundle["root"] / "onnx/model.onnx", backend="tensorrt", precision_hint="f32")
    assert again.info()["engine_cache"] == b.info()["engine_cache"]


def test_coreml_needs_macos(tmp_path):
    from edgecls._deps import has
    from edgecls.runtime import open_backend

    if sys.platform == "darwin":
        pytest.skip("CoreML runs here; covered by the coreml CI job")
    (tmp_path / "model.mlpackage").mkdir()
    expected = UnsupportedOption if has("coremltools") else MissingDependency
    with pytest.raises(expected, match="macOS" if has("coremltools") else "edgecls\\[coreml\\]"):
        open_backend(tmp_path / "model.mlpackage", backend="coreml")


def test_available_backends_reports_every_backend():
    from edgecls.runtime import available_backends

    statuses = {s.name: s for s in available_backends()}
    assert set(statuses) == {"tensorrt", "onnxruntime", "openvino", "coreml", "litert"}
    assert statuses["onnxruntime"].installed and "cpu" in statuses["onnxruntime"].devices
    for s in statuses.values():
        assert s.usable or s.reason  # every backend that cannot run says why


# ---------------------------------------------------------------------------------------------------------------------
# Classifier


def test_auto_picks_openvino_on_x86_and_logs_why(full_bundle, caplog):
    from edgecls.runtime import Classifier
    from edgecls.runtime.backends import cpu_int8_support, is_x86

    if not is_x86():
        pytest.skip("OpenVINO is the preferred CPU engine on x86 only")
    with caplog.at_level(logging.INFO, logger="edgecls"):
        clf = Classifier(full_bundle["root"])
    fast, _ = cpu_int8_support(avx2=True)  # OpenVINO's int8 kernels beat its f32 on AVX2 CPUs without VNNI too
    assert clf.backend.name == "openvino" and clf.backend.device == "CPU"
    assert clf.artifact.name == ("openvino-int8" if fast else "openvino")
    assert "OpenVINO is installed and is the fastest CPU engine on x86" in clf.info()["reason"]
    assert "openvino" in caplog.text and "x86" in caplog.text
    assert clf.info()["thresholds"] == list(clf.artifact.thresholds)


def test_classifier_equals_direct_backend_run(full_bundle, image_dir):
    """What Classifier returns is the artifact's backend output (the parity run), sigmoid, artifact thresholds."""
    from edgecls.metrics import sigmoid
    from edgecls.preprocess import preprocess_batch
    from edgecls.runtime import Classifier, open_backend

    paths = [p for p in sorted(image_dir.glob("*")) if p.is_file() and p.name != "img04.jpg"]
    for backend, artifact in [("onnxruntime", "onnx"), ("onnxruntime", "onnx-int8"), ("openvino", "openvino"),
                              ("openvino", "openvino-int8"), ("openvino", "onnx")]:
        clf = Classifier(full_bundle["root"], backend=backend, artifact=artifact)
        preds = clf.predict_batch(paths)
        direct = open_backend(clf.choice.path, backend=backend, precision_hint=clf.choice.precision)
        probs = sigmoid(direct.infer(preprocess_batch(paths, clf.spec)))
        np.testing.assert_array_equal(np.stack([p.probs for p in preds]), probs)
        thr = np.asarray(full_bundle["manifest"].artifact(artifact).thresholds)
        for pred, row in zip(preds, probs):
            assert pred.labels == tuple(c for c, on in zip(CLASSES, row >= thr) if on)
        assert clf.backend.precision == ("int8" if "int8" in artifact else "f32")
    assert len({p.labels for p in preds}) > 1  # the tiny model does tell images apart


def test_predict_accepts_path_array_and_bytes(onnx_bundle, image_dir):
    import cv2

    from edgecls.runtime import Classifier

    clf = Classifier(onnx_bundle["root"], backend="onnxruntime", artifact="onnx")
    path = image_dir / "img01.jpg"
    by_path = clf.predict(path)
    by_array = clf.predict(cv2.imread(str(path)))
    by_bytes = clf.predict(path.read_bytes())
    np.testing.assert_array_equal(by_path.probs, by_array.probs)
    np.testing.assert_array_equal(by_path.probs, by_bytes.probs)
    assert by_path.source == str(path) and by_bytes.source == "<bytes 0>"
    assert set(by_path.probabilities) == set(CLASSES)
    with pytest.raises(DataError, match="img04.jpg: not a readable image"):
        clf.predict(image_dir / "img04.jpg")


def test_bare_onnx_with_metadata(onnx_bundle, tmp_path, image_dir):
    from edgecls.runtime import Classifier

    bare = tmp_path / "elsewhere" / "model.onnx"
    bare.parent.mkdir()
    shutil.copy(onnx_bundle["root"] / "onnx/model.onnx", bare)
    clf = Classifier(bare, backend="onnxruntime")
    assert clf.class_names == CLASSES
    assert tuple(clf.thresholds.tolist()) == pytest.approx((0.5, 0.4, 0.6))
    assert clf.spec.img_size == IMG
    ref = Classifier(onnx_bundle["root"], backend="onnxruntime", artifact="onnx")
    img = image_dir / "img00.png"
    np.testing.assert_array_equal(clf.predict(img).probs, ref.predict(img).probs)


def test_bare_openvino_ir_with_rt_info(full_bundle, tmp_path):
    """The exporter stores the metadata in the IR's rt_info/edgecls (keys with dots as underscores)."""
    ov = pytest.importorskip("openvino")
    from edgecls.runtime import Classifier

    model = ov.Core().read_model(str(full_bundle["root"] / "openvino/model.xml"))
    manifest = full_bundle["manifest"]
    meta = {"edgecls.manifest": manifest.to_json(), "edgecls.thresholds": json.dumps([0.3, 0.3, 0.3])}
    for key, value in meta.items():
        model.set_rt_info(value, ["edgecls", key.replace(".", "_")])
    ov.save_model(model, str(tmp_path / "model.xml"), compress_to_fp16=False)
    clf = Classifier(tmp_path / "model.xml")
    assert clf.backend.name == "openvino" and clf.class_names == CLASSES
    assert tuple(clf.thresholds.tolist()) == pytest.approx((0.3, 0.3, 0.3))


def test_onnx_without_metadata_is_a_clear_error(tmp_path):
    from edgecls.runtime import Classifier

    export_onnx(tmp_path / "plain.onnx")
    with pytest.raises(ConfigError, match="no edgecls metadata.*pass the bundle folder"):
        Classifier(tmp_path / "plain.onnx")


def test_model_file_inside_a_bundle_uses_its_artifact(full_bundle):
    from edgecls.runtime import Classifier

    clf = Classifier(full_bundle["root"] / "openvino" / "model.xml")
    assert clf.artifact.name == "openvino" and clf.backend.name == "openvino"
    assert tuple(clf.thresholds.tolist()) == pytest.approx((0.5, 0.4, 0.6))


def test_forced_artifact_and_wrong_backend(full_bundle):
    from edgecls.runtime import Classifier

    clf = Classifier(full_bundle["root"], artifact="onnx-int8")
    assert clf.artifact.name == "onnx-int8" and clf.backend.precision == "int8"
    with pytest.raises(ConfigError, match="'openvino' is openvino; backends for it: openvino"):
        Classifier(full_bundle["root"], backend="onnxruntime", artifact="openvino")
    with pytest.raises(ConfigError, match="no 'tflite' artifact.*it has: onnx, onnx-int8"):
        Classifier(full_bundle["root"], artifact="tflite")


def test_missing_artifact_file_is_named(full_bundle, tmp_path):
    from edgecls.runtime import Classifier

    bundle = _copy(full_bundle, tmp_path / "b")
    (bundle / "onnx-int8" / "model.onnx").unlink()
    with pytest.raises(ConfigError, match=r"artifact 'onnx-int8' needs .*onnx-int8/model.onnx, which is missing"):
        Classifier(bundle, backend="onnxruntime", artifact="onnx-int8")
    (bundle / "openvino-int8" / "model.bin").unlink()
    (bundle / "openvino" / "model.bin").unlink()
    with pytest.raises(ConfigError, match=r"openvino.*/model.bin, which is missing"):
        Classifier(bundle, backend="openvino")


def test_newer_manifest_schema_and_missing_manifest(onnx_bundle, tmp_path):
    from edgecls.runtime import Classifier

    bundle = _copy(onnx_bundle, tmp_path / "b")
    data = json.loads((bundle / "manifest.json").read_text())
    data["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="schema version 99 is newer than this edgecls reads.*upgrade"):
        Classifier(bundle)
    (bundle / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="no manifest here"):
        Classifier(bundle)


def test_doctor_report_shows_the_auto_choice(full_bundle):
    from edgecls.runtime import doctor_report

    report = doctor_report(full_bundle["root"], load=True)
    assert report.error is None
    names = [b["name"] for b in report.backends]
    assert names == ["tensorrt", "onnxruntime", "openvino", "coreml", "litert"]
    assert report.choices[0]["backend"] == report.loaded["backend"]["name"]
    assert report.choices[0]["artifact"] == report.loaded["artifact"]["name"]
    text = report.format()
    assert "auto ->" in text and "because:" in text and "onnxruntime" in text


# ---------------------------------------------------------------------------------------------------------------------
# files pipeline


def test_collect_images_expands_folders_globs_and_keeps_order(image_dir):
    from edgecls.runtime.files import collect_images

    found = collect_images([image_dir / "img03.png", image_dir, str(image_dir / "img0[12].*"), "missing.jpg"])
    names = [Path(p).name for p in found]
    assert names[0] == "img03.png" and names[-3:] == ["img01.jpg", "img02.jpg", "missing.jpg"]
    folder = names[1:-3]
    assert folder == sorted(folder[:-1]) + ["img08.jpg"]  # recursive, sorted, subfolder after the files
    assert len(folder) == 9


def test_predict_files_error_row_in_order(full_bundle, image_dir):
    from edgecls.runtime import Classifier
    from edgecls.runtime.files import collect_images, predict_files

    clf = Classifier(full_bundle["root"], backend="openvino", artifact="openvino")
    paths = collect_images([image_dir])
    rows = list(predict_files(clf, paths, batch=3, workers=2))
    assert [r.source for r in rows] == paths
    errors = [r for r in rows if not r.ok]
    assert len(errors) == 1 and errors[0].source.endswith("img04.jpg") and "not a readable image" in errors[0].error
    good = [p for p in paths if not p.endswith("img04.jpg")]
    direct = clf.predict_batch(good)
    for row, ref in zip([r for r in rows if r.ok], direct):
        np.testing.assert_allclose(row.probs, ref.probs, atol=1e-6)
        assert row.labels == ref.labels


def test_predict_paths_formats(onnx_bundle, image_dir, tmp_path):
    import csv

    from edgecls.runtime.commands import predict_paths

    out = io.StringIO()
    summary = predict_paths(onnx_bundle["root"], [image_dir], backend="onnxruntime", fmt="json", stdout=out, batch=4)
    rows = json.loads(out.getvalue())
    assert (summary.images, summary.errors, len(rows)) == (9, 1, 9)
    assert rows[4]["error"] and rows[4]["source"].endswith("img04.jpg")
    assert rows[0]["probabilities"].keys() == set(CLASSES)
    summary = predict_paths(onnx_bundle["root"], [image_dir], backend="onnxruntime", fmt="jsonl",
                            out=tmp_path / "r.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["source"] for r in lines] == [r["source"] for r in rows] and summary.out == str(tmp_path / "r.jsonl")
    predict_paths(onnx_bundle["root"], [image_dir], backend="onnxruntime", fmt="csv", out=tmp_path / "r.csv")
    table = list(csv.reader((tmp_path / "r.csv").open()))
    assert table[0] == ["source", "error", "labels", *CLASSES] and len(table) == 10 and table[5][1]
    out = io.StringIO()
    predict_paths(onnx_bundle["root"], [image_dir / "img00.png"], backend="onnxruntime", stdout=out)
    assert out.getvalue().splitlines()[0].startswith("source") and "img00.png" in out.getvalue()
    with pytest.raises(ConfigError, match="no images found"):
        predict_paths(onnx_bundle["root"], [str(tmp_path / "*.nothing")])


class _InterruptingStream(io.StringIO):
    """stdout that receives Ctrl-C while the 3rd row is written (the user presses it mid-run)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def write(self, text: str) -> int:
        if text.startswith(",\n"):
            self.rows += 1
            if self.rows == 2:
                raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_closes_the_json_array(onnx_bundle, image_dir):
    from edgecls.runtime.commands import predict_paths

    out = _InterruptingStream()
    summary = predict_paths(onnx_bundle["root"], [image_dir], backend="onnxruntime", fmt="json", stdout=out, batch=2)
    assert summary.interrupted and summary.images == 2
    assert len(json.loads(out.getvalue())) == 2  # still valid JSON


# ---------------------------------------------------------------------------------------------------------------------
# streams


def test_run_stream_on_a_video_file(onnx_bundle, tmp_path):
    import cv2

    from edgecls.runtime.commands import run_stream

    video = make_video(tmp_path / "in.mp4", frames=20)
    summary = run_stream(onnx_bundle["root"], source=str(video), backend="onnxruntime", show=False,
                         jsonl=tmp_path / "out.jsonl", save=tmp_path / "out.mp4")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary.frames == 20 and summary.dropped == 0 and not summary.interrupted
    assert [r["frame"] for r in lines] == list(range(20))
    assert set(lines[0]) >= {"frame", "timestamp", "probabilities", "labels", "latency_ms"}
    assert lines[-1]["timestamp"] == pytest.approx(19 / 20.0, abs=0.01)
    # the summary's latency is the engine's median per frame, beside the throughput (not "N FPS, M ms per frame")
    assert 0 < summary.engine_p50_ms <= float(np.median([r["latency_ms"] for r in lines])) + 1e-3
    text = summary.format()
    assert f"engine latency {summary.engine_p50_ms:.1f} ms (p50), throughput {summary.fps:.1f} FPS" in text
    assert "ms per frame" not in text
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(20.0)
    ok, frame = cap.read()
    assert ok and frame.shape == (64, 96, 3)
    cap.release()
    out = io.StringIO()
    summary = run_stream(onnx_bundle["root"], source=str(video), backend="onnxruntime", show=False, stdout=out,
                         max_frames=5)
    assert summary.frames == 5 and len(out.getvalue().splitlines()) == 5  # headless: JSON lines on stdout


def test_video_results_equal_classifier_on_frames(onnx_bundle, tmp_path):
    import cv2

    from edgecls.runtime import Classifier
    from edgecls.runtime.stream import parse_source, stream_frames

    video = make_video(tmp_path / "in.mp4", frames=6)
    clf = Classifier(onnx_bundle["root"], backend="onnxruntime", artifact="onnx")
    results = list(stream_frames(clf, parse_source(source=str(video))))
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(6)]
    direct = clf.predict_batch(frames)
    for res, ref in zip(results, direct):
        np.testing.assert_allclose(res.prediction.probs, ref.probs, atol=1e-6)


def test_video_frames_decoded_ahead_are_inferred_together(onnx_bundle, tmp_path):
    """Dynamic batching of a video file: frames already decoded when the engine is free go in one batch, in order,
    with the same results as frame by frame; cameras and --realtime files never batch."""
    import time

    from edgecls.errors import ConfigError
    from edgecls.runtime import Classifier
    from edgecls.runtime.stream import parse_source, stream_frames

    video = make_video(tmp_path / "in.mp4", frames=12)
    clf = Classifier(onnx_bundle["root"], backend="onnxruntime", artifact="onnx")
    sizes: list[int] = []
    probs = clf.probs

    def spy(batch):
        sizes.append(len(batch))
        return probs(batch)

    clf.probs = spy
    frames = stream_frames(clf, parse_source(source=str(video)), max_batch=4)
    first = next(frames)
    time.sleep(1.0)  # the reader decodes and preprocesses the rest meanwhile
    results = [first, *frames]
    assert [r.index for r in results] == list(range(12))
    assert max(sizes) == 4 and sum(sizes) == 12 and min(sizes) >= 1
    clf.probs = probs
    single = list(stream_frames(clf, parse_source(source=str(video)), max_batch=1))
    for res, ref in zip(results, single):
        np.testing.assert_allclose(res.prediction.probs, ref.prediction.probs, atol=1e-6)
    capped = list(stream_frames(clf, parse_source(source=str(video)), max_batch=8, max_frames=5))
    assert [r.index for r in capped] == list(range(5))
    with pytest.raises(ConfigError, match="--batch must be at least 1"):
        next(stream_frames(clf, parse_source(source=str(video)), max_batch=0))


def test_video_tensors_reuse_a_ring_that_wraps_around(onnx_bundle, tmp_path):
    """A file longer than the ring of input tensors (depth + batch + 2 slots) gives every frame its own result:
    slots are reused only after their frame was inferred, and a batch across the ring's end is gathered in order."""
    import time

    from edgecls.runtime import Classifier
    from edgecls.runtime.stream import parse_source, stream_frames

    video = make_video(tmp_path / "in.mp4", frames=41)
    clf = Classifier(onnx_bundle["root"], backend="onnxruntime", artifact="onnx")
    frames = stream_frames(clf, parse_source(source=str(video)), max_batch=3)  # depth 8: 13 slots
    results = []
    for res in frames:
        results.append((res.index, res.prediction.probs, res.frame.copy()))
        if res.index % 7 == 0:
            time.sleep(0.2)  # let the reader run ahead and fill the ring
    assert [i for i, _, _ in results] == list(range(41))
    direct = clf.predict_batch([frame for _, _, frame in results])
    for (_, probs, _), ref in zip(results, direct):
        np.testing.assert_allclose(probs, ref.probs, atol=1e-6)


@pytest.mark.parametrize("which", ["onnxruntime", "openvino"])
def test_throughput_mode_gives_the_latency_results(which, request, image_dir):
    """The throughput mode splits a batch over streams (OpenVINO async requests, ONNX Runtime single-threaded
    sessions side by side); results are those of the latency mode, in order, for any batch size."""
    from edgecls.errors import ConfigError
    from edgecls.runtime import Classifier

    bundle = request.getfixturevalue("onnx_bundle" if which == "onnxruntime" else "full_bundle")
    images = sorted(p for p in image_dir.rglob("*") if p.is_file() and p.name != "img04.jpg")  # img04: corrupt
    with Classifier(bundle["root"], backend=which) as lat, \
            Classifier(bundle["root"], backend=which, mode="throughput", threads=2) as thr:
        assert lat.info()["backend"]["mode"] == "latency" and thr.info()["mode"] == "throughput"
        assert thr.info()["backend"]["streams"] >= 2
        for n in (1, 2, 3, 7):
            batch = reference_input(n)
            np.testing.assert_allclose(thr.probs(batch), lat.probs(batch), atol=1e-5)
        got = [p.probs for p in thr.predict_batch(images)]
        for a, b in zip(got, lat.predict_batch(images)):
            np.testing.assert_allclose(a, b.probs, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown engine mode 'fast'; valid: latency, throughput"):
        Classifier(bundle["root"], backend=which, mode="fast")


def test_run_and_predict_pick_the_engine_mode_by_source(onnx_bundle, image_dir, tmp_path):
    import io

    from edgecls.runtime.commands import predict_paths, run_stream

    video = make_video(tmp_path / "in.mp4", frames=3)
    out = io.StringIO()
    assert run_stream(onnx_bundle["root"], source=str(video), show=False, stdout=out).backend["mode"] == "throughput"
    assert run_stream(onnx_bundle["root"], source=str(video), show=False, stdout=out, realtime=True,
                      max_frames=2).backend["mode"] == "latency"
    assert run_stream(onnx_bundle["root"], source=str(video), show=False, stdout=out,
                      mode="latency").backend["mode"] == "latency"
    assert predict_paths(onnx_bundle["root"], [str(image_dir)], fmt="jsonl", stdout=out,
                         progress=False).backend["mode"] == "throughput"


def test_camera_that_cannot_open(onnx_bundle):
    from edgecls.runtime.commands import run_stream

    with pytest.raises(DataError, match="cannot open camera 99"):
        run_stream(onnx_bundle["root"], camera=99, backend="onnxruntime", show=False, stdout=io.StringIO())
    with pytest.raises(DataError, match="video file not found"):
        run_stream(onnx_bundle["root"], source="nope.mp4", show=False)
    with pytest.raises(ConfigError, match="exactly one of --camera"):
        run_stream(onnx_bundle["root"], show=False)


class FakeCamera:
    """A camera (the external boundary): ``frames`` frames, then read() fails as an unplugged camera does."""

    def __init__(self, frames: int, delay: float = 0.0) -> None:
        self.left, self.delay, self.released = frames, delay, False
        self.props: dict[int, float] = {}

    def read(self):
        import time

        if self.delay:
            time.sleep(self.delay)
        if self.left <= 0 or self.released:
            return False, None
        self.left -= 1
        return True, np.full((48, 64, 3), self.left % 255, np.uint8)

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return 30.0

    def isOpened(self):
        return not self.released

    def release(self):
        self.released = True


def test_camera_drop_is_reopened_then_gives_up(onnx_bundle):
    from edgecls.runtime.commands import run_stream

    opened = []

    def opener(src):
        if len(opened) >= 2:
            raise DataError(f"cannot open camera {src.target}")
        opened.append(FakeCamera(frames=5))
        return opened[-1]

    out = io.StringIO()
    with pytest.raises(DataError, match=r"camera 0 stopped delivering frames and could not be reopened after 3 tries"):
        run_stream(onnx_bundle["root"], camera=0, backend="onnxruntime", show=False, stdout=out, opener=opener,
                   backoff=(0.0, 0.0, 0.0))
    assert len(opened) == 2 and all(cam.released for cam in opened)
    assert 2 <= len(out.getvalue().splitlines()) <= 10  # frames from both sessions were written before the error


class DeadCamera(FakeCamera):
    """Opens, but every read() fails (or, with ``delay``, no frame comes in time): a camera that never delivers."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(frames=0, delay=delay)


@pytest.mark.parametrize("delay", [0.0, 0.5], ids=["reads-fail", "no-frame-in-time"])
def test_a_source_that_opens_but_never_delivers_gives_up(onnx_bundle, delay):
    """Each reopen of a camera that opens but never sends a frame is a failed try: the back-off grows through all
    of ``backoff`` and the run ends with the error (it used to start the back-off again after every open)."""
    import time

    from edgecls.runtime.commands import run_stream

    opened: list[float] = []

    def opener(src):
        opened.append(time.monotonic())
        if len(opened) > 8:
            raise RuntimeError("reopened forever")
        return DeadCamera(delay=delay)

    with pytest.raises(DataError, match=r"camera 0 stopped delivering frames and could not be reopened after 3 tries "
                                        r"\(0.05, 0.1, 0.2 s apart\); last: (ended|sent no frame for 0.2 s)"):
        run_stream(onnx_bundle["root"], camera=0, backend="onnxruntime", show=False, stdout=io.StringIO(),
                   opener=opener, backoff=(0.05, 0.1, 0.2), frame_timeout=0.2)
    assert len(opened) == 4
    gaps = [b - a for a, b in zip(opened, opened[1:])]
    assert gaps[0] < gaps[1] < gaps[2] or delay, gaps  # reads fail at once: the gaps are the growing delays


def test_reconnect_tries_become_doubling_delays():
    from edgecls.runtime.stream import DEFAULT_BACKOFF, backoff_delays

    assert backoff_delays(3) == DEFAULT_BACKOFF and backoff_delays(0) == () and backoff_delays(2, 0.1) == (0.1, 0.2)
    with pytest.raises(ConfigError, match="--reconnect-tries must be an integer >= 0"):
        backoff_delays(-1)


def test_latest_frame_keeps_only_the_newest():
    import time

    from edgecls.runtime.stream import LatestFrame

    cam = FakeCamera(frames=200, delay=0.001)
    reader = LatestFrame(cam)
    seen = []
    while True:
        item = reader.get(timeout=2.0)
        if item is None:
            break
        seen.append(item[0])
        time.sleep(0.02)  # slow inference
    reader.stop()
    assert seen == sorted(seen) and len(seen) < 200
    assert reader.dropped == 200 - len(seen)


def test_ctrl_c_finalises_the_saved_video(onnx_bundle, tmp_path):
    import cv2

    from edgecls.runtime.commands import run_stream

    class Interrupt(io.StringIO):
        def write(self, text: str) -> int:
            if self.getvalue().count("\n") >= 4:
                raise KeyboardInterrupt
            return super().write(text)

    video = make_video(tmp_path / "in.mp4", frames=20)
    summary = run_stream(onnx_bundle["root"], source=str(video), backend="onnxruntime", show=False, stdout=Interrupt(),
                         save=tmp_path / "out.mp4")
    assert summary.interrupted and summary.frames == 5
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_show_without_gui_is_a_clear_error(onnx_bundle, tmp_path):
    import cv2

    from edgecls.runtime.commands import run_stream

    if "GTK" in cv2.getBuildInformation() or "QT" in cv2.getBuildInformation().upper().split("GUI")[-1][:200]:
        pytest.skip("this OpenCV has a GUI")
    video = make_video(tmp_path / "in.mp4", frames=2)
    with pytest.raises(UnsupportedOption, match="--show needs OpenCV with a GUI"):
        run_stream(onnx_bundle["root"], source=str(video), show=True)


# ---------------------------------------------------------------------------------------------------------------------
# no torch


def test_runtime_never_imports_torch(onnx_bundle, image_dir, tmp_path):
    """A predict run (and a video run) in a fresh interpreter leaves torch out of sys.modules.

    OpenVINO is hidden so the run also shows auto falling back to ONNX Runtime when OpenVINO is not installed.
    """
    video = make_video(tmp_path / "in.mp4", frames=3)
    code = textwrap.dedent(f"""
        import io, json, sys
        sys.modules["openvino"] = None  # as if not installed
        from edgecls.runtime.commands import predict_paths, run_stream
        s = predict_paths({str(onnx_bundle["root"])!r}, [{str(image_dir)!r}], fmt="jsonl", stdout=io.StringIO())
        v = run_stream({str(onnx_bundle["root"])!r}, source={str(video)!r}, show=False, stdout=io.StringIO())
        print(json.dumps({{"torch": "torch" in sys.modules, "backend": s.backend["backend"]["name"],
                           "artifact": s.backend["artifact"]["name"], "images": s.images, "frames": v.frames}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    from edgecls.runtime.backends import cpu_int8_support

    assert result == {"torch": False, "backend": "onnxruntime",
                      "artifact": "onnx-int8" if cpu_int8_support()[0] else "onnx", "images": 9, "frames": 3}


def test_int8_counts_as_fast_by_isa_and_engine(monkeypatch):
    """VNNI/AMX: INT8 for every engine; AVX2 without VNNI: only where the engine's int8 kernels beat its float ones."""
    from edgecls.runtime.backends import cpu as backends  # where the ISA checks live

    monkeypatch.setattr(backends, "is_x86", lambda: True)
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512_vnni"}))
    assert backends.cpu_int8_support() == (True, "CPU has avx512_vnni")
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert backends.cpu_int8_support()[0] is False
    fast, why = backends.cpu_int8_support(avx2=True)
    assert fast and "AVX2 without VNNI" in why
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"sse4_2"}))
    assert backends.cpu_int8_support(avx2=True)[0] is False
