"""PreprocessSpec.resize_numerics: native (OpenCV's 8-bit kernels, every record made before the field) and portable
(the same pixels on every machine: INTER_LINEAR_EXACT, or exact_resize's integer arithmetic for cubic and area)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecls.errors import ConfigError
from edgecls.preprocess import (
    INTERPOLATIONS,
    PIXELS_BGR,
    PIXELS_RGB,
    Preprocessor,
    PreprocessSpec,
    exact_resize,
    pixels_to_tensor,
    portability_note,
    preprocess,
    resize_image,
)

cv2 = pytest.importorskip("cv2")

SIZES = ((64, 64), (50, 37), (97, 130), (200, 150), (9, 7))  # (width, height): down, up, mixed, odd


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise (edges and ties, as photos have)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([127 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 11.0 - c) for c in range(3)], axis=-1)
    img += np.random.default_rng(seed).normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _cubic_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's bicubic (A = -0.75, replicated border) for one axis, in float64: the float reference."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    left = np.floor(pos)
    t = pos - left
    a = -0.75

    def k(x):
        x = np.abs(x)
        return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))

    offsets = np.arange(-1, 3)
    weights = k(t[:, None] - offsets[None, :])
    index = np.clip(left.astype(int)[:, None] + offsets, 0, n_in - 1)
    return index, weights


def _float_cubic(img: np.ndarray, width: int, height: int) -> np.ndarray:
    (iy, wy), (ix, wx) = _cubic_weights(img.shape[0], height), _cubic_weights(img.shape[1], width)
    x = img.astype(np.float64)
    mid = np.einsum("rk,rkwc->rwc", wy, x[iy])
    return np.einsum("jk,rjkc->rjc", wx, mid[:, ix])


def _int_reference(img: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    """exact_resize's arithmetic spelled out in int64 (its weights, its rounding steps)."""
    from edgecls.preprocess import _area_taps, _cubic_taps

    h, w = img.shape[:2]
    if interpolation == "cubic":
        (iy, wy), (ix, wx) = _cubic_taps(h, height), _cubic_taps(w, width)
    else:
        shrink = h >= height and w >= width
        (iy, wy), (ix, wx) = _area_taps(h, height, shrink), _area_taps(w, width, shrink)
    wy, wx = wy.astype(np.int64), wx.astype(np.int64)
    mid = sum(img[iy[:, k]].astype(np.int64) * wy[:, k, None, None] for k in range(iy.shape[1]))
    mid = np.rint(mid / 128)  # exact in float64: an integer over a power of two, ties to even
    acc = sum(mid[:, ix[:, k]] * wx[None, :, k, None] for k in range(ix.shape[1]))
    return np.clip(np.floor((acc + 16384) / 32768), 0, 255).astype(np.uint8)


def test_records_without_the_field_keep_opencvs_8bit_resize():
    new = PreprocessSpec(img_size=64, interpolation="cubic", resize_numerics="portable")
    old_record = {k: v for k, v in new.to_dict().items() if k not in ("resize_numerics", "jpeg_reduce")}
    old = PreprocessSpec.from_dict(old_record)
    assert old.resize_numerics == "native" and PreprocessSpec().resize_numerics == "native"
    img = _photo(120, 160)
    for interp in INTERPOLATIONS:
        spec = old.replace(interpolation=interp)
        flag = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
                "nearest": cv2.INTER_NEAREST}[interp]
        rgb = cv2.cvtColor(cv2.resize(img, (64, 64), interpolation=flag), cv2.COLOR_BGR2RGB)
        expected = ((rgb.astype(np.float32) - np.float32(255) * np.asarray(spec.mean, np.float32))
                    * (np.float32(1 / 255) / np.asarray(spec.std, np.float32))).transpose(2, 0, 1)
        np.testing.assert_allclose(preprocess(img, spec), expected, rtol=0, atol=1e-5)  # exactly OpenCV's pixels


@pytest.mark.parametrize("size", SIZES)
def test_portable_cubic_is_within_one_level_of_the_float_reference(size):
    img = _photo(120, 160, seed=size[0])
    exact = exact_resize(img, *size, "cubic")
    ref = np.clip(_float_cubic(img, *size), 0, 255)
    diff = np.abs(exact - ref)
    assert diff.max() <= 0.75 and diff.mean() < 0.3  # rounding to a level, plus 2^-11 weights and 2^-4 mid-sums
    assert (np.abs(exact.astype(int) - np.rint(ref)) <= 1).all()


@pytest.mark.parametrize("interp", ["cubic", "area"])
@pytest.mark.parametrize("size", SIZES)
def test_exact_resize_is_integer_arithmetic(interp, size):
    """Bit for bit the int64 computation: nothing is left to the float unit's summation order or FMA."""
    img = _photo(120, 160, seed=7)
    out = exact_resize(img, *size, interp)
    ref = _int_reference(img, *size, interp)
    assert out.shape == (size[1], size[0], 3) and out.dtype == np.uint8
    assert np.array_equal(out, ref)
    # and OpenCV's own kernel, give or take its 8-bit rounding
    flag = cv2.INTER_CUBIC if interp == "cubic" else cv2.INTER_AREA
    assert np.abs(out.astype(int) - cv2.resize(img, size, interpolation=flag)).max() <= 1


def test_portable_linear_and_area_stay_near_float_resizes():
    img = _photo(120, 160, seed=3)
    for interp, flag in (("linear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA)):
        spec = PreprocessSpec(img_size=64, interpolation=interp, resize_numerics="portable")
        ref = cv2.resize(img.astype(np.float64), (64, 64), interpolation=flag)
        assert np.abs(resize_image(img, spec) - ref).max() <= 1.0


def test_portable_keeps_pixel_inputs_and_the_float_tensor_equal():
    """The -u8 artifacts get the same pixels the float tensor is made of, bit for bit."""
    img = _photo(130, 170)
    for interp in INTERPOLATIONS:
        for resize in ("squash", "shorter"):
            spec = PreprocessSpec(img_size=48, interpolation=interp, resize=resize, crop_pct=0.875,
                                  resize_numerics="portable")
            tensor = Preprocessor(spec)(img)
            np.testing.assert_array_equal(tensor, preprocess(img, spec))
            for kind in (PIXELS_BGR, PIXELS_RGB):
                pixels = Preprocessor(spec, output=kind)(img)
                np.testing.assert_array_equal(pixels_to_tensor(pixels[None], spec, kind)[0], tensor)
            pre = Preprocessor(spec)
            first = pre(img).copy()
            np.testing.assert_array_equal(pre(img[::-1].copy()), preprocess(img[::-1].copy(), spec))
            np.testing.assert_array_equal(pre(img), first)  # reused buffers leave nothing behind


def test_the_field_round_trips_through_manifest_and_checkpoint(tmp_path):
    from edgecls.manifest import Manifest

    spec = PreprocessSpec(img_size=32, interpolation="cubic", resize_numerics="portable")
    assert PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    manifest = Manifest(class_names=("a", "b"), preprocess=spec, backbone="tiny", thresholds=(0.5, 0.5),
                        input_shape=("batch", 3, 32, 32), output_shape=("batch", 2), artifacts=())
    manifest.save(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["preprocess"]["resize_numerics"] == "portable"
    assert Manifest.load(tmp_path).preprocess == spec

    torch = pytest.importorskip("torch")
    from edgecls.train.backbones import ModelSpec
    from edgecls.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

    model_spec = ModelSpec(backbone="timm:test_efficientnet", class_names=("a", "b"))
    path = save_checkpoint(Checkpoint(model_spec=model_spec, preprocess=spec,
                                      state_dict={"w": torch.zeros(1)}), tmp_path / "a.pt")
    assert load_checkpoint(path).preprocess == spec
    payload = torch.load(path, weights_only=True)
    assert payload["preprocess"]["resize_numerics"] == "portable"
    assert PreprocessSpec.from_dict(payload["preprocess"]) == spec
    del payload["preprocess"]["resize_numerics"]  # a checkpoint written before the field
    assert PreprocessSpec.from_dict(payload["preprocess"]).resize_numerics == "native"


def test_a_bad_value_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"unknown resize_numerics 'exact'; valid: native, portable") as err:
        PreprocessSpec.from_dict({"resize_numerics": "exact"})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="interpolation must be cubic or area"):
        exact_resize(_photo(20, 20), 10, 10, "linear")


def test_export_option_is_checked(tmp_path):
    pytest.importorskip("torch")
    from edgecls.export import ExportConfig

    base = {"checkpoint": "c.pt", "targets": ("onnx",), "data": "d", "out": str(tmp_path / "b")}
    assert ExportConfig(**base).resize_numerics is None  # keeps the checkpoint's
    assert ExportConfig(**base, resize_numerics="portable").resize_numerics == "portable"
    with pytest.raises(ConfigError, match="resize_numerics must be one of native, portable"):
        ExportConfig(**base, resize_numerics="fast")


def test_the_note_on_arm_names_the_cause_and_the_fix():
    native = PreprocessSpec(interpolation="cubic")
    note = portability_note(native, "aarch64")
    assert note and "\n" not in note and "native" in note and "--resize-numerics portable" in note
    assert portability_note(native, "x86_64") is None  # the references are made here
    assert portability_note(native.replace(resize_numerics="portable"), "aarch64") is None
    assert portability_note(native.replace(interpolation="nearest"), "aarch64") is None  # a copy: exact anyway


def test_doctor_on_arm_says_why_a_native_bundle_differs(request, monkeypatch):
    import platform

    pytest.importorskip("torch")  # the tiny bundle is exported from a torch model
    pytest.importorskip("onnxruntime")
    onnx_bundle = request.getfixturevalue("onnx_bundle")

    from edgecls.runtime import doctor_report

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    report = doctor_report(onnx_bundle["root"])
    assert report.error is None and len(report.notes) == 1
    assert "resize_numerics: native" in report.notes[0]
    assert "note:    this bundle resizes" in report.format()
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert doctor_report(onnx_bundle["root"]).notes == []
