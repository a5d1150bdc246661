"""The DataSpec: its JSON form, the old (pre-spec) forms it is read from, the one loader, and an old checkpoint.

The exporter half (bundles, `edgecls parity`, bench) is in test_data_spec_export.py, which runs in the exporters'
own pytest process.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgecls.data import DataSpec, load_dataset, load_from_spec
from edgecls.errors import ConfigError, DataError

SPLIT = {"seed": 4, "val_fraction": 0.3, "test_fraction": 0.2}  # not the defaults: proves the spec is what's used


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from edgecls.synth import generate_synthetic

    out = tmp_path_factory.mktemp("spec") / "data"
    generate_synthetic(out, n=30, img_size=32, seed=0)
    return out


def _paths(ds) -> dict[str, list[Path]]:
    return {name: split.paths() for name, split in ds.splits.items()}


def test_round_trips_through_json():
    spec = DataSpec(source="/data/fish", format="yolo", classes=("fish", "crab"), seed=3, val_fraction=0.25,
                    test_fraction=0.0, splits=("train", "valid"))
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert DataSpec.from_dict(json.loads(json.dumps(DataSpec().to_dict()))) == DataSpec()
    assert DataSpec.from_dict({}) == DataSpec()  # missing keys take the defaults
    assert spec.to_dict()["classes"] == ["fish", "crab"] and spec.to_dict()["splits"] == ["train", "valid"]


def test_unknown_keys_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match=r"parity.json data: unknown key 'val_fraciton'; did you mean 'val_fraction'"):
        DataSpec.from_dict({"val_fraciton": 0.3}, where="parity.json data")
    with pytest.raises(ConfigError, match="unknown key 'path'"):
        DataSpec.from_dict({"path": "/data", "seed": 1})
    with pytest.raises(ConfigError, match="unknown dataset format 'parquet'; valid: labels, yolo, coco"):
        DataSpec.from_dict({"format": "parquet"})
    with pytest.raises(ConfigError, match="val_fraction must be between 0 and 1"):
        DataSpec.from_dict({"val_fraction": 0})
    with pytest.raises(ConfigError, match="invalid value 'x' for seed"):
        DataSpec.from_dict({"seed": "x"})
    with pytest.raises(ConfigError, match="expected a mapping"):
        DataSpec.from_dict(["seed"])


def test_a_loaded_dataset_records_how_it_was_loaded(data):
    ds = load_dataset(data / "labels.csv", **SPLIT)
    assert ds.spec == DataSpec(source=str(data / "labels.csv"), format="labels", classes=None,
                               splits=("train", "valid", "test"), **SPLIT)
    assert load_dataset(data, test_fraction=0.0).spec.splits == ("train", "valid")


def test_loading_from_the_spec_gives_the_same_splits(data):
    ds = load_dataset(data, **SPLIT)
    spec = DataSpec.from_dict(json.loads(json.dumps(ds.spec.to_dict())))
    assert _paths(load_from_spec(spec)) == _paths(ds)  # from the recorded source
    assert _paths(load_from_spec(spec, data=data)) == _paths(ds)
    assert _paths(load_from_spec(DataSpec(), data=data)) == _paths(load_dataset(data))  # the defaults are the same
    assert _paths(ds) != _paths(load_dataset(data))  # ... and differ from this spec's split


def test_the_loader_refuses_data_with_other_classes(data):
    spec = load_dataset(data).spec
    with pytest.raises(DataError, match=r"differ from the bundle's \['x', 'y'\]; pass the dataset the bundle was "):
        load_from_spec(spec, class_names=("x", "y"), owner="bundle")
    with pytest.raises(DataError, match="differ from the checkpoint's .*evaluate on data with the same classes"):
        load_from_spec(spec, class_names=("x", "y"), owner="checkpoint")
    with pytest.raises(ConfigError, match="no dataset given"):
        load_from_spec(DataSpec())


def test_old_checkpoint_configs_and_old_parity_data_are_read_as_the_spec_they_meant(data, tmp_path):
    from edgecls.config import build_config, to_plain
    from edgecls.train.config import TrainConfig

    # what a checkpoint stored before the spec: the resolved TrainConfig as a plain dict (edgecls <= this change)
    config = to_plain(build_config(TrainConfig, overrides={"data": str(data), "out": str(tmp_path), "classes": None,
                                                           **SPLIT}))
    old_ckpt = DataSpec.from_legacy(config)
    assert old_ckpt == DataSpec(source=str(data), **SPLIT)
    # what a bundle's parity.json stored as "data" before the spec
    old_parity = {"path": str(data), "split": "valid", "classes": None, **SPLIT}
    assert DataSpec.from_bundle(old_parity) == old_ckpt
    assert DataSpec.from_bundle({**old_parity, "classes": ["a", "b"]}).classes == ("a", "b")
    assert DataSpec.from_bundle({}) == DataSpec()  # no parity.json: the defaults, as before
    assert DataSpec.from_legacy({}) == DataSpec()
    assert _paths(load_from_spec(old_ckpt)) == _paths(load_dataset(data, **SPLIT))


def test_the_split_defaults_are_defined_once():
    import edgecls.data.spec as spec
    from edgecls.data import iterative_stratification
    from edgecls.train.config import TrainConfig

    defaults = {name: p.default for name, p in inspect.signature(load_dataset).parameters.items()}
    assert (defaults["seed"], defaults["val_fraction"], defaults["test_fraction"]) == (
        spec.DEFAULT_SEED, spec.DEFAULT_VAL_FRACTION, spec.DEFAULT_TEST_FRACTION)
    assert inspect.signature(iterative_stratification).parameters["seed"].default == spec.DEFAULT_SEED
    cfg = TrainConfig(data="d", out="o")
    assert (cfg.seed, cfg.val_fraction, cfg.test_fraction) == (DataSpec().seed, DataSpec().val_fraction,
                                                                DataSpec().test_fraction)


def test_one_image_extension_list_for_datasets_and_the_runtime():
    import edgecls.data
    import edgecls.preprocess
    import edgecls.runtime.files

    assert edgecls.data.IMAGE_EXTENSIONS is edgecls.preprocess.IMAGE_EXTENSIONS
    assert edgecls.runtime.files.IMAGE_EXTENSIONS is edgecls.preprocess.IMAGE_EXTENSIONS


def test_the_spec_imports_without_torch():
    code = ("import sys; from edgecls.data import DataSpec, load_from_spec; DataSpec.from_dict({'seed': 1}); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory):
    """(new, old) checkpoint files of one tiny model: the new one stores the spec, the old one (as written before
    the spec existed) only the training config."""
    torch = pytest.importorskip("torch")
    from edgecls.config import build_config, to_plain
    from edgecls.synth import SYNTH_CLASSES
    from edgecls.train.backbones import ModelSpec, build_model, default_preprocess
    from edgecls.train.checkpoint import Checkpoint, save_checkpoint
    from edgecls.train.config import TrainConfig

    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    spec = ModelSpec(backbone="timm:test_efficientnet", class_names=SYNTH_CLASSES)
    cfg = build_config(TrainConfig, overrides={"data": str(data), "out": str(root), "img_size": 32, **SPLIT})
    ckpt = Checkpoint(model_spec=spec, preprocess=default_preprocess(spec.backbone, 32),
                      state_dict=build_model(spec, pretrained=False).state_dict(), config=to_plain(cfg),
                      data=load_dataset(data, **SPLIT).spec)
    new = save_checkpoint(ckpt, root / "new.pt")
    payload = torch.load(new, weights_only=True)
    assert payload["data_spec"] == ckpt.data.to_dict()
    del payload["data_spec"]  # exactly the payload edgecls wrote before the spec
    torch.save(payload, root / "old.pt")
    return new, root / "old.pt"


def test_checkpoint_stores_the_spec_and_an_old_one_reads_it_from_its_config(checkpoints, data):
    from edgecls.train.checkpoint import load_checkpoint

    new, old = (load_checkpoint(p) for p in checkpoints)
    assert new.data == new.data_spec == load_dataset(data, **SPLIT).spec
    assert old.data is None
    assert old.data_spec == DataSpec(source=str(data), **SPLIT)  # no format or split names recorded back then


def test_evaluate_gives_the_same_split_for_old_and_new_checkpoints(checkpoints, data):
    from edgecls.train.evaluate import evaluate

    expected = load_dataset(data, **SPLIT).split("valid").paths()
    for path in checkpoints:
        assert evaluate(path, data, split="valid", device="cpu", workers=0).paths == expected


def test_a_bad_spec_in_a_checkpoint_is_one_clear_error(checkpoints, tmp_path):
    import torch

    from edgecls.train.checkpoint import load_checkpoint

    payload = torch.load(checkpoints[0], weights_only=True)
    payload["data_spec"]["val_fraktion"] = 0.5
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"bad\.pt: data_spec: unknown key 'val_fraktion'"):
        load_checkpoint(tmp_path / "bad.pt")
