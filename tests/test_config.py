import pytest

from edgecls.config import build_config, dump_yaml
from edgecls.errors import ConfigError
from edgecls.train.config import Strategy, TrainConfig


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: d\nout: o\nencoder-lr-scale: 0.05\nstrategy: staged\nepochs: 3\nclasses: a,b\n")
    cfg = build_config(TrainConfig, yaml_path=path, overrides={"epochs": 7})
    assert cfg.encoder_lr_scale == 0.05 and cfg.strategy is Strategy.STAGED and cfg.epochs == 7
    assert cfg.classes == ("a", "b")


def test_unknown_yaml_key_names_file_and_closest_key(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data: d\nout: o\nencoder_lr_scal: 0.1\n")
    expected = r"train\.yaml: unknown key 'encoder_lr_scal'; did you mean 'encoder_lr_scale'"
    with pytest.raises(ConfigError, match=expected):
        build_config(TrainConfig, yaml_path=path)


def test_invalid_enum_lists_choices():
    with pytest.raises(ConfigError, match="invalid strategy 'finetun'; valid: auto, freeze, finetune, full, staged"):
        build_config(TrainConfig, overrides={"data": "d", "out": "o", "strategy": "finetun"})


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: d\nout: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml line \d+: not valid YAML"):
        build_config(TrainConfig, yaml_path=path)


def test_cache_features_needs_freeze():
    with pytest.raises(ConfigError, match="--cache-features needs --strategy freeze"):
        TrainConfig(data="d", out="o", cache_features=True)


def test_defaults_auto_and_threshold_rule_checks():
    cfg = TrainConfig(data="d", out="o")
    assert cfg.strategy is Strategy.AUTO and cfg.threshold_rule == "shrink" and cfg.lr == 3e-3
    with pytest.raises(ConfigError, match="--threshold-rule 'median': valid: per-class, global, shrink, floor"):
        build_config(TrainConfig, overrides={"data": "d", "out": "o", "threshold_rule": "median"})
    with pytest.raises(ConfigError, match="--threshold-strength must be a number >= 0"):
        TrainConfig(data="d", out="o", threshold_strength=-1.0)
    with pytest.raises(ConfigError, match="head_epochs must be at least 1"):
        TrainConfig(data="d", out="o", head_epochs=0)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = build_config(TrainConfig, overrides={"data": "d", "out": "o", "classes": "x,y", "grad_clip": 1.0})
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert build_config(TrainConfig, yaml_path=path) == cfg


def test_teachers_are_a_list_and_a_saved_single_teacher_or_none_still_loads(tmp_path):
    """--teacher became repeatable: run folders saved before it (``teacher: null`` or one path) still resume."""
    path = tmp_path / "old.yaml"
    path.write_text("data: d\nout: o\nteacher: null\n")
    assert build_config(TrainConfig, yaml_path=path).teacher == ()
    path.write_text("data: d\nout: o\nteacher: /runs/lite2\n")
    assert build_config(TrainConfig, yaml_path=path).teacher == ("/runs/lite2",)
    cfg = build_config(TrainConfig, overrides={"data": "d", "out": "o", "teacher": ("/runs/a", "/runs/b")})
    path.write_text(dump_yaml(cfg))
    assert build_config(TrainConfig, yaml_path=path).teacher == ("/runs/a", "/runs/b")


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """mkstemp makes 0600 files; an atomic write must end with what a plain open() would give under the umask."""
    import subprocess
    import sys

    code = ("import os; os.umask(0o022); from edgecls._io import atomic_write_text; "
            f"p = atomic_write_text({str(tmp_path / 'out.json')!r}, '{{}}'); print(oct(os.stat(p).st_mode & 0o777))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0o644"


def test_one_unknown_key_check_names_the_closest_field_everywhere():
    """config.check_keys is the one check: YAML configs, preprocessing, manifests, metrics and parity records all
    name where the record came from, each unknown key with its closest valid one, and the valid names."""
    import numpy as np

    from edgecls.config import check_keys
    from edgecls.export.parity import Budgets, ParityReport
    from edgecls.manifest import Manifest
    from edgecls.metrics import compute_metrics
    from edgecls.preprocess import PreprocessSpec

    with pytest.raises(ConfigError, match=r"^preprocessing: unknown field 'img_siz'; did you mean 'img_size'\? "
                                          r"\(valid fields: img_size, resize, "):
        PreprocessSpec.from_dict({"img_siz": 64})
    manifest = Manifest(class_names=("a",), preprocess=PreprocessSpec(img_size=32), backbone="x", thresholds=(0.5,))
    with pytest.raises(ConfigError, match=r"^m\.json: unknown field 'tresholds'; did you mean 'thresholds'\?"):
        Manifest.from_dict({**manifest.to_dict(), "tresholds": [0.5]}, where="m.json")
    with pytest.raises(ConfigError, match=r"^parity budgets: unknown field 'max_map_dorp'; did you mean 'max_map_dr"):
        Budgets.from_dict({"max_map_dorp": 0.01})
    with pytest.raises(ConfigError, match=r"^parity report: unknown field 'pased'; did you mean 'passed'"):
        ParityReport.from_dict({"pased": True})
    report = compute_metrics(np.array([[0.7], [0.2]]), np.array([[1], [0]]), None, ["a"]).to_dict()
    with pytest.raises(ConfigError, match=r"^metrics report: unknown fields 'mAP' \(did you mean 'map'\?\), 'zz' "
                                          r"and missing field\(s\) hamming_loss \(valid fields: map, "):
        type(compute_metrics(np.array([[0.7]]), np.array([[1]]), None, ["a"])).from_dict(
            {**{k: v for k, v in report.items() if k != "hamming_loss"}, "mAP": 1.0, "zz": 0})
    with pytest.raises(ConfigError, match=r"^run\.yaml: unknown key 'lr-rate' \(valid keys: lr, epochs\)$"):
        check_keys(["lr", "epochs"], {"lr-rate": 1}, "run.yaml", noun="key", dashes=True)
    check_keys(["encoder_lr_scale"], {"encoder-lr-scale": 1}, "flags", dashes=True)  # the flag spelling is fine
    with pytest.raises(ConfigError, match=r"^x: expected a mapping of fields, got list"):
        check_keys(["a"], [1], "x")


def test_resize_modes_and_the_train_config_enum_are_one_list():
    from edgecls.preprocess import RESIZE_MODES, PreprocessSpec, Resize
    from edgecls.train import config as train_config

    assert train_config.Resize is Resize and RESIZE_MODES == tuple(m.value for m in Resize) == ("squash", "shorter")
    assert PreprocessSpec().resize == "squash" and type(PreprocessSpec().resize) is str  # manifests keep plain strings
    with pytest.raises(ConfigError, match="invalid resize 'crop'; valid: squash, shorter"):
        build_config(TrainConfig, overrides={"data": "d", "out": "o", "resize": "crop"})
