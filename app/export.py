"""Export a trained run as a SavedModel for TensorFlow Serving.

    python app/export.py --model saved_models/contextual [--out saved_models/contextual/serving] [--version N]
                         [--extend-vocabulary words.txt]

Writes OUT/N/ (N: the next free version by default) with the `serving_default` and `serve_yfcc`
signatures. Check it with `saved_model_cli show --dir OUT/N --all`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python app/export.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, at_least, guarded, setup_logging  # noqa: E402
from app.fileio import refuse_output_over_inputs  # noqa: E402
from app.model.word_vectors import NEIGHBOURS  # noqa: E402


@guarded
def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="run folder, e.g. saved_models/contextual")
    p.add_argument("--out", type=Path, help="serving base folder (default: MODEL/serving)")
    p.add_argument("--version", type=at_least(1), help="version number (default: the next free one)")
    p.add_argument("--top-k", type=at_least(1), default=5, help="classes returned in the top_k_* and classes_* outputs [default: 5]")
    p.add_argument("--review-margin", type=at_least(0.0, float), default=0.05,
                   help="needs_review when a class score is this close to its threshold (a probability at 0.5, "
                        "the same distance in logits elsewhere) [default: 0.05]")
    p.add_argument("--extend-vocabulary", type=Path, metavar="WORDS",
                   help="a word list (one a line, any of the text encoder's languages): each word not in the "
                        "vocabulary is added, placed by its text-encoder vector, so the served model reads it")
    p.add_argument("--text-encoder", help="with --extend-vocabulary, for a run learned from scratch: the encoder "
                                          "that places the words (use, savedmodel:PATH, keras:PATH) [default: use]; "
                                          "a run started from encoder vectors uses its own")
    p.add_argument("--neighbours", type=at_least(1), default=NEIGHBOURS,
                   help=f"with --extend-vocabulary: the nearest vocabulary words (by encoder cosine) a new word's row "
                        f"is drawn from, for a run learned from scratch or fine-tuned [default: {NEIGHBOURS}]")
    add_common_flags(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    refuse_output_over_inputs(args.out, {"--model": args.model}, "any")
    from app.runs.trained import TrainedRun
    from app.serving.extend import read_word_list
    from app.serving.signatures import EMBEDDING_ASSET, EXTENSION_ASSET, directory_size, export, signature_inputs

    words = read_word_list(args.extend_vocabulary) if args.extend_vocabulary else []
    if args.extend_vocabulary and not words:
        p.error(f"--extend-vocabulary {args.extend_vocabulary}: the file holds no words")
    target = export(args.model, args.out, args.version, args.top_k, args.review_margin, words, args.text_encoder,
                    args.neighbours)
    if words:
        print(_extension_summary(target / EXTENSION_ASSET))
    run = TrainedRun(args.model)
    weights = sum(w.numpy().nbytes for w in run.model.weights) + _head_bytes(run)
    size = directory_size(target)
    print(f"exported {target} ({size / 1e6:.1f} MB; weights {weights / 1e6:.1f} MB, ratio {size / weights:.2f})\n"
          f"  signatures: {signature_inputs(run.preprocessor, (target / EMBEDDING_ASSET).is_file())}\n"
          f"  check: saved_model_cli show --dir {target} --all")
    return target


def _head_bytes(run) -> int:
    """The bytes of the run's embedding head's own weights (0 without a head)."""
    import numpy as np

    from app.runs.embedding_head import FOLDER, WEIGHTS

    path = run.run.path / FOLDER / WEIGHTS
    if not path.is_file():
        return 0
    with np.load(path) as saved:
        return sum(saved[key].nbytes for key in saved.files)


def _extension_summary(path: Path) -> str:
    """One line on what `--extend-vocabulary` did (from the record beside the export)."""
    import json
    import collections

    record = json.loads(path.read_text(encoding="utf-8"))
    added = ", ".join(f"{len(w)} to the {p} vocabulary" for p, w in record["added"].items())
    reasons = collections.Counter(record["skipped"].values())
    skipped = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "none"
    return (f"extended vocabulary: {added} ({record['encoder']['encoder']}); already known: "
            f"{record['already_in_vocabulary']}; skipped: {skipped} (see {path})")


if __name__ == "__main__":
    main()
