"""edgecls.data: label files, YOLO, COCO, seeded splits, image checks and statistics, on real files in tmp_path."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from edgecls.data import (
    Dataset,
    Split,
    format_stats,
    inspect_dataset,
    iterative_stratification,
    load_dataset,
    pos_weight_from,
)
from edgecls.errors import ConfigError, DataError

AQUARIUM = Path(__file__).resolve().parents[1].parent / "shared/datasets/aquarium"


def write_image(path: Path, value: int = 100, size: int = 16) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((size, size, 3), value % 256, np.uint8)
    img[: size // 2, : size // 2] = (value * 7) % 256
    assert cv2.imwrite(str(path), img)
    return path


def images_for(folder: Path, names: list[str], where: str = "images") -> None:
    for i, name in enumerate(names):
        write_image(folder / where / name, value=10 + 9 * i)


def by_name(split: Split) -> dict[str, tuple[list[float], list[bool]]]:
    return {s.path.name: (s.target.tolist(), s.known.tolist()) for s in split.samples}


def all_samples(ds: Dataset) -> dict[str, tuple[list[float], list[bool]]]:
    out: dict[str, tuple[list[float], list[bool]]] = {}
    for split in ds.splits.values():
        out.update(by_name(split))
    return out


# ----------------------------------------------------------------------------------------------------------------
# label files


def test_csv_with_header_and_unknown_values(tmp_path):
    images_for(tmp_path, [f"{i}.jpg" for i in range(6)])
    (tmp_path / "labels.csv").write_text(
        "filename,cat,dog,bird\n0.jpg,1,0,NA\n1.jpg,0,1,na\n2.jpg,1,,0\n3.jpg,-1,1,1\n4.jpg,0,0,0\n5.jpg,1,1,1\n"
    )
    ds = load_dataset(tmp_path)  # the folder: labels.csv is found
    assert ds.format == "labels" and ds.class_names == ("cat", "dog", "bird")
    assert ds.root == tmp_path and ds.split_source == "seeded" and ds.skipped == []
    rows = all_samples(ds)
    assert rows["0.jpg"] == ([1, 0, 0], [True, True, False])
    assert rows["1.jpg"] == ([0, 1, 0], [True, True, False])
    assert rows["2.jpg"] == ([1, 0, 0], [True, False, True])
    assert rows["3.jpg"] == ([0, 1, 1], [False, True, True])
    assert rows["5.jpg"] == ([1, 1, 1], [True, True, True])
    sample = ds.split("train").samples[0]
    assert sample.path.is_absolute() and sample.target.dtype == np.float32 and sample.known.dtype == bool
    train = ds.split("train")
    assert train.targets().shape == (len(train), 3) and train.known().dtype == bool
    assert all(p.is_absolute() for p in train.paths())


def test_no_header_assignment_format_with_classes_and_default_names(tmp_path):
    images_for(tmp_path, ["image_0.jpg", "image_1.jpg", "image_2.jpg"])
    (tmp_path / "labels.txt").write_text("image_0.jpg 1 NA 0 1\nimage_1.jpg  0 1  1 0\n\nimage_2.jpg\t0 0 0 -1\n")
    ds = load_dataset(tmp_path / "labels.txt", classes=("a", "b", "c", "d"))
    assert ds.class_names == ("a", "b", "c", "d")
    rows = all_samples(ds)
    assert rows["image_0.jpg"] == ([1, 0, 0, 1], [True, False, True, True])
    ds = load_dataset(tmp_path / "labels.txt")  # no classes=: attr1..attrK
    assert ds.class_names == ("attr1", "attr2", "attr3", "attr4")
    assert all_samples(ds)["image_2.jpg"] == ([0, 0, 0, 0], [True, True, True, False])


def test_tab_separated_with_header_and_reordered_classes(tmp_path):
    images_for(tmp_path, ["x.png", "y.png"])
    (tmp_path / "labels.tsv").write_text("file\tcat\tdog\nx.png\t1\t0\ny.png\t\t1\n")
    ds = load_dataset(tmp_path)
    assert ds.class_names == ("cat", "dog")
    assert all_samples(ds)["y.png"] == ([0, 1], [False, True])
    # the same names in another order reorder the columns
    ds = load_dataset(tmp_path, classes=["dog", "cat"])
    assert ds.class_names == ("dog", "cat")
    assert all_samples(ds)["x.png"] == ([0, 1], [True, True])
    assert all_samples(ds)["y.png"] == ([1, 0], [True, False])


def test_image_resolution_images_folder_then_label_folder_then_absolute(tmp_path):
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "b.jpg")
    abs_image = write_image(tmp_path / "elsewhere" / "c.jpg")
    (tmp_path / "labels.csv").write_text(f"a.jpg,1\nb.jpg,0\n{abs_image},1\n")
    ds = load_dataset(tmp_path / "labels.csv")
    paths = {p for split in ds.splits.values() for p in split.paths()}
    assert paths == {tmp_path / "images" / "a.jpg", tmp_path / "b.jpg", abs_image}


def test_per_split_label_files_give_the_splits(tmp_path):
    images_for(tmp_path, ["t0.jpg", "t1.jpg", "v0.jpg", "s0.jpg"])
    (tmp_path / "train.csv").write_text("filename,a,b\nt0.jpg,1,0\nt1.jpg,0,1\n")
    (tmp_path / "val.csv").write_text("filename,a,b\nv0.jpg,1,1\n")
    (tmp_path / "test.csv").write_text("filename,a,b\ns0.jpg,0,0\n")
    ds = load_dataset(tmp_path)
    assert ds.split_source == "dataset"
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 2, "valid": 1, "test": 1}
    for alias in ("val", "validation", "valid", "VAL"):
        assert ds.split(alias) is ds.splits["valid"]
    (tmp_path / "test.csv").unlink()
    ds = load_dataset(tmp_path)
    with pytest.raises(DataError, match=r"no 'test' split in this dataset; available: train, valid"):
        ds.split("test")
    (tmp_path / "test.csv").write_text("filename,a,c\ns0.jpg,0,0\n")
    with pytest.raises(DataError, match=r"test\.csv line 1: header classes \(a, c\) differ from those of train\.csv"):
        load_dataset(tmp_path)


def test_same_image_in_two_split_files_is_an_error(tmp_path):
    images_for(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "train.csv").write_text("a.jpg,1\nb.jpg,0\n")
    (tmp_path / "valid.csv").write_text("b.jpg,1\n")
    with pytest.raises(
        DataError, match=r"valid\.csv line 1: image images/b\.jpg is listed twice \(also at train\.csv line 2\)"
    ):
        load_dataset(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            (
                "filename,a,b,c,d\nx0.jpg,1,0,0,1\nx1.jpg,1,0,0,1\nx2.jpg,1,0,0,1\nx3.jpg,1,0,0,1\nx4.jpg,1,0,0,1\n"
                "x5.jpg,1,0\n"
            ),
            "labels.csv line 7: expected 5 fields (filename + 4 labels), got 3",
        ),
        (
            "filename,cat,dog\nx0.jpg,1,0\nx1.jpg,1,yes\n",
            "labels.csv line 3: unknown label value 'yes' in column 'dog'; use 1, 0 or NA",
        ),
        ("x0.jpg,1,2\n", "labels.csv line 1: unknown label value '2' in column 'attr2'; use 1, 0 or NA"),
        (
            "filename,cat,dog\nx0.jpg,1,0\nx1.jpg,0,0\nx0.jpg,1,1\n",
            "labels.csv line 4: duplicate filename 'x0.jpg' (already on line 2)",
        ),
        ("filename,cat,cat\nx0.jpg,1,0\n", "labels.csv line 1: class name(s) cat repeated in the header"),
        ("filename,cat,dog\n", "labels.csv: no samples (only a header)"),
        ("\n\n", "labels.csv: no samples (the label file is empty)"),
        ("x0.jpg\n", "labels.csv line 1: expected a filename and at least one label, got 1 field(s)"),
    ],
)
def test_bad_label_files_name_file_and_line(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "labels.csv", verify_images=False)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_class_count_mismatch_with_classes_argument(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,cat,dog\nx.jpg,1,0\n")
    with pytest.raises(
        DataError, match=r"labels\.csv line 1: the data has 2 classes \(cat, dog\) but classes= gives 3"
    ):
        load_dataset(tmp_path / "labels.csv", classes=("cat", "dog", "bird"))
    with pytest.raises(DataError, match=r"labels\.csv line 1: classes= names bird not in the data's classes"):
        load_dataset(tmp_path / "labels.csv", classes=("cat", "bird"))
    (tmp_path / "labels.csv").write_text("x.jpg 1 0 1\n")
    with pytest.raises(DataError, match=r"labels\.csv line 1: 3 label columns but classes= gives 2 names \(a, b\)"):
        load_dataset(tmp_path / "labels.csv", classes=("a", "b"))
    with pytest.raises(ConfigError, match="distinct"):
        load_dataset(tmp_path / "labels.csv", classes=("a", "a", "b"))


def test_path_and_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope: no such file or folder$"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no dataset found; expected labels\.csv"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "data.parquet").write_bytes(b"x")
    with pytest.raises(DataError, match=r"unsupported dataset file type '\.parquet'"):
        load_dataset(tmp_path / "data.parquet")
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset(tmp_path / "nope", val_fraction=0.0)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset(tmp_path / "nope", val_fraction=0.5, test_fraction=0.5)


# ----------------------------------------------------------------------------------------------------------------
# missing and corrupt images


def _dataset_with_bad_images(tmp_path: Path) -> Path:
    names = [f"ok_{i}.jpg" for i in range(8)]
    images_for(tmp_path, names)
    (tmp_path / "images" / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    rows = [f"{n},{i % 2},{(i // 2) % 2}" for i, n in enumerate(names)] + ["corrupt.jpg,1,0", "missing.jpg,0,1"]
    (tmp_path / "labels.csv").write_text("filename,a,b\n" + "\n".join(rows) + "\n")
    return tmp_path


def test_missing_and_corrupt_images_are_skipped_with_one_warning(tmp_path, caplog):
    root = _dataset_with_bad_images(tmp_path)
    with caplog.at_level(logging.WARNING, logger="edgecls.data"):
        ds = load_dataset(root)
    assert {s.path.name: s.reason for s in ds.skipped} == {
        "corrupt.jpg": "not a readable image (corrupt or unsupported format)",
        "missing.jpg": "file not found",
    }
    assert ds.skipped[0].path == root / "images" / "corrupt.jpg"
    assert sum(len(s) for s in ds.splits.values()) == 8
    names = {p.name for s in ds.splits.values() for p in s.paths()}
    assert "corrupt.jpg" not in names and "missing.jpg" not in names
    warnings = [r for r in caplog.records if r.name == "edgecls.data"]
    assert len(warnings) == 1
    assert "skipped 2 of 10 images" in warnings[0].getMessage()
    assert "images/corrupt.jpg" in warnings[0].getMessage()
    stats = inspect_dataset(ds)
    assert stats.skipped == 2 and any("2 image(s) skipped" in p for p in stats.problems)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_listed_as_an_image_is_skipped_unopened(tmp_path):
    """Opening a FIFO blocks until something writes to it: a label file that lists one gets it skipped as not a
    regular file (and loading finishes)."""
    root = _dataset_with_bad_images(tmp_path)
    os.mkfifo(root / "images" / "pipe.jpg")
    with open(root / "labels.csv", "a") as f:
        f.write("pipe.jpg,1,1\n")
    ds = load_dataset(root)
    assert {s.path.name: s.reason for s in ds.skipped}["pipe.jpg"] == "not a regular file; skipped"


def test_strict_raises_listing_bad_images(tmp_path):
    root = _dataset_with_bad_images(tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset(root, strict=True)
    message = str(err.value)
    assert "2 image(s) missing or unreadable" in message
    assert "images/corrupt.jpg (not a readable image" in message and "images/missing.jpg (file not found)" in message
    assert "\n" not in message


def test_verify_images_false_only_checks_existence(tmp_path):
    root = _dataset_with_bad_images(tmp_path)
    ds = load_dataset(root, verify_images=False)
    assert [s.path.name for s in ds.skipped] == ["missing.jpg"]
    assert sum(len(s) for s in ds.splits.values()) == 9


def test_all_images_missing_is_an_error(tmp_path):
    (tmp_path / "labels.csv").write_text("a.jpg,1\nb.jpg,0\n")
    with pytest.raises(DataError, match=r"none of the 2 images can be used"):
        load_dataset(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# seeded split


def _random_multilabel(tmp_path: Path, n: int = 120) -> Path:
    rng = np.random.default_rng(1)
    rates = [0.5, 0.3, 0.1, 0.03, 2 / n, 1 / n]  # the last classes are rare: 2 positives and 1 positive
    y = rng.random((n, len(rates))) < rates
    y[:, 4] = False
    y[[5, n - 3], 4] = True
    y[:, 5] = False
    y[n // 3, 5] = True
    images_for(tmp_path, [f"{i}.jpg" for i in range(n)])
    rows = [f"{i}.jpg," + ",".join(str(int(v)) for v in y[i]) for i in range(n)]
    (tmp_path / "labels.csv").write_text("filename,c0,c1,c2,c3,c4,c5\n" + "\n".join(rows) + "\n")
    return tmp_path


def test_seeded_split_is_deterministic_stratified_and_covers_train_and_valid(tmp_path):
    root = _random_multilabel(tmp_path)
    first = load_dataset(root, seed=3, verify_images=False)
    again = load_dataset(root, seed=3, verify_images=False)
    other = load_dataset(root, seed=4, verify_images=False)
    assert {k: v.paths() for k, v in first.splits.items()} == {k: v.paths() for k, v in again.splits.items()}
    assert {k: v.paths() for k, v in first.splits.items()} != {k: v.paths() for k, v in other.splits.items()}
    sizes = {k: len(v) for k, v in first.splits.items()}
    assert sum(sizes.values()) == 120
    assert abs(sizes["valid"] - 24) <= 3 and abs(sizes["test"] - 12) <= 3
    all_paths = [p for s in first.splits.values() for p in s.paths()]
    assert len(set(all_paths)) == 120
    for seed in range(8):
        ds = load_dataset(root, seed=seed, verify_images=False)
        totals = sum(s.targets().sum(axis=0) for s in ds.splits.values())
        for k in np.flatnonzero(totals >= 2):
            assert ds.split("train").targets()[:, k].sum() >= 1, (seed, k)
            assert ds.split("valid").targets()[:, k].sum() >= 1, (seed, k)
    # the frequent class is spread in proportion to the split sizes
    train_share = first.split("train").targets()[:, 0].sum() / totals[0]
    assert 0.6 <= train_share <= 0.8


def test_seeded_split_without_test(tmp_path):
    root = _random_multilabel(tmp_path, n=40)
    ds = load_dataset(root, test_fraction=0.0, val_fraction=0.25, verify_images=False)
    assert list(ds.splits) == ["train", "valid"]
    assert len(ds.split("valid")) in (9, 10, 11)


def test_iterative_stratification_small_inputs():
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0]], dtype=bool)
    assign = iterative_stratification(y, [0.6, 0.4], seed=0)
    for k in range(2):
        assert y[assign == 0, k].any() and y[assign == 1, k].any()
    assert iterative_stratification(np.zeros((2, 3), bool), [0.7, 0.2, 0.1], seed=0).tolist().count(1) == 1


def test_iterative_stratification_guarantee_on_many_rare_co_occurring_classes():
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        n, k = int(rng.integers(10, 60)), int(rng.integers(3, 15))
        y = rng.random((n, k)) < rng.uniform(0.02, 0.3, size=k)
        assign = iterative_stratification(y, [0.7, 0.2, 0.1], seed=seed)
        assert set(assign.tolist()) <= {0, 1, 2} and (assign == 1).any()
        for c in np.flatnonzero(y.sum(axis=0) >= 2):
            assert y[assign == 0, c].any() and y[assign == 1, c].any(), (seed, c)
        np.testing.assert_array_equal(assign, iterative_stratification(y, [0.7, 0.2, 0.1], seed=seed))


# ----------------------------------------------------------------------------------------------------------------
# YOLO


def _yolo_layout(root: Path) -> Path:
    for split, stems in (("train", ["a", "b", "c"]), ("valid", ["d", "e"])):
        for i, stem in enumerate(stems):
            write_image(root / split / "images" / f"{stem}.jpg", value=30 * i)
        (root / split / "labels").mkdir(parents=True)
    (root / "train/labels/a.txt").write_text("0 0.5 0.5 0.2 0.2\n2 0.1 0.1 0.1 0.1\n0 0.3 0.3 0.1 0.1\n")
    (root / "train/labels/b.txt").write_text("")  # empty: all negatives
    # c has no label file: all negatives too
    (root / "valid/labels/d.txt").write_text("1 0.5 0.5 0.2 0.2\n\n")
    (root / "valid/labels/e.txt").write_text("2 0.5 0.5 0.2 0.2 0.3 0.3\n")  # a polygon line counts too
    (root / "data.yaml").write_text(
        "path: .\ntrain: train/images\nval: valid/images\nnames:\n  0: fish\n  1: crab\n  2: eel\n"
    )
    return root


def test_yolo_layout(tmp_path):
    root = _yolo_layout(tmp_path / "yolo")
    ds = load_dataset(root)
    assert ds.format == "yolo" and ds.split_source == "dataset"
    assert ds.class_names == ("fish", "crab", "eel")
    assert list(ds.splits) == ["train", "valid"]
    assert by_name(ds.split("train")) == {
        "a.jpg": ([1, 0, 1], [True] * 3),
        "b.jpg": ([0, 0, 0], [True] * 3),
        "c.jpg": ([0, 0, 0], [True] * 3),
    }
    assert by_name(ds.split("val")) == {"d.jpg": ([0, 1, 0], [True] * 3), "e.jpg": ([0, 0, 1], [True] * 3)}
    # the data.yaml file itself works too, and a list of names
    (root / "data.yaml").write_text("train: train/images\nval: valid/images\nnc: 3\nnames: [fish, crab, eel]\n")
    assert load_dataset(root / "data.yaml").class_names == ("fish", "crab", "eel")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("train/labels/a.txt", "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n"),
            "train/labels/a.txt line 2: class index 7 out of range; data.yaml names 3 classes (0-2)",
        ),
        (
            ("train/labels/a.txt", "0 0.5 0.5\n"),
            "train/labels/a.txt line 1: expected 'class cx cy w h' (5 fields), got 3",
        ),
        (
            ("train/labels/a.txt", "fish 0.5 0.5 0.1 0.1\n"),
            "train/labels/a.txt line 1: class index 'fish' is not an integer",
        ),
        (
            ("data.yaml", "train: train/images\nnames: [a, b, c]\n"),
            "data.yaml: missing key(s) val; a YOLO data.yaml needs names, train and val (test is optional)",
        ),
        (("data.yaml", "train: train/images\nval: valid/images\nnames: [a, b\n"), "data.yaml line 4: not valid YAML"),
        (
            ("data.yaml", "train: train/images\nval: nowhere/images\nnames: [a, b, c]\n"),
            "data.yaml: val path 'nowhere/images' not found",
        ),
        (
            ("data.yaml", "train: train/images\nval: valid/images\nnc: 4\nnames: [a, b, c]\n"),
            "data.yaml: nc is 4 but 'names' lists 3 classes",
        ),
    ],
)
def test_yolo_errors(tmp_path, change, message):
    root = _yolo_layout(tmp_path / "yolo")
    (root / change[0]).write_text(change[1])
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert str(err.value).startswith(message)


@pytest.mark.aquarium
def test_aquarium_counts_match_its_readme():
    if not (AQUARIUM / "data.yaml").is_file():
        pytest.skip(f"real dataset absent: {AQUARIUM} (the shared aquarium dataset is not checked out here)")
    ds = load_dataset(AQUARIUM)
    assert ds.format == "yolo" and ds.split_source == "dataset" and ds.skipped == []
    assert ds.class_names == ("fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 448, "valid": 127, "test": 63}
    assert ds.split("train").targets()[:, 0].sum() == 240
    stats = inspect_dataset(ds)
    assert [c.positives for c in stats.classes] == [333, 52, 71, 66, 176, 59, 124]
    assert stats.cardinality == {0: 1, 1: 439, 2: 152, 3: 46}
    assert stats.top_pairs[:4] == (
        ("fish", "shark", 134),
        ("fish", "stingray", 80),
        ("shark", "stingray", 55),
        ("fish", "starfish", 14),
    )
    assert [c.positives for c in stats.per_split["test"]] == [30, 11, 7, 6, 14, 5, 10]


# ----------------------------------------------------------------------------------------------------------------
# COCO


def _coco(root: Path) -> Path:
    for i, name in enumerate(["p.jpg", "q.jpg", "r.jpg", "s.jpg", "t.jpg"]):
        write_image(root / "images" / name, value=20 * i)
    data = {
        "images": [
            {"id": 10 + i, "file_name": n, "width": 16, "height": 16}
            for i, n in enumerate(["p.jpg", "q.jpg", "r.jpg", "s.jpg", "t.jpg"])
        ],
        "categories": [{"id": 7, "name": "truck"}, {"id": 2, "name": "car"}, {"id": 5, "name": "bike"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 2, "bbox": [0, 0, 1, 1]},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [0, 0, 1, 1]},
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [0, 0, 1, 1]},
            {"id": 4, "image_id": 11, "category_id": 5, "bbox": [0, 0, 1, 1]},
            {"id": 5, "image_id": 13, "category_id": 2, "bbox": [0, 0, 1, 1]},
        ],
    }
    (root / "instances.json").write_text(json.dumps(data, indent=1))
    return root / "instances.json"


def test_coco_instances(tmp_path):
    path = _coco(tmp_path)
    ds = load_dataset(path)
    assert ds.format == "coco" and ds.split_source == "seeded"
    assert ds.class_names == ("car", "bike", "truck")  # ordered by category id
    rows = all_samples(ds)
    assert rows["p.jpg"][0] == [1, 0, 1]
    assert rows["q.jpg"][0] == [0, 1, 0]
    assert rows["r.jpg"][0] == [0, 0, 0]
    assert rows["s.jpg"][0] == [1, 0, 0]
    assert all(all(known) for _, known in rows.values())
    assert load_dataset(tmp_path).class_names == ds.class_names  # the folder with one .json


def test_coco_errors(tmp_path):
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 9, "image_id": 12, "category_id": 3})
    path.write_text(json.dumps(data))
    with pytest.raises(
        DataError, match=r"instances\.json: annotations\[5\] has category_id 3, which is not in categories"
    ):
        load_dataset(path)
    path.write_text('{"images": [],\n "annotations": [\n}')
    with pytest.raises(DataError, match=r"instances\.json line 3: not valid JSON"):
        load_dataset(path)
    path.write_text('{"images": [], "categories": []}')
    with pytest.raises(DataError, match=r"instances\.json: missing COCO key\(s\) annotations"):
        load_dataset(path)


# ----------------------------------------------------------------------------------------------------------------
# statistics


def test_inspect_stats_on_a_hand_made_dataset(tmp_path):
    names = [f"{i}.jpg" for i in range(8)]
    images_for(tmp_path, names)
    (tmp_path / "train.csv").write_text(
        "filename,cat,dog,owl\n0.jpg,1,1,0\n1.jpg,1,1,0\n2.jpg,1,0,NA\n3.jpg,0,0,0\n4.jpg,0,1,0\n5.jpg,0,0,0\n"
    )
    (tmp_path / "valid.csv").write_text("filename,cat,dog,owl\n6.jpg,1,0,1\n7.jpg,,0,0\n")
    stats = inspect_dataset(load_dataset(tmp_path))
    assert stats.format == "labels" and stats.num_images == 8
    assert stats.split_sizes == {"train": 6, "valid": 2}
    assert [(c.name, c.positives, c.negatives, c.unknown) for c in stats.classes] == [
        ("cat", 4, 3, 1),
        ("dog", 3, 5, 0),
        ("owl", 1, 6, 1),
    ]
    assert [(c.positives, c.negatives, c.unknown) for c in stats.per_split["valid"]] == [
        (1, 0, 1),
        (0, 2, 0),
        (1, 1, 0),
    ]
    assert stats.cardinality == {0: 3, 1: 2, 2: 3}
    assert stats.top_pairs == (("cat", "dog", 2), ("cat", "owl", 1))
    # train: cat 3 pos / 3 neg -> 1.0; dog 3/3 -> 1.0; owl 0 positives -> 1.0
    assert stats.pos_weight == (1.0, 1.0, 1.0)
    problems = "\n".join(stats.problems)
    assert "class 'dog' has no positives in valid" in problems
    assert "class 'owl' has no positives in train" in problems
    assert "class 'owl' has only 1 positive image(s) (fewer than 5)" in problems
    assert "3 image(s) have no positive label" in problems
    text = format_stats(stats)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("class"))
    assert header.split() == ["class", "positives", "negatives", "unknown", "train", "+", "valid", "+", "pos_weight"]
    cat = next(line for line in lines if line.startswith("cat "))
    assert cat.split() == ["cat", "4", "3", "1", "3", "1", "1.00"]
    assert len(cat) == len(header)  # aligned columns
    assert "cat+dog 2" in text and "class 'owl' has no positives in train" in text


def test_pos_weight_rule():
    def split(targets: list[list[float]], known: list[list[bool]] | None = None) -> Split:
        from edgecls.data import Sample

        t = np.asarray(targets, np.float32)
        k = np.ones_like(t, bool) if known is None else np.asarray(known, bool)
        return Split("train", ("a", "b", "c"), [Sample(Path(f"/{i}.jpg"), t[i], k[i]) for i in range(len(t))])

    rows = [[1, 1, 0]] + [[0, 0, 0]] * 3 + [[1, 0, 0]] * 0
    w = pos_weight_from(split(rows))
    assert w.dtype == np.float32 and w.tolist() == [3.0, 3.0, 1.0]
    many = [[1, 0, 1]] + [[0, 0, 1]] * 300
    assert pos_weight_from(split(many)).tolist() == [100.0, 1.0, 1.0]  # clipped high, no positives, clipped low
    unknown = pos_weight_from(split([[1, 0, 0], [0, 0, 0], [0, 0, 0]], [[True] * 3, [False] * 3, [True] * 3]))
    assert unknown.tolist() == [1.0, 1.0, 1.0]  # unknown labels are not negatives
    assert pos_weight_from(split([[1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])).tolist() == [4.0] * 3
