"""edgecls.synth: the embedded shapes dataset is reproducible, refuses to overwrite, and loads as a dataset."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from edgecls.data import load_dataset
from edgecls.errors import ConfigError, DataError
from edgecls.preprocess import decode_image
from edgecls.synth import SYNTH_CLASSES, generate_synthetic


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    labels = generate_synthetic(tmp_path / "a", n=30, seed=7, img_size=64)
    assert labels == tmp_path / "a" / "labels.csv"
    generate_synthetic(tmp_path / "b", n=30, seed=7, img_size=64)
    generate_synthetic(tmp_path / "c", n=30, seed=8, img_size=64)
    fa, fb, fc = files_of(tmp_path / "a"), files_of(tmp_path / "b"), files_of(tmp_path / "c")
    assert len(fa) == 31 and "images/img_00000.jpg" in fa and "images/img_00029.jpg" in fa
    assert fa == fb
    assert fa["labels.csv"] != fc["labels.csv"] and fa["images/img_00000.jpg"] != fc["images/img_00000.jpg"]
    # the first images do not depend on n
    fd = files_of(generate_synthetic(tmp_path / "d", n=5, seed=8, img_size=64).parent)
    assert sorted(fd) == ["images/" + f"img_{i:05d}.jpg" for i in range(5)] + ["labels.csv"]
    assert all(fd[k] == fc[k] for k in fd if k.startswith("images/"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left behind


def test_labels_file_layout_and_contents(tmp_path):
    labels = generate_synthetic(tmp_path / "s", n=200, seed=0, img_size=48, unknown_fraction=0.05)
    rows = list(csv.reader(labels.read_text().splitlines()))
    assert rows[0] == ["filename", *SYNTH_CLASSES] and len(SYNTH_CLASSES) == 6
    body = rows[1:]
    assert [r[0] for r in body] == [f"img_{i:05d}.jpg" for i in range(200)]
    values = np.array([r[1:] for r in body])
    assert set(values.ravel()) == {"0", "1", "NA"}
    na = (values == "NA").mean()
    assert 0.02 < na < 0.09
    positives = (values == "1").sum(axis=1)
    assert (positives == 0).any() and (positives >= 2).any() and positives.max() <= 4
    assert ((values == "1").sum(axis=0) > 20).all()  # every kind is common
    image = decode_image(tmp_path / "s" / "images" / "img_00003.jpg")
    assert image.shape == (48, 48, 3) and image.std() > 5


def test_refuses_an_existing_folder_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"out: folder exists and is not empty; .*--force"):
        generate_synthetic(out, n=3, img_size=32)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(DataError, match=r"refusing to replace it with --force: .*not a dataset made by"):
        generate_synthetic(out, n=3, img_size=32, overwrite=True)  # issue 10: --force replaces only its own output
    assert (out / "keep.txt").read_text() == "mine"
    ours = tmp_path / "ours"
    generate_synthetic(ours, n=5, img_size=32)
    generate_synthetic(ours, n=3, img_size=32, overwrite=True)
    assert len(list((ours / "images").iterdir())) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_synthetic(empty, n=2, img_size=32).is_file()  # an empty folder is fine
    with pytest.raises(ConfigError, match="img_size"):
        generate_synthetic(tmp_path / "x", n=2, img_size=8)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="afile: exists and is a file"):
        generate_synthetic(tmp_path / "afile", n=2, img_size=32)


def test_load_dataset_reads_the_synthetic_output(tmp_path):
    generate_synthetic(tmp_path / "s", n=40, seed=1, img_size=48, unknown_fraction=0.1)
    ds = load_dataset(tmp_path / "s", seed=0)
    assert ds.format == "labels" and ds.class_names == SYNTH_CLASSES and ds.skipped == []
    assert ds.split_source == "seeded" and set(ds.splits) == {"train", "valid", "test"}
    assert sum(len(s) for s in ds.splits.values()) == 40
    known = np.concatenate([s.known() for s in ds.splits.values()])
    assert not known.all()  # NA cells became unknown labels
    sample = ds.split("train").samples[0]
    assert sample.path.parent == tmp_path / "s" / "images" and sample.path.is_file()


def _tamper(folder, how):
    if how == "extra file":
        (folder / "notes.txt").write_text("mine")
    elif how == "other image":
        (folder / "images" / "holiday.jpg").write_bytes(b"mine")
    elif how == "other header":
        (folder / "labels.csv").write_text("filename,cat,dog\nimg_00000.jpg,1,0\n")
    elif how == "subfolder":
        (folder / "images" / "img_00099.jpg").mkdir()


@pytest.mark.parametrize("how", ["extra file", "other image", "other header", "subfolder"])
def test_force_refuses_a_folder_that_synth_did_not_make(tmp_path, how):
    out = tmp_path / "data"
    generate_synthetic(out, n=2, img_size=32)
    _tamper(out, how)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(DataError, match="refusing to replace it with --force"):
        generate_synthetic(out, n=2, img_size=32, overwrite=True)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before


def test_force_never_replaces_the_current_folder_home_or_root(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgecls.cli import cli

    home = tmp_path / "home"
    generate_synthetic(home, n=2, img_size=32)  # even when it looks like a synthetic dataset
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(DataError, match="it is the home folder"):
        generate_synthetic(home, n=2, img_size=32, overwrite=True)

    data = tmp_path / "data"
    generate_synthetic(data, n=2, img_size=32)
    monkeypatch.chdir(data)
    result = CliRunner().invoke(cli, ["data", "synth", ".", "--n", "2", "--img-size", "32", "--force"])
    assert result.exit_code == 1 and "it is the current folder or holds it" in result.output
    assert "Traceback" not in result.output and (data / "labels.csv").is_file()
    monkeypatch.chdir(data / "images")
    result = CliRunner().invoke(cli, ["data", "synth", str(data), "--n", "2", "--img-size", "32", "--force"])
    assert result.exit_code == 1 and "it is the current folder or holds it" in result.output
    with pytest.raises(DataError, match="refusing to replace it with --force: it is"):  # above the cwd, and root
        generate_synthetic("/", n=2, img_size=32, overwrite=True)


def test_leftovers_of_a_killed_synth_are_removed_by_the_next_run(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    left = tmp_path / f".data.{proc.pid}-abcd1234.tmp"
    (left / "images").mkdir(parents=True)
    (left / "images" / "img_00000.jpg").write_bytes(b"half")
    foreign = tmp_path / ".data.backup"
    foreign.mkdir()
    generate_synthetic(tmp_path / "data", n=2, img_size=32)
    assert not left.exists() and foreign.is_dir()
