"""Scoring a predictions CSV (`ImageID,LabelName,Score`) against Open Images verified labels.

The challenge image-level mAP of `app.evaluation.metrics`, at Open Images scale: both files go
through the block reader (`app.sources.csvread`), the labels are expanded with the hierarchy per
class (vectorised), and the metric runs on blocks of classes, so that no dense float matrix of
every image and class is ever built. The image axis is in ImageID order (the metric's tie order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from app import resources
from app.badrows import BadRows
from app.sources.csvread import CsvChunk, CsvReader
from app.sources.hierarchy import Hierarchy
from app.sources.oid import HEX_IDS, ImageIdKeys, LabelTable, load_labels, mid_index, read_classes
from app.errors import InputError
from app.evaluation.image_ids import AnyImageIds
from app.evaluation.metrics import average_precisions, check_protocol

PREDICTION_COLUMNS = ("ImageID", "LabelName", "Score")
CLASS_BLOCK = 50  # classes scored per call: a dense [images, 50] float64 block (50 MB at 125k images)
# Odd 64-bit constant mixing the class into an ImageID key, to look for repeats with one sort.
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Predictions:
    """A predictions file as arrays, in file order: row `i` is line `i + 2`."""

    image: np.ndarray  # uint64 ImageID keys (an `ImageIdKeys`)
    label: np.ndarray  # int32 class indices
    score: np.ndarray  # float64


@dataclass
class CsvResult:
    """The mAP over classes with a positive, each such class's AP, and what was scored."""

    map: float
    per_class: dict
    classes_scored: int
    images: int
    warnings: list = field(default_factory=list)


def read_predictions(path: str | Path, class_index: Mapping[str, int], ids: ImageIdKeys = HEX_IDS) -> Predictions:
    """Reads and checks an `ImageID,LabelName,Score` file.

    Args:
        path: plain, gzip or bz2 CSV with exactly that header.
        class_index: `{mid: class index}`.
        ids: how ImageIDs become keys (`AnyImageIds` for ids of any form).

    Raises:
        InputError: at the first bad row, as `file:line: what`: an unparseable line, a malformed
            (or empty) ImageID, an unknown class, a score that is not a number or is outside [0, 1], or a
            second prediction for an (image, class).
    """
    path = Path(path)
    parts, error = [], None
    for chunk in CsvReader(path, PREDICTION_COLUMNS, numbers=("Score",), exact_header=True):
        rows, error = _check_chunk(chunk, class_index, ids)
        parts.append(rows)
        if error is not None:
            break
    predictions = Predictions(*(_concatenate(parts, f, t) for f, t in (("image", np.uint64), ("label", np.int32),
                                                                       ("score", float))))
    repeat = _first_repeat(predictions)
    if repeat is not None:  # every row read lies before `error`
        first, second = repeat
        mids = {i: m for m, i in class_index.items()}
        error = (second + 2, f"second prediction for image {ids.text(predictions.image[second])} class "
                             f"{mids[int(predictions.label[second])]} (first at line {first + 2})")
    if error is not None:
        raise InputError(f"{path}:{error[0]}: {error[1]}")
    return predictions


def _check_chunk(chunk: CsvChunk, class_index: Mapping[str, int], id_keys: ImageIdKeys
                 ) -> tuple[Predictions, tuple | None]:
    """The rows before the chunk's first bad row, and that row's `(line, message)` (None if none)."""
    ids, names = chunk.columns["ImageID"], chunk.columns["LabelName"]
    keys, id_ok = id_keys.keys(ids)
    malformed = "is empty" if isinstance(id_keys, AnyImageIds) else "is not 16 lower-case hex digits"
    label, _ = mid_index(names, class_index)
    score = chunk.numbers("Score")
    checks = [(~id_ok, lambda i: f"ImageID {ids[i].as_py()!r} {malformed}"),
              (label < 0, lambda i: f"unknown class {names[i].as_py()!r} (not in the class list)"),
              (~((score >= 0) & (score <= 1)), lambda i: f"score {float(score[i])} is outside [0, 1]")]
    errors = [(int(chunk.lines[i]), message(int(i))) for mask, message in checks for i in np.flatnonzero(mask)[:1]]
    errors += [(r.line, f"{r.message}: {r.raw.decode('utf-8', 'backslashreplace')!r}") for r in chunk.rejects[:1]]
    error = min(errors) if errors else None
    keep = chunk.lines < error[0] if error else slice(None)
    return Predictions(keys[keep], label[keep], score[keep]), error


def _concatenate(parts: list, name: str, dtype) -> np.ndarray:
    """One field of all parts, releasing the parts' copies as it goes (peak: one field, not all)."""
    out = np.concatenate([getattr(p, name) for p in parts] or [np.zeros(0, dtype)])
    for part in parts:
        setattr(part, name, None)
    return out


def _digest(predictions: Predictions) -> np.ndarray:
    digest = predictions.label.astype(np.uint64)
    digest *= _MIX
    digest ^= predictions.image
    return digest


def _first_repeat(predictions: Predictions) -> tuple[int, int] | None:
    """Rows `(first, second)` of the earliest row that repeats an earlier (image, class); None if none."""
    ordered = _digest(predictions)
    ordered.sort()
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return None
    suspects = np.flatnonzero(np.isin(_digest(predictions), ordered[1:][same]))  # equal digests, maybe equal keys
    image, label = predictions.image[suspects], predictions.label[suspects]
    order = np.lexsort((suspects, label, image))
    repeat = (image[order][1:] == image[order][:-1]) & (label[order][1:] == label[order][:-1])
    if not repeat.any():
        return None
    second = int(suspects[order][1:][repeat].min())
    twins = (predictions.image == predictions.image[second]) & (predictions.label == predictions.label[second])
    return int(np.flatnonzero(twins)[0]), second


def evaluate_csv(predictions: str | Path, labels: str | Path, hierarchy_path: str | Path,
                 classes_path: str | Path | None = None, protocol: str = "challenge") -> CsvResult:
    """mAP and per-class AP of a predictions file against a human-verified labels file.

    Args:
        predictions: `ImageID,LabelName,Score` CSV.
        labels: Open Images human-verified image-level labels CSV.
        hierarchy_path: the hierarchy JSON for the label expansion.
        classes_path: `MID,DisplayName` CSV (default: the 500 challenge classes).
        protocol: `challenge` (a missing or 0 score is no prediction) or `study` (every verified
            (image, class) is a detection; a class the file does not predict scores 0).

    Returns:
        The result; repeated labels (kept, positive wins) and predictions for images without
        labels (ignored, as in the challenge) are in `warnings`.

    Raises:
        InputError: for a bad labels row, a bad predictions row, no verified labels, or no
            predicted image among the labelled ones.
    """
    check_protocol(protocol)
    classes = read_classes(classes_path or resources.CHALLENGE_CLASSES_CSV, any_id=True)  # a dataset's own ids too
    mids = [mid for mid, _ in classes]
    hierarchy = Hierarchy.from_json(hierarchy_path, mids)
    ids = AnyImageIds.from_labels(labels)  # ImageIDs of any form, as the reference evaluator
    table, warnings = _read_labels(Path(labels), hierarchy, ids)
    verified = _verified(table, hierarchy)
    predicted = read_predictions(predictions, {mid: i for i, mid in enumerate(mids)}, ids)
    rows = _labelled_rows(predicted.image, table.images)
    if not (rows >= 0).any():
        example = f" (e.g. {ids.text(predicted.image[0])})" if len(rows) else ""
        raise InputError(f"{predictions}: none of the {len(rows)} predictions is for one of the "
                         f"{len(table.images)} labelled images of {labels}{example}")
    if (rows < 0).any():
        warnings.append(f"{predictions}: {int((rows < 0).sum())} predictions are for images without verified "
                        f"labels (ignored, as in the challenge)")
    predicted.image = None  # 8 bytes a prediction, no longer needed
    ap = _blocked_average_precisions(predicted, rows, verified, protocol)
    scored = ~np.isnan(ap)
    return CsvResult(map=float(np.mean(ap[scored])) if scored.any() else float("nan"),
                     per_class={mid: {"name": name, "ap": float(ap[i])} for i, (mid, name) in enumerate(classes)
                                if scored[i]},
                     classes_scored=int(scored.sum()), images=len(table.images), warnings=warnings)


def _read_labels(path: Path, hierarchy: Hierarchy, ids: ImageIdKeys) -> tuple[LabelTable, list]:
    """The verified labels; any bad row but a repeat stops with its `file:line`."""
    bad = BadRows()
    table = load_labels(path, bad, hierarchy.known_mids(), ids=ids)
    repeats = ("human_label_duplicate", "human_label_conflict")
    fatal = [reason for reason in bad.counts if reason not in repeats]
    if fatal:
        total = sum(bad.counts[r] for r in fatal)
        raise InputError(f"{bad.examples[fatal[0]][0]} ({fatal[0]}; {total} bad label rows in all)")
    if not len(table.label):
        raise InputError(f"{path}: no verified labels" + (f" ({bad.warnings[0]})" if bad.warnings else ""))
    warnings = [f"{path}: {bad.counts[r]} rows {r} (one label kept per image and class, a positive wins), "
                f"e.g. {bad.examples[r][0]}"
                for r in repeats if bad.counts[r]]
    return table, warnings


def _verified(table: LabelTable, hierarchy: Hierarchy) -> np.ndarray:
    """`[images, classes]` int8: 1 positive, 0 negative, -1 unverified, after the expansion."""
    source, cls, positive = hierarchy.expand_arrays(table.label, table.value == 1, table.mids)
    verified = np.full((len(table.images), len(hierarchy.classes)), -1, dtype=np.int8)
    rows = table.image[source]
    verified[rows[~positive], cls[~positive]] = 0
    verified[rows[positive], cls[positive]] = 1  # a positive wins
    return verified


def _labelled_rows(image: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Each prediction's row in the sorted labelled `images` (int32), -1 where its image has no labels.

    Looks up each run of equal ImageIDs once (predictions usually come image by image).
    """
    if not len(images):
        return np.full(len(image), -1, dtype=np.int32)
    starts = np.flatnonzero(np.r_[True, image[1:] != image[:-1]])
    heads = image[starts]
    where = np.minimum(np.searchsorted(images, heads), len(images) - 1)
    found = np.where(images[where] == heads, where, -1).astype(np.int32)
    return np.repeat(found, np.diff(np.r_[starts, len(image)]))


def _blocked_average_precisions(predicted: Predictions, rows: np.ndarray, verified: np.ndarray,
                                protocol: str) -> np.ndarray:
    """`average_precisions` class block by class block, on dense `[images, CLASS_BLOCK]` scores.

    Only predictions on verified (image, class) pairs are placed: the metric ignores the others.
    """
    num_classes = verified.shape[1]
    ap = np.empty(num_classes)
    on = np.flatnonzero(rows >= 0)
    on = on[verified[rows[on], predicted.label[on]] >= 0]
    row, label, score = rows[on], predicted.label[on], predicted.score[on]
    block = (label // CLASS_BLOCK).astype(np.int16)
    buffer = np.zeros((len(verified), CLASS_BLOCK))  # reused: a fresh one per block costs page faults
    for low in range(0, num_classes, CLASS_BLOCK):
        high = min(low + CLASS_BLOCK, num_classes)
        part = np.flatnonzero(block == low // CLASS_BLOCK)
        where = (row[part], label[part] - low)
        scores = buffer[:, : high - low]
        scores[where] = score[part]
        ap[low:high] = average_precisions(scores, verified[:, low:high], protocol)
        scores[where] = 0.0
    return ap
