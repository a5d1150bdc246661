"""ExecuTorch: the executorch / executorch-int8 export targets (a .pte with the XNNPACK delegate; need the
``executorch`` extra, skipped without it) checked through ExecuTorch's Python runtime at export, and how the rest of
edgecls treats a bundle that holds one: predict, run, serve and bench never choose it, asking for it is one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgecls._deps import has

REPO = Path(__file__).resolve().parents[1]
ON_DEVICE = "run on-device through ExecuTorch's runtime"
needs_executorch = pytest.mark.skipif(
    not (has("executorch") and has("torch")),
    reason='executorch not installed (pip install "edgecls[executorch]"; it pins antlr4-python3-runtime 4.9, which '
           "moto[server] in the dev extra does not run with, so it lives in its own environment)")


def test_executorch_targets_are_registered_with_their_extra():
    from edgecls.export.targets import get_target

    for name, precision in (("executorch", "fp32"), ("executorch-int8", "int8")):
        target = get_target(name)
        assert (target.format, target.suffix, target.precision, target.extra) == \
            ("executorch", ".pte", precision, "executorch")
        assert target.execute is not None  # parity through ExecuTorch's runtime, not a runtime backend
        ok, why = target.available()
        assert ok or 'pip install "edgecls[executorch]"' in why


def test_without_executorch_the_target_is_one_line_naming_the_extra(tmp_path):
    """executorch made unimportable in a subprocess (absent in the main environment anyway): `edgecls export
    --target executorch` fails before reading the checkpoint, in one line that names the extra."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "executorch":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
from click.testing import CliRunner
from edgecls.cli import cli
res = CliRunner().invoke(cli, ["export", {str(tmp_path / "missing.pt")!r}, "--target", "executorch-int8",
                               "--data", {str(tmp_path)!r}, "--out", {str(tmp_path / "b")!r}])
print(res.exit_code)
print(res.output)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    code_line, *lines = out.stdout.strip().splitlines()
    assert code_line != "0" and len(lines) == 1, out.stdout
    assert "target executorch-int8: executorch not installed" in lines[0]
    assert 'pip install "edgecls[executorch]"' in lines[0] and "Traceback" not in out.stdout
    assert not (tmp_path / "b").exists()


@pytest.fixture
def pte_bundle(onnx_bundle, tmp_path):
    """The runtime tests' tiny ONNX bundle plus an ExecuTorch artifact, as the exporter records one."""
    from edgecls._io import sha256_file
    from edgecls.manifest import Artifact, Manifest

    root = shutil.copytree(onnx_bundle["root"], tmp_path / "bundle")
    pte = root / "executorch" / "model.pte"
    pte.parent.mkdir()
    pte.write_bytes(b"\x00" * 64)  # never opened: nothing in the runtime may load it
    manifest = Manifest.load(root)
    art = Artifact("executorch", "executorch/model.pte", "executorch", "fp32", sha256_file(pte),
                   manifest.artifacts[0].thresholds, details={"edgecls_runtime": False, "batch": 1})
    replace(manifest, artifacts=(*manifest.artifacts, art)).save(root)
    return root


def test_runtime_never_chooses_a_pte_and_an_explicit_request_is_one_line(pte_bundle, runner):
    from edgecls.cli import cli
    from edgecls.errors import ConfigError
    from edgecls.runtime import Classifier
    from edgecls.runtime.plan import plan, plan_all

    pytest.importorskip("onnxruntime")
    from edgecls.manifest import DEVICE_ONLY_FORMATS, Manifest

    manifest = Manifest.load(pte_bundle)
    assert all(c.artifact.format != "executorch" for c in plan(manifest, pte_bundle))
    with Classifier(pte_bundle) as clf:
        assert clf.artifact.format == "onnx"
    for kwargs in ({}, {"backend": "onnxruntime"}):
        with pytest.raises(ConfigError, match=f"artifact 'executorch': ExecuTorch artifacts \\(.pte\\) {ON_DEVICE}"):
            Classifier(pte_bundle, artifact="executorch", **kwargs)
    with pytest.raises(ConfigError, match=ON_DEVICE):  # the .pte itself, given as the model file
        Classifier(pte_bundle / "executorch" / "model.pte")
    choices, not_run = plan_all(manifest, pte_bundle)
    assert choices and all(c.artifact.name != "executorch" for c in choices)
    assert [why for name, why in not_run if name == "executorch"] == [DEVICE_ONLY_FORMATS["executorch"]]
    images = pte_bundle.parent / "images"
    images.mkdir()
    import cv2

    cv2.imwrite(str(images / "a.png"), np.full((20, 30, 3), 128, np.uint8))
    res = runner.invoke(cli, ["predict", str(pte_bundle), str(images), "--artifact", "executorch"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert ON_DEVICE in res.output and "--artifact (onnx, onnx-int8)" in res.output
    res = runner.invoke(cli, ["predict", str(pte_bundle), str(images), "--format", "json"])
    assert res.exit_code == 0, res.output


def test_a_bundle_with_only_device_artifacts_says_so(pte_bundle):
    from edgecls.errors import ConfigError
    from edgecls.manifest import Manifest
    from edgecls.runtime.plan import plan

    manifest = Manifest.load(pte_bundle)
    only = replace(manifest, artifacts=manifest.artifacts[-1:])
    with pytest.raises(ConfigError, match=f"{ON_DEVICE}.*has no other artifact"):
        plan(only, pte_bundle)


@needs_executorch
def test_export_executorch_and_int8_with_parity_through_executorch_runtime(tmp_path, synth_small, tiny_config):
    """The tiny backbone to onnx, executorch and executorch-int8: the .pte files are XNNPACK-delegated, FP32 within
    1e-4 of PyTorch and INT8 judged by mAP drop and decision agreement through ExecuTorch's runtime, the manifest
    records both like any artifact (marked for devices), `edgecls parity` re-runs them, and predict picks the ONNX."""
    from edgecls.config import build_config
    from edgecls.export import ExportConfig, check_bundle, export
    from edgecls.manifest import Manifest, device_only
    from edgecls.train import fit

    trained = fit(tiny_config(synth_small, tmp_path / "run", epochs=1))
    bundle = tmp_path / "bundle"
    result = export(build_config(ExportConfig, overrides=dict(
        checkpoint=str(trained.best_checkpoint), data=str(synth_small), out=str(bundle),
        targets=["onnx", "executorch", "executorch-int8"], calib_size=16, max_map_drop=0.05,
        int8_min_agreement=0.8)))
    assert result.passed, result.table
    fp32, int8 = result.reports["executorch"], result.reports["executorch-int8"]
    assert fp32.precision == "fp32" and fp32.max_abs_diff <= 1e-4 and fp32.agreement == 1.0
    assert (fp32.backend, fp32.device, fp32.backend_precision) == ("executorch", "cpu", "f32")
    assert int8.precision == "int8" and int8.backend_precision == "int8"
    assert int8.map_drop <= 0.05 and int8.agreement >= 0.8 and 0 < int8.max_abs_diff < 0.5

    manifest = Manifest.load(bundle)
    for name, precision in (("executorch", "fp32"), ("executorch-int8", "int8")):
        art = manifest.artifact(name)
        assert (art.path, art.format, art.precision) == (f"{name}/model.pte", "executorch", precision)
        assert art.parity["passed"] and art.parity["backend"] == "executorch"
        assert len(art.thresholds) == len(manifest.class_names)
        assert art.details["edgecls_runtime"] is False and device_only(art)
        assert art.details["delegate_calls"] >= 1 and art.details["batch"] == 1
        assert (bundle / art.path).read_bytes()[4:8] == b"ET12"  # the ExecuTorch flatbuffer's file identifier
    int8_art = manifest.artifact("executorch-int8")
    assert int8_art.parent == "executorch" and int8_art.calibration["images"] == 16
    assert (bundle / "executorch-int8/model.pte").stat().st_size < (bundle / "executorch/model.pte").stat().st_size

    check = check_bundle(bundle, synth_small, write=False)
    assert set(check.reports) == {"onnx", "executorch", "executorch-int8"} and check.passed
    np.testing.assert_allclose(check.reports["executorch"].max_abs_diff, fp32.max_abs_diff, atol=1e-7)

    from edgecls.runtime import Classifier

    with Classifier(bundle) as clf:
        assert clf.artifact.name == "onnx"
