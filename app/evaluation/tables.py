"""The tables of an evaluation, as rows of text, rendered as Markdown (`report.md`) or for the terminal.

A `Table` holds its cells already formatted, so the report and the terminal show the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from app.evaluation.report_data import level_means, slice_value, systems_by_map
from app.evaluation.run_mode import RunEvaluation
from app.wording import plural

METRIC_NAMES = {"map": "mAP", "micro_f1": "micro F1", "macro_f1": "macro F1", "hamming_loss": "Hamming loss"}
MAIN_METRICS = ("map", "precision@1", "recall@5", "micro_f1", "macro_f1", "hamming_loss")
GROUP_TITLES = {"tags": "with and without tags", "language": "tag language (pycld2; undetected: no tags, or too few)",
                "withheld": "every photo with an input withheld"}


@dataclass
class Table:
    """Formatted cells: the first column is a row label, the others values.

    Args:
        header: one or more header lines, each a cell per column.
        rows: the body.
        bold: indices of rows whose label is set in bold in Markdown.
    """

    header: list
    rows: list
    bold: set = field(default_factory=set)


def number(value: Optional[float], digits: int = 3) -> str:
    """A value with `digits` decimals; "–" for none (NaN or None)."""
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def metric_name(key: str) -> str:
    """A metric's column name: `precision@1` is `P@1`, `recall@5` `R@5`, `f1@3` `F1@3`."""
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    name, _, k = key.partition("@")
    return {"precision": "P", "recall": "R", "f1": "F1"}.get(name, name) + (f"@{k}" if k else "")


def group_title(group: str) -> str:
    """A slice group's title."""
    return GROUP_TITLES.get(group, group)


def headline(result: RunEvaluation) -> str:
    """One line: split, data, photos and classes, protocol, floor and late-fusion λ."""
    n_classes = int((np.asarray(result.positives) > 0).sum())
    photos = plural(result.photos, "photo") if result.photos else "? photos"
    parts = [f"{result.split} split of {result.data}: {photos}, {plural(n_classes, 'class')} with a "
             f"verified positive", f"{result.protocol} protocol",
             f"scores under {result.floor} zeroed" if result.floor else "no floor"]
    if result.fusion_weight is not None:
        fused = " of {} and {}".format(*result.fusion_runs) if result.fusion_runs else ""
        parts.append(f"late fusion{fused} λ={result.fusion_weight:.2f} (tuned on validation)")
    return " | ".join(parts)


def summary_table(result: RunEvaluation, keys: Optional[Sequence[str]] = None) -> Table:
    """Systems (highest mAP first) by metric.

    Args:
        result: the evaluation.
        keys: the metrics; default: `MAIN_METRICS` that the summary has.

    Returns:
        The table.
    """
    first = next(iter(result.summary.values()))
    keys = [k for k in (keys or MAIN_METRICS) if k in first]
    systems = systems_by_map(result)
    rows = [[s] + [number(result.summary[s].get(k)) for k in keys] for s in systems]
    return Table([["system"] + [metric_name(k) for k in keys]], rows, {systems.index(result.name)})


def top_k_metrics(result: RunEvaluation) -> list[str]:
    """The summary's top-k metrics (precision, recall and F1 at each k)."""
    return [k for k in next(iter(result.summary.values())) if "@" in k]


def slice_table(result: RunEvaluation, groups: Sequence[str], group_line: bool = False) -> Table:
    """Systems by slice, after two rows with each slice's photos and classes with a positive.

    Args:
        result: the evaluation.
        groups: the slice groups, in columns; the first column is the whole split.
        group_line: head the columns with a line of group names as well (for the terminal).

    Returns:
        The table.
    """
    columns = [(g, label) for g in groups for label in result.slices[g]]
    n_classes = int((np.asarray(result.positives) > 0).sum())
    photos = ["photos", str(result.photos or "?")] + [str(result.slice_sizes[g][l]) for g, l in columns]
    classes = ["classes with a positive", str(n_classes)] + [
        str(result.slice_classes.get(g, {}).get(l, "?")) for g, l in columns]
    systems = systems_by_map(result)
    rows = [photos, classes] + [[s, number(result.summary[s].get("map"))]
                                + [number(slice_value(result, g, l, s)) for g, l in columns] for s in systems]
    header = [["system", "all photos"] + [label for _, label in columns]]
    if group_line:
        header.insert(0, ["", ""] + [g if i == 0 or columns[i - 1][0] != g else "" for i, (g, _) in enumerate(columns)])
    return Table(header, rows, {2 + systems.index(result.name)})


def level_table(result: RunEvaluation) -> Table:
    """Mean AP by hierarchy level (systems in columns), with the classes averaged over."""
    systems = systems_by_map(result)
    rows = [[f"level {level}", str(values["classes"])] + [number(values[s]) for s in systems]
            for level, values in level_means(result).items()]
    return Table([["level", "classes with a positive"] + systems], rows)


def class_table(result: RunEvaluation, idx: Sequence[int], systems: Optional[Sequence[str]] = None) -> Table:
    """One row per class: name, id (`MID` for Open Images classes, `class id` for a collection's),
    positives, level and the AP of each system.

    Args:
        result: the evaluation.
        idx: the classes, in row order.
        systems: the AP columns (default: every system, highest mAP first).

    Returns:
        The table.
    """
    systems = list(systems or systems_by_map(result))
    rows = [[result.class_names[i], result.class_mids[i], str(result.positives[i]), str(result.levels[i])]
            + [number(result.per_class[s][i]) for s in systems] for i in idx]
    id_name = "MID" if all(mid.startswith("/m/") for mid in result.class_mids) else "class id"
    return Table([["class", id_name, "positives", "level"] + [f"AP {s}" for s in systems]], rows)


def markdown(table: Table) -> list[str]:
    """The table as Markdown lines (header lines joined per column)."""
    header = [" ".join(p for p in parts if p) for parts in zip(*table.header)]
    rule = "".join("|---:" if right else "|---" for right in _numeric_columns(table))
    lines = ["| " + " | ".join(_escape(h) for h in header) + " |", rule + "|"]
    for i, row in enumerate(table.rows):
        label = f"**{_escape(row[0])}**" if i in table.bold else _escape(row[0])
        lines.append("| " + " | ".join([label] + [_escape(c) for c in row[1:]]) + " |")
    return lines


def text(table: Table, indent: str = "  ") -> list[str]:
    """The table as fixed-width text lines: the first column left-aligned, the others right-aligned."""
    lines = table.header + table.rows
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    right = _numeric_columns(table)
    return [indent + "  ".join(cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(line, widths, right)).rstrip()
            for line in lines]


def _numeric_columns(table: Table) -> list[bool]:
    """Whether each column holds numbers (or "–") only, to be right-aligned; the first column never is."""
    columns = list(zip(*table.rows)) if table.rows else [()] * len(table.header[0])
    return [c > 0 and all(_is_number(cell) for cell in cells) for c, cells in enumerate(columns)]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell in ("–", "?")
    return True


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def exhaustive_table(result: RunEvaluation) -> Table:
    """Per-class and per-photo mAP and top-k precision/recall/F1 of each system (exhaustive labels)."""
    k = next(iter(result.exhaustive.values()))["top_k"]["k"]
    header = ["system", "class mAP", "photo mAP", *(f"{m}@{k}" for m in ("CP", "CR", "CF1", "OP", "OR", "OF1"))]
    rows = [[name, number(r["class_map"]), number(r["photo_map"]),
             *(number(r["top_k"][key]) for key in ("cp", "cr", "cf1", "op", "orecall", "of1"))]
            for name, r in result.exhaustive.items()]
    return Table([header], rows)
