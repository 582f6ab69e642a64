"""Search your photos with text in any of the encoder's languages.

    python app/search.py index --data tfrecords/demo --out indexes/demo [--model saved_models/RUN] [--split test]
    python app/search.py query --index indexes/demo "a dog on the beach" [-k 10] [--format table|json]

`index` streams a prepared dataset split into a nearest-neighbour index (faiss; exact up to
`--exact-limit` photos, a graph index above): each photo's vector is its trained run's `embed`
output (`--model`, a run with an embedding head), or, without a model, the mean of its tags' text
encoder vectors. Run again on a dataset with more photos, it adds only the new ones. An index built
from another model or text encoder is refused (`--rebuild` starts over). `query` encodes the text
with the same encoder and prints the k best photos: rank, id and cosine score. See docs/search.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python app/search.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, add_config_flags, config_overrides, guarded, setup_logging  # noqa: E402

log = logging.getLogger("app")


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def parse_args(argv) -> argparse.Namespace:
    from app.config import SearchConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="index a dataset split's photos (or add its new photos to an index)")
    index.add_argument("--data", type=Path, required=True, help="prepared dataset folder (tfrecords/NAME)")
    index.add_argument("--out", type=Path, required=True, help="index folder (created, or extended)")
    index.add_argument("--model", type=Path, help="trained run with an embedding head [default: mean tag vectors]")
    index.add_argument("--split", default="test", help="the split to index [default: test]")
    add_config_flags(index, SearchConfig, "search")
    index.add_argument("--text-encoder", default="use",
                       help="without --model: the text encoder of the tag vectors and queries [default: use]")
    query = sub.add_parser("query", help="the photos that best match a text")
    query.add_argument("text", nargs="+", help="the query (several: one answer each)")
    query.add_argument("--index", type=Path, required=True, help="index folder (search.py index --out)")
    query.add_argument("-k", type=_positive, default=10, help="photos per query [default: 10]")
    query.add_argument("--format", choices=("table", "json"), default="table", help="output [default: table]")
    query.add_argument("--model", type=Path, help="refuse the index unless it was built with this run")
    query.add_argument("--data", type=Path, help="refuse the index unless it was built from this dataset")
    for parser in (index, query):
        add_common_flags(parser)
    return p.parse_args(argv)


@guarded
def main(argv: list[str] | None = None):
    args = parse_args(argv)
    setup_logging(args.verbose)
    return run_index(args) if args.command == "index" else run_query(args)


def run_index(args: argparse.Namespace):
    from app.records.dataset import DatasetInfo
    from app.config import SearchConfig
    from app.retrieval.photo_search import build_index
    from app.retrieval.text_encoder import load_encoder
    from app.runs.embedding_head import EmbeddingHead
    from app.runs.trained import TrainedRun

    info = DatasetInfo.load(args.data)
    if args.split not in info.split_sizes:
        raise ValueError(f"{args.data}: no split {args.split!r} (it has {', '.join(info.split_sizes)})")
    run = TrainedRun(args.model) if args.model else None
    head = EmbeddingHead.load(run.run) if run else None
    if run is not None and run.run.data_dir.resolve() != Path(args.data).resolve():
        log.warning("%s was trained on %s; indexing %s", args.model, run.run.data_dir, args.data)
    spec = head.record.get("encoder_spec", "use") if head else args.text_encoder
    report = build_index(args.out, info, args.split, load_encoder(spec), run, head, spec,
                         SearchConfig(**config_overrides(args, "search")))
    skipped = report.bad.to_dict()["skipped"]
    print(f"{args.out}: {report.size} photos ({report.kind} index); added {report.added}, already there "
          f"{report.already_present}, skipped {skipped['total']} {skipped['by_reason'] or ''}".rstrip())
    return report


def run_query(args: argparse.Namespace):
    from app.records.dataset import DatasetInfo
    from app.retrieval.photo_search import require_fingerprint, search
    from app.retrieval.query import check_query
    from app.retrieval.text_encoder import load_encoder
    from app.retrieval.vector_index import VectorIndex
    from app.runs.embedding_head import EmbeddingHead
    from app.runs.trained import TrainedRun

    for text in args.text:
        check_query(text)  # before the index and the encoder are loaded
    index = VectorIndex.load(args.index)
    encoder = load_encoder(index.fingerprint.get("encoder_spec", "use"))
    run = TrainedRun(args.model) if args.model else None
    head = EmbeddingHead.load(run.run) if run else None
    info = DatasetInfo.load(args.data) if args.data else None
    require_fingerprint(index, str(args.index), run, head, encoder if run else None, info)
    answers = search(index, args.text, encoder, args.k)
    if args.format == "json":
        print(json.dumps(answers if len(answers) > 1 else answers[0], ensure_ascii=False, indent=2))
    else:
        print(format_table(answers))
    return answers


def format_table(answers: list) -> str:
    """Rank, score and id of each answer's photos, under the query."""
    lines = []
    for answer in answers:
        lines += [f"query: {answer['query']}", f"{'rank':>4}  {'score':>8}  id"]
        lines += [f"{hit['rank']:>4}  {hit['score']:>8.4f}  {hit['id']}" for hit in answer["results"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
