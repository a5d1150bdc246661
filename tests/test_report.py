"""Run report files (report.json / report.md) and plots, written for real with matplotlib's Agg canvas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgecls.errors import ConfigError
from edgecls.metrics import MetricsReport, compute_metrics, tune_thresholds

pytest.importorskip("matplotlib")

from edgecls.train._report import (
    _loss_figure,
    format_report,
    loss_curves,
    plot_loss,
    plot_pr_curves,
    plot_val_map,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["cat", "dog", "a|b", "never"]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    targets = (rng.random((120, 4)) < [0.4, 0.2, 0.3, 0.0]).astype(int)
    probs = np.clip(0.4 * targets + 0.7 * rng.random((120, 4)), 0, 1)
    known = rng.random((120, 4)) > 0.1
    return probs, targets, known


@pytest.fixture(scope="module")
def reports(problem):
    probs, targets, known = problem
    at_half = compute_metrics(probs, targets, known, NAMES, 0.5)
    tuned = compute_metrics(probs, targets, known, NAMES, tune_thresholds(probs, targets, known))
    return at_half, tuned


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def _assert_no_temp_files(folder):
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_write_report_files(tmp_path, reports):
    at_half, tuned = reports
    info = {"backbone": "efficientnet_lite0", "epochs": 3, "best_epoch": 2, "lr": 1e-3, "nested": {"a": [1, 2]}}
    out = tmp_path / "run"  # created on demand
    json_path, md_path = write_report(out, split="val", at_half=at_half, tuned=tuned, info=info)
    assert (json_path, md_path) == (out / "report.json", out / "report.md")

    data = json.loads(json_path.read_text())
    assert set(data) == {"split", "info", "at_0.5", "tuned"}
    assert data["split"] == "val" and data["info"] == info
    assert data["tuned"]["per_class"][3]["ap"] is None  # nan -> null
    assert MetricsReport.from_dict(data["tuned"]).thresholds == tuned.thresholds
    assert MetricsReport.from_dict(data["at_0.5"]).thresholds == (0.5,) * 4

    md = md_path.read_text()
    assert md.startswith("# Evaluation report: val")
    for text in (
        "mAP",
        "F1 micro",
        "F1 macro",
        "Hamming",
        "Subset acc",
        "| tuned |",
        "threshold",
        "efficientnet_lite0",
    ):
        assert text in md
    assert f"{tuned.map:.4f}" in md and f"{at_half.f1_micro:.4f}" in md
    assert "a\\|b" in md  # pipes in class names do not break the table
    assert "| never | 0 | n/a |" in md
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert {line.count("|") - line.count("\\|") for line in table_lines} == {9}  # 8 columns in every row
    _assert_no_temp_files(out)


def test_write_report_rejects_mismatched_classes(tmp_path, problem, reports):
    probs, targets, known = problem
    at_half, _ = reports
    other = compute_metrics(probs[:, :3], targets[:, :3], known[:, :3], NAMES[:3])
    with pytest.raises(ConfigError, match="same classes"):
        write_report(tmp_path, split="val", at_half=at_half, tuned=other, info={})
    assert list(tmp_path.iterdir()) == []


def test_format_report(reports):
    at_half, tuned = reports
    text = format_report(at_half, tuned, split="test")
    lines = text.splitlines()
    assert lines[0] == f"test: {tuned.num_samples} images, 4 classes"
    assert lines[1].split()[:3] == ["thresholds", "mAP", "F1"]
    assert lines[3].split()[0] == "0.5" and lines[4].split()[0] == "tuned"
    assert f"{tuned.f1_macro:.4f}" in lines[4]
    assert any(line.startswith("cat ") for line in lines) and "n/a" in text


def test_plot_loss_png_and_labels(tmp_path):
    it = list(range(0, 600, 2))
    rng = np.random.default_rng(1)
    loss = list(np.exp(-np.arange(300) / 80) + 0.1 * rng.random(300))
    loss[10] = math.nan  # a bad step does not break the smoothing
    fig = _loss_figure(it, loss)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "training loss"  # words, not identifiers
    raw, smooth = ax.get_lines()
    assert raw.get_alpha() < 1 and raw.get_linewidth() < smooth.get_linewidth()
    smoothed = smooth.get_ydata()
    assert np.isfinite(smoothed).all() and np.std(np.diff(smoothed)) < np.std(np.diff(np.nan_to_num(loss)))

    path = plot_loss(it, loss, tmp_path / "loss.png")
    assert path == tmp_path / "loss.png"
    _assert_png(path)
    _assert_no_temp_files(tmp_path)


def test_loss_plot_shows_the_validation_loss_of_each_epoch(tmp_path):
    losses = list(np.linspace(1.0, 0.2, 90))
    curves = loss_curves(range(1, 91), losses, val_iterations=[30, 60, 90], val_losses=[0.9, 0.5, 0.4])
    assert curves.span == 4 and curves.smoothed is not None and curves.smoothed.shape == (90,)
    np.testing.assert_array_equal(curves.val_iterations, [30, 60, 90])
    np.testing.assert_array_equal(curves.val_losses, [0.9, 0.5, 0.4])

    fig = _loss_figure(range(1, 91), losses, val_iterations=[30, 60, 90], val_losses=[0.9, 0.5, 0.4])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "training and validation loss"
    lines = {line.get_label(): line for line in ax.get_lines()}
    val = lines["validation loss (end of each epoch)"]
    np.testing.assert_array_equal(val.get_xdata(), [30, 60, 90])
    np.testing.assert_array_equal(val.get_ydata(), [0.9, 0.5, 0.4])
    assert "training loss" in lines
    with pytest.raises(ConfigError, match="same length"):
        loss_curves([1, 2], [0.5, 0.4], val_iterations=[2], val_losses=[])
    _assert_png(plot_loss(range(1, 91), losses, tmp_path / "loss.png", val_iterations=[30, 60, 90],
                          val_losses=[0.9, 0.5, 0.4]))


def test_plot_loss_edge_cases(tmp_path):
    _assert_png(plot_loss([], [], tmp_path / "empty.png"))
    _assert_png(plot_loss([1], [0.5], tmp_path / "one.png"))
    with pytest.raises(ConfigError, match="same length"):
        plot_loss([1, 2], [0.5], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    _assert_no_temp_files(tmp_path)


def test_plot_val_map_and_pr_curves(tmp_path, problem):
    probs, targets, known = problem
    _assert_png(plot_val_map([1, 2, 3, 4], [0.31, 0.45, math.nan, 0.52], tmp_path / "val_map.png"))
    _assert_png(plot_pr_curves(probs, targets, known, NAMES, tmp_path / "pr.png"))
    _assert_png(plot_pr_curves(probs, targets, None, NAMES, tmp_path / "sub" / "pr_all_known.png"))
    with pytest.raises(ConfigError, match="3 class names for 4"):
        plot_pr_curves(probs, targets, known, NAMES[:3], tmp_path / "bad.png")
    _assert_no_temp_files(tmp_path)
    _assert_no_temp_files(tmp_path / "sub")
