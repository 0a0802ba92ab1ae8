"""Evaluation figures (matplotlib, Agg) and the CSV points DVC plots read; atomic writes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from coverid.core.io import atomic_path


def title(what: str, split: str, model: dict[str, Any]) -> str:
    """A plot title naming the split and the model: `ROC, test split: bag/triplet`."""
    return f"{what}, {split} split: {model['arch']}/{model['loss']}"


def _figure() -> tuple[Any, Any]:
    """A new figure and axes on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4), dpi=100)


def _save(fig: Any, path: Path) -> None:
    """Save `fig` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_csv(path: str | Path, columns: dict[str, np.ndarray]) -> None:
    """Write equal-length columns as CSV with a header row, atomically."""
    names = list(columns)
    cols = [np.asarray(columns[n]).ravel() for n in names]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows(zip(*(c.tolist() for c in cols)))


def _bin_edges(values: np.ndarray, n: int) -> np.ndarray:
    """`n` equal bins over the values' range, widened when the range is (nearly) empty."""
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = max(abs(lo), abs(hi), 1.0) * 1e-6
    if hi - lo < pad:  # an untrained model can map every pair to the same distance
        lo, hi = lo - pad, hi + pad
    return np.linspace(lo, hi, n + 1)


def distance_hist(path: str | Path, dist: np.ndarray, labels: np.ndarray, threshold: float,
                  metric: str, heading: str) -> None:
    """Histograms of same-work and different-work pair distances with the threshold."""
    dist, labels = np.asarray(dist), np.asarray(labels).astype(bool)
    fig, ax = _figure()
    bins = _bin_edges(dist, 50)
    ax.hist(dist[~labels], bins=bins, alpha=0.6, density=True,
            label=f"different work ({(~labels).sum()})")
    ax.hist(dist[labels], bins=bins, alpha=0.6, density=True, label=f"same work ({labels.sum()})")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel(f"{metric} distance")
    ax.set_ylabel("density")
    ax.set_title(heading)
    ax.legend()
    _save(fig, Path(path))


def roc_plot(path: str | Path, fpr: np.ndarray, tpr: np.ndarray, auc: float,
             heading: str) -> None:
    """ROC curve with its area."""
    fig, ax = _figure()
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(heading)
    ax.legend(loc="lower right")
    _save(fig, Path(path))


def pr_plot(path: str | Path, recall: np.ndarray, precision: np.ndarray, ap: float,
            heading: str) -> None:
    """Precision-recall curve with the average precision."""
    fig, ax = _figure()
    ax.step(recall, precision, where="post", label=f"AP {ap:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title(heading)
    ax.legend(loc="lower left")
    _save(fig, Path(path))


def ap_hist(path: str | Path, ap: np.ndarray, heading: str) -> None:
    """Histogram of per-query average precision with the mean (MAP) marked."""
    ap = np.asarray(ap)
    fig, ax = _figure()
    ax.hist(ap, bins=np.linspace(0, 1, 21))
    if len(ap):
        ax.axvline(float(ap.mean()), color="k", linestyle="--", label=f"MAP {ap.mean():.3f}")
        ax.legend()
    ax.set_xlabel("average precision per query")
    ax.set_ylabel("queries")
    ax.set_title(heading)
    _save(fig, Path(path))


def trials_figure(table: dict[str, list], objective: str, chosen: tuple[str, float],
                  heading: str) -> Any:
    """The threshold search in one figure: each trial's objective against its threshold, one
    panel per distance (their scales differ), the chosen (distance, threshold) marked; the
    caller saves or logs it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = np.asarray(table["metric"])
    names = sorted(set(metric.tolist())) or [chosen[0]]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), dpi=100,
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        keep = metric == name
        ax.scatter(np.asarray(table["threshold"])[keep], np.asarray(table[objective])[keep], s=14)
        if name == chosen[0]:
            ax.axvline(chosen[1], color="k", linestyle="--", label=f"chosen {chosen[1]:.3g}")
            ax.legend()
        ax.set_xlabel(f"{name} threshold ({int(keep.sum())} trials)")
        ax.set_ylabel(objective)
    fig.suptitle(heading)
    fig.tight_layout()
    return fig
