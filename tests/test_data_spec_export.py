"""The DataSpec through a real training run, export, `edgecls parity` and bench: one split for all of them, and old
(pre-spec) checkpoints and bundles still load the same split.

Runs in the exporters' own pytest process (see the Makefile's EXPORT_TESTS).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecls.data import DataSpec, load_dataset

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

SPLIT = {"seed": 3, "val_fraction": 0.3, "test_fraction": 0.2}  # not the defaults: proves the spec is what's used
FAST = dict(warmup=1, iters=5, min_seconds=0.0, max_seconds=0.3, batch=(1,), threads=1, torch_variants=(),
            isolate=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(data, checkpoint, bundle) of a one-epoch tiny run on a seeded split that is not the default one."""
    from edgecls.config import build_config
    from edgecls.export import ExportConfig, export
    from edgecls.synth import generate_synthetic
    from edgecls.train.config import TrainConfig
    from edgecls.train.loop import fit

    root = tmp_path_factory.mktemp("specexport")
    data = root / "data"
    generate_synthetic(data, n=40, img_size=32, seed=2)
    cfg = build_config(TrainConfig, overrides=dict(
        data=str(data), out=str(root / "run"), backbone="timm:test_efficientnet", pretrained=False, img_size=32,
        epochs=1, batch_size=16, workers=0, progress=False, amp=False, strategy="finetune", **SPLIT))
    ckpt = fit(cfg).best_checkpoint
    bundle = root / "bundle"
    export(ExportConfig(checkpoint=str(ckpt), targets=("onnx",), data=str(data), out=str(bundle),
                        allow_parity_failure=True))
    return data, Path(ckpt), bundle


def _expected(data: Path, split: str):
    return load_dataset(data, **SPLIT).split(split)


def _names(paths, root: Path) -> list[str]:
    return [Path(os.path.relpath(p, root)).as_posix() for p in paths]


def _old_bundle(bundle: Path, out: Path, data: Path) -> Path:
    """``bundle`` with its parity.json ``data`` entry as edgecls wrote it before the DataSpec."""
    old = shutil.copytree(bundle, out)
    doc = json.loads((old / "parity.json").read_text())
    doc["data"] = {"path": str(data.absolute()), "split": "valid", "classes": None, **SPLIT}
    (old / "parity.json").write_text(json.dumps(doc))
    return old


def test_the_checkpoint_and_the_bundle_carry_the_spec(run):
    from edgecls.train.checkpoint import load_checkpoint

    data, ckpt, bundle = run
    spec = DataSpec(source=str(data), format="labels", splits=("train", "valid", "test"), **SPLIT)
    assert load_checkpoint(ckpt).data == spec
    assert json.loads((bundle / "parity.json").read_text())["data"] == spec.to_dict()


def test_evaluate_export_and_bench_load_the_same_split(run):
    from edgecls.bench import BenchConfig
    from edgecls.bench import run as bench
    from edgecls.bundle import read_reference
    from edgecls.export.context import load_images
    from edgecls.manifest import Manifest
    from edgecls.train.checkpoint import load_checkpoint
    from edgecls.train.evaluate import evaluate

    data, ckpt, bundle = run
    valid = _expected(data, "valid")
    assert valid.paths() != load_dataset(data).split("valid").paths()  # the default split would be another one
    assert evaluate(ckpt, data, split="valid", device="cpu", workers=0).paths == valid.paths()
    assert list(read_reference(bundle)["names"]) == _names(valid.paths(), data)  # the export's parity split
    calibration = load_images(load_checkpoint(ckpt), data, "train", purpose="calibration")
    assert calibration.names == _names(_expected(data, "train").paths(), data)
    result = bench(BenchConfig(bundle=str(bundle), data=str(data), **FAST))
    onnx = next(r for r in result.rows if r.artifact == "onnx")
    assert result.data["images"] == len(valid)
    assert onnx.map == pytest.approx(Manifest.load(bundle).artifact("onnx").parity["map_artifact"], abs=1e-4)


def test_an_old_bundle_rechecks_and_benches_on_the_same_split(run, tmp_path):
    from edgecls.bench import BenchConfig
    from edgecls.bench import run as bench
    from edgecls.export import check_bundle

    data, _, bundle = run
    old = _old_bundle(bundle, tmp_path / "old", data)
    stored = json.loads((bundle / "parity.json").read_text())["artifacts"]["onnx"]
    check = check_bundle(old, data, write=False)
    assert check.reports["onnx"].max_abs_diff == pytest.approx(stored["max_abs_diff"], abs=1e-7)
    result = bench(BenchConfig(bundle=str(old), data=str(data), **FAST))
    onnx = next(r for r in result.rows if r.artifact == "onnx")
    assert result.data["images"] == len(_expected(data, "valid"))
    assert onnx.map == pytest.approx(stored["map_artifact"], abs=1e-4)


def test_an_old_checkpoint_exports_the_same_parity_split(run, tmp_path):
    import torch

    from edgecls.bundle import read_reference
    from edgecls.export import ExportConfig, export

    data, ckpt, bundle = run
    payload = torch.load(ckpt, weights_only=True)
    del payload["data_spec"]  # exactly the payload edgecls wrote before the spec
    torch.save(payload, tmp_path / "old.pt")
    out = tmp_path / "bundle"
    export(ExportConfig(checkpoint=str(tmp_path / "old.pt"), targets=("onnx",), data=str(data), out=str(out),
                        allow_parity_failure=True))
    np.testing.assert_array_equal(read_reference(out)["names"], read_reference(bundle)["names"])
    written = DataSpec.from_dict(json.loads((out / "parity.json").read_text())["data"])
    assert written == DataSpec(source=str(data.absolute()), **SPLIT)  # format and split names were not recorded
