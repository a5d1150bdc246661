"""Shared fixtures: a tiny synthetic dataset made in a temp folder and a tiny real backbone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AQUARIUM = REPO.parent / "shared" / "datasets" / "aquarium"

# Tests run on 2 shared cores: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY_BACKBONE = "timm:test_efficientnet"


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory):
    """Engine caches and the verified-file record go to a folder of this run, not the user's ~/.cache (subprocesses
    inherit it through the environment)."""
    before = os.environ.get("EDGECLS_CACHE_DIR")
    os.environ["EDGECLS_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgecls-cache"))
    yield
    if before is None:
        os.environ.pop("EDGECLS_CACHE_DIR", None)
    else:
        os.environ["EDGECLS_CACHE_DIR"] = before


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """click's CliRunner for the real `edgecls` commands, with a home and a cache folder of the test's own."""
    from click.testing import CliRunner

    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDGECLS_CACHE_DIR", str(tmp_path / "cache"))
    return CliRunner()


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """60 synthetic 64-px images with labels.csv (seeded split by load_dataset)."""
    from edgecls.synth import generate_synthetic

    out = tmp_path_factory.mktemp("synth") / "data"
    generate_synthetic(out, n=60, seed=0, img_size=64)
    return out


@pytest.fixture
def aquarium() -> Path:
    if not (AQUARIUM / "data.yaml").is_file():
        pytest.skip(f"real dataset absent: {AQUARIUM} (see DEVELOPERS.md; tests that need it skip elsewhere)")
    return AQUARIUM


@pytest.fixture
def tiny_config():
    """Build a TrainConfig for a seconds-long run of the tiny backbone; keyword overrides change any field."""
    from edgecls.config import build_config
    from edgecls.train.config import TrainConfig

    def make(data: Path, out: Path, **extra):
        base = dict(
            data=str(data), out=str(out), backbone=TINY_BACKBONE, pretrained=False, img_size=64, epochs=2,
            batch_size=16, workers=0, progress=False, lr=3e-3, amp=False, strategy="finetune",
        )
        base.update(extra)
        return build_config(TrainConfig, overrides=base)

    return make
