"""`report.md`, `per_class_ap.csv` and PNG plots for a scored run, the runs compared and the baselines.

    write_report("saved_models/contextual/report", evaluate_run("saved_models/contextual", compare=[...]))

One function per section; each returns its Markdown lines and the files it wrote. The numbers come
from `app.evaluation.report_data` and `app.evaluation.tables`, so the terminal shows the same ones.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from app.evaluation import report_plots as plots
from app.evaluation.report_data import (Margins, at_least, best_and_worst, by_positives, margins, positives_floor,
                                        scored, systems_by_map)
from app.evaluation.run_mode import BASELINES, MACHINE, RunEvaluation
from app.evaluation.tables import (Table, class_table, group_title, level_table, markdown, slice_table,
                                   summary_table, top_k_metrics)
from app.fileio import atomic_folder, atomic_write_text
from app.wording import plural

MARGIN_ROWS = 15  # rows per side in the tables of margins against the machine labels
INLINE_CLASSES = 150  # report.md lists every class itself up to this many; beyond, per_class_ap.csv only
PROTOCOLS = {"challenge": "a score of 0 is no prediction, as for a challenge submission",
             "study": "every verified (image, class) is a detection with its score, 0 included, as the 2020 study "
                      "scored"}


def write_report(out_dir: str | Path, result: RunEvaluation) -> list[str]:
    """Writes `report.md`, `per_class_ap.csv` and the plots.

    Args:
        out_dir: the report folder (created if needed).
        result: the evaluation (`app.evaluation.run_mode.evaluate_run`).

    Returns:
        The files written, `report.md` first. The folder is written beside `out_dir` and swapped in
        whole, replacing an earlier report there.
    """
    with atomic_folder(out_dir) as out:
        files = _write_sections(out, result)
    return files


def _write_sections(out: Path, result: RunEvaluation) -> list[str]:
    """Writes every section's files and `report.md` into `out`; returns the files."""
    systems = systems_by_map(result)
    lines, files = _header(result, systems), []
    for section in (_systems_section, _slices_section, _levels_section, _classes_section, _machine_section,
                    _every_class_section):
        more_lines, more_files = section(out, result, systems)
        lines += more_lines
        files += more_files
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return ["report.md"] + files


def _header(result: RunEvaluation, systems: list) -> list[str]:
    """The title and what was scored: data, split, protocol, floor, late fusion, systems."""
    n_classes = len(scored(result))
    floor = (f"{result.floor}: every score under {result.floor} was set to 0 (machine labels exist only from 0.5)"
             if result.floor else "none: scores are used as they are")
    tags, image = result.fusion_runs or ("tags-only", "image-only")
    fusion = (f"λ = {result.fusion_weight:.2f}, tuned for mAP on validation: λ·P(`{image}`) + (1 − λ)·P(`{tags}`)"
              if result.fusion_weight is not None else
              "none (it needs a tags-only and an image-only run among `--compare`)")
    compared = [s for s in systems if s != result.name and s not in _baselines(result)]
    return [f"# Evaluation of `{result.name}` on the {result.split} split", "",
            f"- **Dataset**: `{result.data}`",
            f"- **Split**: {result.split}, {plural(result.photos, 'photo') if result.photos else '? photos'}; "
            f"{n_classes} of the {plural(len(result.class_mids), 'class')} have a verified positive (the others have "
            "no AP and are left out of every mean)",
            *(f"- **Warning**: {warning}" for warning in result.warnings),
            f"- **Protocol**: {result.protocol}: {PROTOCOLS.get(result.protocol, '')}",
            f"- **Floor**: {floor}", f"- **Late fusion**: {fusion}",
            f"- **Systems**: **{result.name}** (this run, in bold in the tables); compared runs: "
            f"{', '.join(compared) or 'none'}; baselines: {', '.join(_baselines(result))}", ""]


def _baselines(result: RunEvaluation) -> list[str]:
    return [s for s in result.summary if s in BASELINES or s.startswith("late fusion")]


def _systems_section(out: Path, result: RunEvaluation, systems: list) -> tuple[list, list]:
    """Every system on every metric, highest mAP first."""
    lines = ["## Systems", "", *markdown(summary_table(result)), "",
             f"mAP is the Open Images image-level mAP over the {plural(len(scored(result)), 'class')} with a verified positive. "
             "P@k and R@k rank each photo's verified classes by score (photos with a verified positive). "
             f"Micro and macro F1 and the Hamming loss (lower is better) use `{result.name}`'s per-class thresholds, "
             "tuned for F1 on validation, and 0.5 for every other system, which favours the run in those columns.",
             ""]
    rest = top_k_metrics(result)
    if rest:
        lines += ["### Top-k metrics", "", *markdown(summary_table(result, rest)), ""]
    return lines, []


def _slices_section(out: Path, result: RunEvaluation, systems: list) -> tuple[list, list]:
    """One table and one plot per slice group."""
    if not result.slices:
        return [], []
    lines = ["## mAP on slices of photos", "",
             "Each slice is a set of photos of the split; its mAP is the mean AP over the classes with a verified "
             "positive among those photos (the *classes* row), so two slices may average over different classes. "
             "*all photos* is the mAP of the whole split. A `–` is a system the slice does not score.", ""]
    files = []
    for group in result.slices:
        name = plots.slice_plot(out, result, group, systems)
        title = group_title(group)
        lines += [f"### {title[:1].upper()}{title[1:]}", "", *markdown(slice_table(result, [group])), "", f"![{name}]({name})", ""]
        files.append(name)
    return lines, files


def _levels_section(out: Path, result: RunEvaluation, systems: list) -> tuple[list, list]:
    """Mean AP by hierarchy level: a table and `ap_by_level.png`."""
    name = plots.level_plot(out, result, systems)
    return ["## AP by hierarchy level", "",
            "Level 1 holds the top-level classes (Animal, Vehicle), level 2 their children, and so on; each cell is "
            "the mean AP over the level's classes with a verified positive.", "",
            *markdown(level_table(result)), "", f"![{name}]({name})", ""], [name]


def _classes_section(out: Path, result: RunEvaluation, systems: list) -> tuple[list, list]:
    """Per-class AP on one class order, and the best and worst classes."""
    choice = best_and_worst(result)
    files = [plots.per_class_plot(out, result, systems), plots.best_worst_plot(out, result, choice)]
    shown = [s for s in (result.name, MACHINE) if s in result.per_class]
    lines = ["## Per-class AP", "",
             f"Every system's AP per class, the classes in one order: `{result.name}`'s AP, highest first. The full "
             "table is under [Every class](#every-class).", "", f"![{files[0]}]({files[0]})", "",
             f"### {len(choice.best)} best and {len(choice.worst)} worst classes", "",
             f"By `{result.name}`'s AP, among the {plural(choice.candidates, 'class')} with at least "
             f"{plural(choice.min_positives, 'verified positive')} (fewer positives make an AP of 1 or 0 by chance); "
             "ties go to more positives. No class is both among the best and the worst.", "",
             "**Best**", "", *markdown(class_table(result, choice.best, shown)), "",
             "**Worst**", "", *markdown(class_table(result, choice.worst, shown)), "", f"![{files[1]}]({files[1]})", ""]
    return lines, files


def _machine_section(out: Path, result: RunEvaluation, systems: list) -> tuple[list, list]:
    """Where the run beats the machine labels, and where they beat it: a plot and the largest margins."""
    if MACHINE not in result.per_class or result.name == MACHINE:
        return [], []
    m, floor = margins(result, MACHINE), positives_floor(result)
    name = plots.versus_plot(out, result, MACHINE, m, floor)
    total = len(m.better) + len(m.worse) + len(m.ties)
    lines = [f"## `{result.name}` against the machine labels", "",
             f"`{result.name}` has the higher AP on {len(m.better)} of the {plural(total, 'class')}, the machine labels on "
             f"{len(m.worse)}, and {len(m.ties)} are equal. Above the diagonal `{result.name}` is better. The "
             f"tables give the largest margins among the classes with at least {plural(floor, 'verified positive')}; every "
             "class is under [Every class](#every-class).", "", f"![{name}]({name})", ""]
    for idx, who in ((m.better, f"`{result.name}` is better"), (m.worse, "the machine labels are better")):
        listed = at_least(result, idx, floor)
        shown = "all listed, largest margin first" if len(listed) <= MARGIN_ROWS else \
            f"the {MARGIN_ROWS} largest margins listed"
        lines += [f"### Classes where {who} ({len(idx)})", "",
                  f"Of these, {plural(len(listed), 'class')} with at least {plural(floor, 'positive')}" + (f": {shown}." if len(
                      listed) else "."), ""]
        if len(listed):
            lines += [*markdown(_margin_table(result, listed[:MARGIN_ROWS], m)), ""]
    return lines, [name]


def _margin_table(result: RunEvaluation, idx: np.ndarray, m: Margins) -> Table:
    table = class_table(result, idx, [result.name, MACHINE])
    table.header[0].append("difference")
    for row, i in zip(table.rows, idx):
        row.append(f"{m.difference[i]:+.3f}")
    return table


def _every_class_section(out: Path, result: RunEvaluation, systems: list) -> tuple[list, list]:
    """Every class with a positive, most positives first: in `per_class_ap.csv`, and in report.md unless long."""
    idx = by_positives(result)
    table = class_table(result, idx, systems)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table.header + table.rows)
    atomic_write_text(out / "per_class_ap.csv", buffer.getvalue())
    lines = ["## Every class", "",
             f"The {plural(len(idx), 'class')} with a verified positive in the split, most positives first, with each "
             f"system's AP; also in [per_class_ap.csv](per_class_ap.csv)."]
    if len(idx) <= INLINE_CLASSES:
        lines += ["", *markdown(table)]
    else:
        lines[-1] += f" They are too many to list here (over {INLINE_CLASSES}): see the CSV."
    return lines, ["per_class_ap.csv"]
