"""Draws the figures of docs/derivation.md.

    python docs/make_figures.py [--out docs/figures]

strided_slice_adjoint.png: how a strided slice picks a tap's window out of the input (eq. 20)
and how its adjoint, padding with stride − 1 interior zeros, puts the gradient back; in 1-D
and for one tap of a 2-D convolution.
full_correlation.png: the worked example of §3, ∂L/∂X as the full correlation of the padded
∂L/∂Z with the rotated kernel (eq. 13).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, Rectangle

PICKED = "#f4a259"  # cells a strided slice reads / the adjoint writes
GRADIENT = "#8cb8e6"  # gradient values
ZERO = "#eeeeee"  # zeros the adjoint inserts
PLAIN = "white"


def _cells(ax, x0, y0, labels, colors, size=1.0, fontsize=11):
    """A row of square cells with centred labels; returns the cell centres."""
    centres = []
    for i, (label, color) in enumerate(zip(labels, colors)):
        ax.add_patch(Rectangle((x0 + i * size, y0), size, size, fc=color, ec="k", lw=1))
        ax.text(
            x0 + (i + 0.5) * size, y0 + size / 2, label, ha="center", va="center", fontsize=fontsize
        )
        centres.append((x0 + (i + 0.5) * size, y0 + size / 2))
    return centres


def _arrow(ax, start, end, color="k"):
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.2)
    )


def _grid(ax, values, colors, title, fontsize=10):
    """A 2-D array of cells (row 0 on top) with labels."""
    rows, cols = values.shape
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(Rectangle((c, rows - 1 - r), 1, 1, fc=colors[r][c], ec="k", lw=0.8))
            ax.text(
                c + 0.5, rows - 0.5 - r, values[r, c], ha="center", va="center", fontsize=fontsize
            )
    ax.set_xlim(-0.2, cols + 0.2)
    ax.set_ylim(-0.2, rows + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=11)


def strided_slice_adjoint(path: Path) -> None:
    """1-D: S_1 x = x[1::3] (3 entries of 10) and S_1ᵀ g; 2-D: one tap's window and its adjoint."""
    fig = plt.figure(figsize=(12, 10.5))
    top = fig.add_axes([0.02, 0.53, 0.96, 0.45])
    n, start, stride, out = 10, 1, 3, 3
    picked = [start + stride * r for r in range(out)]
    y_x, y_s, y_g, y_t = 7.2, 5.2, 2.6, 0.6
    x_cells = _cells(
        top,
        0,
        y_x,
        [f"$x_{i}$" for i in range(n)],
        [PICKED if i in picked else PLAIN for i in range(n)],
    )
    s_cells = _cells(top, 3.5, y_s, [f"$x_{p}$" for p in picked], [PICKED] * out)
    for r, p in enumerate(picked):
        _arrow(top, (x_cells[p][0], y_x), (s_cells[r][0], y_s + 1))
    top.text(10.4, y_x + 0.5, "input $x$ (length $H$ = 10)", va="center", fontsize=11)
    top.text(
        10.4,
        y_s + 0.5,
        "forward: strided slice $S_1 x$ = x[1 : 8 : 3]\n"
        "start $a$ = 1, stride $s$ = 3, $H_{out}$ = 3 entries",
        va="center",
        fontsize=11,
    )
    g_cells = _cells(top, 3.5, y_g, [f"$g_{r}$" for r in range(out)], [GRADIENT] * out)
    labels = ["0"] * n
    colors = [ZERO] * n
    for r, p in enumerate(picked):
        labels[p], colors[p] = f"$g_{r}$", GRADIENT
    t_cells = _cells(top, 0, y_t, labels, colors)
    for r, p in enumerate(picked):
        _arrow(top, (g_cells[r][0], y_g), (t_cells[p][0], y_t + 1), color="tab:blue")
    top.text(10.4, y_g + 0.5, "upstream gradient $g$ = ∂L/∂(S₁x)", va="center", fontsize=11)
    top.text(
        10.4,
        y_t + 0.5,
        "backward: adjoint $S_1^T g$ = lax.pad(g, 0, [(1, 2, 2)])\n"
        "lo = $a$ = 1,  interior = $s$ − 1 = 2,\nhi = $H$ − $a$ − ($H_{out}$ − 1)$s$ − 1 = 2",
        va="center",
        fontsize=11,
    )
    top.text(0, 9.0, "1-D: one kernel tap", fontsize=13, weight="bold")
    top.set_xlim(-0.3, 18.5)
    top.set_ylim(0.2, 9.6)
    top.set_aspect("equal")
    top.axis("off")

    # 2-D: tap (a, b) = (1, 2) of a kernel with dilation 1 and stride (2, 2) on a 7×8 input.
    rows, cols, (r0, c0), (sh, sw), (ho, wo) = 7, 8, (1, 2), (2, 2), (3, 3)
    hit = {(r0 + sh * r, c0 + sw * c): (r, c) for r in range(ho) for c in range(wo)}
    left = fig.add_axes([0.02, 0.02, 0.36, 0.40])
    mid = fig.add_axes([0.40, 0.10, 0.18, 0.24])
    right = fig.add_axes([0.62, 0.02, 0.36, 0.40])
    values = np.array(
        [[f"{r},{c}" for c in range(cols)] for r in range(rows)],
    )
    colors = [[PICKED if (r, c) in hit else PLAIN for c in range(cols)] for r in range(rows)]
    _grid(
        left,
        values,
        colors,
        "forward: tap (a, b) = (1, 2), stride (2, 2)\nreads $\\bar{x}$[1 + 2r, 2 + 2c]",
        fontsize=8,
    )
    window = np.array([[f"$g_{{{r}{c}}}w$" for c in range(wo)] for r in range(ho)])
    _grid(mid, window, [[GRADIENT] * wo for _ in range(ho)], "tap's gradient\n$G$ · $w_{a,b}$")
    back = np.full((rows, cols), "0", dtype=object)
    back_colors = [[ZERO] * cols for _ in range(rows)]
    for (r, c), (i, j) in hit.items():
        back[r, c], back_colors[r][c] = f"$g_{{{i}{j}}}w$", GRADIENT
    _grid(
        right,
        back,
        back_colors,
        "backward: $S_{a,b}^T$ = pad with lo (1, 2), hi (1, 1),\n"
        "interior (1, 1): added into ∂L/∂$\\bar{x}$",
        fontsize=9,
    )
    fig.text(0.02, 0.50, "2-D: one tap of a stride-2 convolution", fontsize=13, weight="bold")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def full_correlation(path: Path) -> None:
    """§3's example: ∂L/∂X = P_{1,1}(G) ⋆ rot180(W), with G = ones(3, 3), W = [[1, 2], [3, 4]]."""
    g = np.ones((3, 3), int)
    w = np.array([[1, 2], [3, 4]])
    k = w.shape[0]
    padded = np.pad(g, k - 1)
    rotated = w[::-1, ::-1]
    dx = np.array(
        [[int(np.sum(padded[i : i + k, j : j + k] * rotated)) for j in range(4)] for i in range(4)]
    )
    i, j = 0, 3  # the highlighted output: a border entry, partly over the zero padding
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6), gridspec_kw={"width_ratios": [5, 2.4, 4]})
    colors = [
        [
            PICKED if i <= r < i + k and j <= c < j + k else (GRADIENT if padded[r, c] else ZERO)
            for c in range(5)
        ]
        for r in range(5)
    ]
    _grid(
        axes[0],
        padded,
        colors,
        f"∂L/∂Z = ones(3, 3), padded by k − 1 = 1\n(window of ∂L/∂$x_{{{i},{j}}}$)",
    )
    _grid(axes[1], rotated, [[PICKED] * 2] * 2, "rot180(W)\n(W = [[1, 2], [3, 4]])")
    dx_colors = [[PICKED if (r, c) == (i, j) else PLAIN for c in range(4)] for r in range(4)]
    terms = " + ".join(
        f"{rotated[a, b]}·{padded[i + a, j + b]}" for a in range(k) for b in range(k)
    )
    _grid(axes[2], dx, dx_colors, f"∂L/∂X: entry ({i}, {j}) = {dx[i, j]}\n= {terms}")
    fig.suptitle(
        "Input gradient = full correlation of ∂L/∂Z with the rotated kernel (eq. 13)",
        fontsize=13,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    """Writes both figures into --out (default: docs/figures beside this script)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    strided_slice_adjoint(args.out / "strided_slice_adjoint.png")
    full_correlation(args.out / "full_correlation.png")
    print(f"wrote {args.out}/strided_slice_adjoint.png, {args.out}/full_correlation.png")


if __name__ == "__main__":
    main()
