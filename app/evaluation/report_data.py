"""The numbers a report shows, taken from a `RunEvaluation`: system order, class orders and choices,
AP by hierarchy level, slice values.

Pure numpy, shared by the tables (`app.evaluation.tables`), the plots (`app.evaluation.report_plots`)
and the terminal summary, so that they always agree.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from app.evaluation.run_mode import MACHINE, RunEvaluation

MIN_POSITIVES = (10, 5, 2, 1)  # best/worst classes: the first bar that leaves enough classes to choose from


def systems_by_map(result: RunEvaluation) -> list[str]:
    """Every system, highest mAP on the split first (no mAP last); the run first among equals."""
    def key(system: str) -> tuple:
        value = result.summary[system].get("map", math.nan)
        return (math.isnan(value), -value if not math.isnan(value) else 0.0, system != result.name)
    return sorted(result.summary, key=key)


def slice_value(result: RunEvaluation, group: str, label: str, system: str) -> float:
    """A system's mAP on a slice; NaN when the slice does not score it (or has no class with a positive)."""
    value = result.slices.get(group, {}).get(label, {}).get(system)
    return math.nan if value is None else float(value)


def scored(result: RunEvaluation) -> np.ndarray:
    """Indices of the classes with a verified positive in the split (those with an AP)."""
    return np.flatnonzero(np.asarray(result.positives) > 0)


def by_positives(result: RunEvaluation) -> np.ndarray:
    """The classes with a positive, most positives first, then by name."""
    idx = scored(result)
    positives, names = np.asarray(result.positives)[idx], np.asarray(result.class_names)[idx]
    return idx[np.lexsort((names, -positives))]


def by_run_ap(result: RunEvaluation) -> np.ndarray:
    """The classes with a positive, the run's highest AP first; ties: more positives first, then by name."""
    idx = scored(result)
    ap, positives = result.per_class[result.name][idx], np.asarray(result.positives)[idx]
    return idx[np.lexsort((np.asarray(result.class_names)[idx], -positives, -ap))]


class BestWorst(NamedTuple):
    """The best and worst classes by the run's AP, among those with at least `min_positives` positives.

    Ties on AP are broken by more positives (a perfect AP over 40 photos outranks one over 2; an AP
    of 0 over 40 photos is worse than one over 2).
    """

    best: np.ndarray
    worst: np.ndarray
    min_positives: int
    candidates: int


def positives_floor(result: RunEvaluation, k: int = 10) -> int:
    """The fewest positives a class needs to be named among the best, worst or largest margins: the
    first of `MIN_POSITIVES` that at least `2k` classes reach (an AP of 1 or 0 over 2 photos is chance).

    Args:
        result: the evaluation.
        k: how many classes are named on each side.

    Returns:
        The floor.
    """
    positives = np.asarray(result.positives)
    return next((m for m in MIN_POSITIVES if (positives >= m).sum() >= 2 * k), 1)


def at_least(result: RunEvaluation, idx: np.ndarray, floor: int) -> np.ndarray:
    """The classes of `idx` (order kept) with at least `floor` positives."""
    return idx[np.asarray(result.positives)[idx] >= floor]


def best_and_worst(result: RunEvaluation, k: int = 10) -> BestWorst:
    """Chooses `k` best and `k` worst classes, never one class in both (fewer when there are under
    `2k` classes to choose from: the best take the first half).

    Args:
        result: the evaluation.
        k: how many of each.

    Returns:
        A `BestWorst` among the classes with at least `positives_floor(result, k)` positives.
    """
    floor = positives_floor(result, k)
    order = at_least(result, by_run_ap(result), floor)
    n_best = min(k, (len(order) + 1) // 2)
    n_worst = min(k, len(order) - n_best)
    # The worst among the classes not named best: with ties on AP (all 1.0, say), the two orders agree
    # and the worst would repeat the best.
    return BestWorst(order[:n_best], _worst_first(result, order[n_best:])[:n_worst], floor, len(order))


def _worst_first(result: RunEvaluation, idx: np.ndarray) -> np.ndarray:
    """`idx` by the run's AP, lowest first; ties: more positives first, then by name."""
    ap, positives = result.per_class[result.name][idx], np.asarray(result.positives)[idx]
    return idx[np.lexsort((np.asarray(result.class_names)[idx], -positives, ap))]


class Margins(NamedTuple):
    """Per-class AP of the run minus that of another system, on the classes both score.

    `better` and `worse` are class indices, the largest margin first (ties: more positives first).
    """

    better: np.ndarray
    worse: np.ndarray
    ties: np.ndarray
    difference: np.ndarray


def margins(result: RunEvaluation, other: str = MACHINE) -> Margins:
    """Where the run beats `other` and where `other` beats the run.

    Args:
        result: the evaluation.
        other: the system compared (default: the machine labels).

    Returns:
        `Margins`; `difference` is the run's AP minus `other`'s for every class (NaN where either has none).
    """
    run, rival = result.per_class[result.name], result.per_class[other]
    difference = run - rival
    idx = np.flatnonzero(~np.isnan(difference))
    positives = np.asarray(result.positives)
    d = difference[idx]
    order = idx[np.lexsort((-positives[idx], -np.abs(d)))]
    d = difference[order]
    return Margins(order[d > 0], order[d < 0], np.sort(order[d == 0]), difference)


def level_means(result: RunEvaluation) -> dict[int, dict]:
    """Mean AP by hierarchy level, over the classes of the level with a positive.

    Returns:
        `{level: {"classes": n, system: mAP, ...}}`, levels ascending.
    """
    levels = np.asarray(result.levels)
    idx = scored(result)
    out = {}
    for level in sorted(set(levels[idx].tolist())):
        chosen = idx[levels[idx] == level]
        out[level] = {"classes": len(chosen),
                      **{system: float(np.nanmean(ap[chosen])) for system, ap in result.per_class.items()}}
    return out
