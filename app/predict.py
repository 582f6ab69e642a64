"""Predict classes for photos with a trained run or an exported SavedModel.

    python app/predict.py --model saved_models/contextual --image photo.jpg --tags "dog,hund,2009"
    python app/predict.py --model saved_models/contextual/serving/1 --input photos.csv --output predictions.jsonl

Batch input is CSV (header `image_path,tags`) or JSONL (`{"image_path": ..., "tags": ...}`), with
tags comma-separated as a user writes them (or a JSON list). Output is one JSON line per photo with
the top-k MIDs, names and scores and a `needs_review` flag: the top score is under
`--review-below`, or the top two are within `--review-margin`. Batches stream, so memory stays flat.

Every input row gives one output line, in order. A row with a problem says so in `error`
(`file:line: ...`): an image that cannot be read or used (corrupt, truncated, not JPEG/PNG, over
`MAX_IMAGE_PIXELS`) is scored without it; a row that cannot be read (not UTF-8, not JSON, tags of
the wrong type) is not scored (`top_k: []`). A row without an image gets a `note`. Problems
with the whole input (no such file, a CSV header without image_path,tags) stop with one line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Callable, Iterator

if __package__ in (None, ""):  # `python app/predict.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import setup_logging  # noqa: E402
from app.serving.rows import make_row, read_image, read_rows  # noqa: E402


def load_predictor(path: Path) -> Callable[[list, list], dict]:
    """A callable `(tags lists, image bytes list) -> outputs dict` from a run folder or a SavedModel.

    Raises:
        FileNotFoundError: `path` is no folder.
    """
    import tensorflow as tf

    from app.serving.signatures import ServingModule, latest_export
    from app.training.rundir import RunDir

    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder (a run folder or a SavedModel version folder)")

    export = path if (path / "saved_model.pb").exists() else latest_export(RunDir(path))
    if export is not None:
        module = tf.saved_model.load(str(export))
        signature = module.signatures["serving_default"]
    else:  # a run folder that was never exported: the same module, in process
        from app.evaluation.scoring import TrainedModel

        # Keep the module itself: its tf.function holds it only weakly.
        module = ServingModule(TrainedModel(path))
        signature = module.serving_default.get_concrete_function()

    wants_language = "language" in signature.structured_input_signature[1]

    def predict(tags: list, images: list, module=module) -> dict:
        width = max([len(t) for t in tags] + [1])
        padded = tf.constant([t + [""] * (width - len(t)) for t in tags], tf.string)
        extra = {"language": tf.constant(tag_languages(tags), tf.string)} if wants_language else {}
        out = signature(tags=padded, image_bytes=tf.constant(images, tf.string), **extra)
        return {k: v.numpy() for k, v in out.items()}

    return predict


def tag_languages(tags: list) -> list:
    """Each photo's tag language, as prepare detects it: pycld2 on the cleaned tags, `un` when unsure."""
    from app.data.language import detect_language
    from app.data.tags import clean_tags

    return [detect_language(clean_tags(t)) for t in tags]


def records(outputs: dict | None, rows: list, below: float, margin: float) -> Iterator[dict]:
    """Output records, one per row and in order, each with its row's error or note.

    Args:
        outputs: the model's outputs for the scorable rows (None if there are none).
        rows: `app.serving.rows.Row`s; a row that is not scorable gets an empty `top_k`.
        below: `needs_review` if the top score is under this.
        margin: `needs_review` if the top two scores are this close.

    Returns:
        An iterator of JSON-ready dicts.
    """
    i = 0
    for row in rows:
        record = {"image_path": row.image_path, "tags": row.tags}
        error = row.error
        if row.scorable:
            record.update(_scored(outputs, i, below, margin))
            if row.image_path and not row.error and not record["image_ok"]:  # a file the model could not use
                reason = outputs["image_error"][i].decode() if "image_error" in outputs else "not decoded"
                error = f"{row.where}: image {row.image_path} not used ({reason}): scored without an image"
            i += 1
        else:
            record.update(top_k=[], needs_review=True, image_ok=False)
        record.update({k: v for k, v in (("error", error), ("note", row.note)) if v})
        yield record


def _scored(outputs: dict, i: int, below: float, margin: float) -> dict:
    scores = outputs["top_k_scores"][i]
    unsure = bool(scores[0] < below or (len(scores) > 1 and scores[0] - scores[1] < margin))
    return {"top_k": [{"mid": m.decode(), "name": n.decode(), "score": round(float(s), 6)}
                      for m, n, s in zip(outputs["top_k_mids"][i], outputs["top_k_names"][i], scores)],
            "needs_review": unsure, "image_ok": bool(outputs["image_ok"][i])}


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="run folder or SavedModel version folder")
    p.add_argument("--image", help="one photo (JPEG/PNG)")
    p.add_argument("--tags", default="", help='its tags, comma-separated: "dog,hund,2009"')
    p.add_argument("--input", type=Path, help="batch mode: CSV or JSONL with image_path and tags")
    p.add_argument("--output", type=Path, help="batch mode: JSONL output (default: stdout)")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--review-below", type=float, default=0.5, help="needs_review if the top score is under this")
    p.add_argument("--review-margin", type=float, default=0.1, help="needs_review if the top two are this close")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if (args.image is None) == (args.input is None) and not (args.input is None and args.tags):
        p.error("give --image (and/or --tags) for one photo, or --input for a batch")
    setup_logging()
    try:
        predict = load_predictor(args.model)
        if args.input is None:
            _single(predict, args)
        else:
            _batch(predict, args)
    except (OSError, ValueError) as err:  # the model, the input or the output file as a whole
        sys.exit(f"error: {err}")


def _single(predict, args) -> None:
    row = read_image(make_row("--image", args.image or "", args.tags), Path("."))
    if not row.scorable or row.error:
        sys.exit(f"error: {row.error}")
    for record in records(predict([row.tags], [row.image]), [row], args.review_below, args.review_margin):
        print(_json_line(record, indent=2))


def _batch(predict, args) -> None:
    from tqdm import tqdm

    rows = read_rows(args.input)
    first = next(rows, None)  # opens the input and checks its header before the output is created
    rows = itertools.chain([first] if first else [], rows)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    count = errors = 0
    try:
        with tqdm(desc="predict", unit="photo", disable=args.no_progress) as bar:
            for batch in _batches(rows, args.batch_size):
                batch = [read_image(row, args.input.parent) for row in batch]
                errors += _flush(batch, predict, out, args)
                count += len(batch)
                bar.update(len(batch))
    finally:
        if args.output:
            out.close()
    print(f"predicted {count} photos, {errors} with an error" + (f" -> {args.output}" if args.output else ""),
          file=sys.stderr)


def _batches(rows: Iterator, size: int) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _flush(batch: list, predict, out, args) -> int:
    """Scores and writes a batch; returns how many of its rows have an error."""
    scorable = [r for r in batch if r.scorable]
    outputs = predict([r.tags for r in scorable], [r.image for r in scorable]) if scorable else None
    errors = 0
    for record in records(outputs, batch, args.review_below, args.review_margin):
        out.write(_json_line(record) + "\n")
        errors += "error" in record
    out.flush()
    return errors


if __name__ == "__main__":
    main()
