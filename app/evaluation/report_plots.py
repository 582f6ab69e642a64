"""The report's PNG plots, one function per plot.

Every plot labels its numbers: dot plots print each value in a column beside its row, and
legends sit outside the data.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from app.evaluation.report_data import BestWorst, Margins, at_least, by_run_ap, level_means, slice_value
from app.evaluation.run_mode import RunEvaluation
from app.evaluation.tables import group_title, number
from app.plotting import plt, save_figure
from app.wording import plural

SYSTEM_COLORS = plt.get_cmap("tab10").colors
SERIES_COLORS = plt.get_cmap("Dark2").colors
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
GLYPHS = dict(zip(MARKERS + ("|",), ("●", "■", "▲", "◆", "▼", "✚", "✖", "★", "◀", "▶", "┃")))


def short(name: str, width: int = 32) -> str:
    """A system's name for a plot: long names (run folders named by their flags) keep both ends."""
    return name if len(name) <= width else f"{name[:width - 12]}…{name[-11:]}"


class Series(NamedTuple):
    """One kind of dot in a dot plot: a slice, or a hierarchy level.

    Args:
        label: its name.
        note: its size, under the name (e.g. "683 photos, 85 classes").
        values: `{system: value}` (a system it does not score is left out).
    """

    label: str
    note: str
    values: dict


def dot_plot(path: Path, title: str, systems: Sequence[str], series: Sequence[Series], run: str,
             xlabel: str, reference: bool = False) -> None:
    """Systems in rows, one dot per series, each value printed in a column to the right.

    Args:
        path: the PNG.
        title: the plot's title.
        systems: the rows, top first.
        series: the dots; their colours and shapes head the value columns.
        run: the system set in bold.
        xlabel: what the values are.
        reference: the first series is a reference (the whole split), drawn as a grey bar.
    """
    n, k = len(systems), len(series)
    fig, (ax, table) = plt.subplots(1, 2, figsize=(6.5 + 1.1 * k, 2.6 + 0.4 * n), width_ratios=[5.0, 1.1 * k])
    y = np.arange(n)[::-1]
    values = np.array([[_float(s.values.get(system)) for system in systems] for s in series], float).reshape(k, n)
    for row in range(n):
        finite = values[:, row][np.isfinite(values[:, row])]
        if len(finite) > 1:
            ax.plot([finite.min(), finite.max()], [y[row]] * 2, color="0.85", lw=3, zorder=1, solid_capstyle="round")
    styles = _styles(k, reference)
    for j, (marker, color) in enumerate(styles):
        ax.scatter(values[j], y, marker=marker, color=color, s=200 if marker == "|" else 70, zorder=2, clip_on=False,
                   linewidths=2 if marker == "|" else 0.5, edgecolors=None if marker == "|" else "white")
    _system_axis(ax, y, systems, run)
    ax.set(xlim=_limits(values), ylim=(-0.6, n - 0.4), xlabel=xlabel)
    ax.grid(axis="x", alpha=0.4)
    _value_columns(table, values, series, styles, y)
    fig.suptitle(title)
    save_figure(fig, path)


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _system_axis(ax, y: np.ndarray, systems: Sequence[str], run: str) -> None:
    ax.set_yticks(y, [short(system) for system in systems])
    for tick, system in zip(ax.get_yticklabels(), systems):
        tick.set_fontweight("bold" if system == run else "normal")


def _styles(k: int, reference: bool) -> list[tuple]:
    """`(marker, colour)` of each series: a grey bar for a reference, then shapes and colours in turn."""
    styles = [("|", "0.45")] if reference else []
    return styles + [(MARKERS[j % len(MARKERS)], SERIES_COLORS[j % len(SERIES_COLORS)]) for j in range(k - len(styles))]


def _value_columns(table, values: np.ndarray, series: Sequence[Series], styles: list, y: np.ndarray) -> None:
    """Each series' values in a column, under its dot's shape and colour, name and size."""
    n = len(y)
    table.set(xlim=(-0.5, len(series) - 0.5), ylim=(-0.6, n - 0.4))
    table.axis("off")
    for j, (s, (marker, color)) in enumerate(zip(series, styles)):
        table.text(j, n - 0.35, f"{GLYPHS[marker]}\n{textwrap.fill(s.label, 10)}\n{s.note}", ha="center", va="bottom", color=color,
                   fontsize=8, fontweight="bold", linespacing=1.2)
        for row in range(n):
            table.text(j, y[row], number(values[j, row]), ha="center", va="center", fontsize=9)


def _limits(values: np.ndarray) -> tuple[float, float]:
    """An x-range around the values, so that close values stay apart (0.90 against 0.94)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = max(hi - lo, 0.05) * 0.08
    return max(0.0, lo - pad), min(1.0, hi + pad) if hi < 1.0 else 1.0


def slug(group: str) -> str:
    """A file-name part for a slice group: `by_{slug}.png`."""
    return re.sub(r"[^a-z0-9]+", "_", group.lower()).strip("_") or "group"


def slice_plot(out: Path, result: RunEvaluation, group: str, systems: Sequence[str]) -> str:
    """`by_{group}.png`: each system's mAP on the whole split and on each slice of the group.

    Returns:
        The file name.
    """
    n_classes = int((np.asarray(result.positives) > 0).sum())
    series = [Series("all photos", _size(result.photos, n_classes), {s: result.summary[s].get("map") for s in systems})]
    for label in result.slices[group]:
        series.append(Series(label, _size(result.slice_sizes[group][label],
                                          result.slice_classes.get(group, {}).get(label)),
                             {s: slice_value(result, group, label, s) for s in systems}))
    name = f"by_{slug(group)}.png"
    dot_plot(out / name, f"mAP by slice: {group_title(group)}", systems, series, result.name,
             "mAP (each slice over the classes with a verified positive among its photos)", reference=True)
    return name


def _size(photos, classes) -> str:
    return (f"{plural(photos, 'photo') if photos else '? photos'}\n"
            f"{plural(classes, 'class') if classes is not None else '? classes'}")


def level_plot(out: Path, result: RunEvaluation, systems: Sequence[str]) -> str:
    """`ap_by_level.png`: each system's mean AP over the classes of each hierarchy level.

    Returns:
        The file name.
    """
    series = [Series(f"level {level}", plural(values['classes'], 'class'), {s: values[s] for s in systems})
              for level, values in level_means(result).items()]
    dot_plot(out / "ap_by_level.png", "Mean AP by hierarchy level (1 = top-level classes)", systems, series,
             result.name, "mean AP over the level's classes with a verified positive")
    return "ap_by_level.png"


def per_class_plot(out: Path, result: RunEvaluation, systems: Sequence[str]) -> str:
    """`per_class_ap.png`: every system's AP on one class order, the run's (highest AP first).

    Returns:
        The file name.
    """
    order = by_run_ap(result)
    x = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for j, system in enumerate(systems):
        ap = result.per_class[system][order]
        if system == result.name:
            ax.plot(x, ap, color="k", lw=2.2, zorder=3, label=f"{short(system)} (sets the order)")
        else:
            ax.scatter(x, ap, s=16, alpha=0.7, color=SYSTEM_COLORS[j % 10], marker=MARKERS[j % len(MARKERS)], label=short(system),
                       linewidths=0)
    ax.set(xlim=(-1, len(order)), ylim=(-0.03, 1.03), ylabel="AP",
           xlabel=f"the {plural(len(order), 'class')} with a verified positive, in order of {short(result.name)} AP\n"
                  "(highest first; ties: more positives first)",
           title="Per-class AP, every system on the same class order")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    save_figure(fig, out / "per_class_ap.png")
    return "per_class_ap.png"


def best_worst_plot(out: Path, result: RunEvaluation, choice: BestWorst) -> str:
    """`best_worst.png`: the best and worst classes by the run's AP, with their positives.

    Returns:
        The file name.
    """
    ap, positives, names = result.per_class[result.name], result.positives, result.class_names
    rows = max(len(choice.best), len(choice.worst), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.3 + 0.34 * rows))
    for ax, idx, what, color in ((axes[0], choice.best, "best", "tab:green"),
                                 (axes[1], choice.worst, "worst", "tab:red")):
        y = np.arange(len(idx))[::-1]
        ax.barh(y, ap[idx], color=color, alpha=0.75)
        ax.set_yticks(y, [names[i] for i in idx])
        for yi, i in zip(y, idx):
            ax.text(ap[i] + 0.02, yi, f"{ap[i]:.3f}   {plural(int(positives[i]), 'positive')}", va="center", fontsize=8)
        ax.set(xlim=(0, 1.5), ylim=(-0.6, rows - 0.4), xticks=np.linspace(0, 1, 5), xlabel=f"{short(result.name)} AP",
               title=f"{len(idx)} {what}")
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"Classes by {short(result.name)} AP, among the {choice.candidates} with at least "
                 f"{choice.min_positives} verified positive{'s' if choice.min_positives > 1 else ''}\n"
                 f"(ties: more positives first)")
    save_figure(fig, out / "best_worst.png")
    return "best_worst.png"


def versus_plot(out: Path, result: RunEvaluation, other: str, m: Margins, floor: int, outliers: int = 5) -> str:
    """`model_vs_machine.png`: per-class AP of the run against another system (the machine labels),
    with the side where each is better and the largest margins named.

    Args:
        out: the report folder.
        result: the evaluation.
        other: the system on the x axis.
        m: the run's margins over it.
        floor: only classes with at least this many positives are named.
        outliers: how many are named on each side.

    Returns:
        The file name.
    """
    run_ap, rival = result.per_class[result.name], result.per_class[other]
    both = ~np.isnan(m.difference)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.fill_between([0, 1], [0, 1], [1, 1], color="tab:green", alpha=0.07, lw=0)
    ax.fill_between([0, 1], [0, 0], [0, 1], color="tab:red", alpha=0.07, lw=0)
    ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1)
    ax.scatter(rival[both], run_ap[both], s=18, alpha=0.6, color="tab:blue", linewidths=0, zorder=2)
    ax.text(0.02, 0.55, f"{short(result.name, 24)}\nbetter: {plural(len(m.better), 'class')}", color="darkgreen",
            va="center", fontsize=10)
    ax.text(0.98, 0.02, f"{other} better: {plural(len(m.worse), 'class')}", color="darkred", ha="right", fontsize=10)
    if len(m.ties):
        ax.text(0.98, 0.06, f"equal: {plural(len(m.ties), 'class')}", color="0.3", ha="right", fontsize=9)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal", xlabel=f"{other} AP", ylabel=f"{short(result.name)} AP",
           title=f"Per class: {short(result.name)} against {other}\nnamed: the {outliers} largest margins each side, "
                 f"among classes with ≥ {plural(floor, 'positive')}\n(positives in brackets)")
    named = list(at_least(result, m.better, floor)[:outliers]) + list(at_least(result, m.worse, floor)[:outliers])
    fig.tight_layout()
    place_labels(ax, [(rival[i], run_ap[i]) for i in named],
                 [f"{result.class_names[i]} ({result.positives[i]})" for i in named],
                 np.column_stack([rival[both], run_ap[both]]))
    save_figure(fig, out / "model_vs_machine.png")
    return "model_vs_machine.png"


# Where a label may go, in points from its point: rings of 12 directions, nearest first.
OFFSETS = [(r * math.cos(a), r * math.sin(a)) for r in (10, 18, 28, 40, 55, 70) for a in np.radians(np.arange(30, 390, 30))]


def place_labels(ax, anchors: Sequence[tuple], labels: Sequence[str], points: np.ndarray) -> None:
    """Names points with arrows, choosing for each label the nearby spot that overlaps the fewest
    labels already placed and points, inside the axes.

    Args:
        ax: the axes.
        anchors: `(x, y)` of each named point, in data coordinates.
        labels: their names.
        points: `[n, 2]` every point drawn, to keep labels off them.
    """
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    dots = ax.transData.transform(points) if len(points) else np.zeros((0, 2))
    placed = []
    for (x, y), label in zip(anchors, labels):
        costs = []
        for dx, dy in OFFSETS:
            style = dict(xytext=(dx, dy), textcoords="offset points", fontsize=8,
                         ha="left" if dx > 3 else "right" if dx < -3 else "center",
                         va="bottom" if dy > 3 else "top" if dy < -3 else "center")
            note = ax.annotate(label, (x, y), **style)  # no arrow yet: its extent is the text's alone
            box = note.get_window_extent(renderer).expanded(1.05, 1.2)
            note.remove()
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            covered = int(((dots[:, 0] > box.x0) & (dots[:, 0] < box.x1) & (dots[:, 1] > box.y0)
                           & (dots[:, 1] < box.y1)).sum())
            costs.append(((0 if inside else 1000) + 100 * sum(box.overlaps(b) for b in placed) + covered
                          + math.hypot(dx, dy) / 10, box, style))
        cost, box, style = min(costs, key=lambda c: c[0])
        ax.annotate(label, (x, y), arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6), zorder=4, **style)
        placed.append(box)
