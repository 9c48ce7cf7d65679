"""Figures for the model card: the confusion matrix and the training curves."""

from pathlib import Path

import numpy as np

from .labels import LABELS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: files only
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: list[list[int]], path: str | Path, title: str = "Confusion matrix") -> None:
    """Save a row-normalised confusion matrix (true label per row) with counts, as PNG."""
    plt = _pyplot()
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, f"{rates[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(history: dict[str, list[float]], path: str | Path) -> None:
    """Save loss and accuracy per epoch, train vs validation, as PNG."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        if key in history:
            ax.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


MAX_TIMELINE_FACES = 6  # a timeline plot shows at most this many faces, those seen longest


def plot_timeline(
    series: dict[int, tuple[np.ndarray, np.ndarray]], path: str | Path, duration: float | None = None,
    xlabel: str = "time (s)",
) -> None:
    """Save each face's emotion probabilities over time, one panel per face, as PNG.

    `series` maps a face id to its times (n,) and probabilities (n, 7); faces beyond MAX_TIMELINE_FACES (the
    least seen) are left out and the title says so. A gap of more than a second is drawn as a break in the line.
    The time axis runs to `duration` (the video's length), or to the last time seen.
    """
    from .labels import COLORS

    plt = _pyplot()
    shown = sorted(sorted(series, key=lambda face: len(series[face][0]), reverse=True)[:MAX_TIMELINE_FACES])
    fig, axes = plt.subplots(max(1, len(shown)), 1, figsize=(9, 1.2 + 1.9 * max(1, len(shown))), squeeze=False)
    end = max((float(times.max()) for times, _ in series.values() if len(times)), default=1.0)
    end = max(end, duration or 0.0)
    for ax, face in zip(axes[:, 0], shown):
        times, probs = series[face]
        gaps = np.flatnonzero(np.diff(times) > 1.0) + 1  # NaN at a gap, so the face's absence is not bridged
        times, probs = np.insert(times, gaps, np.nan), np.insert(probs, gaps, np.nan, axis=0)
        for index, label in enumerate(LABELS):
            ax.plot(times, probs[:, index], color=np.array(COLORS[label]) / 255, label=label, linewidth=1.6)
        ax.set_xlim(0, max(end, 1e-3))
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"face {face}", fontsize=11)
        ax.grid(alpha=0.3)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no faces", ha="center", va="center", transform=axes[0, 0].transAxes)
    axes[-1, 0].set_xlabel(xlabel, fontsize=11)
    axes[0, 0].legend(loc="upper center", bbox_to_anchor=(0.5, 1.45), ncol=len(LABELS), fontsize=9, frameon=False)
    left_out = len(series) - len(shown)
    title = "Emotion probabilities per face" + (f" ({left_out} briefly seen faces not shown)" if left_out else "")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
