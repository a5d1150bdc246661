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
    with pytest.raises(ConfigError, match="invalid strategy 'finetun'; valid: freeze, finetune, full, staged"):
        build_config(TrainConfig, overrides={"data": "d", "out": "o", "strategy": "finetun"})


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: d\nout: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml line \d+: not valid YAML"):
        build_config(TrainConfig, yaml_path=path)


def test_cache_features_needs_freeze():
    with pytest.raises(ConfigError, match="--cache-features needs --strategy freeze"):
        TrainConfig(data="d", out="o", cache_features=True)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = build_config(TrainConfig, overrides={"data": "d", "out": "o", "classes": "x,y", "grad_clip": 1.0})
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert build_config(TrainConfig, yaml_path=path) == cfg


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """mkstemp makes 0600 files; an atomic write must end with what a plain open() would give under the umask."""
    import subprocess
    import sys

    code = ("import os; os.umask(0o022); from edgecls._io import atomic_write_text; "
            f"p = atomic_write_text({str(tmp_path / 'out.json')!r}, '{{}}'); print(oct(os.stat(p).st_mode & 0o777))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0o644"
