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
from tqdm import tqdm

from app.records.dataset import DatasetInfo
from app.sources.hierarchy import Hierarchy
from app.evaluation import baselines
from app.evaluation.exhaustive import exhaustive_reports, is_exhaustive
from app.evaluation.metrics import (check_protocol, sparse_average_precisions, sparse_mean_average_precision,
                                    sparse_summary_metrics)
from app.evaluation.reliability import small_split_warning, tuned_thresholds
from app.evaluation.scoring import TrainedModel, apply_floor
from app.evaluation.truth import SplitTruth, class_counts, load_truth
from app.evaluation.withheld import withheld_slices

log = logging.getLogger("app.evaluation")
MACHINE, MOST_LIKELY, LABEL_PRIOR = "machine labels", "most likely", "label prior"
BASELINES = (MACHINE, MOST_LIKELY, LABEL_PRIOR)


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
        fusion_runs: the `(tags-only, image-only)` runs it fuses: the first of each kind compared.
        protocol: `challenge` (a score of 0 is no prediction) or `study` (every verified
            (image, class) is a detection, 0 included, as the 2020 study scored).
        exhaustive: `{system: app.evaluation.exhaustive.exhaustive_report}` when every photo of the
            split is labelled for every class (NUS-WIDE, COCO, an exhaustive manifest), else empty.
        warnings: what makes these figures unreliable (a split under
            `app.evaluation.reliability.MIN_RELIABLE_PHOTOS` photos; thresholds not tuned).
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
    fusion_runs: Optional[tuple] = None
    slice_classes: dict = field(default_factory=dict)
    photos: int = 0
    exhaustive: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def to_json(self) -> dict:
        """Everything, with per-class AP keyed by MID (null where a class has no positive)."""
        per_class = {system: {mid: (None if np.isnan(ap[i]) else float(ap[i])) for i, mid in enumerate(self.class_mids)}
                     for system, ap in self.per_class.items()}
        return {"name": self.name, "data": self.data, "split": self.split, "floor": self.floor, "protocol": self.protocol,
                "summary": self.summary, "slices": self.slices, "slice_sizes": self.slice_sizes,
                "slice_classes": self.slice_classes, "photos": self.photos,
                "fusion_weight": self.fusion_weight, "fusion_runs": self.fusion_runs, "classes": dict(zip(self.class_mids, self.class_names)),
                "positives": dict(zip(self.class_mids, self.positives)), "per_class_ap": per_class,
                "exhaustive": self.exhaustive, "warnings": self.warnings}


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, split: str = "test", floor: float = 0.0,
                 compare: Sequence[str | Path] = (), protocol: str = "challenge",
                 progress: bool = False) -> RunEvaluation:
    """Scores a finished run, the runs in `compare` and the baselines on one split.

    Photos are ranked in ImageID order, as the reference evaluator takes them, so that ties
    break exactly as there. Each model streams the split and the validation split batch by batch
    and only its scores at the verified (image, class) pairs are kept, so memory stays flat in
    the number of photos. With a floor, the run's per-class thresholds are tuned again for F1 on
    its floored validation scores.

    Args:
        run_dir: the run to evaluate.
        data_dir: the dataset (default: the one the run was trained on).
        split: `train`, `validation` or `test`.
        floor: zero scores under this (0.5 compares fairly with machine labels).
        compare: other finished runs; a tags-only and an image-only one add late fusion (the first
            of each kind).
        protocol: `challenge` or `study` (see `RunEvaluation`).
        progress: show a progress bar over the photos scored.
    """
    check_protocol(protocol)
    run = TrainedModel(run_dir)
    info = DatasetInfo.load(data_dir or run.run.data_dir)
    models = [run, *(TrainedModel(path) for path in compare)]
    log.info("reading the ground truth of %s and validation", split)
    truth = load_truth(info, split)
    val = truth if split == "validation" else load_truth(info, "validation")
    systems, val_scores = _score_models(models, info, split, (truth, val), floor, progress)
    # The run's thresholds were tuned on its raw validation scores; floored scores need their own.
    thresholds, note = (tuned_thresholds(val.pairs, val_scores[run.name], val.num_images) if floor > 0
                        else (run.thresholds, None))
    weight, fused = _add_late_fusion(systems, val_scores, models, val, protocol)
    if info.has_machine_labels:  # a collection has none: a row of zeros would read as a baseline
        systems[MACHINE] = baselines.machine_label_scores(truth.machine)
    train_counts = class_counts(info, "train")
    systems[MOST_LIKELY] = baselines.class_pair_scores(baselines.most_likely_classes(*train_counts), truth.pairs)
    if is_exhaustive(truth.pairs):  # every class ranked per photo: the prior, where most likely's 0/1 scores tie
        systems[LABEL_PRIOR] = baselines.class_pair_scores(baselines.label_prior(*train_counts), truth.pairs)
    hierarchy = Hierarchy.from_json(info.hierarchy_path, [m for m, _ in info.classes])
    result = RunEvaluation(
        name=run.name, data=str(info.data_dir), split=split, floor=floor, protocol=protocol,
        class_mids=[m for m, _ in info.classes], class_names=[n for _, n in info.classes],
        levels=[hierarchy.level(m) for m, _ in info.classes],
        positives=truth.pairs.positives_per_class().tolist(),
        summary={name: sparse_summary_metrics(truth.pairs, s, thresholds if name == run.name else 0.5, protocol)
                 for name, s in systems.items()},
        per_class={name: sparse_average_precisions(truth.pairs, s, protocol) for name, s in systems.items()},
        fusion_weight=weight, fusion_runs=fused, photos=truth.num_images,
        exhaustive=exhaustive_reports(truth.pairs, systems),
        warnings=[w for w in (small_split_warning(split, truth.num_images), note) if w])
    result.slices, result.slice_sizes, result.slice_classes = _slices(systems, truth, protocol)
    withheld, sizes = withheld_slices(models, info, split, truth, protocol, floor, systems, weight)
    result.slices.update(withheld)
    result.slice_sizes.update(sizes)
    with_positive = int((truth.pairs.positives_per_class() > 0).sum())
    result.slice_classes.update({key: dict.fromkeys(group, with_positive) for key, group in withheld.items()})
    return result


def _score_models(models: list, info: DatasetInfo, split: str, truths: tuple, floor: float,
                  progress: bool) -> tuple[dict, dict]:
    """Each model's float64 scores at the verified pairs of `split` and of validation, floored.

    Returns:
        `({model: scores on split}, {model: scores on validation})`.
    """
    truth, val = truths

    systems, val_scores = {}, {}
    splits = {split: truth} if split == "validation" else {split: truth, "validation": val}
    total = len(models) * sum(t.num_images for t in splits.values())
    with tqdm(total=total, unit="photo", desc="scoring", disable=not progress) as bar:
        for model in models:
            log.info("scoring %s on %s", model.name, " and ".join(splits))
            scored = {name: apply_floor(model.score(info, name, t, bar=bar), floor) for name, t in splits.items()}
            systems[model.name], val_scores[model.name] = scored[split], scored["validation"]
    return systems, val_scores


def _add_late_fusion(systems: dict, val_scores: dict, models: list, val: SplitTruth,
                     protocol: str) -> tuple[Optional[float], Optional[tuple]]:
    """Adds `λ·P_image + (1−λ)·P_tags` of the first tags-only and the first image-only run of
    `models`, when there are both; returns λ and the two runs' names."""
    kinds: dict = {}
    for model in models:
        kinds.setdefault(model.config.model.model, model.name)
    if "tags" not in kinds or "image" not in kinds:
        return None, None
    image, tags = kinds["image"], kinds["tags"]
    weight, _ = baselines.sparse_tune_fusion_weight(val.pairs, val_scores[image], val_scores[tags], protocol=protocol)
    systems[baselines.late_fusion_name(weight)] = baselines.late_fusion(systems[image], systems[tags], weight)
    log.info("late fusion of %s (tags-only) and %s (image-only): λ=%.2f", tags, image, weight)
    return weight, (tags, image)


def _slices(systems: dict, truth: SplitTruth, protocol: str) -> tuple[dict, dict, dict]:
    """mAP per tag language (English / other / undetected) and with / without tags; photos and
    classes with a positive per slice."""
    english, undetected = truth.language_is("en"), truth.language_is("un")
    groups = {"language": {"en": english, "other": ~english & ~undetected, "undetected": undetected},
              "tags": {"with tags": truth.has_tags, "without tags": ~truth.has_tags}}
    slices, sizes, classes = {}, {}, {}
    for key, rows_by_label in groups.items():
        slices[key], sizes[key], classes[key] = {}, {}, {}
        for label, rows in rows_by_label.items():
            if rows.any():
                pairs, kept = truth.pairs.select(rows)
                slices[key][label] = {n: sparse_mean_average_precision(pairs, s[kept], protocol)
                                      for n, s in systems.items()}
                sizes[key][label] = int(rows.sum())
                classes[key][label] = int((pairs.positives_per_class() > 0).sum())
    return slices, sizes, classes
