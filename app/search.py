"""Search your photos with text, in any of the text encoder's languages.

    python app/search.py index --data tfrecords/demo --out indexes/demo [--split test] [--text-encoder use]
    python app/search.py query --index indexes/demo "dog on the beach" "Hund am Strand" [-k 10] [--format table|json]

`index` streams a prepared dataset split into a nearest-neighbour index (faiss: exact up to
--exact-limit photos, a graph above). No training: a photo's vector is the mean of its tags' text
encoder vectors; a photo without tags is counted (no_tags), not indexed. With --model RUN (a run
trained with --embedding-head), a photo's vector is the run's, from whatever it reads. Run again on the same
dataset grown, it adds only the new photos. An index made with another text encoder or from another
dataset is refused (--rebuild starts over). `query` encodes each text with the index's own encoder
and prints the k nearest photos: rank, cosine score, photo id. See docs/search.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python app/search.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, add_config_flags, at_least, config_overrides, guarded, setup_logging  # noqa: E402
from app.config import ENCODER_HELP, SearchConfig  # noqa: E402

SPLITS = ("train", "validation", "test", "yfcc")
BUNDLED_ENCODER = "use"  # numpy only: a query with it needs no TensorFlow (7 s to import on 2 cores)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="index a dataset split's photos, or add its new photos to an index")
    index.add_argument("--data", type=Path, required=True, help="(required) a prepared dataset folder (tfrecords/NAME)")
    index.add_argument("--out", type=Path, required=True, help="(required) the index folder (made, or added to)")
    index.add_argument("--split", choices=SPLITS, default="test", help="the split to index [default: test]")
    index.add_argument("--text-encoder", help=f"{ENCODER_HELP} [default: the index's own; a new index: use]")
    index.add_argument("--model", type=Path, help="a run trained with --embedding-head: each photo's vector is the "
                                                  "run's (from whatever it reads: tags, text, image) [default: the "
                                                  "mean of the photo's tags' encoder vectors; an index made from a "
                                                  "run keeps its run]")
    index.add_argument("--rebuild", action="store_true", help="start a new index even if --out holds one")
    add_config_flags(index, SearchConfig, "search")
    query = sub.add_parser("query", help="the photos that best match a text")
    query.add_argument("text", nargs="+", help="the query (several: one answer each)")
    query.add_argument("--index", type=Path, required=True, help="(required) the index folder (search.py index --out)")
    query.add_argument("-k", type=at_least(1), default=10, help="photos per query [default: 10]")
    query.add_argument("--format", choices=("table", "json"), default="table",
                       help="a table, or one JSON object a query and line: {query, results: [{rank, id, score}], "
                            "warnings} [default: table]")
    query.add_argument("--text-encoder", help="refuse the index unless it was made with this text encoder")
    query.add_argument("--data", type=Path, help="refuse the index unless it was made from this dataset")
    for parser in (index, query):
        add_common_flags(parser)
    return p.parse_args(argv)


@guarded
def main(argv: list[str] | None = None):
    args = parse_args(argv)
    return run_index(args) if args.command == "index" else run_query(args)


def run_index(args: argparse.Namespace):
    """`index`: builds or extends the index; prints one summary line. Returns the `BuildReport`."""
    config = SearchConfig(**config_overrides(args, "search"))
    setup_logging(args.verbose)
    from app.fileio import refuse_output_over_inputs
    from app.records.dataset import DatasetInfo
    from app.retrieval.indexing import build_index

    refuse_output_over_inputs(args.out, {"--data": args.data, "--model": args.model}, "never")
    info = DatasetInfo.load(args.data)
    report = build_index(args.out, info, args.split, args.text_encoder, config, args.rebuild, args.model)
    if report.size == 0:
        logging.getLogger("app").warning("%s: the index holds no photos (the %s split has none with tags): every "
                                         "query will find nothing", args.out, args.split)
    skipped = report.skipped.skipped
    print(f"{args.out}: {report.size} photos ({report.kind} index); added {report.added} of {args.data}'s "
          f"{args.split} split, already there {report.already_indexed}, skipped {sum(skipped.values())}"
          + (f" ({', '.join(f'{r} {n}' for r, n in sorted(skipped.items()))})" if skipped else "")
          + ("; the dataset has grown since it was indexed" if report.dataset_grew else ""))
    return report


def run_query(args: argparse.Namespace) -> list[dict]:
    """`query`: prints each query's nearest photos. Returns the answers."""
    from app.retrieval.query import answer_queries, open_index, refuse_bad_query
    from app.retrieval.vector_index import read_marker

    for text in args.text:  # before anything is read or loaded
        refuse_bad_query(text)
    spec = read_marker(args.index)["fingerprint"].get("encoder_spec")
    setup_logging(args.verbose, tensorflow=spec != BUNDLED_ENCODER or args.data is not None)
    info = None
    if args.data is not None:
        from app.records.dataset import DatasetInfo

        info = DatasetInfo.load(args.data)
    index, encoder = open_index(args.index, args.text_encoder, info)
    answers = answer_queries(index, args.text, encoder, args.k)
    if args.format == "json":
        print("\n".join(json.dumps(answer, ensure_ascii=False) for answer in answers))
    else:
        print(format_table(answers))
    return answers


def format_table(answers: list[dict]) -> str:
    """Each query, then its photos: rank, cosine score, photo id (warnings go to stderr)."""
    lines = []
    for answer in answers:
        lines += [f"query: {answer['query']}", f"{'rank':>4}  {'score':>7}  id"]
        lines += [f"{hit['rank']:>4}  {hit['score']:>7.4f}  {hit['id']}" for hit in answer["results"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
