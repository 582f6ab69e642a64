"""Score predictions with the Open Images challenge image-level mAP.

Any model's predictions, from CSV files in the Open Images formats:
    python app/evaluate.py --predictions P.csv --labels L.csv --hierarchy H.json [--classes C.csv] [--json]

A trained run on its shards, with baselines, more metrics and a report:
    python app/evaluate.py --model saved_models/contextual [--data tfrecords/demo] [--split test]
                           [--floor 0.5] [--compare saved_models/tags saved_models/image] [--report DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python app/evaluate.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from app.cli import input_errors, setup_logging  # noqa: E402
from app.errors import InputError  # noqa: E402,F401  (kept importable here for callers)

log = logging.getLogger("evaluate")


def evaluate_run(run_path: Path, data: Path | None, split: str, floor: float, compare: list) -> dict:
    """Scores a trained run, its baselines and compared runs on one split."""
    from app.data.hierarchy import Hierarchy
    from app.data.pipeline import DatasetInfo, load_eval_arrays
    from app.evaluation import baselines
    from app.evaluation.metrics import average_precisions, mean_average_precision, summary_metrics, \
        tune_class_thresholds
    from app.evaluation.scoring import TrainedRun
    from app.fileio import atomic_write_json

    run = TrainedRun.load(run_path)
    data = data or Path(run.metrics.get("data", "tfrecords/demo"))
    info = DatasetInfo.load(data)
    truth = load_eval_arrays(info, split)
    val = load_eval_arrays(info, "validation")

    def floored(s):
        return np.where(s >= floor, s, 0.0) if floor > 0 else s

    systems = {run.name: floored(run.score(info, split))}
    val_scores = {run.name: floored(run.score(info, "validation"))}
    thresholds = tune_class_thresholds(val_scores[run.name], val.verified)
    atomic_write_json(run.path / "thresholds.json", {"split": "validation", "thresholds": thresholds.tolist()})
    others = [TrainedRun.load(p) for p in compare]
    for other in others:
        systems[other.name] = floored(other.score(info, split))
        val_scores[other.name] = floored(other.score(info, "validation"))
    kinds = {r.config.model.model: r.name for r in [run, *others]}
    if "tags" in kinds and "image" in kinds:
        weight, _ = baselines.tune_fusion_weight(val_scores[kinds["image"]], val_scores[kinds["tags"]], val.verified)
        systems[f"late fusion (λ={weight:.2f})"] = baselines.late_fusion(systems[kinds["image"]],
                                                                         systems[kinds["tags"]], weight)
    systems["machine labels"] = baselines.machine_label_scores(truth.machine)
    train_verified = load_eval_arrays(info, "train").verified
    systems["most likely"] = baselines.most_likely_scores(train_verified, len(truth.image_ids))

    summary = {name: summary_metrics(s, truth.verified, thresholds if name == run.name else 0.5)
               for name, s in systems.items()}
    per_class = {name: average_precisions(s, truth.verified) for name, s in systems.items()}
    lang = np.where(truth.languages == "en", "en", np.where(truth.languages == "un", "undetected", "other"))
    slices = {"language": {}, "tags": {}}
    sizes = {"language": {}, "tags": {}}
    for key, groups in (("language", {g: lang == g for g in ("en", "other", "undetected")}),
                        ("tags", {"with tags": truth.has_tags, "without tags": ~truth.has_tags})):
        for label, rows in groups.items():
            if rows.any():
                slices[key][label] = {n: mean_average_precision(s[rows], truth.verified[rows]) for n, s in systems.items()}
                sizes[key][label] = int(rows.sum())
    hierarchy = Hierarchy.from_json(info.data_dir / "hierarchy.json", [m for m, _ in info.classes])
    return {"name": run.name, "split": split, "floor": floor, "class_names": [n for _, n in info.classes],
            "levels": [hierarchy.level(m) for m, _ in info.classes], "per_class": per_class, "summary": summary,
            "slices": slices, "slice_sizes": sizes}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csv_mode = p.add_argument_group("CSV mode (any model)")
    csv_mode.add_argument("--predictions", type=Path, help="ImageID,LabelName,Score CSV")
    csv_mode.add_argument("--labels", type=Path, help="human-verified labels CSV (Open Images format)")
    csv_mode.add_argument("--hierarchy", type=Path, help="hierarchy JSON")
    csv_mode.add_argument("--classes", type=Path, help="MID,DisplayName CSV (default: the 500 challenge classes)")
    csv_mode.add_argument("--json", action="store_true", help="print JSON with every class's AP")
    run_mode = p.add_argument_group("run mode (a trained model)")
    run_mode.add_argument("--model", type=Path, help="run folder, e.g. saved_models/contextual")
    run_mode.add_argument("--data", type=Path, help="dataset folder (default: the one the run was trained on)")
    run_mode.add_argument("--split", default="test", choices=["train", "validation", "test"])
    run_mode.add_argument("--floor", type=float, default=0.0,
                          help="scores below this become 0 (0.5 compares fairly with machine labels)")
    run_mode.add_argument("--compare", type=Path, nargs="*", default=[],
                          help="other runs (e.g. tags and image: adds late fusion)")
    run_mode.add_argument("--report", type=Path, help="write report.md and plots here")
    args = p.parse_args(argv)
    if args.model is None and None in (args.predictions, args.labels, args.hierarchy):
        p.error("give --predictions, --labels and --hierarchy, or --model")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    if args.model is None:
        from app.evaluation.csv_mode import evaluate_csv

        with input_errors():
            result = evaluate_csv(args.predictions, args.labels, args.hierarchy, args.classes)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.json:
            print(json.dumps(dataclasses.asdict(result), indent=2))
        else:
            print(f"mAP {result.map:.6f} over {result.classes_scored} classes, {result.images} images")
        return result
    result = evaluate_run(args.model, args.data, args.split, args.floor, args.compare)
    keys = ["map", "precision@1", "recall@5", "micro_f1", "macro_f1", "hamming_loss"]
    print(f"{args.split} split, Open Images protocol" + (f", scores floored at {args.floor}" if args.floor else ""))
    print(f"  {'system':<28}" + "".join(f"{k:>13}" for k in keys))
    for name, metrics in result["summary"].items():
        print(f"  {name:<28}" + "".join(f"{metrics[k]:>13.4f}" for k in keys))
    if args.report:
        from app.evaluation.report import write_report

        files = write_report(args.report, result)
        print(f"  report: {args.report}/ ({', '.join(files)})")
    return result


if __name__ == "__main__":
    main()
