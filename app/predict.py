"""Predict classes for photos with a trained run or an exported SavedModel.

    python app/predict.py --model saved_models/contextual --image photo.jpg --tags "dog,hund,2009"
    python app/predict.py --model saved_models/contextual/serving/1 --input photos.csv --output predictions.jsonl

Batch input is CSV (header `image_path,tags`) or JSONL (`{"image_path": ..., "tags": ...}`), with
tags comma-separated as a user writes them (or a JSON list). Output is one JSON line per photo with
the top-k MIDs, names and scores and a `needs_review` flag: the top score is under
`--review-below`, or the top two are within `--review-margin`. Batches stream, so memory stays flat.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Iterator

if __package__ in (None, ""):  # `python app/predict.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import setup_logging  # noqa: E402


def load_predictor(path: Path):
    """A callable `(tags lists, image bytes list) -> outputs dict` from a run folder or a SavedModel."""
    import tensorflow as tf

    from app.serving.signatures import ServingModule, latest_export
    from app.training.rundir import RunDir

    export = path if (path / "saved_model.pb").exists() else latest_export(RunDir(path))
    if export is not None:
        module = tf.saved_model.load(str(export))
        signature = module.signatures["serving_default"]
    else:  # a run folder that was never exported: the same module, in process
        from app.evaluation.scoring import TrainedModel

        # Keep the module itself: its tf.function holds it only weakly.
        module = ServingModule(TrainedModel(path))
        signature = module.serving_default

    def predict(tags: list, images: list, module=module) -> dict:
        width = max([len(t) for t in tags] + [1])
        padded = tf.constant([t + [""] * (width - len(t)) for t in tags], tf.string)
        out = signature(tags=padded, image_bytes=tf.constant(images, tf.string))
        return {k: v.numpy() for k, v in out.items()}

    return predict


def read_rows(path: Path) -> Iterator[dict]:
    """Streams `{image_path, tags}` rows from CSV or JSONL, with a clear error per bad line."""
    with open(path, encoding="utf-8", newline="") as handle:
        if path.suffix == ".jsonl":
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{line_no}: not JSON: {err.msg}") from None
                    yield {"line": line_no, **row}
        else:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "image_path" not in reader.fieldnames:
                raise ValueError(f"{path}:1: expected a header with image_path,tags; got {reader.fieldnames}")
            for row in reader:
                yield {"line": reader.line_num, **row}


def split_tags(value) -> list:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [t.strip() for t in (value or "").split(",") if t.strip()]


def read_image(path: str, base: Path) -> tuple[bytes, str | None]:
    if not path:
        return b"", None
    try:
        return (base / path).read_bytes(), None
    except OSError as err:
        return b"", f"cannot read image: {err.strerror}"


def records(outputs: dict, rows: list, below: float, margin: float) -> Iterator[dict]:
    for i, row in enumerate(rows):
        scores = outputs["top_k_scores"][i]
        unsure = bool(scores[0] < below or (len(scores) > 1 and scores[0] - scores[1] < margin))
        record = {"image_path": row.get("image_path", ""), "tags": row["tags"],
                  "top_k": [{"mid": m.decode(), "name": n.decode(), "score": round(float(s), 6)}
                            for m, n, s in zip(outputs["top_k_mids"][i], outputs["top_k_names"][i], scores)],
                  "needs_review": unsure, "image_ok": bool(outputs["image_ok"][i])}
        if row.get("error"):
            record["error"] = row["error"]
        yield record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="run folder or SavedModel version folder")
    p.add_argument("--image", help="one photo (JPEG/PNG)")
    p.add_argument("--tags", default="", help='its tags, comma-separated: "dog,hund,2009"')
    p.add_argument("--input", type=Path, help="batch mode: CSV or JSONL with image_path and tags")
    p.add_argument("--output", type=Path, help="batch mode: JSONL output (default: stdout)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--review-below", type=float, default=0.5, help="needs_review if the top score is under this")
    p.add_argument("--review-margin", type=float, default=0.1, help="needs_review if the top two are this close")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if (args.image is None) == (args.input is None) and not (args.input is None and args.tags):
        p.error("give --image (and/or --tags) for one photo, or --input for a batch")
    setup_logging()
    predict = load_predictor(args.model)
    if args.input is None:
        image, error = read_image(args.image or "", Path("."))
        if error:
            sys.exit(f"error: {args.image}: {error}")
        rows = [{"image_path": args.image or "", "tags": split_tags(args.tags)}]
        for record in records(predict([rows[0]["tags"]], [image]), rows, args.review_below, args.review_margin):
            print(json.dumps(record, ensure_ascii=False, indent=2))
        return
    from tqdm import tqdm

    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    base = args.input.parent
    count = 0
    try:
        with tqdm(desc="predict", unit="photo", disable=args.no_progress) as bar:
            batch: list = []
            for row in read_rows(args.input):
                image, error = read_image(row.get("image_path", ""), base)
                batch.append({**row, "tags": split_tags(row.get("tags")), "image": image, "error": error})
                if len(batch) == args.batch_size:
                    count += _flush(batch, predict, out, args)
                    bar.update(len(batch))
                    batch = []
            if batch:
                count += _flush(batch, predict, out, args)
                bar.update(len(batch))
    except ValueError as err:
        sys.exit(f"error: {err}")
    finally:
        if args.output:
            out.close()
    print(f"predicted {count} photos" + (f" -> {args.output}" if args.output else ""), file=sys.stderr)


def _flush(batch: list, predict, out, args) -> int:
    outputs = predict([r["tags"] for r in batch], [r["image"] for r in batch])
    for record in records(outputs, batch, args.review_below, args.review_margin):
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()
    return len(batch)


if __name__ == "__main__":
    main()
