"""Predict classes for photos with a trained run or an exported SavedModel.

    python app/predict.py --model saved_models/contextual --image photo.jpg --tags "dog,hund,2009"
    python app/predict.py --model saved_models/contextual/serving/1 --input photos.csv --output predictions.jsonl

Batch input is CSV (header `image_path,tags`, optionally `image_id`) or JSONL (`{"image_path": ...,
"tags": ...}`), with tags comma-separated as a user writes them (or a JSON list). Output is one JSON
line per photo with `classes`: the most specific confident classes (a class's score reaches its
threshold, tuned on validation; a confident class implies its ancestors, which are not listed),
`needs_review` (no class is confident, or some class's score is within the review margin of its
threshold), and `top_k`, the k highest raw scores. `--format oid-csv` writes `ImageID,LabelName,Score`
rows instead, which `python app/evaluate.py --predictions` scores against Open Images labels.
Batches stream, so memory stays flat.

Every input row gives one output line, in order. A row with a problem says so in `error`
(`file:line: ...`): an image that cannot be read or used (corrupt, truncated, not JPEG/PNG, over
`MAX_IMAGE_PIXELS`) is scored without it; a row that cannot be read (not UTF-8, not JSON, tags of
the wrong type) is not scored (`top_k: []`). A row without an image gets a `note`. Problems
with the whole input (no such file, a CSV header without image_path,tags) stop with one line.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
from pathlib import Path
from typing import Callable, Iterator

if __package__ in (None, ""):  # `python app/predict.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, guarded, setup_logging  # noqa: E402
from app.serving.rows import make_row, read_image, read_rows  # noqa: E402


def load_predictor(path: Path, review_margin: float | None = None) -> tuple[Callable[[list, list], dict], list]:
    """A callable `(tags lists, image bytes list) -> outputs dict` from a run folder or a SavedModel,
    and the class MIDs in output order.

    Args:
        path: a run folder (its newest export, or the model in process if it has none) or a
            SavedModel version folder.
        review_margin: for a run folder without an export (an export has its own, set by
            `app/export.py --review-margin`).

    Raises:
        FileNotFoundError: `path` is no folder.
        ValueError: an export from an older version, or a review margin for an export.
    """
    import tensorflow as tf

    from app.data.oid import read_classes
    from app.serving.signatures import CLASSES_ASSET, ServingModule, latest_export
    from app.training.rundir import RunDir

    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder (a run folder or a SavedModel version folder)")
    export = path if (path / "saved_model.pb").exists() else latest_export(RunDir(path))
    if export is not None:
        if review_margin is not None:
            raise ValueError(f"{export} is an export: its review margin was set by app/export.py --review-margin")
        if not (export / CLASSES_ASSET).exists():
            raise ValueError(f"{export}: an export from an older version (no specific classes); re-export the run "
                             f"with python app/export.py")
        module = tf.saved_model.load(str(export))
        signature, mids = module.signatures["serving_default"], [m for m, _ in read_classes(export / CLASSES_ASSET, any_id=True)]
    else:  # a run folder that was never exported: the same module, in process
        from app.evaluation.scoring import TrainedModel

        run = TrainedModel(path)
        # Keep the module itself: its tf.function holds it only weakly.
        module = ServingModule(run, review_margin=0.05 if review_margin is None else review_margin)
        signature, mids = module.serving_default.get_concrete_function(), [m for m, _ in run.classes]

    wants_language = "language" in signature.structured_input_signature[1]

    def predict(tags: list, images: list, module=module) -> dict:
        width = max([len(t) for t in tags] + [1])
        padded = tf.constant([t + [""] * (width - len(t)) for t in tags], tf.string)
        extra = {"language": tf.constant(tag_languages(tags), tf.string)} if wants_language else {}
        out = signature(tags=padded, image_bytes=tf.constant(images, tf.string), **extra)
        return {k: v.numpy() for k, v in out.items()}

    return predict, mids


def tag_languages(tags: list) -> list:
    """Each photo's tag language, as prepare detects it: pycld2 on the cleaned tags, `un` when unsure."""
    from app.data.language import detect_language
    from app.data.tags import clean_tags

    return [detect_language(clean_tags(t)) for t in tags]


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
        record = {"image_path": row.image_path, "tags": row.tags}
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


def _scored(outputs: dict, i: int) -> dict:
    return {"classes": _named(outputs["classes_mids"][i], outputs["classes_names"][i], outputs["classes_scores"][i]),
            "needs_review": bool(outputs["needs_review"][i]),
            "top_k": _named(outputs["top_k_mids"][i], outputs["top_k_names"][i], outputs["top_k_scores"][i]),
            "image_ok": bool(outputs["image_ok"][i])}


def _json_line(record: dict, indent: int | None = None) -> str:
    """JSON text, UTF-8 where it can be, ASCII escapes where the input held lone surrogates."""
    text = json.dumps(record, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, indent=indent)
    return text


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


@guarded
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="run folder or SavedModel version folder")
    p.add_argument("--image", help="one photo (JPEG/PNG)")
    p.add_argument("--tags", default="", help='its tags, comma-separated: "dog,hund,2009"')
    p.add_argument("--input", type=Path, help="batch mode: CSV or JSONL with image_path and tags (and image_id)")
    p.add_argument("--output", type=Path, help="batch mode: the output file [default: stdout]")
    p.add_argument("--format", choices=("jsonl", "oid-csv"), default="jsonl",
                   help="batch mode: JSON lines, or ImageID,LabelName,Score rows for evaluate.py [default: jsonl]")
    p.add_argument("--min-score", type=float, default=0.001,
                   help="oid-csv: write the classes scoring at least this (0 writes all) [default: 0.001]")
    p.add_argument("--batch-size", type=_positive, default=64, help="[default: 64]")
    p.add_argument("--review-margin", type=float,
                   help="a run folder without an export: needs_review when a class score is this close to its "
                        "threshold [default: 0.05; an export keeps the margin it was exported with]")
    add_common_flags(p)
    args = p.parse_args(argv)
    if (args.image is None) == (args.input is None) and not (args.input is None and args.tags):
        p.error("give --image (and/or --tags) for one photo, or --input for a batch")
    setup_logging(args.verbose)
    predict, mids = load_predictor(args.model, args.review_margin)
    if args.input is None:
        _single(predict, args)
    else:
        _batch(predict, mids, args)


def _single(predict, args) -> None:
    row = read_image(make_row("--image", args.image or "", args.tags), Path("."))
    if not row.scorable or row.error:
        raise ValueError(row.error)
    for record in records(predict([row.tags], [row.image]), [row]):
        print(_json_line(record, indent=2))


def _batch(predict, mids: list, args) -> None:
    from tqdm import tqdm

    rows = read_rows(args.input)
    first = next(rows, None)  # opens the input and checks its header before the output is created
    rows = itertools.chain([first] if first else [], rows)
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    writer = OidCsvWriter(out, mids, args.min_score) if args.format == "oid-csv" else JsonlWriter(out)
    count = errors = 0
    try:
        with tqdm(desc="predict", unit="photo", disable=args.no_progress or not sys.stderr.isatty()) as bar:
            for batch in _batches(rows, args.batch_size):
                batch = [read_image(row, args.input.parent) for row in batch]
                errors += _flush(batch, predict, writer)
                count += len(batch)
                bar.update(len(batch))
    finally:
        if args.output:
            out.close()
    skipped = f", {writer.skipped} not written (no scores)" if writer.skipped else ""
    print(f"predicted {count} photos, {errors} with an error{skipped}" + (f" -> {args.output}" if args.output else ""),
          file=sys.stderr)


class JsonlWriter:
    """One JSON line per input row."""

    skipped = 0

    def __init__(self, out):
        self.out = out

    def write(self, record: dict, row, scores) -> None:
        self.out.write(_json_line(record) + "\n")

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


def _batches(rows: Iterator, size: int) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _flush(batch: list, predict, writer) -> int:
    """Scores and writes a batch; returns how many of its rows have an error."""
    scorable = [r for r in batch if r.scorable]
    outputs = predict([r.tags for r in scorable], [r.image for r in scorable]) if scorable else None
    scores = iter(outputs["scores"]) if outputs is not None else iter(())
    errors = 0
    for row, record in zip(batch, records(outputs, batch)):
        writer.write(record, row, next(scores) if row.scorable else None)
        errors += "error" in record
    writer.flush()
    return errors


if __name__ == "__main__":
    main()
