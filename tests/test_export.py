"""Export end to end on a tiny real model: the real exporters, then the real runtime backends on the artifacts.

One bundle with every target is made once per session (about 20 s on two cores) and inspected by most tests;
the error paths each run a short export of their own.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecls.errors import CheckpointError, ConfigError, DataError, ParityError, UnsupportedOption
from edgecls.export import Budgets, ExportConfig, ParityReport, check_bundle, check_parity, export, list_targets
from edgecls.export.parity import budget_precision, format_table
from edgecls.manifest import Manifest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
TINY = "timm:test_efficientnet"
SPLITS = {"seed": 0, "val_fraction": 0.3, "test_fraction": 0.1}
ALL_TARGETS = ["onnx", "onnx-int8", "onnx-u8", "onnx-int8-u8", "openvino", "openvino-int8", "openvino-u8",
               "openvino-int8-u8", "coreml", "coreml-int8", "tensorrt", "tensorrt-int8", "tensorrt-u8",
               "tensorrt-int8-u8", "litert", "litert-fp16", "litert-int8", "executorch", "executorch-int8"]


def _train_tiny(data: Path, *, steps: int = 60):
    """A tiny real network trained for a few seconds (so its outputs carry signal), with one all-zero and one
    near-zero output channel like Lite0's checkpoint, and thresholds tuned on its validation split."""
    import torch

    from edgecls._deps import library_versions
    from edgecls.data import load_dataset
    from edgecls.metrics import sigmoid, tune_thresholds
    from edgecls.preprocess import preprocess_batch
    from edgecls.synth import SYNTH_CLASSES
    from edgecls.train.backbones import ModelSpec, build_model, default_preprocess
    from edgecls.train.checkpoint import Checkpoint

    torch.manual_seed(0)
    spec = ModelSpec(backbone=TINY, class_names=SYNTH_CLASSES)
    model = build_model(spec, pretrained=False)
    pre = default_preprocess(TINY, 64)
    ds = load_dataset(data, **SPLITS)
    train, valid = ds.split("train"), ds.split("valid")
    x = torch.from_numpy(preprocess_batch(train.paths(), pre))
    y, known = torch.from_numpy(train.targets()), torch.from_numpy(train.known())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx], reduction="none")
        opt.zero_grad()
        (loss * known[idx]).mean().backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        convs[1].weight[0].zero_()
        convs[2].weight[1].mul_(1e-9)
        probs = sigmoid(model(torch.from_numpy(preprocess_batch(valid.paths(), pre))).numpy())
    thresholds = tune_thresholds(probs, valid.targets(), valid.known())
    return Checkpoint(model_spec=spec, preprocess=pre, state_dict=model.state_dict(), thresholds=thresholds,
                      config={**SPLITS, "img_size": 64}, versions=library_versions())


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(checkpoint path, dataset folder) of the tiny trained model on 40 synthetic 64-px images."""
    from edgecls.synth import generate_synthetic
    from edgecls.train.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    generate_synthetic(data, n=40, img_size=64, seed=0)
    ckpt = root / "tiny.pt"
    save_checkpoint(_train_tiny(data), ckpt)
    return ckpt, data


@pytest.fixture(scope="session")
def bundle(tiny, tmp_path_factory):
    """Every target this machine can produce, exported once. INT8 on 12 validation images of a seconds-trained
    model is a coin toss against a 0.01 mAP budget, so failures are allowed here (the budgets are tested apart)."""
    ckpt, data = tiny
    out = tmp_path_factory.mktemp("bundles") / "all"
    result = export(ExportConfig(checkpoint=str(ckpt), targets=("all",), data=str(data), out=str(out),
                                 allow_parity_failure=True))
    return result


def _cfg(tiny, out: Path, **kw) -> ExportConfig:
    ckpt, data = tiny
    return ExportConfig(checkpoint=str(ckpt), data=str(data), out=str(out), **{"targets": ("onnx",), **kw})


# ---------------------------------------------------------------------------------------------------------------------
# registry and config


def test_every_target_declares_suffix_extra_doc_and_known_options():
    fields = set(ExportConfig.__dataclass_fields__)
    names = [t.name for t in list_targets()]
    assert names == ALL_TARGETS
    for t in list_targets():
        assert t.suffix.startswith(".") and t.extra in ("train", "runtime", "openvino", "coreml", "tensorrt",
                                                        "litert-export", "executorch"), t
        assert len(t.doc) > 40 and t.format in ("onnx", "openvino", "coreml", "tensorrt", "litert", "executorch")
        assert t.precision in ("fp32", "fp16", "int8", "int8-weights")
        assert t.options <= fields, t.options - fields
        ok, reason = t.available()
        assert isinstance(ok, bool) and isinstance(reason, str)


def test_targets_are_listed_family_by_family_whatever_was_imported_first():
    """The registry's order (export order, the parity table, `all`) does not depend on which family module some other
    module imported first (the export config imports the OpenVINO one for its precisions)."""
    code = ("import edgecls.export.targets.tensorrt, edgecls.export.targets.openvino\n"
            "from edgecls.export.targets import list_targets\nprint(','.join(t.name for t in list_targets()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out.split(",") == ALL_TARGETS


def test_listing_targets_imports_nothing_heavy():
    code = ("import sys, edgecls.export as e; e.list_targets(); "
            "print([m for m in ('torch', 'onnx', 'openvino', 'coremltools', 'tensorrt', 'nncf') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_a_missing_library_names_the_extra(tiny, tmp_path):
    """openvino made unimportable in a subprocess: the target reports it and an explicit request fails clearly."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "openvino":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
from edgecls.export import ExportConfig, export, list_targets
print({{t.name: t.available()[0] for t in list_targets()}}["openvino"])
try:
    export(ExportConfig(checkpoint={str(tiny[0])!r}, targets=("openvino",), data={str(tiny[1])!r},
                        out={str(tmp_path / "b")!r}))
except Exception as exc:
    print(type(exc).__name__, exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == "False"
    assert 'MissingDependency target openvino: openvino not installed; install with: pip install "edgecls[openvino]"' \
        in out.stdout
    assert not (tmp_path / "b").exists()


def test_each_module_is_in_the_extra_its_error_names():
    """The extra a missing module's message names really installs it, and the runtime's [openvino] pulls no nncf."""
    import re

    from edgecls.export.targets import EXTRA_OF

    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = {name: {re.split(r"[<>=!~; \[]", req, maxsplit=1)[0].lower().replace("-", "_") for req in reqs}
              for name, reqs in extras.items()}  # distribution names as module names (efficientnet_lite0_...)
    # modules whose distribution has another name, or that come with a listed one (FastAPI requires both)
    distribution = {"paho": "paho_mqtt", "starlette": "fastapi", "pydantic": "fastapi"}
    for module, extra in EXTRA_OF.items():
        assert distribution.get(module, module) in listed[extra], (module, extra)
    assert listed["openvino"] == {"openvino"} and "nncf" in listed["train"]


def test_unknown_target_names_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="unknown export target 'onnx-int9' \\(did you mean 'onnx-int8'\\?\\)"):
        ExportConfig(checkpoint="x.pt", targets=("onnx-int9",), data="d", out=str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="did you mean 'openvino'"):
        ExportConfig(checkpoint="x.pt", targets=("openvno",), data="d", out=str(tmp_path / "b"))


def test_bad_values_are_rejected(tmp_path):
    base = dict(checkpoint="x.pt", targets=("onnx",), data="d", out=str(tmp_path / "b"))
    for bad, match in ((dict(max_map_drop=-1.0), "max_map_drop must be a finite number >= 0"),
                       (dict(opset=16), "opset must be an integer >= 17"),
                       (dict(calib_size=0), "calib_size must be an integer >= 1"),
                       (dict(openvino_precision="fp8"), "openvino_precision must be one of")):
        with pytest.raises(ConfigError, match=match):
            ExportConfig(**{**base, **bad})


def test_options_a_target_does_not_use_are_errors(tiny, tmp_path):
    with pytest.raises(UnsupportedOption, match="--calib-size does not apply to target\\(s\\) onnx; it is used by: "
                                                "onnx-int8"):
        export(_cfg(tiny, tmp_path / "b", calib_size=10))
    with pytest.raises(UnsupportedOption, match="--openvino-precision does not apply"):
        export(_cfg(tiny, tmp_path / "b", openvino_precision="bf16"))
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------------------------------
# the bundle


def test_bundle_layout_and_manifest(bundle):
    root = bundle.bundle
    for name in ("manifest.json", "parity.json", "reference.npz", "README.md", "export.json"):
        assert (root / name).is_file(), name
    manifest = Manifest.load(root)
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest
    assert manifest.input_shape == ("batch", 3, 64, 64) and manifest.output_shape == ("batch", 6)
    assert manifest.backbone == TINY and len(manifest.source_checkpoint_sha256) == 64
    assert {"torch", "onnx", "onnxruntime", "edgecls"} <= set(manifest.versions)
    names = {a.name for a in manifest.artifacts}
    assert {"onnx", "onnx-int8", "tensorrt", "tensorrt-int8"} <= names
    from edgecls.bundle import sha256_path

    for art in manifest.artifacts:
        assert (root / art.path).exists() and sha256_path(root / art.path) == art.sha256, art.name
        assert len(art.thresholds) == 6 and art.parity
        assert all(Path(f).parts[0] == art.name for f in art.details["files"])
    assert manifest.artifact("onnx-int8").parent == "onnx"
    assert manifest.artifact("onnx-int8").calibration["images"] > 0
    assert not list(root.parent.glob(".*.partial"))
    readme = (root / "README.md").read_text()
    assert "circle" in readme and "onnx-int8" in readme and "edgecls parity" in readme


def test_onnx_fp32_parity_metadata_checker_and_dynamic_batch(bundle, tiny):
    import onnx
    import torch

    from edgecls.runtime.backends import open_backend
    from edgecls.train.checkpoint import load_checkpoint

    root = bundle.bundle
    report = bundle.reports["onnx"]
    assert report.passed and report.precision == "fp32" and report.max_abs_diff <= 1e-4
    assert report.map_drop == pytest.approx(0.0, abs=1e-6) and report.agreement_at_reference == 1.0
    path = root / "onnx" / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 18
    meta = {p.key: p.value for p in proto.metadata_props}
    manifest = Manifest.load(root)
    art = manifest.artifact("onnx")
    assert json.loads(meta["edgecls.class_names"]) == list(manifest.class_names)
    assert json.loads(meta["edgecls.thresholds"]) == list(art.thresholds)
    assert json.loads(meta["edgecls.preprocess"])["img_size"] == 64
    assert meta["edgecls.output_activation"] == "sigmoid" and meta["edgecls.precision"] == "fp32"
    embedded = Manifest.from_dict(json.loads(meta["edgecls.manifest"]))
    assert embedded.artifacts[0].path == "model.onnx" and embedded.class_names == manifest.class_names

    model = load_checkpoint(tiny[0]).build_model()
    backend = open_backend(path, backend="onnxruntime", device="cpu")
    x = np.random.default_rng(0).normal(size=(5, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for n in (1, 5):
        out = backend.infer(x[:n])
        assert out.shape == (n, 6)
        np.testing.assert_allclose(out, expected[:n], atol=1e-4)


def test_runtime_runs_the_bundle_and_a_bare_onnx_alike(bundle, tmp_path):
    import shutil

    from edgecls.runtime import Classifier

    root = bundle.bundle
    bare = tmp_path / "elsewhere.onnx"
    shutil.copyfile(root / "onnx" / "model.onnx", bare)  # no manifest.json around it
    image = np.random.default_rng(1).integers(0, 255, (80, 90, 3), dtype=np.uint8)
    from_bundle = Classifier(root, backend="onnxruntime", artifact="onnx").predict(image)
    from_file = Classifier(bare, backend="onnxruntime").predict(image)
    assert from_file.probabilities == pytest.approx(from_bundle.probabilities, abs=1e-6)
    assert from_file.labels == from_bundle.labels


def _qdq(path: Path):
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    return proto, inits, producer


def test_onnx_int8_is_qdq_per_channel_with_a_float_head(bundle):
    from edgecls.runtime.backends import open_backend

    root = bundle.bundle
    for name, zero_dtype in (("onnx-int8", np.uint8), ("tensorrt-int8", np.int8)):
        proto, inits, producer = _qdq(root / name / "model.onnx")
        ops = [n.op_type for n in proto.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
        per_channel = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                       and inits[n.input[1]].size > 1 and inits[n.input[0]].dtype == np.int8]
        assert per_channel and all(inits[n.input[1]].shape == (inits[n.input[0]].shape[0],) for n in per_channel)
        # ONNX Runtime's file: 7-bit weights, so u8 x s8 pair sums fit in 16 bits on x86 CPUs without VNNI;
        # TensorRT's: the full int8 range (GPUs do not saturate)
        peak = max(int(np.abs(inits[n.input[0]].astype(np.int32)).max()) for n in per_channel)
        assert peak <= 64 if name == "onnx-int8" else peak == 127
        for n in proto.graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits:
                assert np.all(inits[n.input[1]] > 0) and np.all(np.isfinite(inits[n.input[1]]))
        activation_zps = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
        assert activation_zps and all(z.dtype == zero_dtype for z in activation_zps)
        if zero_dtype == np.int8:  # TensorRT explicit quantization: symmetric, zero point 0
            assert all(np.all(z == 0) for z in activation_zps)
        head = [n for n in proto.graph.node if n.op_type in ("Gemm", "MatMul")]
        assert head and all(producer.get(n.input[1]) is None for n in head)  # float initializer, no DequantizeLinear
        assert inits[head[0].input[1]].dtype == np.float32
        details = Manifest.load(root).artifact(name).details
        assert details["float_nodes"] and details["per_channel_weights"] == len(per_channel)

        backend = open_backend(root / name / "model.onnx", backend="onnxruntime", device="cpu")
        assert backend.precision == "int8" and backend.infer(np.zeros((3, 3, 64, 64), np.float32)).shape == (3, 6)
        report = bundle.reports[name]
        assert report.precision == "int8" and report.budget == "mAP drop <= 0.01, agreement >= 0.95"
        assert math.isfinite(report.map_drop) and 0.5 <= report.agreement <= 1.0


def test_openvino_fp16_and_int8(bundle):
    ov = pytest.importorskip("openvino")
    root = bundle.bundle
    manifest = Manifest.load(root)
    fp16 = ov.Core().read_model(str(root / "openvino" / "model.xml"))
    weights = [op for op in fp16.get_ops() if op.get_type_name() == "Constant" and len(op.get_output_shape(0)) == 4]
    assert weights and all(str(op.get_element_type()) in ("<Type: 'float16'>", "f16") or
                           op.get_element_type().get_type_name() == "f16" for op in weights)
    assert json.loads(fp16.get_rt_info(["edgecls", "edgecls_class_names"]).astype(str)) == list(manifest.class_names)
    int8 = ov.Core().read_model(str(root / "openvino-int8" / "model.xml"))
    assert sum(op.get_type_name() == "FakeQuantize" for op in int8.get_ops()) > 0
    for name in ("openvino", "openvino-int8"):
        art = manifest.artifact(name)
        assert art.details["inference_precision_hint"] == "f32" and art.details["inference_precision"] == "f32"
        report = bundle.reports[name]
        assert report.backend == "openvino" and report.device == "CPU"
    assert bundle.reports["openvino"].precision == "fp16" and bundle.reports["openvino"].passed
    assert bundle.reports["openvino"].max_abs_diff <= 1e-2
    passed_with = manifest.artifact("openvino-int8").details["int8_fix"]["passed_with"]
    assert manifest.artifact("openvino-int8").details["method"] == (
        "nncf.quantize (post-training)" if passed_with == "ptq" else "nncf.quantize_with_accuracy_control")
    assert "7-bit" in manifest.artifact("openvino-int8").details["weights"]
    # the depthwise convolutions run in int8 on the CPU (NNCF leaves only the head and the squeeze-excitation 1x1
    # convolutions on pooled features float); from Core.read_model's graph it missed their weights and they ran float
    compiled = ov.Core().compile_model(int8, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precision_of = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        for name in info["originalLayersNames"].astype(str).split(","):
            precision_of[name] = info["runtimePrecision"].astype(str)
    depthwise = [op.get_friendly_name() for op in int8.get_ops() if op.get_type_name() == "GroupConvolution"]
    assert depthwise and all(precision_of[name] in ("u8", "i8") for name in depthwise), precision_of


def test_gates_stay_float_in_qdq(tmp_path):
    """A tiny MobileNetV3-style net (HardSwish, a squeeze-excitation block with a HardSigmoid gate): the convolutions
    are quantized, the gates and the products that apply them are not, for both Q/DQ flavours."""
    import onnx
    import torch
    from torch import nn

    from edgecls.export.targets.onnx import export_float_onnx, gate_nodes, quantize_qdq

    class SE(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)

        def forward(self, x):
            return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.se, self.conv = nn.Conv2d(3, 8, 3, padding=1), SE(8), nn.Conv2d(8, 16, 3, padding=1)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            x = self.conv(self.se(nn.functional.hardswish(self.stem(x))))
            return self.head(nn.functional.hardswish(x).mean((2, 3)))

    torch.manual_seed(0)
    float_path = tmp_path / "float.onnx"
    export_float_onnx(Net().eval(), 32, float_path, opset=18, input_name="images", output_name="logits")
    images = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    for symmetric in (False, True):
        out = tmp_path / f"q{symmetric}.onnx"
        details = quantize_qdq(float_path, out, images, input_name="images", symmetric_activations=symmetric,
                               reduce_range=not symmetric, workdir=tmp_path)
        proto = onnx.load(str(out))
        producer = {o: n for n in proto.graph.node for o in n.output}
        gates = [n for n in proto.graph.node if n.name in set(gate_nodes(proto))]
        # HardSwish (decomposed to HardSigmoid * x) twice, the SE gate: 3 HardSigmoid + 3 Mul
        assert sorted(n.op_type for n in gates) == ["HardSigmoid"] * 3 + ["Mul"] * 3
        assert details["float_gates"] == 6 and all(n.name for n in proto.graph.node)
        consumers = [(i, n) for n in proto.graph.node for i in n.input]
        for node in gates:
            if node.op_type == "HardSigmoid":  # the [0, 1] gate is never rounded to int8
                assert not any(i == node.output[0] and n.op_type == "QuantizeLinear" for i, n in consumers), node.name
            else:  # the product takes the gate straight from the HardSigmoid
                assert any(producer.get(i) is not None and producer[i].op_type == "HardSigmoid" for i in node.input)
        convs = [n for n in proto.graph.node if n.op_type == "Conv"]
        assert convs and all(producer[n.input[1]].op_type == "DequantizeLinear" for n in convs)


def test_coreml_packages_validate(bundle):
    pytest.importorskip("coremltools")
    from edgecls.export.targets.coreml import validate_spec

    root = bundle.bundle
    manifest = Manifest.load(root)
    for name, int8 in (("coreml", False), ("coreml-int8", True)):
        keys = ("edgecls.class_names", "edgecls.thresholds", "edgecls.preprocess", "edgecls.manifest")
        stats = validate_spec(root / name / "model.mlpackage", input_name="images", output_name="logits",
                              img_size=64, max_batch=32, metadata_keys=keys, int8=int8)
        art = manifest.artifact(name)
        assert art.details["spec_validated"] and stats["weight_dtypes"] == art.details["weight_dtypes"]
        if sys.platform != "darwin":
            assert "macOS" in art.parity["not_run"] and name in bundle.not_run
    details = manifest.artifact("coreml-int8").details
    assert details["weight_dtypes"].get("INT8", 0) > 0 and "FLOAT32" not in details["weight_dtypes"]
    assert details["zero_scale_channels_fixed"] >= 1  # the checkpoint's all-zero/near-zero channels
    if sys.platform != "darwin":
        assert details["quantization"].startswith("w8 ") and "macOS" in details["activations"]
        assert manifest.artifact("coreml-int8").precision == "int8-weights"


def _no_engine() -> bool:
    from edgecls.export.targets.tensorrt import engine_support

    return not engine_support()[0]


@pytest.mark.skipif("not _no_engine()", reason="this machine builds TensorRT engines; the portable path is for others")
def test_tensorrt_without_gpu_bundles_the_portable_onnx(bundle):
    root = bundle.bundle
    for name, precision in (("tensorrt", "fp16"), ("tensorrt-int8", "int8")):
        settings = json.loads((root / name / "engine.json").read_text())
        assert settings["precision"] == precision and settings["built"] is False and settings["gpu"] is None
        assert (settings["min_batch"], settings["max_batch"]) == (1, 32)
        assert settings["shapes"]["max"] == [32, 3, 64, 64]
        assert "trtexec --onnx=" in settings["trtexec"] and not (root / name / "model.engine").exists()
        assert "trtexec" in (root / name / "BUILD.md").read_text()
        art = Manifest.load(root).artifact(name)
        assert art.path == f"{name}/model.onnx" and art.details["engine_built"] is False
        assert any(name in n and "trtexec" in n for n in bundle.notes)
        assert "portable ONNX measured with onnxruntime" in bundle.reports[name].note
    assert Manifest.load(root).artifact("tensorrt-int8").details["parity_runner"]["emulate_qdq"] is True
    assert "Q/DQ emulated" in bundle.reports["tensorrt-int8"].note


def test_emulated_qdq_is_the_onnx_definition(bundle, tiny):
    """The symmetric Q/DQ file that stands in for a TensorRT INT8 engine runs by its ONNX definition (no int8
    kernel fusion: those saturate on x86 CPUs without VNNI), exactly as a session with every optimization off."""
    import onnxruntime as ort

    from edgecls.errors import UnsupportedOption
    from edgecls.export.parity import run_backend
    from edgecls.runtime.backends import onnxruntime as ort_backend

    root = bundle.bundle
    path = root / "tensorrt-int8" / "model.onnx"
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    logits, info = run_backend(path, x, backend="onnxruntime", device="cpu", precision_hint=None, emulate_qdq=True,
                               timing_runs=0)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    np.testing.assert_allclose(logits, plain, rtol=0, atol=1e-5)
    assert info["precision"] == "int8" and info["qdq"].startswith("emulated")
    with pytest.raises(UnsupportedOption, match="no quantized"):
        ort_backend.load(root / "onnx" / "model.onnx", device="cpu", threads=None, precision=None, emulate_qdq=True)
    with pytest.raises(ConfigError, match="emulate_qdq needs the onnxruntime backend"):
        run_backend(path, x, backend="openvino", device="CPU", precision_hint=None, emulate_qdq=True)


@pytest.mark.skipif("not _no_engine()", reason="this machine builds TensorRT engines")
def test_require_engine_without_gpu_fails_before_writing(tiny, tmp_path):
    with pytest.raises(UnsupportedOption, match="--require-engine: cannot build a TensorRT engine on this machine"):
        export(_cfg(tiny, tmp_path / "b", targets=("tensorrt-int8",), require_engine=True))
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif("_no_engine()", reason="needs TensorRT and an NVIDIA GPU to build engines")
def test_tensorrt_engines_build_and_pass_parity_on_a_gpu(tiny, tmp_path):
    result = export(_cfg(tiny, tmp_path / "b", targets=("tensorrt", "tensorrt-int8"), require_engine=True,
                         allow_parity_failure=True))
    for name in ("tensorrt", "tensorrt-int8"):
        settings = json.loads((result.bundle / name / "engine.json").read_text())
        assert settings["built"] and settings["gpu"] and settings["tensorrt"] and settings["compute_capability"]
        assert (result.bundle / name / "model.engine").stat().st_size > 0
        assert result.reports[name].backend == "tensorrt"
    assert result.reports["tensorrt"].passed  # fp16 budget


@pytest.mark.coreml
@pytest.mark.skipif("sys.platform != 'darwin'", reason="CoreML predictions need macOS")
def test_coreml_parity_on_macos(bundle):
    for name in ("coreml", "coreml-int8"):
        report = bundle.reports[name]
        assert report.backend == "coreml" and math.isfinite(report.max_abs_diff)
    assert bundle.reports["coreml"].passed


def test_parity_rerun_reproduces_parity_json(bundle, tiny):
    root = bundle.bundle
    stored = json.loads((root / "parity.json").read_text())
    result = check_bundle(root, tiny[1], write=False)
    assert set(result.reports) == set(bundle.reports)
    for name, report in result.reports.items():
        old = ParityReport.from_dict(stored["artifacts"][name])
        for key in ("max_abs_diff", "mean_abs_diff", "agreement", "map_artifact", "map_drop"):
            assert getattr(report, key) == pytest.approx(getattr(old, key), abs=1e-6), (name, key)
        assert report.thresholds == pytest.approx(old.thresholds, abs=1e-6) and report.passed == old.passed
    assert set(result.not_run) == set(bundle.not_run)


def test_parity_rerun_needs_no_torch(bundle, tiny):
    code = ("import sys; from edgecls.export import check_bundle; "
            f"r = check_bundle({str(bundle.bundle)!r}, {str(tiny[1])!r}, write=False); "
            "print(sorted(r.reports), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    names, torch_loaded = out.stdout.strip().rsplit(" ", 1)
    assert "'onnx'" in names and torch_loaded == "False"


def test_parity_and_the_runtime_refuse_a_swapped_or_zeroed_artifact(bundle, tiny, tmp_path):
    """Issue 10 item 2: the exporter's sha256 (model file, and details.files for an IR's .bin) is verified at load."""
    import shutil

    from click.testing import CliRunner

    from edgecls.cli import cli
    from edgecls.errors import IntegrityError
    from edgecls.runtime import Classifier

    root = shutil.copytree(bundle.bundle, tmp_path / "b")
    shutil.copyfile(root / "onnx-int8" / "model.onnx", root / "onnx" / "model.onnx")  # the INT8 file over the FP32 one
    with pytest.raises(IntegrityError, match="onnx/model.onnx of artifact 'onnx' does not match the manifest"):
        check_bundle(root, tiny[1], artifacts=["onnx"], write=False)
    result = CliRunner().invoke(cli, ["parity", str(root), str(tiny[1]), "--artifact", "onnx", "--no-write"])
    assert result.exit_code == 1 and "Error: " in result.output and "does not match the manifest" in result.output
    assert "Traceback" not in result.output
    assert check_bundle(root, tiny[1], artifacts=["onnx"], write=False, verify=False).reports["onnx"]
    weights = root / "openvino" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[: min(len(data), 2 << 20)] = bytes(min(len(data), 2 << 20))  # zero (up to) 2 MB
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="openvino/model.bin of artifact 'openvino' does not match"):
        Classifier(root, backend="openvino", artifact="openvino")
    with pytest.raises(IntegrityError, match="openvino/model.bin of artifact 'openvino' does not match"):
        check_bundle(root, tiny[1], artifacts=["openvino"], write=False)
    data = json.loads((root / "manifest.json").read_text())  # item 1: a path out of the bundle, in parity too
    next(a for a in data["artifacts"] if a["name"] == "onnx-int8")["path"] = "../../onnx-int8/model.onnx"
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match="manifest field path of artifact 'onnx-int8'.* leaves the bundle"):
        check_bundle(root, tiny[1], artifacts=["onnx-int8"], write=False, verify=False)


def test_the_export_table_names_each_artifact_precision_as_the_manifest_does(bundle):
    """Issue 10 item 17: the precision column is edgecls.manifest.precision_name (tensorrt: fp16, not fp32)."""
    from edgecls.manifest import precision_name

    rows = {line.split()[0]: line.split()[1] for line in bundle.table.splitlines()[2:] if line.strip()}
    for art in Manifest.load(bundle.bundle).artifacts:
        assert rows[art.name] == precision_name(art) == art.precision, art.name


_PTQ_RECORD = {"onnx-int8": ("quantizer", "onnxruntime.quantization.quantize_static"),
               "openvino-int8": ("method", "nncf.quantize (post-training)")}


def test_int8_fixes_are_recorded_and_accuracy_aware_fixes_a_broken_budget(bundle):
    """Every INT8 artifact says which step of the INT8 fixes made it pass. On the tiny model post-training
    quantization breaks the default budget for one of onnx-int8 / openvino-int8 (which one depends on the CPU's int8
    kernels: onnx-int8 on a Zen 5 with VNNI, openvino-int8 on a Zen 3 without), and NNCF's accuracy-aware
    quantization passes it by reverting some layers to float (for ONNX the file is then NNCF's Q/DQ, still 7-bit
    weights with a float head)."""
    pytest.importorskip("nncf")
    manifest = Manifest.load(bundle.bundle)
    fixed = []
    for name, (field, ptq_value) in _PTQ_RECORD.items():
        art = manifest.artifact(name)
        fix, report = art.details["int8_fix"], bundle.reports[name]
        steps = [a["step"] for a in fix["attempts"]]
        assert steps in (["ptq"], ["ptq", "accuracy-aware"]), (name, steps)
        ptq = fix["attempts"][0]
        if steps == ["ptq"]:  # post-training quantization held the budget: no fix ran
            assert ptq["passed"] and not ptq["broken"] and fix["passed_with"] == "ptq" and report.passed
            assert art.details[field] == ptq_value
            assert math.isclose(report.agreement, ptq["agreement"], abs_tol=1e-6)
            continue
        fixed.append(name)
        aware = fix["attempts"][1]
        assert not ptq["passed"] and ptq["broken"]
        if aware["passed"]:  # NNCF reverted some layers to float and the normal check agrees
            assert fix["passed_with"] == "accuracy-aware" and report.passed
            assert 0 < aware["reverted_to_float"] < aware["quantized_operations"]
            assert art.details["method"] == "nncf.quantize_with_accuracy_control"
            assert art.details["accuracy_control"]["max_drop"] == 0.01
            assert math.isclose(report.agreement, aware["agreement"], abs_tol=1e-6)
        else:  # with 7-bit weights it may not get there on 12 images: the post-training artifact is kept, failing
            assert fix["passed_with"] is None and fix["kept"] == "ptq (every fix failed)" and not report.passed
            assert art.details[field] == ptq_value
            assert math.isclose(report.agreement, ptq["agreement"], abs_tol=1e-6)
        assert art.parity["agreement"] == report.agreement
    assert fixed, "post-training quantization held on both artifacts: this test no longer reaches the fix"
    assert "int8_fix" not in manifest.artifact("onnx").details


def test_decision_metric_holds_both_int8_budgets(tmp_path):
    """The one number NNCF's accuracy control works on: the float model's own logits score its mAP, logits whose
    decisions agree score their own mAP, and a decision-agreement shortfall counts as more than the mAP budget."""
    from edgecls.export.context import ExportContext, ImageSet
    from edgecls.export.fixes import decision_metric
    from edgecls.metrics import mean_average_precision, sigmoid, tune_thresholds

    rng = np.random.default_rng(0)
    targets = (rng.random((60, 4)) < 0.4).astype(np.float32)
    known = np.ones_like(targets, dtype=bool)
    reference = (targets * 2 - 1) * 1.5 + rng.normal(0, 1.2, targets.shape).astype(np.float32)
    val = ImageSet("valid", [f"{i}.jpg" for i in range(60)], np.zeros((60, 3, 2, 2), np.float32), targets, known, 60)
    cfg = ExportConfig(checkpoint="c.pt", targets=("onnx-int8",), data="d", out=str(tmp_path / "b"),
                       int8_min_agreement=0.97)
    thresholds = tune_thresholds(sigmoid(reference), targets, known)
    ctx = ExportContext(cfg, None, None, tmp_path,
                        _cache={"validation": val, "reference": reference, "reference_thresholds": thresholds})
    metric = decision_metric(ctx)
    index = list(range(60))
    ref_map = mean_average_precision(sigmoid(reference), targets, known)
    assert math.isclose(metric(reference, index), ref_map, abs_tol=1e-9)
    nudged = reference + 1e-4
    assert math.isclose(metric(nudged, index), mean_average_precision(sigmoid(nudged), targets, known), abs_tol=1e-9)
    flipped = reference.copy()
    flipped[:6, :] *= -1  # 10% of the images: agreement about 0.9 < 0.97
    report = check_parity(reference, flipped, targets, known, precision="int8", budgets=cfg.budgets,
                          reference_thresholds=thresholds)
    assert report.agreement < 0.97
    assert ref_map - metric(flipped, index) >= cfg.map_budget + (0.97 - report.agreement) - 1e-9


def test_qat_options_are_checked():
    with pytest.raises(ConfigError, match="qat_epochs must be an integer >= 0"):
        ExportConfig(checkpoint="c.pt", targets=("onnx-int8",), data="d", out="o", qat_epochs=-1)
    with pytest.raises(UnsupportedOption, match="--qat-epochs does not apply to target\\(s\\) onnx; it is used by: "):
        export(ExportConfig(checkpoint="c.pt", targets=("onnx",), data="d", out="o", qat_epochs=2))


def test_quantization_aware_fine_tune_is_the_last_int8_fix(tiny, tmp_path):
    """With --qat-epochs, a budget that post-training quantization breaks (tensorrt-int8 has no accuracy-aware
    step) runs one epoch of NNCF quantization-aware fine-tuning on the checkpoint's training split and re-quantizes
    the fine-tuned weights; the record says what it did, and when it does not pass either, the post-training artifact
    is what is kept (marked failing)."""
    pytest.importorskip("nncf")
    result = export(_cfg(tiny, tmp_path / "b", targets=("tensorrt-int8",), int8_min_agreement=0.999,
                         qat_epochs=1, calib_size=4, allow_parity_failure=True))
    art = result.manifest.artifact("tensorrt-int8")
    fix = art.details["int8_fix"]
    assert [a["step"] for a in fix["attempts"]] == ["ptq", "qat"] and not fix["attempts"][0]["passed"]
    qat = fix["attempts"][1]["qat"]
    assert qat["epochs"] == 1 and qat["steps"] >= 1 and qat["images"] > 0 and math.isfinite(qat["loss_last"])
    report = result.reports["tensorrt-int8"]
    if fix["passed_with"] == "qat":
        assert report.passed and math.isclose(report.agreement, fix["attempts"][1]["agreement"], abs_tol=1e-6)
    else:
        assert fix["passed_with"] is None and fix["kept"] == "ptq (every fix failed)"
        assert not report.passed and math.isclose(report.agreement, fix["attempts"][0]["agreement"], abs_tol=1e-6)
    assert not list((tmp_path / "b").glob(".*"))  # the set-aside attempt is not left in the bundle


def test_quantization_aware_fine_tune_changes_the_weights_only(tiny):
    pytest.importorskip("nncf")
    import torch

    from edgecls.train.checkpoint import load_checkpoint
    from edgecls.train.qat import quantization_aware_finetune

    ckpt_path, data = tiny
    ckpt = load_checkpoint(ckpt_path)
    calib = np.random.default_rng(0).normal(0, 1, (2, 3, 64, 64)).astype(np.float32)
    result = quantization_aware_finetune(ckpt, str(data), epochs=1, calibration=calib)
    after = result.model.state_dict()
    assert set(after) == set(ckpt.state_dict) and not result.model.training
    changed = [k for k, v in ckpt.state_dict.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    assert changed and all(not k.endswith(("running_mean", "running_var")) for k in changed)


# ---------------------------------------------------------------------------------------------------------------------
# refusing bad input, nothing half-written


def test_existing_bundle_is_refused_without_force(tiny, tmp_path):
    out = tmp_path / "b"
    first = export(_cfg(tiny, out))
    assert first.passed and (out / "manifest.json").is_file()
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        export(_cfg(tiny, out))
    export(_cfg(tiny, out, force=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    other = tmp_path / "not-a-bundle"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an edgecls bundle"):
        export(_cfg(tiny, other, force=True))
    assert (other / "keep.txt").read_text() == "mine"


def test_opset_17_uses_the_torchscript_exporter_and_onnxslim(tiny, tmp_path):
    import onnx

    result = export(_cfg(tiny, tmp_path / "b", opset=17))
    details = result.manifest.artifact("onnx").details
    assert details["opset"] == 17 and details["exporter"] == "torch.onnx.export(dynamo=False)"
    assert details["simplifier"] == "onnxslim" and details["nodes"] <= details["nodes_exported"]
    assert onnx.load(str(tmp_path / "b" / "onnx" / "model.onnx")).opset_import[0].version == 17
    assert result.reports["onnx"].passed


def test_unwritable_output_is_one_clear_error(tiny, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write there"):
        export(_cfg(tiny, blocker / "bundle"))


def test_failure_mid_export_leaves_nothing(tiny, tmp_path):
    """OpenVINO cannot run f16 on a CPU without native f16 (it would silently become bf16): the export fails after
    the ONNX artifact was written, and neither the bundle nor its temporary folder remains."""
    ov = pytest.importorskip("openvino")
    if "FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU runs f16 natively, so the f16 hint does not fail here")
    with pytest.raises(UnsupportedOption, match="cannot run f16"):
        export(_cfg(tiny, tmp_path / "b", targets=("onnx", "openvino"), openvino_precision="f16"))
    assert list(tmp_path.iterdir()) == []


def test_broken_budget_fails_and_keeps_the_report(tiny, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(ParityError, match="broke their parity budget") as err:
        export(_cfg(tiny, out, fp32_tolerance=1e-12))
    assert "max |dp| <= 1e-12" in str(err.value) and "FAILED" in str(err.value)
    assert not out.exists()
    kept = tmp_path / "b.parity-failed"
    assert json.loads((kept / "parity.json").read_text())["passed"] is False
    result = export(_cfg(tiny, out, fp32_tolerance=1e-12, allow_parity_failure=True))
    assert not result.passed and out.is_dir() and not result.reports["onnx"].passed


def test_bad_checkpoints_are_one_line_errors(tiny, tmp_path):
    import torch

    from edgecls.train.backbones import ModelSpec
    from edgecls.train.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny[0])
    missing = dict(ckpt.state_dict)
    missing.pop(next(k for k in missing if k.startswith("encoder.")))
    ckpt.state_dict = missing
    save_checkpoint(ckpt, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="weights do not fit backbone"):
        export(ExportConfig(checkpoint=str(tmp_path / "missing.pt"), targets=("onnx",), data=str(tiny[1]),
                            out=str(tmp_path / "b")))
    ckpt = load_checkpoint(tiny[0])
    ckpt.model_spec = ModelSpec(backbone="resnet5", class_names=ckpt.class_names)
    save_checkpoint(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(ConfigError, match="unknown backbone 'resnet5' \\(did you mean 'resnet50'\\?\\)"):
        export(ExportConfig(checkpoint=str(tmp_path / "unknown.pt"), targets=("onnx",), data=str(tiny[1]),
                            out=str(tmp_path / "b")))
    torch.save({"not": "a checkpoint"}, tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not an edgecls checkpoint"):
        export(ExportConfig(checkpoint=str(tmp_path / "junk.pt"), targets=("onnx",), data=str(tiny[1]),
                            out=str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()


def test_calibration_split_without_readable_images(tiny, tmp_path):
    """Per-split label files: every train image is corrupt, the valid ones are fine."""
    import shutil

    from edgecls.data import load_dataset

    src = load_dataset(tiny[1], **SPLITS)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    header = "filename," + ",".join(src.class_names)
    for split in ("train", "valid"):
        rows = [header]
        for sample in src.split(split).samples:
            dest = data / "images" / sample.path.name
            if split == "train":
                dest.write_bytes(b"not an image")
            else:
                shutil.copyfile(sample.path, dest)
            rows.append(f"images/{dest.name}," + ",".join(str(int(v)) for v in sample.target))
        (data / f"{split}.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="'train' split has no readable images, and calibration"):
        export(ExportConfig(checkpoint=str(tiny[0]), targets=("onnx-int8",), data=str(data), out=str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------------------------------
# check_parity itself


def test_check_parity_budgets_and_round_trip():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 3)).astype(np.float32)
    targets = (rng.random((50, 3)) < 0.4).astype(np.float32)
    budgets = Budgets()
    same = check_parity(ref, ref.copy(), targets, None, precision="fp32", budgets=budgets, artifact="a")
    assert same.passed and same.max_abs_diff == 0 and same.agreement == 1.0 and same.map_drop == 0
    noisy = ref + rng.normal(scale=0.05, size=ref.shape).astype(np.float32)
    assert not check_parity(ref, noisy, targets, None, precision="fp32", budgets=budgets).passed
    assert check_parity(ref, noisy, targets, None, precision="fp16", budgets=Budgets(fp16_tolerance=0.05)).passed
    int8 = check_parity(ref, noisy, targets, None, precision="int8", budgets=budgets)
    assert int8.budget == "mAP drop <= 0.01, agreement >= 0.95"
    assert int8.passed == (int8.map_drop <= 0.01 and int8.agreement >= 0.95)
    assert not check_parity(ref, noisy, targets, None, precision="int8", budgets=Budgets(max_map_drop=0.0)).passed \
        or int8.map_drop <= 0
    broken = ref.copy()
    broken[3, 1] = np.nan
    bad = check_parity(ref, broken, targets, None, precision="int8", budgets=budgets)
    assert not bad.passed and bad.max_abs_diff == math.inf and "non-finite" in bad.note
    assert ParityReport.from_dict(json.loads(json.dumps(int8.to_dict()))) == int8
    with pytest.raises(ConfigError, match="unknown field"):
        ParityReport.from_dict({**int8.to_dict(), "extra": 1})
    with pytest.raises(ConfigError, match="same \\(N, K\\) shape"):
        check_parity(ref, ref[:3], targets, None, precision="fp32", budgets=budgets)
    assert budget_precision("fp16", "f32") == "fp16" and budget_precision("fp32", "bf16") == "bf16"
    assert budget_precision("int8", "f32") == "int8" and budget_precision("fp32", None) == "fp32"


def test_fp16_budget_judges_decisions_not_one_probability():
    """An FP16 artifact whose probabilities moved by more than 0.01 but whose decisions all agree passes (what the
    demo model's OpenVINO FP16 IR does: max |dp| 0.0157, agreement 1.0); one whose decisions flip fails and the
    message names the flag that sets the broken budget. max |dp| stays a budget for whoever asks for one."""
    rng = np.random.default_rng(1)
    targets = (rng.random((60, 3)) < 0.4).astype(np.float32)
    ref = (3 * targets - 1.5 + rng.normal(size=(60, 3))).astype(np.float32)  # a model that has learnt something
    shifted = ref + np.float32(0.07)  # every probability moves, the ranking (so every decision) stays
    moved = check_parity(ref, shifted, targets, None, precision="fp16", budgets=Budgets(), artifact="openvino")
    assert moved.max_abs_diff > 0.01 and moved.agreement == 1.0 and moved.map_drop == 0
    assert moved.passed and moved.broken == "" and moved.budget == "agreement >= 0.99, mAP drop <= 0.01"
    assert check_parity(ref, shifted, targets, None, precision="bf16", budgets=Budgets()).passed
    opt_in = check_parity(ref, shifted, targets, None, precision="fp16", budgets=Budgets(fp16_tolerance=0.01))
    assert not opt_in.passed and "(--fp16-tolerance)" in opt_in.broken and "max |dp| <= 0.01" in opt_in.budget
    flipped = ref.copy()
    flipped[:6, 0] = -flipped[:6, 0]  # six decisions of one class change sides
    bad = check_parity(ref, flipped, targets, None, precision="fp16", budgets=Budgets(), artifact="openvino")
    assert not bad.passed and bad.agreement < 0.99
    assert "decision agreement" in bad.broken and "(--fp16-min-agreement)" in bad.summary()
    assert "FAILED (decision agreement" in format_table([{"artifact": "openvino", "report": bad.to_dict()}])
    dropped = check_parity(ref, flipped, targets, None, precision="fp16",
                           budgets=Budgets(fp16_min_agreement=0.0, fp16_max_map_drop=0.0))
    assert dropped.map_drop > 0 and "(--fp16-max-map-drop)" in dropped.broken and "agreement" not in dropped.broken
    # FP32 keeps its tight tolerance: the same shift is a bug there
    fp32 = check_parity(ref, shifted, targets, None, precision="fp32", budgets=Budgets())
    assert not fp32.passed and "(--fp32-tolerance)" in fp32.broken
    with pytest.raises(ConfigError, match="fp16_min_agreement is a share"):
        Budgets(fp16_min_agreement=1.5)


def test_agreement_compares_both_models_at_thresholds_tuned_alike():
    """The reference's own thresholds may come from other outputs (training evaluates under bf16 autocast on CPUs
    that have it, or on another split): an artifact whose outputs equal the reference's still agrees on every
    decision, since both are re-tuned the same way on the parity images; both at the reference's thresholds is
    reported beside it."""
    rng = np.random.default_rng(2)
    targets = (rng.random((60, 3)) < 0.4).astype(np.float32)
    ref = (3 * targets - 1.5 + rng.normal(size=(60, 3))).astype(np.float32)
    off = np.array([0.05, 0.93, 0.5])  # thresholds that do not fit these outputs
    same = check_parity(ref, ref.copy(), targets, None, precision="fp16", budgets=Budgets(),
                        reference_thresholds=off)
    assert same.agreement == 1.0 and same.agreement_at_reference == 1.0 and same.passed
    flipped = ref.copy()
    flipped[:6, 0] = -flipped[:6, 0]
    bad = check_parity(ref, flipped, targets, None, precision="fp16", budgets=Budgets(), reference_thresholds=off)
    assert bad.agreement < 0.99 and not bad.passed and "(--fp16-min-agreement)" in bad.broken


def test_old_parity_budgets_and_reports_still_load():
    """parity.json and manifest entries written before the FP16 decision budgets (a max |dp| budget, no `broken`)
    load: the stored budget is kept, the new ones take their defaults."""
    old = Budgets.from_dict({"fp32_tolerance": 1e-4, "fp16_tolerance": 0.02, "max_map_drop": 0.01})
    assert old.fp16_tolerance == 0.02 and old.fp16_min_agreement == 0.99 and old.fp16_max_map_drop == 0.01
    assert Budgets.from_dict(Budgets().to_dict()) == Budgets() and Budgets().fp16_tolerance is None
    report = {"artifact": "openvino", "precision": "fp16", "num_samples": 12, "max_abs_diff": 0.004,
              "mean_abs_diff": 0.001, "agreement": 1.0, "agreement_at_reference": 1.0, "map_reference": 0.9,
              "map_artifact": 0.9, "map_drop": 0.0, "thresholds": [0.5, 0.5], "passed": True,
              "budget": "max |dp| <= 0.01", "backend": "openvino", "device": "CPU", "backend_precision": "f32",
              "split": "valid", "note": ""}
    loaded = ParityReport.from_dict(report)
    assert loaded.passed and loaded.broken == "" and "ok (max |dp| <= 0.01" in format_table(
        [{"artifact": "openvino", "report": report}])


def test_fp16_export_passes_on_decisions_and_fails_an_opt_in_tolerance(tiny, tmp_path):
    """The real OpenVINO FP16 IR of the tiny model: the default budget judges decisions and mAP (it passes), and a
    max |dp| budget below what it measured, asked for with fp16_tolerance, breaks with the flag named."""
    pytest.importorskip("openvino")
    result = export(_cfg(tiny, tmp_path / "b", targets=("openvino",)))
    report = result.reports["openvino"]
    assert report.precision == "fp16" and report.passed and report.agreement >= 0.99
    assert report.budget == "agreement >= 0.99, mAP drop <= 0.01" and report.max_abs_diff > 0
    parity = json.loads((result.bundle / "parity.json").read_text())
    assert parity["budgets"]["fp16_tolerance"] is None and parity["budgets"]["fp16_min_agreement"] == 0.99
    with pytest.raises(ParityError, match="\\(--fp16-tolerance\\)"):
        export(_cfg(tiny, tmp_path / "c", targets=("openvino",), fp16_tolerance=report.max_abs_diff / 2))
    with pytest.raises(UnsupportedOption, match="--fp16-min-agreement does not apply"):
        export(_cfg(tiny, tmp_path / "d", targets=("onnx",), fp16_min_agreement=0.5))


# ---------------------------------------------------------------------------------------------------------------------
# the real thing (slow): Lite0 on aquarium


@pytest.mark.slow
@pytest.mark.aquarium
def test_lite0_aquarium_all_targets_within_budget(aquarium, tmp_path):
    import os

    ckpt = Path(os.environ.get("EDGECLS_AQUARIUM_CKPT", REPO / "runs" / "bench-training" / "freeze"))
    if not (ckpt / "best.pt").is_file() and not ckpt.is_file():
        pytest.skip(f"no aquarium checkpoint at {ckpt} (run benchmarks/training.py or set EDGECLS_AQUARIUM_CKPT)")
    result = export(ExportConfig(checkpoint=str(ckpt), targets=("all",), data=str(aquarium),
                                 out=str(tmp_path / "bundle")))
    assert result.passed
    for name in ("onnx", "onnx-int8", "openvino", "openvino-int8"):
        assert result.reports[name].passed
    for name in ("onnx-int8", "openvino-int8"):
        assert result.reports[name].map_drop <= 0.01
    check = check_bundle(result.bundle, aquarium, write=False)
    for name, report in check.reports.items():
        assert report.max_abs_diff == pytest.approx(result.reports[name].max_abs_diff, abs=1e-6)
