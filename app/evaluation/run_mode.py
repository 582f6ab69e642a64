"""Scoring trained runs on a split of their dataset, with baselines and slices.

    result = evaluate_run("saved_models/contextual", compare=["saved_models/tags", "saved_models/image"])

Returns a `RunEvaluation` that the CLI prints, `--json` dumps and the report draws.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from app.data.dataset import DatasetInfo
from app.data.hierarchy import Hierarchy
from app.data.pipeline import EvalArrays, load_eval_arrays
from app.evaluation import baselines
from app.evaluation.metrics import (average_precisions, check_protocol, mean_average_precision, summary_metrics,
                                    tune_class_thresholds)
from app.evaluation.scoring import TrainedModel
from app.evaluation.withheld import withheld_slices

log = logging.getLogger("app.evaluation")
MACHINE, MOST_LIKELY = "machine labels", "most likely"


@dataclass
class RunEvaluation:
    """Scores of one run, the runs compared with it and the baselines, on one split.

    Args:
        name: the evaluated run.
        data: the dataset folder.
        split: the split scored.
        floor: scores under this were zeroed.
        class_mids, class_names: the classes, in output order.
        levels: each class's depth in the hierarchy.
        positives: verified positives per class in the split.
        summary: `{system: {metric: value}}`.
        per_class: `{system: AP per class}` (NaN for classes without positives).
        slices: `{"language"|"tags"|"withheld": {slice: {system: mAP}}}`; `withheld` holds "image
            withheld" and "tags withheld": every photo scored without it (`app.evaluation.withheld`).
        slice_sizes: `{"language"|"tags"|"withheld": {slice: photos}}`.
        slice_classes: `{"language"|"tags"|"withheld": {slice: classes with a verified positive in the slice}}`:
            the classes a slice's mAP averages over.
        photos: photos in the split.
        fusion_weight: λ of the late-fusion baseline, tuned on validation (when compared).
        protocol: `challenge` (a score of 0 is no prediction) or `study` (every verified
            (image, class) is a detection, 0 included, as the 2020 study scored).
    """

    name: str
    data: str
    split: str
    floor: float
    protocol: str
    class_mids: list
    class_names: list
    levels: list
    positives: list
    summary: dict
    per_class: dict
    slices: dict = field(default_factory=dict)
    slice_sizes: dict = field(default_factory=dict)
    fusion_weight: Optional[float] = None
    slice_classes: dict = field(default_factory=dict)
    photos: int = 0

    def to_json(self) -> dict:
        """Everything, with per-class AP keyed by MID (null where a class has no positive)."""
        per_class = {system: {mid: (None if np.isnan(ap[i]) else float(ap[i])) for i, mid in enumerate(self.class_mids)}
                     for system, ap in self.per_class.items()}
        return {"name": self.name, "data": self.data, "split": self.split, "floor": self.floor, "protocol": self.protocol,
                "summary": self.summary, "slices": self.slices, "slice_sizes": self.slice_sizes,
                "slice_classes": self.slice_classes, "photos": self.photos,
                "fusion_weight": self.fusion_weight, "classes": dict(zip(self.class_mids, self.class_names)),
                "positives": dict(zip(self.class_mids, self.positives)), "per_class_ap": per_class}


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, split: str = "test", floor: float = 0.0,
                 compare: Sequence[str | Path] = (), protocol: str = "challenge") -> RunEvaluation:
    """Scores a finished run, the runs in `compare` and the baselines on one split.

    Photos are ranked in ImageID order, as the reference evaluator takes them, so that ties
    break exactly as there. The run's per-class thresholds are tuned for F1 on validation and
    saved in its folder.

    Args:
        run_dir: the run to evaluate.
        data_dir: the dataset (default: the one the run was trained on).
        split: `train`, `validation` or `test`.
        floor: zero scores under this (0.5 compares fairly with machine labels).
        compare: other finished runs; a tags-only and an image-only one add late fusion.
        protocol: `challenge` or `study` (see `RunEvaluation`).
    """
    check_protocol(protocol)
    run = TrainedModel(run_dir)
    info = DatasetInfo.load(data_dir or run.run.data_dir)
    others = [TrainedModel(path) for path in compare]
    truth, val = load_eval_arrays(info, split), load_eval_arrays(info, "validation")
    order, val_order = np.argsort(truth.image_ids, kind="stable"), np.argsort(val.image_ids, kind="stable")
    truth, val = truth.take(order), val.take(val_order)

    def floored(scores: np.ndarray) -> np.ndarray:
        return np.where(scores >= floor, scores, 0.0) if floor > 0 else scores

    systems, val_scores = {}, {}
    for model in [run, *others]:
        log.info("scoring %s on %s", model.name, split if split == "validation" else f"{split} and validation")
        systems[model.name] = floored(model.score(info, split))[order]
        val_scores[model.name] = floored(model.score(info, "validation"))[val_order]
    # The run's thresholds were tuned on its raw validation scores; floored scores need their own.
    thresholds = tune_class_thresholds(val_scores[run.name], val.verified) if floor > 0 else run.thresholds
    weight = _add_late_fusion(systems, val_scores, [run, *others], val, protocol)
    systems[MACHINE] = baselines.machine_label_scores(truth.machine)
    systems[MOST_LIKELY] = baselines.most_likely_scores(load_eval_arrays(info, "train").verified, len(truth.image_ids))
    hierarchy = Hierarchy.from_json(info.hierarchy_path, [m for m, _ in info.classes])
    result = RunEvaluation(
        name=run.name, data=str(info.data_dir), split=split, floor=floor, protocol=protocol,
        class_mids=[m for m, _ in info.classes], class_names=[n for _, n in info.classes],
        levels=[hierarchy.level(m) for m, _ in info.classes],
        positives=(truth.verified == 1).sum(axis=0).tolist(),
        summary={name: summary_metrics(s, truth.verified, thresholds if name == run.name else 0.5, protocol)
                 for name, s in systems.items()},
        per_class={name: average_precisions(s, truth.verified, protocol) for name, s in systems.items()},
        fusion_weight=weight, photos=len(truth.image_ids))
    result.slices, result.slice_sizes, result.slice_classes = _slices(systems, truth, protocol)
    withheld, sizes = withheld_slices([run, *others], info, split, order, truth, protocol, floored, systems, weight)
    result.slices.update(withheld)
    result.slice_sizes.update(sizes)
    with_positive = int((truth.verified == 1).any(axis=0).sum())
    result.slice_classes.update({key: dict.fromkeys(group, with_positive) for key, group in withheld.items()})
    return result


def _add_late_fusion(systems: dict, val_scores: dict, models: list, val: EvalArrays, protocol: str) -> Optional[float]:
    """Adds `λ·P_image + (1−λ)·P_tags` when a tags-only and an image-only run are among `models`."""
    kinds = {model.config.model.model: model.name for model in models}
    if "tags" not in kinds or "image" not in kinds:
        return None
    image, tags = kinds["image"], kinds["tags"]
    weight, _ = baselines.tune_fusion_weight(val_scores[image], val_scores[tags], val.verified, protocol=protocol)
    systems[baselines.late_fusion_name(weight)] = baselines.late_fusion(systems[image], systems[tags], weight)
    return weight


def _slices(systems: dict, truth: EvalArrays, protocol: str) -> tuple[dict, dict, dict]:
    """mAP per tag language (English / other / undetected) and with / without tags; photos and
    classes with a positive per slice."""
    lang = np.where(truth.languages == "en", "en", np.where(truth.languages == "un", "undetected", "other"))
    groups = {"language": {g: lang == g for g in ("en", "other", "undetected")},
              "tags": {"with tags": truth.has_tags, "without tags": ~truth.has_tags}}
    slices, sizes, classes = {}, {}, {}
    for key, rows_by_label in groups.items():
        slices[key], sizes[key], classes[key] = {}, {}, {}
        for label, rows in rows_by_label.items():
            if rows.any():
                slices[key][label] = {n: mean_average_precision(s[rows], truth.verified[rows], protocol)
                                      for n, s in systems.items()}
                sizes[key][label] = int(rows.sum())
                classes[key][label] = int((truth.verified[rows] == 1).any(axis=0).sum())
    return slices, sizes, classes
