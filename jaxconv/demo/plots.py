"""Figures of a demo run: learning curves and the learned first-layer kernels.

Each PNG is rendered in memory and written with `storage.atomic_write`, so a killed run never
leaves a truncated figure.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt

from jaxconv.demo import storage


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    storage.atomic_write(path, buffer.getvalue())


def plot_curves(metrics: dict, path: Path) -> None:
    """Train/test loss and test accuracy per epoch, side by side."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in metrics["epochs"]]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in metrics["epochs"]], "o-", label="train")
    ax_loss.plot(epochs, [r["test_loss"] for r in metrics["epochs"]], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss", yscale="log")
    ax_loss.legend()
    accuracy = [100 * r["test_accuracy"] for r in metrics["epochs"]]
    ax_acc.plot(epochs, accuracy, "o-", color="tab:green")
    ax_acc.set(
        xlabel="epoch",
        ylabel="test accuracy (%)",
        title=f"Test accuracy (final {accuracy[-1]:.2f}%)",
    )
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs, not 1.25
    name = metrics["config"]["dataset"]
    fig.suptitle(f"jaxconv demo on {name} ({metrics['config']['impl']} convolution)")
    fig.tight_layout()
    _save(plt, fig, path)


def plot_filters(kernels: npt.ArrayLike, path: Path) -> None:
    """The first layer's kernels, (O, 1, kh, kw), on one symmetric colour scale."""
    plt = _pyplot()
    kernels = np.asarray(kernels)[:, 0]
    count = kernels.shape[0]
    cols = min(8, count)
    rows = -(-count // cols)
    limit = float(np.abs(kernels).max()) or 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols + 1.2, 1.4 * rows + 0.6))
    axes = np.atleast_1d(axes).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < count:
            image = ax.imshow(kernels[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"#{i}", fontsize=8)
    fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label="weight")
    fig.suptitle(f"Learned first-layer kernels ({count} × {kernels.shape[1]}×{kernels.shape[2]})")
    _save(plt, fig, path)
