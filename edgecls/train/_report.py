"""Report files and plots for a training run: ``report.json``, ``report.md`` and PNG figures.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, so no global state and
no GUI backend), and saved atomically: a crashed run never leaves a truncated PNG behind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls._deps import require
from edgecls._io import atomic_save, atomic_write_text, write_json
from edgecls.errors import ConfigError
from edgecls.metrics import MetricsReport, average_precision, pr_curve

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["LossCurves", "format_report", "loss_curves", "plot_loss", "plot_pr_curves", "plot_val_map", "write_report"]

_HEADLINE = (
    ("mAP", "map"),
    ("F1 micro", "f1_micro"),
    ("F1 macro", "f1_macro"),
    ("P micro", "precision_micro"),
    ("R micro", "recall_micro"),
    ("Hamming", "hamming_loss"),
    ("Subset acc", "subset_accuracy"),
)
_PER_CLASS_HEADER = ("class", "support", "AP", "P", "R", "F1", "threshold", "F1@0.5")


# ---------------------------------------------------------------------------------------------------------------------
# text reports


def _num(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _check_pair(at_half: MetricsReport, tuned: MetricsReport) -> None:
    if at_half.class_names != tuned.class_names:
        raise ConfigError(
            "the 0.5 and tuned reports must cover the same classes in the same order; "
            f"got {list(at_half.class_names)} and {list(tuned.class_names)}"
        )


def _headline_rows(at_half: MetricsReport, tuned: MetricsReport) -> tuple[list[str], list[list[str]]]:
    header = ["thresholds"] + [label for label, _ in _HEADLINE]
    rows = [
        [label] + [_num(getattr(report, key)) for _, key in _HEADLINE]
        for label, report in (("0.5", at_half), ("tuned", tuned))
    ]
    return header, rows


def _class_rows(at_half: MetricsReport, tuned: MetricsReport) -> list[list[str]]:
    return [
        [
            c.name,
            str(c.support),
            _num(c.ap),
            _num(c.precision),
            _num(c.recall),
            _num(c.f1),
            _num(c.threshold),
            _num(h.f1),
        ]
        for c, h in zip(tuned.per_class, at_half.per_class)
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _info_lines(info: dict[str, Any]) -> list[str]:
    """Scalar entries of ``info`` as Markdown bullets (nested values live in report.json only)."""
    out = []
    for key, value in info.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            shown = _num(value) if isinstance(value, float) else str(value)
            out.append(f"- **{_md_cell(str(key))}**: {_md_cell(shown)}")
    return out


def format_report(at_half: MetricsReport, tuned: MetricsReport, *, split: str) -> str:
    """Plain-text summary for the terminal: the headline table and the per-class table at the tuned thresholds."""
    _check_pair(at_half, tuned)
    header, rows = _headline_rows(at_half, tuned)
    return "\n".join(
        [
            f"{split}: {tuned.num_samples} images, {len(tuned.per_class)} classes",
            _text_table(header, rows),
            "",
            "per class (P/R/F1 at the tuned threshold):",
            _text_table(_PER_CLASS_HEADER, _class_rows(at_half, tuned)),
        ]
    )


def _markdown(at_half: MetricsReport, tuned: MetricsReport, *, split: str, info: dict[str, Any]) -> str:
    header, rows = _headline_rows(at_half, tuned)
    parts = [f"# Evaluation report: {split}", ""]
    parts.append(
        f"{tuned.num_samples} images, {len(tuned.per_class)} classes. "
        "Unknown labels are excluded from every count; n/a means undefined (no positives)."
    )
    info_lines = _info_lines(info)
    if info_lines:
        parts += ["", *info_lines]
    parts += ["", "## Summary", "", _md_table(header, rows), ""]
    parts += [
        "## Per class",
        "",
        "AP is threshold-free; P, R and F1 are at the tuned threshold, F1@0.5 at 0.5.",
        "",
        _md_table(_PER_CLASS_HEADER, _class_rows(at_half, tuned)),
        "",
    ]
    return "\n".join(parts)


def write_report(
    out_dir: Path, *, split: str, at_half: MetricsReport, tuned: MetricsReport, info: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (created if needed), each atomically.

    ``report.json`` is ``{"split", "info", "at_0.5", "tuned"}`` with the two :meth:`MetricsReport.to_dict` outputs;
    ``nan`` is written as ``null``.

    Returns:
        ``(json_path, md_path)``.
    """
    _check_pair(at_half, tuned)
    out_dir = Path(out_dir)
    json_path = write_json(
        out_dir / "report.json",
        {"split": split, "info": info, "at_0.5": at_half.to_dict(), "tuned": tuned.to_dict()},
    )
    md_path = atomic_write_text(out_dir / "report.md", _markdown(at_half, tuned, split=split, info=info))
    return json_path, md_path


# ---------------------------------------------------------------------------------------------------------------------
# plots


def _new_figure(size: tuple[float, float] = (7.0, 4.5)) -> Figure:
    require("matplotlib", extra="train")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    # The temporary file ends in ".tmp", so the format must be given explicitly.
    return atomic_save(path, lambda tmp: fig.savefig(tmp, format=fmt, bbox_inches="tight"))


def _same_length(xs: Sequence[Any], ys: Sequence[Any], x_name: str, y_name: str) -> None:
    if len(xs) != len(ys):
        raise ConfigError(f"{x_name} and {y_name} must have the same length, got {len(xs)} and {len(ys)}")


def _ema(values: np.ndarray, span: int) -> np.ndarray:
    """Bias-corrected exponential moving average; non-finite values are skipped (the average carries over)."""
    alpha = 2.0 / (span + 1.0)
    out = np.full(values.shape, np.nan)
    avg, weight = 0.0, 0.0
    for i, v in enumerate(values):
        if np.isfinite(v):
            avg = (1.0 - alpha) * avg + alpha * v
            weight = (1.0 - alpha) * weight + alpha
        if weight > 0:
            out[i] = avg / weight
    return out


@dataclass(frozen=True)
class LossCurves:
    """What ``loss.png`` draws: the raw training loss, its moving average (``span`` 1: none) and the validation loss
    of each epoch at the iteration where that epoch ended."""

    iterations: np.ndarray
    raw: np.ndarray
    smoothed: np.ndarray | None
    span: int
    val_iterations: np.ndarray
    val_losses: np.ndarray


def loss_curves(
    iterations: Sequence[int],
    losses: Sequence[float],
    *,
    val_iterations: Sequence[int] = (),
    val_losses: Sequence[float] = (),
) -> LossCurves:
    """The data of the loss plot (kept apart from the drawing so it can be checked as numbers)."""
    _same_length(iterations, losses, "iterations", "losses")
    _same_length(val_iterations, val_losses, "val_iterations", "val_losses")
    y = np.asarray(losses, dtype=np.float64)
    span = int(np.clip(y.size // 20, 1, 500))
    return LossCurves(
        iterations=np.asarray(iterations, dtype=np.float64),
        raw=y,
        smoothed=_ema(y, span) if span > 1 else None,
        span=span,
        val_iterations=np.asarray(val_iterations, dtype=np.float64),
        val_losses=np.asarray(val_losses, dtype=np.float64),
    )


def _loss_figure(
    iterations: Sequence[int],
    losses: Sequence[float],
    *,
    val_iterations: Sequence[int] = (),
    val_losses: Sequence[float] = (),
) -> Figure:
    curves = loss_curves(iterations, losses, val_iterations=val_iterations, val_losses=val_losses)
    fig = _new_figure()
    ax = fig.add_subplot()
    if curves.raw.size:
        ax.plot(curves.iterations, curves.raw, linewidth=0.6, alpha=0.35, color="tab:blue", label="training loss")
        if curves.smoothed is not None:
            ax.plot(curves.iterations, curves.smoothed, linewidth=1.8, color="tab:blue",
                    label=f"training loss, moving average of {curves.span}")
    if curves.val_losses.size:
        ax.plot(curves.val_iterations, curves.val_losses, marker="o", markersize=4, linewidth=1.5,
                color="tab:orange", label="validation loss (end of each epoch)")
    if curves.raw.size or curves.val_losses.size:
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training and validation loss" if curves.val_losses.size else "training loss")
    ax.set_title("Loss")
    ax.grid(True, alpha=0.3)
    return fig


def plot_loss(
    iterations: Sequence[int],
    losses: Sequence[float],
    path: Path,
    *,
    val_iterations: Sequence[int] = (),
    val_losses: Sequence[float] = (),
) -> Path:
    """Training loss against iteration (the raw curve, thin and faint, with a moving average on top) and, when
    given, the validation loss of each epoch at the iteration where the epoch ended."""
    return _save(_loss_figure(iterations, losses, val_iterations=val_iterations, val_losses=val_losses), path)


def _val_map_figure(epochs: Sequence[int], maps: Sequence[float]) -> Figure:
    _same_length(epochs, maps, "epochs", "maps")
    x = np.asarray(epochs, dtype=np.float64)
    y = np.asarray(maps, dtype=np.float64)
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(x, y, marker="o", markersize=3, linewidth=1.5, color="tab:green", label="val mAP")
    if np.isfinite(y).any():
        best = int(np.nanargmax(y))
        ax.scatter(
            [x[best]], [y[best]], s=60, color="tab:red", zorder=3, label=f"best {y[best]:.4f} (epoch {x[best]:g})"
        )
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mAP")
    ax.set_title("Validation mAP")
    ax.grid(True, alpha=0.3)
    return fig


def plot_val_map(epochs: Sequence[int], maps: Sequence[float], path: Path) -> Path:
    """Validation mAP against epoch, with the best epoch marked."""
    return _save(_val_map_figure(epochs, maps), path)


def _pr_figure(probs: np.ndarray, targets: np.ndarray, known: np.ndarray | None, class_names: Sequence[str]) -> Figure:
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets)
    if p.ndim != 2 or t.shape != p.shape:
        raise ConfigError(f"probs and targets must both have shape (N, K); got {p.shape} and {t.shape}")
    k = np.ones(p.shape, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    if k.shape != p.shape:
        raise ConfigError(f"known must have the same shape as probs {p.shape}, got {k.shape}")
    if len(class_names) != p.shape[1]:
        raise ConfigError(f"got {len(class_names)} class names for {p.shape[1]} score columns; they must match")

    num_classes = p.shape[1]
    fig = _new_figure((8.0, 6.0) if num_classes <= 12 else (11.0, 7.0))
    ax = fig.add_subplot()
    aps = []
    for j, name in enumerate(class_names):
        m = k[:, j]
        s, y = p[m, j], t[m, j]
        ap = average_precision(s, y)
        if math.isnan(ap):  # no known positives: no curve to draw
            continue
        aps.append(ap)
        precision, recall = pr_curve(s, y)
        ax.step(recall, precision, where="post", linewidth=1.2, label=f"{name} (AP {ap:.3f})")
    if aps:
        ax.legend(
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            fontsize="small" if num_classes <= 12 else "x-small",
            ncol=1 if len(aps) <= 25 else 2,
            frameon=False,
        )
        ax.set_title(f"Precision-recall per class (mAP {float(np.mean(aps)):.3f})")
    else:
        ax.text(0.5, 0.5, "no class has a known positive", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Precision-recall per class")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    return fig


def plot_pr_curves(
    probs: np.ndarray, targets: np.ndarray, known: np.ndarray | None, class_names: Sequence[str], path: Path
) -> Path:
    """One precision-recall curve per class (known entries only), AP in the legend.

    Classes without positives are skipped."""
    return _save(_pr_figure(probs, targets, known, class_names), path)
