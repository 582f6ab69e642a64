"""Predict's output: one record per input row (JSON lines, or Open Images `ImageID,LabelName,Score` rows)."""

from __future__ import annotations

import csv
import json
import sys
from typing import Iterator

from app.serving.rows import unread_warning

OPEN_VOCABULARY = ("zero_shot", "suggested_tags")  # app/serving/open_vocabulary.py: a list per photo


def records(outputs: dict | None, rows: list, predictor=None) -> Iterator[dict]:
    """Output records, one per row and in order, each with its row's error, note and warnings.

    Args:
        outputs: the model's outputs for the scorable rows (None if there are none).
        rows: `app.serving.rows.Row`s; a row that is not scorable gets no classes.
        predictor: the `app.serving.predictor.Predictor` that scored them: which inputs its model
            reads (for the warnings), and whether its class ids are Open Images MIDs (then each
            class also carries them as `mid`, as before collections).

    Returns:
        An iterator of JSON-ready dicts.
    """
    i = 0
    mid_too = predictor is not None and predictor.open_images_ids
    for row in rows:
        record = {"image_id": row.image_id} if row.image_id else {}  # rows may share an image_path
        record.update(image_path=row.image_path, tags=row.tags)
        if row.text:
            record["text"] = row.text
        error, warnings = row.error, []
        if row.scorable:
            record.update(_scored(outputs, i, mid_too))
            if row.image_path and not row.error and not record["image_ok"]:  # a file the model could not use
                reason = outputs["image_error"][i].decode() if "image_error" in outputs else "not decoded"
                error = f"{row.where}: image {row.image_path} not used ({reason}): scored without an image"
            warnings = _unused_inputs(row, outputs, i, predictor.reads if predictor else None)
            i += 1
        else:
            record.update(classes=[], needs_review=True, top_k=[], image_ok=False)
        record.update({k: v for k, v in (("error", error), ("note", row.note), ("warnings", warnings)) if v})
        yield record


def _unused_inputs(row, outputs: dict, i: int, reads: frozenset | None) -> list[str]:
    """What the model could not use of a row: tags out of its vocabulary, inputs it does not read."""
    warnings = [unread_warning(row.unread)] if row.unread else []
    unknown = [t.decode() for t in outputs.get("unknown_tags", [[]] * (i + 1))[i] if t]
    if unknown and reads is not None and "tags" not in reads:
        warnings.append(f"the model reads no tags: {', '.join(unknown)} not used")
    elif unknown:
        warnings.append(f"tags not in the model's vocabulary, not used: {', '.join(unknown)}")
    if reads is not None and row.text and "text" not in reads:
        warnings.append("the model reads no text: the text is not used")
    if reads is not None and row.image and "image" not in reads:
        warnings.append("the model reads no image: the image is not used")
    return warnings


def _named(ids, names, scores, mid_too: bool, thresholds=None) -> list:
    named = []
    for k, (class_id, name, score) in enumerate(zip(ids, names, scores)):
        if class_id:
            entry = {"class_id": class_id.decode(), **({"mid": class_id.decode()} if mid_too else {}),
                     "name": name.decode(), "score": round(float(score), 6)}
            if thresholds is not None:
                entry["threshold"] = round(float(thresholds[k]), 6)
            named.append(entry)
    return named


def _scored(outputs: dict, i: int, mid_too: bool) -> dict:
    out = {"classes": _named(outputs["classes_mids"][i], outputs["classes_names"][i], outputs["classes_scores"][i],
                             mid_too),
           "needs_review": bool(outputs["needs_review"][i])}
    if out["needs_review"]:
        out["review"] = {"no_confident_class": not out["classes"]}
        if "review_mids" in outputs:  # (exports from before review classes lack them)
            out["review"]["near_threshold"] = _named(outputs["review_mids"][i], outputs["review_names"][i],
                                                     outputs["review_scores"][i], mid_too,
                                                     outputs["review_thresholds"][i])
    return {**out, "top_k": _named(outputs["top_k_mids"][i], outputs["top_k_names"][i], outputs["top_k_scores"][i],
                                   mid_too),
            "image_ok": bool(outputs["image_ok"][i]),
            **{key: outputs[key][i] for key in OPEN_VOCABULARY if key in outputs}}


def json_line(record: dict, indent: int | None = None) -> str:
    """JSON text, UTF-8 where it can be, ASCII escapes where the input held lone surrogates."""
    text = json.dumps(record, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, indent=indent)
    # JSON leaves these raw, but a line reader (Python's str.splitlines) ends a line at each.
    return text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


class JsonlWriter:
    """One JSON line per input row."""

    skipped = 0

    def __init__(self, out):
        self.out = out

    def write(self, record: dict, row, scores) -> None:
        self.out.write(json_line(record) + "\n")

    def flush(self) -> None:
        self.out.flush()


class OidCsvWriter:
    """`ImageID,LabelName,Score` rows (the Open Images predictions format) for the scored rows; a
    row that could not be scored has no line (counted in `skipped`, and its error goes to stderr,
    as do a scored row's warnings).

    Args:
        out: the output stream.
        mids: class MIDs in output order.
        min_score: write the classes scoring at least this.
    """

    def __init__(self, out, mids: list, min_score: float):
        self.out, self.mids, self.min_score, self.skipped = out, mids, min_score, 0
        self.writer = csv.writer(out, lineterminator="\n")
        self.writer.writerow(["ImageID", "LabelName", "Score"])

    def flush(self) -> None:
        self.out.flush()

    def write(self, record: dict, row, scores) -> None:
        if scores is None:
            self.skipped += 1
            print(f"warning: {record.get('error')}", file=sys.stderr)
            return
        for warning in record.get("warnings", []):  # (the CSV has no place for them)
            print(f"warning: {row.where}: {warning}", file=sys.stderr)
        self.writer.writerows([row.image_id, mid, f"{s:.6g}"] for mid, s in zip(self.mids, scores)
                              if s >= self.min_score)


def batches(rows: Iterator, size: int) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_batch(batch: list, predictor, writer) -> int:
    """Scores and writes a batch with an `app.serving.predictor.Predictor`; returns how many of its
    rows have an error."""
    scorable = [r for r in batch if r.scorable]
    outputs = None
    if scorable:
        outputs = predictor([r.tags for r in scorable], [r.image for r in scorable], [r.text for r in scorable])
    scores = iter(outputs["scores"]) if outputs is not None else iter(())
    errors = 0
    for row, record in zip(batch, records(outputs, batch, predictor)):
        writer.write(record, row, next(scores) if row.scorable else None)
        errors += "error" in record
    writer.flush()
    return errors
