"""Predict's output: one record per input row (JSON lines, or Open Images `ImageID,LabelName,Score` rows)."""

from __future__ import annotations

import csv
import json
import sys
from typing import Iterator


def records(outputs: dict | None, rows: list) -> Iterator[dict]:
    """Output records, one per row and in order, each with its row's error or note.

    Args:
        outputs: the model's outputs for the scorable rows (None if there are none).
        rows: `app.serving.rows.Row`s; a row that is not scorable gets no classes.

    Returns:
        An iterator of JSON-ready dicts.
    """
    i = 0
    for row in rows:
        record = {"image_id": row.image_id} if row.image_id else {}  # rows may share an image_path
        record.update(image_path=row.image_path, tags=row.tags)
        if row.text:
            record["text"] = row.text
        error = row.error
        if row.scorable:
            record.update(_scored(outputs, i))
            if row.image_path and not row.error and not record["image_ok"]:  # a file the model could not use
                reason = outputs["image_error"][i].decode() if "image_error" in outputs else "not decoded"
                error = f"{row.where}: image {row.image_path} not used ({reason}): scored without an image"
            i += 1
        else:
            record.update(classes=[], needs_review=True, top_k=[], image_ok=False)
        record.update({k: v for k, v in (("error", error), ("note", row.note)) if v})
        yield record


def _named(mids, names, scores) -> list:
    return [{"mid": m.decode(), "name": n.decode(), "score": round(float(s), 6)}
            for m, n, s in zip(mids, names, scores) if m]


OPEN_VOCABULARY = ("zero_shot", "suggested_tags")  # app/serving/open_vocabulary.py: lists, one per photo


def _scored(outputs: dict, i: int) -> dict:
    return {"classes": _named(outputs["classes_mids"][i], outputs["classes_names"][i], outputs["classes_scores"][i]),
            "needs_review": bool(outputs["needs_review"][i]),
            "top_k": _named(outputs["top_k_mids"][i], outputs["top_k_names"][i], outputs["top_k_scores"][i]),
            "image_ok": bool(outputs["image_ok"][i]), **{key: outputs[key][i] for key in OPEN_VOCABULARY if key in outputs}}


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
    row that could not be scored has no line (counted in `skipped`, and its error goes to stderr).

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


def write_batch(batch: list, predict, writer) -> int:
    """Scores and writes a batch; returns how many of its rows have an error."""
    scorable = [r for r in batch if r.scorable]
    outputs = None
    if scorable:
        outputs = predict([r.tags for r in scorable], [r.image for r in scorable], [r.text for r in scorable])
    scores = iter(outputs["scores"]) if outputs is not None else iter(())
    errors = 0
    for row, record in zip(batch, records(outputs, batch)):
        writer.write(record, row, next(scores) if row.scorable else None)
        errors += "error" in record
    writer.flush()
    return errors
