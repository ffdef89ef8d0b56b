"""The report's figures, drawn with matplotlib (Agg backend; imported only here).

Each function writes one PNG and returns its path: confusion matrices, the patch ROC, the
per-case Dice distribution, the Bland–Altman plot of short axes, the WSI gate sweep, and
per slide a thumbnail with the patch heatmap (the studies' bands) and the annotation
outline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bland_altman_plot", "confusion_plot", "dice_plot", "roc_plot", "slide_overlay", "sweep_plot"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def confusion_plot(path: Path, matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str,
                   truth_name: str = "reference", pred_name: str = "model") -> Path:
    """A confusion matrix with counts in the cells (rows: reference, columns: model)."""
    plt = _plt()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(labels), 1.0 + 0.8 * len(labels)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set(xlabel=pred_name, ylabel=truth_name, title=title)
    return _save(fig, path)


def roc_plot(path: Path, fpr: Sequence[float | None], tpr: Sequence[float | None], auc: float | None,
             title: str) -> Path:
    """ROC curve with the chance diagonal."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    x = [np.nan if v is None else v for v in fpr]
    y = [np.nan if v is None else v for v in tpr]
    ax.plot(x, y, drawstyle="default", label=f"AUC {auc:.3f}" if auc is not None else "AUC n/a")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _save(fig, path)


def dice_plot(path: Path, values: Sequence[float], published: float | None, title: str) -> Path:
    """Per-case Dice as points over a box plot, the study's mean as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 3.2))
    if values:
        ax.boxplot([list(values)], orientation="horizontal", widths=0.5)
        ax.scatter(values, np.ones(len(values)) + np.linspace(-0.12, 0.12, len(values)), s=14, zorder=3)
    if published is not None:
        ax.axvline(published, color="tab:red", ls="--", label=f"study's mean {published:.3f}")
        ax.legend(loc="lower left")
    ax.set(xlim=(0, 1), yticks=[], xlabel="Dice per case", title=title)
    return _save(fig, path)


def bland_altman_plot(path: Path, pred: Sequence[float], truth: Sequence[float], ba: dict[str, Any]) -> Path:
    """Bland–Altman: difference (model − reference) against the mean, with limits of agreement."""
    plt = _plt()
    p, t = np.asarray(pred, float), np.asarray(truth, float)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter((p + t) / 2, p - t, s=14)
    for key, style in (("mean_diff", "-"), ("loa_lower", "--"), ("loa_upper", "--")):
        if ba.get(key) is not None:
            ax.axhline(ba[key], color="tab:red", ls=style, lw=1)
    ax.set(xlabel="mean short axis (mm)", ylabel="model − reference (mm)", title="Short axis agreement")
    return _save(fig, path)


def sweep_plot(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Slide sensitivity, specificity and Dice against the gate probability."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    gates = [r["gate"] for r in rows]
    for key, name in (("sen", "slide sensitivity"), ("spe", "slide specificity"), ("dice_mean", "Dice (positive)")):
        ax.plot(gates, [np.nan if r[key] is None else r[key] for r in rows], marker="o", label=name)
    ax.set(xlabel="gate probability", ylim=(0, 1.05), title="WSI gate threshold sweep")
    ax.legend(loc="lower left")
    return _save(fig, path)


def slide_overlay(path: Path, analysis: Any, truth_mask: np.ndarray | None, truth_mpp: float,
                  bands: Sequence[float], title: str) -> Path:
    """Thumbnail, patch heatmap in the study's bands (blue/green/red) and the annotation outline."""
    plt = _plt()
    thumb = analysis.thumbnail if analysis.thumbnail is not None else analysis.tissue.thumbnail
    mpp = analysis.thumbnail_mpp if analysis.thumbnail is not None else analysis.tissue.mpp
    h_mm, w_mm = thumb.shape[0] * mpp / 1000, thumb.shape[1] * mpp / 1000
    fig, ax = plt.subplots(figsize=(5, 5 * h_mm / max(w_mm, 1e-6) + 0.4))
    ax.imshow(thumb, extent=(0, w_mm, h_mm, 0))
    prob = np.where(analysis.classifier.classified, analysis.classifier.prob, 0.0)
    level = np.digitize(prob, list(bands)).astype(float)  # 0: below the lowest band
    cell_mm = analysis.classifier.grid.cell_um / 1000
    extent = (0, prob.shape[1] * cell_mm, prob.shape[0] * cell_mm, 0)
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([(0, 0, 0, 0), (0, 0, 1, 0.45), (0, 0.8, 0, 0.45), (1, 0, 0, 0.5)])
    ax.imshow(level, cmap=cmap, vmin=0, vmax=3, extent=extent, interpolation="nearest")
    if truth_mask is not None and truth_mask.any():
        th, tw = truth_mask.shape[0] * truth_mpp / 1000, truth_mask.shape[1] * truth_mpp / 1000
        ys = (np.arange(truth_mask.shape[0]) + 0.5) * th / truth_mask.shape[0]
        xs = (np.arange(truth_mask.shape[1]) + 0.5) * tw / truth_mask.shape[1]
        ax.contour(xs, ys, truth_mask.astype(float), levels=[0.5], colors="black", linewidths=1.2)
    ax.set(xlim=(0, w_mm), ylim=(h_mm, 0), xlabel="mm", title=title)
    return _save(fig, path)
