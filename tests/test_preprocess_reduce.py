"""Reduced-size JPEG decoding (PreprocessSpec.jpeg_reduce) and the reusable-buffer preprocessor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecls.preprocess import (
    PreprocessSpec,
    decode_image,
    jpeg_scale,
    preprocess,
    reduce_min_side,
)

cv2 = pytest.importorskip("cv2")


def _photo(h: int, w: int) -> np.ndarray:
    """A smooth, photo-like BGR image (gradients and blobs), so JPEG and resizing behave as on real pictures."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([127 + 100 * np.sin(xx / 37.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("reduce") / "big.jpg"
    cv2.imwrite(str(path), _photo(600, 800), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def test_scale_is_the_smallest_that_keeps_twice_the_input():
    assert reduce_min_side(PreprocessSpec(img_size=64)) == 128
    assert reduce_min_side(PreprocessSpec(img_size=64, resize="shorter", crop_pct=0.8)) == 160
    assert reduce_min_side(PreprocessSpec(img_size=64, jpeg_reduce=False)) is None
    assert jpeg_scale(4000, 3000, 448) == 4  # 750 >= 448, 375 is not
    assert jpeg_scale(1024, 768, 448) == 1  # 384 < 448: decoded in full
    assert jpeg_scale(3000, 4000, 448) == 4  # portrait: the shorter side counts
    assert jpeg_scale(8000, 8000, 448) == 8
    assert jpeg_scale(896, 896, 448) == 2
    assert jpeg_scale(4000, 3000, None) == 1


def test_old_records_without_the_field_decode_in_full(big_jpeg):
    new = PreprocessSpec(img_size=64)
    assert new.jpeg_reduce is True  # specs built now reduce
    old_record = {k: v for k, v in new.to_dict().items() if k != "jpeg_reduce"}
    old = PreprocessSpec.from_dict(old_record)
    assert old.jpeg_reduce is False
    assert PreprocessSpec.from_dict(json.loads(json.dumps(new.to_dict()))) == new
    # the old spec gives exactly what full decoding gave before the field existed
    full = cv2.imdecode(np.fromfile(str(big_jpeg), np.uint8), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(cv2.resize(full, (64, 64), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    expected = ((rgb.astype(np.float32) - np.float32(255) * np.asarray(old.mean, np.float32))
                * (np.float32(1 / 255) / np.asarray(old.std, np.float32))).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocess(big_jpeg, old), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(preprocess(big_jpeg, old), preprocess(big_jpeg, new.replace(jpeg_reduce=False)))


def test_a_large_jpeg_is_decoded_reduced_and_stays_close(big_jpeg):
    spec = PreprocessSpec(img_size=64)  # needs a 128-px shorter side: 600 / 4 = 150 is enough, / 8 = 75 is not
    assert decode_image(big_jpeg, min_side=reduce_min_side(spec)).shape == (150, 200, 3)
    assert decode_image(big_jpeg.read_bytes(), min_side=reduce_min_side(spec)).shape == (150, 200, 3)
    assert decode_image(big_jpeg).shape == (600, 800, 3)
    reduced, full = preprocess(big_jpeg, spec), preprocess(big_jpeg, spec.replace(jpeg_reduce=False))
    assert reduced.shape == full.shape == (3, 64, 64)
    assert not np.array_equal(reduced, full)
    assert np.abs(reduced - full).mean() < 0.02  # in normalised units (std 0.22): about one grey level
    # bytes and path go through the same decode
    np.testing.assert_array_equal(preprocess(big_jpeg.read_bytes(), spec), reduced)


def test_png_and_arrays_keep_the_full_decode(tmp_path):
    img = _photo(600, 800)
    png = tmp_path / "big.png"
    cv2.imwrite(str(png), img)
    spec = PreprocessSpec(img_size=64)
    assert decode_image(png, min_side=reduce_min_side(spec)).shape == (600, 800, 3)
    np.testing.assert_array_equal(preprocess(png, spec), preprocess(png, spec.replace(jpeg_reduce=False)))
    np.testing.assert_array_equal(preprocess(img, spec), preprocess(img, spec.replace(jpeg_reduce=False)))


def test_reduced_decode_keeps_the_pixel_limit(big_jpeg):
    from edgecls.errors import DataError

    with pytest.raises(DataError, match="over --max-pixels"):
        decode_image(big_jpeg, max_pixels=400_000, min_side=128)
    assert decode_image(big_jpeg, max_pixels=480_000, min_side=128).shape == (150, 200, 3)


def test_a_bad_field_value_is_a_config_error():
    from edgecls.errors import ConfigError

    with pytest.raises(ConfigError, match="jpeg_reduce"):
        PreprocessSpec.from_dict({"jpeg_reduce": "yes"})


def test_preprocessor_reuses_its_buffers_and_equals_preprocess(big_jpeg):
    from edgecls.preprocess import Preprocessor, normalize, resize_image

    frame = _photo(120, 160)
    for spec in (PreprocessSpec(img_size=64), PreprocessSpec(img_size=48, resize="shorter", crop_pct=0.875)):
        pre = Preprocessor(spec)
        out = np.zeros((3, spec.img_size, spec.img_size), np.float32)
        assert pre(frame, out) is out
        first = out.copy()
        assert pre(frame[::-1].copy(), out) is out and not np.array_equal(out, first)  # the same buffer, rewritten
        np.testing.assert_array_equal(pre(frame), first)
        np.testing.assert_array_equal(preprocess(frame, spec), first)
        # the formula, spelled out with allocating numpy: RGB order, CHW, (x - mean / scale) * (scale / std)
        rgb = cv2.cvtColor(resize_image(frame, spec), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(normalize(rgb, spec), first)
        np.testing.assert_array_equal(pre(big_jpeg), preprocess(big_jpeg, spec))
    from edgecls.errors import ConfigError

    with pytest.raises(ConfigError, match="float32"):
        Preprocessor(PreprocessSpec(img_size=64))(frame, np.zeros((3, 32, 32), np.float32))
