"""`report.md` and PNG plots for a scored run and its baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.fileio import atomic_write_text
from app.plotting import plt, save_figure as _save


def write_report(out_dir: str | Path, result) -> list:
    """Writes report.md and plots.

    Args:
        out_dir: the report folder.
        result: a `RunEvaluation` (`app.evaluation.run_mode`): `name`, `split`, `class_names`, `levels`,
            `per_class` ({system: AP array}), `summary` ({system: metrics}), `slices` ({slice: {system: mAP}}).

    Returns:
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = np.array(result.class_names)
    per_class = result.per_class
    model_ap = per_class[result.name]
    scored = ~np.isnan(model_ap)
    files = []

    fig, ax = plt.subplots(figsize=(8, 4))
    for system, ap in per_class.items():
        ax.plot(np.sort(ap[scored])[::-1], label=system, lw=2 if system == result.name else 1)
    ax.set(xlabel="class rank", ylabel="AP", title=f"Per-class AP ({scored.sum()} classes with positives)")
    ax.legend()
    _save(fig, out / "per_class_ap.png")
    files.append("per_class_ap.png")

    order = np.argsort(model_ap[scored])
    idx = np.flatnonzero(scored)
    worst, best = idx[order[:10]], idx[order[::-1][:10]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, chosen, title in ((axes[0], best, "10 best classes"), (axes[1], worst, "10 worst classes")):
        ax.barh(names[chosen][::-1], model_ap[chosen][::-1])
        ax.set(xlim=(0, 1), title=title, xlabel="AP")
    _save(fig, out / "best_worst.png")
    files.append("best_worst.png")

    machine = per_class.get("machine labels")
    beats = []
    if machine is not None:
        both = scored & ~np.isnan(machine)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(machine[both], model_ap[both], s=12)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlabel="machine labels AP", ylabel=f"{result.name} AP", title="Per class: model vs machine labels")
        _save(fig, out / "model_vs_machine.png")
        files.append("model_vs_machine.png")
        beats = [(names[i], model_ap[i], machine[i]) for i in np.flatnonzero(both) if model_ap[i] > machine[i]]
        beats.sort(key=lambda row: row[2] - row[1])

    levels = np.array(result.levels)
    level_ids = sorted(set(levels[scored]))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(per_class)
    for i, (system, ap) in enumerate(per_class.items()):
        ax.bar(np.arange(len(level_ids)) + i * width,
               [np.nanmean(ap[scored & (levels == lv)]) for lv in level_ids], width, label=system)
    ax.set(xticks=np.arange(len(level_ids)) + 0.4 - width / 2, xticklabels=[f"level {lv}" for lv in level_ids],
           ylabel="mAP", title="AP by hierarchy level")
    ax.legend(fontsize=7)
    _save(fig, out / "ap_by_level.png")
    files.append("ap_by_level.png")

    for key, title in (("language", "mAP by tag language"), ("tags", "mAP with and without tags")):
        slices = result.slices[key]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        labels = list(slices)
        systems = list(next(iter(slices.values())))
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            ax.bar(np.arange(len(labels)) + i * width, [slices[l][system] for l in labels], width, label=system)
        ax.set(xticks=np.arange(len(labels)) + 0.4 - width / 2, xticklabels=labels, ylabel="mAP", title=title)
        ax.legend(fontsize=7)
        _save(fig, out / f"by_{key}.png")
        files.append(f"by_{key}.png")

    lines = [f"# Evaluation of `{result.name}` on the {result.split} split", ""]
    metric_keys = list(next(iter(result.summary.values())))
    lines += ["| system | " + " | ".join(metric_keys) + " |", "|---" * (len(metric_keys) + 1) + "|"]
    for system, metrics in result.summary.items():
        lines.append(f"| {system} | " + " | ".join(f"{metrics[k]:.4f}" for k in metric_keys) + " |")
    for key, title in (("language", "By tag language (mAP)"), ("tags", "With and without tags (mAP)")):
        slices = result.slices[key]
        systems = list(next(iter(slices.values())))
        lines += ["", f"## {title}", "", "| slice | images | " + " | ".join(systems) + " |",
                  "|---" * (len(systems) + 2) + "|"]
        for label, values in slices.items():
            lines.append(f"| {label} | {result.slice_sizes[key][label]} | "
                         + " | ".join(f"{values[s]:.4f}" for s in systems) + " |")
    lines += ["", "## 10 best and 10 worst classes", "", "| best | AP | worst | AP |", "|---|---|---|---|"]
    lines += [f"| {names[b]} | {model_ap[b]:.3f} | {names[w]} | {model_ap[w]:.3f} |" for b, w in zip(best, worst)]
    if machine is not None:
        lines += ["", f"## Classes where the model beats the machine labels ({len(beats)})", "",
                  "| class | model AP | machine AP |", "|---|---|---|"]
        lines += [f"| {n} | {a:.3f} | {b:.3f} |" for n, a, b in beats[:30]]
    lines += ["", "## Plots", ""] + [f"![{f}]({f})" for f in files]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return ["report.md"] + files
