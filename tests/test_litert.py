"""LiteRT: the runtime backend on ai-edge-litert's interpreter (a tiny .tflite written with LiteRT's own flatbuffer
schema: global mean pooling and a fully connected head, checked against numpy; its full-integer and float16-weight
versions made at test time by ai-edge-quantizer, as the litert-int8 / litert-fp16 targets make theirs), and the
litert / litert-fp16 / litert-int8 export targets end to end (need litert-torch, the ``litert-export`` extra, which
lives in its own environment; skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecls._deps import has

pytestmark = pytest.mark.skipif(not has("ai_edge_litert"), reason='ai-edge-litert not installed: '
                                'pip install "edgecls[litert]"')

K, C, S = 4, 3, 8  # classes, channels, image side


def write_tiny_tflite(path, weights: np.ndarray, bias: np.ndarray, *, batch: int = 1) -> None:
    """logits = FULLY_CONNECTED(MEAN(x, axes=[2, 3]), weights, bias) for x (batch, 3, S, S) float32."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools.flatbuffer_utils import write_model

    def buffer(data: np.ndarray | None) -> fb.BufferT:
        buf = fb.BufferT()
        buf.data = None if data is None else list(np.ascontiguousarray(data).tobytes())
        return buf

    def tensor(name: str, shape: list[int], buf: int, dtype: int = fb.TensorType.FLOAT32) -> fb.TensorT:
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, dtype, buf
        return t

    def op(code: int, inputs: list[int], outputs: list[int], options_type: int, options) -> fb.OperatorT:
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    codes = []
    for builtin in (fb.BuiltinOperator.MEAN, fb.BuiltinOperator.FULLY_CONNECTED):
        code = fb.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, 1
        codes.append(code)
    sub = fb.SubGraphT()
    sub.tensors = [tensor("images", [batch, C, S, S], 0), tensor("axes", [2], 1, fb.TensorType.INT32),
                   tensor("pooled", [batch, C], 0), tensor("w", [K, C], 2), tensor("b", [K], 3),
                   tensor("logits", [batch, K], 0)]
    for t, sig in zip(sub.tensors, ([-1, C, S, S], None, [-1, C], None, None, [-1, K])):
        t.shapeSignature = sig
    sub.inputs, sub.outputs = [0], [5]
    signature = fb.SignatureDefT()  # what litert-torch writes too: ai-edge-quantizer calibrates by signature
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs, signature.outputs = [fb.TensorMapT(), ], [fb.TensorMapT()]
    signature.inputs[0].name, signature.inputs[0].tensorIndex = "args_0", 0
    signature.outputs[0].name, signature.outputs[0].tensorIndex = "output_0", 5
    reducer = fb.ReducerOptionsT()
    reducer.keepDims = False
    sub.operators = [op(0, [0, 1], [2], fb.BuiltinOptions.ReducerOptions, reducer),
                     op(1, [2, 3, 4], [5], fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())]
    model = fb.ModelT()
    model.version, model.description = 3, "edgecls test model"
    model.operatorCodes, model.subgraphs, model.signatureDefs = codes, [sub], [signature]
    model.buffers = [buffer(None), buffer(np.array([2, 3], np.int32)), buffer(weights.astype(np.float32)),
                     buffer(bias.astype(np.float32))]
    write_model(model, path)


@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((K, C)).astype(np.float32), rng.standard_normal(K).astype(np.float32)
    path = tmp_path / "model.tflite"
    write_tiny_tflite(path, w, b)
    return path, w, b


def test_litert_backend_matches_numpy_for_any_batch(tiny):
    from edgecls.runtime.backends import open_backend

    path, w, b = tiny
    x = np.random.default_rng(1).standard_normal((5, C, S, S)).astype(np.float32)
    expected = x.mean(axis=(2, 3)) @ w.T + b
    with open_backend(path, backend="litert", threads=1) as runner:
        assert (runner.name, runner.device, runner.precision) == ("litert", "cpu", "f32")
        assert runner.input_shape == (1, C, S, S)
        for n in (1, 5, 2, 0):  # the interpreter is resized per batch size (and back)
            got = runner.infer(x[:n])
            assert got.shape == (n, K) and got.dtype == np.float32
            np.testing.assert_allclose(got, expected[:n], rtol=1e-5, atol=1e-5)
        assert runner.info()["delegate"].startswith("XNNPACK")


def test_litert_is_chosen_by_suffix_and_rejects_what_it_cannot_run(tiny, tmp_path):
    from edgecls.errors import ConfigError, UnsupportedOption
    from edgecls.runtime.backends import backends_for_file, open_backend, probe

    path, _, _ = tiny
    assert backends_for_file(path) == ["litert"] and probe("litert").devices == ("cpu",)
    assert open_backend(path).name == "litert"  # auto: the only backend for .tflite
    with pytest.raises(UnsupportedOption, match="int8 needs the litert-int8 artifact"):
        open_backend(path, backend="litert", precision_hint="int8")
    with pytest.raises(UnsupportedOption, match="unknown device"):
        open_backend(path, backend="litert", device="cuda")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match="not a LiteRT"):
        open_backend(bad, backend="litert")
    with pytest.raises(ConfigError, match="x has shape|takes"):
        open_backend(path, backend="litert").infer(np.zeros((1, C, S + 1, S + 1), np.float32))


needs_quantizer = pytest.mark.skipif(not has("ai_edge_quantizer"), reason="ai-edge-quantizer not installed: pip "
                                     'install "edgecls[dev]" (or "edgecls[litert-export]")')


@needs_quantizer
def test_litert_backend_runs_a_full_integer_model_with_int8_io(tiny, tmp_path):
    """ai-edge-quantizer's static int8 file (what litert-int8 writes) takes int8 in and gives int8 logits, each with a
    scale and zero point: the backend quantizes the float batch and dequantizes the logits, for any batch size."""
    from edgecls.export.targets.litert import quantize_int8
    from edgecls.runtime.backends import open_backend

    path, w, b = tiny
    rng = np.random.default_rng(2)
    calib = rng.uniform(-1, 1, (16, C, S, S)).astype(np.float32)
    quantized = tmp_path / "int8.tflite"
    details = quantize_int8(path, quantized, calib)
    assert details["input"]["dtype"] == "int8" and details["output"]["dtype"] == "int8", details
    assert details["int8_tensors"] == 4 and details["float16_tensors"] == 0  # images, pooled, w, logits
    x = calib[:5]  # inside the calibrated ranges: nothing clips
    expected = x.mean(axis=(2, 3)) @ w.T + b
    with open_backend(quantized, backend="litert", threads=1, precision_hint="int8") as runner:
        assert (runner.name, runner.precision) == ("litert", "int8")
        step = details["output"]["scale"]
        for n in (1, 5, 2):
            got = runner.infer(x[:n])
            assert got.shape == (n, K) and got.dtype == np.float32
            # within a few output steps of the float model (a raw int8 read would be off by ~1/scale)
            np.testing.assert_allclose(got, expected[:n], atol=6 * step)
        assert np.abs(runner.infer(x) - expected).max() > 0  # really quantized
    with open_backend(quantized, backend="litert") as runner, pytest.raises(Exception, match="valid precisions: int8"):
        open_backend(quantized, backend="litert", precision_hint="f16")


@needs_quantizer
def test_litert_fp16_weights_run_in_float(tiny, tmp_path):
    from edgecls.export.targets.litert import quantize_fp16
    from edgecls.runtime.backends import open_backend

    path, w, b = tiny
    half = tmp_path / "fp16.tflite"
    details = quantize_fp16(path, half)
    assert details["float16_tensors"] == 1 and details["input"] == {"dtype": "float32"}  # the FC weights
    x = np.random.default_rng(3).standard_normal((3, C, S, S)).astype(np.float32)
    expected = x.mean(axis=(2, 3)) @ w.astype(np.float16).astype(np.float32).T + b
    with open_backend(half, backend="litert", threads=1) as runner:
        assert runner.precision == "f32"
        np.testing.assert_allclose(runner.infer(x), expected, rtol=1e-5, atol=1e-5)


def test_litert_targets_are_registered_with_their_extra():
    from edgecls.export.targets import get_target

    for name, precision in (("litert", "fp32"), ("litert-fp16", "fp16"), ("litert-int8", "int8")):
        target = get_target(name)
        assert (target.format, target.suffix, target.precision, target.extra) == \
            ("litert", ".tflite", precision, "litert-export")
        ok, why = target.available()
        assert ok or 'pip install "edgecls[litert-export]"' in why


@pytest.mark.slow
@pytest.mark.skipif(not has("litert_torch"), reason='litert-torch not installed (pip install "edgecls[litert-export]"'
                    "; it pins typing-extensions<4.13, so it lives in its own environment)")
def test_export_litert_fp16_and_int8_with_parity(tmp_path, synth_small, tiny_config):
    """The tiny backbone to litert, litert-fp16 and litert-int8 (one litert-torch conversion, the other two quantized
    from it): FP32 within 1e-4 of PyTorch, FP16 within its budget, INT8 close in probability (its decision agreement
    on a seconds-trained model whose outputs all sit near its thresholds is a coin toss, so the INT8 budget itself is
    not asserted here: the aquarium figures are in benchmarks/RESULTS.md), and `edgecls parity` re-runs all three
    from the bundle through the runtime backend with the same figures."""
    from edgecls.config import build_config
    from edgecls.export import ExportConfig, check_bundle, export
    from edgecls.train import fit

    run = tmp_path / "run"
    fit(tiny_config(synth_small, run, epochs=1))
    result = export(build_config(ExportConfig, overrides=dict(
        checkpoint=str(run), data=str(synth_small), out=str(tmp_path / "bundle"),
        targets=["litert", "litert-fp16", "litert-int8"], calib_size=16, allow_parity_failure=True)))
    reports = result.reports
    assert reports["litert"].passed and reports["litert"].max_abs_diff <= 1e-4, result.table
    assert reports["litert-fp16"].passed and reports["litert-fp16"].precision == "fp16", result.table
    assert reports["litert-int8"].backend_precision == "int8" and reports["litert-int8"].max_abs_diff < 0.05
    check = check_bundle(result.bundle, synth_small, write=False)
    assert set(check.reports) == {"litert", "litert-fp16", "litert-int8"}
    for name, report in check.reports.items():
        assert report.max_abs_diff == pytest.approx(reports[name].max_abs_diff, abs=1e-6), name
    arts = {a.name: a for a in result.manifest.artifacts}
    assert (arts["litert-int8"].parent, arts["litert-fp16"].parent) == ("litert", "litert")
    assert arts["litert-int8"].details["input"]["dtype"] == "int8"
    assert arts["litert-int8"].calibration["images"] == 16
    sizes = {n: (result.bundle / a.path).stat().st_size for n, a in arts.items()}
    assert sizes["litert-int8"] < sizes["litert-fp16"] < sizes["litert"]
