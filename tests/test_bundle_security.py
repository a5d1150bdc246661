"""A bundle is untrusted input (issue 10, items 1-4, 17, 19): paths stay inside it, its files are the exported ones,
resource limits hold, a malformed manifest or a model file that is not a model is one line, and the same precision
name is shown everywhere. Real tiny bundles from test_runtime.build_bundle, the real CLI through CliRunner."""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import zlib
from pathlib import Path

import click
import numpy as np
import pytest
from test_runtime import build_bundle, make_images

from edgecls.errors import ConfigError, DataError, IntegrityError


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("sec") / "bundle", openvino=False)["root"]


@pytest.fixture(scope="module")
def full_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    return build_bundle(tmp_path_factory.mktemp("sec") / "bundle", openvino=True)["root"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sec") / "images"
    make_images(folder, n=3, corrupt_at=None)
    return folder


def _cli() -> click.Group:
    from edgecls.cli import cli

    return cli


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _edit_manifest(bundle: Path, edit) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    edit(data)
    (bundle / "manifest.json").write_text(json.dumps(data))


def _artifact(data: dict, name: str) -> dict:
    return next(a for a in data["artifacts"] if a["name"] == name)


def _one_error_line(result) -> str:
    """The one ``Error: ...`` line of a failed command (log lines may come before it; no traceback)."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert result.output.rstrip().splitlines()[-1] == errors[0], result.output
    return errors[0]


# ---------------------------------------------------------------------------------------------------------------------
# 1. artifact paths stay inside the bundle


def _escape(bundle: Path, how: str) -> Path:
    """Point the bundle's onnx artifact at a real model file outside it; return that file."""
    outside = bundle.parent / f"elsewhere-{how}" / "x" / "evil.onnx"
    outside.parent.mkdir(parents=True)
    shutil.copyfile(bundle / "onnx-int8" / "model.onnx", outside)
    if how == "symlink":
        (bundle / "onnx" / "model.onnx").unlink()
        (bundle / "onnx" / "model.onnx").symlink_to(outside)
    else:
        target = os.path.relpath(outside, bundle) if how == "dotdot" else str(outside)
        _edit_manifest(bundle, lambda d: _artifact(d, "onnx").update(path=target))
    return outside


@pytest.mark.parametrize("how, why", [("dotdot", "leaves the bundle folder through '..'"),
                                      ("absolute", "is the absolute path"),
                                      ("symlink", "symlink to a file outside the bundle")])
def test_an_artifact_path_outside_the_bundle_is_refused(onnx_bundle, tmp_path, how, why):
    from edgecls.runtime import Classifier

    bundle = _copy(onnx_bundle, tmp_path / "b")
    outside = _escape(bundle, how)
    with pytest.raises(IntegrityError, match="manifest field path of artifact 'onnx'") as err:
        Classifier(bundle, backend="onnxruntime", artifact="onnx", verify=False)
    assert why in str(err.value) and ("evil.onnx" in str(err.value) or str(outside) in str(err.value))


def test_an_ir_weights_symlink_out_of_the_bundle_is_refused(full_bundle, tmp_path):
    from edgecls.runtime import Classifier

    bundle = _copy(full_bundle, tmp_path / "b")
    outside = tmp_path / "elsewhere" / "model.bin"
    outside.parent.mkdir()
    shutil.move(bundle / "openvino" / "model.bin", outside)
    (bundle / "openvino" / "model.bin").symlink_to(outside)
    with pytest.raises(IntegrityError, match=r"model.bin.*of artifact 'openvino'.*symlink to a file outside"):
        Classifier(bundle, backend="openvino", artifact="openvino", verify=False)


def test_predict_run_doctor_and_bench_refuse_an_escaping_bundle(onnx_bundle, images, tmp_path, runner):
    from test_runtime import make_video

    from edgecls.bench import BenchConfig
    from edgecls.bench import run as bench_run

    bundle = _copy(onnx_bundle, tmp_path / "b")
    _escape(bundle, "dotdot")
    video = make_video(tmp_path / "in.mp4", frames=3)
    for args in (["predict", str(bundle), str(images), "--artifact", "onnx"],
                 ["predict", str(bundle), str(images), "--artifact", "onnx", "--no-verify"],
                 ["run", str(bundle), "--source", str(video), "--no-show", "--artifact", "onnx"],
                 ["doctor", str(bundle), "--artifact", "onnx"],
                 ["bench", str(bundle), "--artifact", "onnx", "--backends", "onnxruntime", "--torch-variants", "none",
                  "--in-process"]):
        result = runner.invoke(_cli(), args)
        if args[0] == "doctor":
            assert result.exit_code == 1 and "cannot run here: bundle" in result.output, result.output
            assert "leaves the bundle folder" in result.output and "Traceback" not in result.output
        else:
            assert "leaves the bundle folder" in _one_error_line(result), args
    with pytest.raises(IntegrityError, match="leaves the bundle"):
        bench_run(BenchConfig(bundle=str(bundle), artifacts=("onnx",), backends=("onnxruntime",), torch_variants=(),
                              isolate=False))


# ---------------------------------------------------------------------------------------------------------------------
# 2. sha256 verified at load


def test_a_swapped_model_file_is_refused_unless_no_verify(onnx_bundle, images, tmp_path, runner):
    from edgecls.runtime import Classifier

    bundle = _copy(onnx_bundle, tmp_path / "b")
    good = Classifier(bundle, backend="onnxruntime", artifact="onnx").predict_batch(sorted(images.glob("*.png")))
    shutil.copyfile(bundle / "onnx-int8" / "model.onnx", bundle / "onnx" / "model.onnx")  # INT8 over FP32
    with pytest.raises(IntegrityError, match=r"onnx/model.onnx of artifact 'onnx' does not match the manifest "
                                             r"\(sha256 .*--no-verify"):
        Classifier(bundle, backend="onnxruntime", artifact="onnx")
    with pytest.raises(IntegrityError, match="does not match"):  # auto too: a changed file is no reason to fall back
        Classifier(bundle, artifact="onnx")
    swapped = Classifier(bundle, backend="onnxruntime", artifact="onnx", verify=False)
    assert swapped.backend.precision == "int8"  # what --no-verify runs is the file as it is
    assert len(swapped.predict_batch(sorted(images.glob("*.png")))) == len(good)

    line = _one_error_line(runner.invoke(_cli(), ["predict", str(bundle), str(images), "--artifact", "onnx"]))
    assert "does not match the manifest" in line and "--no-verify" in line
    result = runner.invoke(_cli(), ["predict", str(bundle), str(images), "--artifact", "onnx", "--no-verify",
                                    "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(_cli(), ["doctor", str(bundle), "--artifact", "onnx"])
    assert result.exit_code == 1 and "cannot run here" in result.output and "does not match" in result.output
    assert runner.invoke(_cli(), ["doctor", str(bundle), "--artifact", "onnx", "--no-verify"]).exit_code == 0


def test_zeroed_ir_weights_are_refused(full_bundle, tmp_path):
    from edgecls.runtime import Classifier

    bundle = _copy(full_bundle, tmp_path / "b")
    weights = bundle / "openvino" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"openvino/model.bin of artifact 'openvino' does not match the manifest "
                                             r"\(sha256 [0-9a-f]+\.\.\., manifest details.files"):
        Classifier(bundle, backend="openvino", artifact="openvino")
    assert Classifier(bundle, backend="openvino", artifact="openvino", verify=False).artifact.name == "openvino"


def test_each_file_is_hashed_once_per_load(onnx_bundle, monkeypatch):
    from edgecls import bundle as integrity
    from edgecls.runtime import Classifier

    seen = []
    real = integrity.sha256_of
    monkeypatch.setattr(integrity, "sha256_of", lambda p: seen.append(Path(p).name) or real(p))
    Classifier(onnx_bundle, backend="onnxruntime", artifact="onnx")
    assert seen == ["model.onnx"]


def test_a_verified_file_is_not_hashed_again_until_it_changes(onnx_bundle, tmp_path, monkeypatch):
    """The second load of an unchanged bundle reads no model bytes (the record of what this user verified, keyed by
    device, inode, size, mtime and ctime); a rewrite of the same bytes' length with its mtime put back, and a copy
    renamed over it, are hashed again and refused."""
    import os

    from edgecls import bundle as integrity
    from edgecls.runtime import Classifier

    monkeypatch.setenv("EDGECLS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(integrity, "_SETTLED_SECONDS", 0.0)  # the fixture's files are seconds old
    seen = []
    real = integrity.sha256_of
    monkeypatch.setattr(integrity, "sha256_of", lambda p: seen.append(Path(p).name) or real(p))
    bundle = _copy(onnx_bundle, tmp_path / "b")
    model = bundle / "onnx" / "model.onnx"
    Classifier(bundle, backend="onnxruntime", artifact="onnx").close()
    assert seen == ["model.onnx"] and (tmp_path / "cache" / integrity.VERIFIED_NAME).is_file()
    Classifier(bundle, backend="onnxruntime", artifact="onnx").close()
    assert seen == ["model.onnx"]  # not read again
    from edgecls.manifest import Manifest

    art = Manifest.load(bundle / "manifest.json").artifact("onnx")
    assert integrity.already_verified(bundle, art, [model])  # so the Classifier starts no hashing thread
    monkeypatch.setenv("EDGECLS_VERIFY_CACHE", "0")
    Classifier(bundle, backend="onnxruntime", artifact="onnx").close()
    assert seen == ["model.onnx"] * 2
    monkeypatch.delenv("EDGECLS_VERIFY_CACHE")

    st = model.stat()
    data = bytearray(model.read_bytes())
    data[-4096:] = bytes(4096)  # same size, other bytes
    with open(model, "r+b") as f:
        f.write(data)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: only the ctime tells
    assert not integrity.already_verified(bundle, art, [model])
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        Classifier(bundle, backend="onnxruntime", artifact="onnx")
    assert seen[-1] == "model.onnx" and len(seen) == 3
    shutil.copyfile(bundle / "onnx-int8" / "model.onnx", tmp_path / "int8.onnx")
    os.replace(tmp_path / "int8.onnx", model)
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        Classifier(bundle, backend="onnxruntime", artifact="onnx")


def test_a_damaged_verified_record_is_ignored(onnx_bundle, tmp_path, monkeypatch):
    from edgecls import bundle as integrity
    from edgecls.runtime import Classifier

    monkeypatch.setenv("EDGECLS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / integrity.VERIFIED_NAME).write_text("[not, a record")
    Classifier(onnx_bundle, backend="onnxruntime", artifact="onnx").close()
    (tmp_path / "cache" / integrity.VERIFIED_NAME).write_text('{"x": 1, "y": [2]}')
    Classifier(onnx_bundle, backend="onnxruntime", artifact="onnx").close()


# ---------------------------------------------------------------------------------------------------------------------
# 3. resource limits


def test_threads_above_the_cpus_present_is_an_error(onnx_bundle, images, runner):
    from edgecls.runtime import Classifier, open_backend
    from edgecls.runtime.backends import usable_cpus

    most = usable_cpus()
    with pytest.raises(ConfigError, match=f"--threads {most + 1} is more than the {most} CPU"):
        Classifier(onnx_bundle, backend="onnxruntime", threads=most + 1)
    with pytest.raises(ConfigError, match=f"use threads {most} or fewer"):
        open_backend(onnx_bundle / "onnx" / "model.onnx", backend="onnxruntime", threads=most + 1)
    line = _one_error_line(runner.invoke(_cli(), ["predict", str(onnx_bundle), str(images), "--threads", "100000"]))
    assert f"--threads 100000 is more than the {most} CPU" in line and f"use --threads {most} or fewer" in line
    assert Classifier(onnx_bundle, backend="onnxruntime", threads=most).backend.info()["threads"] == most


def _huge_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit grayscale PNG of width x height, all black: a few hundred KB on disk, streamed to make."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = bytes(1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.compress(
        row * (height % 1000)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_an_image_declaring_900_mp_is_an_error_row_not_a_decode(onnx_bundle, images, tmp_path, runner):
    from edgecls.runtime import Classifier

    bomb = _huge_png(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 1_000_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = runner.invoke(_cli(), ["predict", str(onnx_bundle), str(bomb), str(images / "img00.png"),
                                    "--format", "json", "--backend", "onnxruntime", "--no-progress"])
    rows = json.loads(result.stdout)
    assert rows[0]["error"].endswith("bomb.png: the image declares 30000x30000 = 900 MP, over --max-pixels 100000000 "
                                     "(100 MP); not decoded (raise --max-pixels to read it)")
    assert "error" not in rows[1] and rows[1]["labels"] is not None
    with Classifier(onnx_bundle, backend="onnxruntime") as clf:
        with pytest.raises(DataError, match="declares 30000x30000 = 900 MP"):
            clf.predict(bomb)
        with pytest.raises(DataError, match="declares 30000x30000"):
            clf.predict(bomb.read_bytes())
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024  # KiB on Linux
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB: the image was decoded"

    small = tmp_path / "small.png"
    shutil.copyfile(images / "img00.png", small)  # 60x40 = 2400 pixels
    args = ["predict", str(onnx_bundle), str(small), "--format", "json", "--max-pixels"]
    result = runner.invoke(_cli(), [*args, "1000"])
    assert "over --max-pixels 1000" in json.loads(result.stdout)[0]["error"]
    result = runner.invoke(_cli(), [*args, "0"])
    assert "error" not in json.loads(result.stdout)[0]


def test_video_frames_over_max_pixels_are_refused(onnx_bundle, tmp_path, runner):
    from test_runtime import make_video

    video = make_video(tmp_path / "in.mp4", frames=3, size=(96, 64))
    line = _one_error_line(runner.invoke(_cli(), ["run", str(onnx_bundle), "--source", str(video), "--no-show",
                                                  "--max-pixels", "5000", "--backend", "onnxruntime"]))
    assert "frames of 96x64 = 6,144 pixels, over --max-pixels 5000" in line


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm"])
def test_header_sizes_of_every_format_match_the_decoded_image(ext):
    import io

    import cv2

    from edgecls.preprocess import header_size

    img = np.zeros((37, 53, 3), np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok and header_size(io.BytesIO(buf.tobytes())) == (53, 37)


def test_headers_declaring_huge_sizes_are_refused_in_every_format():
    from edgecls.preprocess import decode_image

    bmp = b"BM" + bytes(12) + struct.pack("<Iii", 40, 40000, 40000) + bytes(40)
    gif = b"GIF89a" + struct.pack("<HH", 60000, 60000) + bytes(30)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + struct.pack("<HHII", 256, 4, 1, 50000) + \
        struct.pack("<HHII", 257, 4, 1, 50000) + bytes(8)
    webp = b"RIFF" + bytes(4) + b"WEBPVP8X" + bytes(8) + (40000 - 1).to_bytes(3, "little") + \
        (40000 - 1).to_bytes(3, "little") + bytes(8)
    jpeg = b"\xff\xd8\xff\xe0" + struct.pack(">H", 16) + bytes(14) + b"\xff\xc0" + struct.pack(">HBHH", 17, 8, 50000,
                                                                                               50000) + bytes(20)
    for name, data in (("bmp", bmp), ("gif", gif), ("tiff", tiff), ("webp", webp), ("jpeg", jpeg)):
        with pytest.raises(DataError, match=r"declares \d+x\d+ = [\d,]+ MP, over --max-pixels"):
            decode_image(data, name=name)
    with pytest.raises(DataError, match="not an image format whose size edgecls can check.*--max-pixels 0"):
        decode_image(b"\x00\x01 not any image format we know" * 4, name="odd")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_manifest_img_size_that_disagrees_with_the_model_is_an_error(onnx_bundle, tmp_path, backend):
    from edgecls.runtime import Classifier

    if backend == "openvino":
        pytest.importorskip("openvino")
    bundle = _copy(onnx_bundle, tmp_path / "b")
    _edit_manifest(bundle, lambda d: d["preprocess"].update(img_size=48))
    with pytest.raises(ConfigError, match=r"preprocess.img_size is 48, but the model model.onnx takes input "
                                          r"\?x3x32x32 .*re-export"):
        Classifier(bundle, backend=backend, artifact="onnx")


# ---------------------------------------------------------------------------------------------------------------------
# 4. every malformed manifest is one line


def _not_utf8(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b'"tiny"', b'"tin\xff"'))


def _json(edit):
    def apply(path: Path) -> None:
        data = json.loads(path.read_text())
        path.write_text(json.dumps(edit(data)))

    return apply


def _drop(data: dict, key: str) -> dict:
    data.pop(key)
    return data


MALFORMED = {
    "not utf-8": (_not_utf8, r"manifest.json: not UTF-8 text \(byte 0xff at offset \d+\)"),
    "a json list": (_json(lambda d: [d]), r"manifest.json: a manifest is a JSON object .*got a list"),
    "schema version a string": (_json(lambda d: {**d, "schema_version": "1"}),
                                r"manifest.json: field schema_version must be an integer .*got a string '1'"),
    "no preprocess": (_json(lambda d: _drop(d, "preprocess")), r"manifest.json: missing field\(s\) preprocess"),
    "artifact without sha256": (_json(lambda d: {**d, "artifacts": [_drop(d["artifacts"][0], "sha256")]}),
                                r"manifest.json: artifacts\[0\] \('onnx'\): missing field\(s\) sha256"),
    "artifacts null": (_json(lambda d: {**d, "artifacts": None}),
                       r"manifest.json: field artifacts must be a list, got null"),
    "preprocess not an object": (_json(lambda d: {**d, "preprocess": 224}),
                                 r"manifest.json: field preprocess must be an object, got a number"),
    "an artifact that is a string": (_json(lambda d: {**d, "artifacts": ["onnx/model.onnx"]}),
                                     r"manifest.json: artifacts\[0\] must be a JSON object, got a string"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_manifest_is_one_line_naming_file_and_field(onnx_bundle, images, tmp_path, runner, case):
    import re

    from edgecls.runtime import Classifier

    breaker, message = MALFORMED[case]
    bundle = _copy(onnx_bundle, tmp_path / "b")
    breaker(bundle / "manifest.json")
    with pytest.raises(ConfigError, match=message):
        Classifier(bundle)
    line = _one_error_line(runner.invoke(_cli(), ["predict", str(bundle), str(images)]))
    assert re.search(message, line) and str(bundle / "manifest.json") in line, line
    result = runner.invoke(_cli(), ["doctor", str(bundle)])
    assert result.exit_code == 1 and re.search(message, result.output) and "Traceback" not in result.output


def _lie(bundle: Path, name: str, data: bytes, file: str) -> None:
    """Replace an artifact file with ``data`` and make the manifest record its sha256 (a bundle that lies)."""
    import hashlib

    (bundle / file).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    def edit(d):
        art = _artifact(d, name)
        if art["path"] == file:
            art["sha256"] = digest
        art["details"]["files"][file] = digest

    _edit_manifest(bundle, edit)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_model_file_that_is_not_a_model_is_one_line(onnx_bundle, full_bundle, images, tmp_path, runner, backend):
    from edgecls.runtime import Classifier

    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    bundle = _copy(onnx_bundle if backend == "onnxruntime" else full_bundle, tmp_path / "b")
    _lie(bundle, "onnx", noise, "onnx/model.onnx")
    with pytest.raises(ConfigError, match=r"onnx/model.onnx: not an ONNX model \(its bytes do not parse as one\), so "
                                          f"{backend} cannot load it"):
        Classifier(bundle, backend=backend, artifact="onnx")
    line = _one_error_line(runner.invoke(_cli(), ["predict", str(bundle), str(images), "--artifact", "onnx",
                                                  "--backend", backend]))
    assert "not an ONNX model" in line
    if backend == "openvino":
        _lie(bundle, "openvino", noise, "openvino/model.xml")
        with pytest.raises(ConfigError, match=r"openvino/model.xml: not an OpenVINO IR \(.xml\)"):
            Classifier(bundle, backend="openvino", artifact="openvino")
        _lie(bundle, "openvino", b"<?xml version='1.0'?><net name='x'><layers>", "openvino/model.xml")
        with pytest.raises(ConfigError, match="openvino cannot read this model file"):
            Classifier(bundle, backend="openvino", artifact="openvino")


# ---------------------------------------------------------------------------------------------------------------------
# 17. one precision name


def test_doctor_predict_and_info_name_the_same_precision(full_bundle, images, runner):
    from edgecls.runtime import Classifier, doctor_report

    for artifact, backend, name in (("openvino-int8", "openvino", "int8"), ("onnx-int8", "onnxruntime", "int8"),
                                    ("openvino", "openvino", "fp16 (f32 compute)"), ("onnx", "onnxruntime", "fp32")):
        report = doctor_report(full_bundle, artifact=artifact, backend=backend)
        assert report.error is None and report.choices[0]["precision"] == name, artifact
        with Classifier(full_bundle, artifact=artifact, backend=backend) as clf:
            assert clf.info()["precision"] == clf.precision_name == name
        doctor = runner.invoke(_cli(), ["doctor", str(full_bundle), "--artifact", artifact, "--backend", backend])
        assert f"precision {name}\n" in doctor.output, doctor.output
        result = runner.invoke(_cli(), ["predict", str(full_bundle), str(images), "--artifact", artifact,
                                        "--backend", backend])
        assert result.exit_code == 0 and f"precision {name}" in result.stderr, result.output


# ---------------------------------------------------------------------------------------------------------------------
# 19. Classifier.predict with a list


def test_classifier_predict_takes_a_list_like_predict_batch(onnx_bundle, images):
    from edgecls.runtime import Classifier

    paths = sorted(images.glob("*.*"))
    with Classifier(onnx_bundle, backend="onnxruntime") as clf:
        many = clf.predict([str(p) for p in paths])
        assert isinstance(many, list) and [p.source for p in many] == [str(p) for p in paths]
        batch = clf.predict_batch(paths)
        assert all(np.allclose(a.probs, b.probs) and a.labels == b.labels for a, b in zip(many, batch))
        assert clf.predict(tuple(paths))[0].labels == batch[0].labels
        assert clf.predict(paths[0]).labels == batch[0].labels
        with pytest.raises(ConfigError, match="predict_batch takes a list of images.*use predict"):
            clf.predict_batch(str(paths[0]))
