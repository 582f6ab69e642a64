"""Predict classes for photos with a trained run or an exported SavedModel.

    python app/predict.py --model saved_models/contextual --image photo.jpg --tags "dog,hund,2009"
    python app/predict.py --model saved_models/captions --image photo.jpg --text "A dog on the beach."
    python app/predict.py --model saved_models/contextual/serving/1 --input photos.csv --output predictions.jsonl

Batch input is CSV (header `image_path,tags`, optionally `image_id` and `text`, or `caption`) or JSONL
(`{"image_path": ..., "tags": ...}`, optionally `"text"` or `"caption"`), with tags separated by `,` or `|`
(the one tag-list rule of app/text/normalize.py, as in a manifest; or a JSON list); `text` is free text such as a caption, read by models trained with
`--text-input text|both` (ignored by the others). Output is one JSON
line per photo with `classes`: the most specific confident classes (a class's score reaches its
threshold, tuned on validation; a confident class implies its ancestors, which are not listed),
`needs_review` (no class is confident, or some class's score is within the review margin of its
threshold) with `review` (which classes), `top_k`, the k highest raw scores, and `warnings` (tags
out of the model's vocabulary, inputs it does not read). Classes are `{"class_id", "name", "score"}`
(and `"mid"` for Open Images classes). `--format oid-csv` writes `ImageID,LabelName,Score`
rows instead, which `python app/evaluate.py --predictions` scores against Open Images labels.
Batches stream, so memory stays flat.

Open vocabulary (a run trained with `--embedding-head`, or its export): `--classes new.csv` adds
`zero_shot` to each photo, every class of the file (`name[,id]` a line, in any of the text encoder's
languages, trained on or not) with a calibrated score, best first; `--suggest-tags K` adds
`suggested_tags`, the K words nearest the photo in the encoder's space (its own tags left out), from
`--words FILE` (one a line) or by default the run's tag vocabulary and class names.

    python app/predict.py --model saved_models/tags --tags "hund,strand" --classes new-classes.csv --suggest-tags 5

Every input row gives one output line, in order. A row with a problem says so in `error`
(`file:line: ...`): an image that cannot be read or used (corrupt, truncated, not JPEG/PNG, over
`MAX_IMAGE_PIXELS`) is scored without it; a row that cannot be read (not UTF-8, not JSON, tags of
the wrong type) is not scored (`top_k: []`). A row without an image gets a `note`. Problems
with the whole input (no such file, a CSV header without image_path,tags) stop with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python app/predict.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, at_least, guarded, setup_logging  # noqa: E402
from app.fileio import atomic_output, refuse_output_over_inputs  # noqa: E402
from app.serving.predictor import load_predictor  # noqa: E402
from app.serving.rows import make_row, read_image, read_rows  # noqa: E402
from app.serving.writers import JsonlWriter, OidCsvWriter, batches, json_line, records, write_batch  # noqa: E402


@guarded
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="run folder or SavedModel version folder")
    p.add_argument("--image", help="one photo (JPEG/PNG)")
    p.add_argument("--tags", help='its tags, separated by "," or "|" as in a manifest: "dog,hund,2009" or "dog|hund"')
    p.add_argument("--text",
                   help='its free text (a caption), for models that read text: "A dog on the beach."')
    p.add_argument("--input", type=Path, help="batch mode: CSV or JSONL with image_path and tags (and image_id, "
                                              "text); a relative image_path is read from the input file's folder")
    p.add_argument("--output", type=Path, help="batch mode: the output file [default: stdout]")
    p.add_argument("--format", choices=("jsonl", "oid-csv"), default="jsonl",
                   help="batch mode: JSON lines, or ImageID,LabelName,Score rows for evaluate.py [default: jsonl]")
    p.add_argument("--min-score", type=at_least(0.0, float), default=0.001,
                   help="oid-csv: write the classes scoring at least this (0 writes all) [default: 0.001]")
    p.add_argument("--batch-size", type=at_least(1), default=64, help="[default: 64]")
    p.add_argument("--review-margin", type=at_least(0.0, float),
                   help="a run folder without an export: needs_review when a class score is this close to its "
                        "threshold (a probability at 0.5, the same distance in logits elsewhere) [default: 0.05; "
                        "an export keeps the margin it was exported with]")
    vocabulary = p.add_argument_group("open vocabulary (a run with an embedding head: train.py --embedding-head)")
    vocabulary.add_argument("--classes", type=Path,
                            help="score these classes too (a class file, name[,id] a line, any of the text encoder's "
                                 "languages, trained on or not): each photo gets zero_shot, every class with its "
                                 "calibrated score")
    vocabulary.add_argument("--suggest-tags", type=at_least(1), metavar="K",
                            help="suggest K tags for each photo (suggested_tags: the words nearest it in the text "
                                 "encoder's space, its own tags left out)")
    vocabulary.add_argument("--words", type=Path,
                            help="--suggest-tags: the candidate words, one a line [default: the run's tag vocabulary "
                                 "and class names]")
    add_common_flags(p)
    args = p.parse_args(argv)
    if args.words and not args.suggest_tags:
        p.error("--words is the word list of --suggest-tags K: give both")
    if args.format == "oid-csv" and (args.classes or args.suggest_tags):
        p.error("--classes and --suggest-tags add to the JSON lines: not with --format oid-csv")
    one_photo = [flag for flag, value in (("--image", args.image), ("--tags", args.tags), ("--text", args.text))
                 if value is not None]
    if args.input is not None and one_photo:
        p.error(f"{', '.join(one_photo)}: for one photo; a batch (--input) gives each photo's in its rows")
    if args.input is None and not one_photo:
        p.error("give --image (and/or --tags, --text) for one photo, or --input for a batch")
    setup_logging(args.verbose)
    refuse_output_over_inputs(args.output, {"--input": args.input, "--model": args.model, "--image": args.image})
    predictor = load_predictor(args.model, args.review_margin)
    if args.classes or args.suggest_tags:
        predictor = _open_vocabulary(predictor, args)
    if args.input is None:
        _single(predictor, args)
    else:
        _batch(predictor, args)


def _open_vocabulary(predictor, args):
    """The predictor with `--classes` and `--suggest-tags` outputs."""
    from app.badrows import BadRows
    from app.errors import InputError
    from app.serving.open_vocabulary import OpenVocabulary, read_word_list
    from app.serving.predictor import with_open_vocabulary

    if predictor.embed is None:
        again = ", then export it again" if (args.model / "saved_model.pb").exists() else ""
        raise InputError(f"{args.model}: no embedding head, so no --classes or --suggest-tags: train one with "
                         f"python app/train.py --embedding-head, with the run's flags and --out{again}")
    words = None
    if args.suggest_tags:
        bad = BadRows()
        words = read_word_list(args.words, bad) if args.words else default_words(args.model)
        for reason, count in bad.to_dict()["skipped"]["by_reason"].items():
            print(f"warning: {args.words}: {count} line(s) skipped ({reason})", file=sys.stderr)
    vocabulary = OpenVocabulary(predictor.embedding_record, args.classes, words, args.suggest_tags or 0)
    if args.suggest_tags and args.suggest_tags > len(vocabulary.words):
        print(f"warning: --suggest-tags {args.suggest_tags}: the word list has {len(vocabulary.words)} usable words; "
              f"each photo gets at most those not among its tags", file=sys.stderr)
    if vocabulary.skipped:
        shown = ", ".join(f"{w!r} ({r})" for w, r in list(vocabulary.skipped.items())[:5])
        print(f"warning: {len(vocabulary.skipped)} word(s) the text encoder cannot take, not suggested: {shown}",
              file=sys.stderr)
    return with_open_vocabulary(predictor, vocabulary)


def default_words(model: Path) -> list:
    """The tag vocabulary of the run at `model` (or of the run an export in `RUN/serving/N` came from),
    then its class names."""
    from app.runs.rundir import RunDir

    run = RunDir(model.parent.parent if (model / "saved_model.pb").exists() else model)
    vocab = run.load_vocab() if run.is_complete() else None
    if vocab is None:
        raise ValueError(f"{model}: no tag vocabulary at hand (an export outside its run folder, or a model without "
                         f"tags): give --words FILE")
    words = vocab.tokens + [name.replace("_", " ") for _, name in run.load_classes()]
    seen: set = set()  # one spelling a word: `dog`, not `Dog` too (the first one: the vocabulary's)
    return [w for w in words if not (w.lower() in seen or seen.add(w.lower()))]


def _single(predictor, args) -> None:
    row = read_image(make_row("--image", args.image or "", args.tags or "", text=args.text or ""), Path("."))
    if not row.scorable or row.error:
        raise ValueError(row.error)
    for record in records(predictor([row.tags], [row.image], [row.text]), [row], predictor):
        print(json_line(record, indent=2))


def _batch(predictor, args) -> None:
    from tqdm import tqdm

    rows = read_rows(args.input)
    first = next(rows, None)  # opens the input and checks its header before the output is created
    rows = itertools.chain([first] if first else [], rows)
    with contextlib.ExitStack() as stack:
        out, path = sys.stdout, args.output
        if path and not (path.exists() and not path.is_file()):  # (a pipe or /dev/stdout is written as it is)
            path = stack.enter_context(atomic_output(path.resolve()))  # renamed when complete: never a half file
        if path:
            out = stack.enter_context(open(path, "w", encoding="utf-8", newline=""))
        writer = (OidCsvWriter(out, predictor.class_ids, args.min_score) if args.format == "oid-csv" else
                  JsonlWriter(out))
        count = errors = 0
        with tqdm(desc="predict", unit="photo", disable=args.no_progress or not sys.stderr.isatty()) as bar:
            for batch in batches(rows, args.batch_size):
                batch = [read_image(row, args.input.parent) for row in batch]
                errors += write_batch(batch, predictor, writer)
                count += len(batch)
                bar.update(len(batch))
    skipped = f", {writer.skipped} not written (no scores)" if writer.skipped else ""
    print(f"predicted {count} photos, {errors} with an error{skipped}" + (f" -> {args.output}" if args.output else ""),
          file=sys.stderr)


if __name__ == "__main__":
    main()
