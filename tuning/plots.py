"""The search's plots: validation mAP over tag limit × threshold, and max vs avg pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.plotting import plt, save_figure as _save
from tuning.hypermodel import TAG_LIMITS, TAG_THRESHOLDS


def heatmap(out: Path, table: list, stat: str) -> None:
    """`heatmap_{stat}.png`: per (limit, threshold) cell, the best configuration's mean or std,
    with the number of configurations tried in the cell."""
    grid = np.full((len(TAG_LIMITS), len(TAG_THRESHOLDS)), np.nan)
    counts = np.zeros(grid.shape, int)
    for row in sorted(table, key=lambda r: r["mean_map"]):  # the best configuration per cell comes last
        i, j = TAG_LIMITS.index(row["tag_limit"]), TAG_THRESHOLDS.index(row["tag_threshold"])
        grid[i, j] = row[f"{stat}_map"] if stat == "mean" or row["runs"] > 1 else np.nan  # one run: no std
        counts[i, j] += 1
    fig, ax = plt.subplots(figsize=(6.5, 5))
    cmap = plt.get_cmap("viridis")
    known = np.isfinite(grid).any()
    lo = 0.0 if stat == "std" or not known else np.nanmin(grid)  # a std scale starts at 0, never below
    hi = max(np.nanmax(grid) if known else 1.0, lo + 1e-3)
    image = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi)
    for (i, j), value in np.ndenumerate(grid):
        if np.isnan(value):
            continue
        shade = cmap((value - lo) / (hi - lo))
        dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.55
        digits = 3 if stat == "mean" else 4  # a std over a few seeds is often under 0.001
        ax.text(j, i, f"{value:.{digits}f}\nn={counts[i, j]}", ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
    what = "mean over seeds" if stat == "mean" else "std over seeds"
    ax.set(xticks=range(len(TAG_THRESHOLDS)), xticklabels=TAG_THRESHOLDS, yticks=range(len(TAG_LIMITS)),
           yticklabels=TAG_LIMITS, xlabel="tag threshold", ylabel="tag limit",
           title=f"validation mAP ({what}) of the best configuration per cell\n(n = configurations tried; blank = "
                 f"{'none' if stat == 'mean' else 'none, or one run'})")
    fig.colorbar(image, label=f"validation mAP ({stat})")
    _save(fig, out / f"heatmap_{stat}.png")


def pooling(out: Path, table: list) -> None:
    """`pooling.png`: every configuration's validation mAP by pooling, with counts and medians."""
    fig, ax = plt.subplots(figsize=(5, 4))
    rng = np.random.default_rng(0)
    for x, pool in enumerate(("max", "avg")):
        values = np.array([r["mean_map"] for r in table if r["pooling"] == pool])
        if len(values):
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(values)), values, s=18, alpha=0.7)
            ax.hlines(np.median(values), x - 0.25, x + 0.25, color="k", lw=2)
    counts = [sum(r["pooling"] == p for r in table) for p in ("max", "avg")]
    ax.set(xticks=[0, 1], xticklabels=[f"max\n(n={counts[0]})", f"avg\n(n={counts[1]})"], xlim=(-0.6, 1.6),
           ylabel="validation mAP (mean over seeds)",
           title="masked max vs avg pooling\n(each dot a configuration; other values vary;\nbar = median)")
    _save(fig, out / "pooling.png")


def write_plots(out: Path, table: list) -> list:
    """Writes every plot; returns their file names."""
    for stat in ("mean", "std"):
        heatmap(out, table, stat)
    pooling(out, table)
    return ["heatmap_mean.png", "heatmap_std.png", "pooling.png"]


if __name__ == "__main__":
    raise SystemExit("tuning/plots.py is a library module (the search's plots): "
                     "run python tuning/search.py --help or python tuning/compare.py --help")
