"""Prepare a dataset: Open Images + YFCC100M sources (or the embedded demo world) -> tfrecords/NAME.

    python app/prepare.py --oid-dir DIR --yfcc FILE [--autotags FILE] [--extra-tags FILE]
                          [--images DIR] --out tfrecords/NAME
    python app/prepare.py --demo [--demo-size N] [--seed S] [--demo-format oid|manifest|nuswide] --out tfrecords/demo
    python app/prepare.py --manifest photos.csv|photos.jsonl --images DIR --classes classes.csv
                          [--hierarchy tree.json] [--labels exhaustive|partial] --out tfrecords/NAME
    python app/prepare.py --nuswide DIR | --coco DIR --out tfrecords/NAME

The dataset is written into a temporary folder beside --out and swapped in only when complete. With
--ray (Open Images + YFCC100M, or --demo), the YFCC100M scan and the join run as Ray tasks
(docs/scale.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python app/prepare.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import (add_common_flags, add_config_flags, config_overrides, guarded, setup_logging,  # noqa: E402
                     writing_to)
from app.config import DistributeConfig, PrepareConfig  # noqa: E402
from app.distributor import add_distribute_flags, make_distributor  # noqa: E402
from app.records.collection_flags import add_collection_flags, collection_error, wants_collection  # noqa: E402
from app.demo.world import WorldConfig  # noqa: E402
from app.fileio import refuse_output_over_inputs  # noqa: E402

log = logging.getLogger("prepare")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_argument_group("real sources")
    src.add_argument("--oid-dir", type=Path, help="folder with the Open Images CSV/JSON files (real names)")
    src.add_argument("--yfcc", type=Path, help="yfcc100m_dataset file (25 or 23 fields; .gz/.bz2 ok)")
    src.add_argument("--autotags", type=Path, help="yfcc100m_autotags file (optional)")
    src.add_argument("--extra-tags", type=Path, help="TSV flickr_id<TAB>user_tags for photos missing in YFCC100M")
    src.add_argument("--images", type=Path, help="images folder: from app/download.py (with manifest.csv), "
                                                 "or ImageID.jpg files matching OriginalMD5 (optional)")
    src.add_argument("--classes", type=Path, help="Open Images: override the class descriptions CSV (MID,DisplayName); "
                                                  "--manifest: the class list (name or name,id per line)")
    src.add_argument("--hierarchy", type=Path, help="override: hierarchy JSON (Open Images form; with --manifest, "
                                                    "--nuswide or --coco: class names or ids)")
    demo = parser.add_argument_group("embedded demo world")
    demo.add_argument("--demo", action="store_true", help="generate the offline demo world and prepare it")
    demo.add_argument("--demo-size", type=int, default=WorldConfig.train_size,
                      help="train photos in the demo world; validation and test get a quarter each, YFCC100M-only "
                           "photos three times as many [default: %(default)s]")
    demo.add_argument("--seed", type=int, default=0, help="demo world seed [default: 0]")
    add_collection_flags(parser, demo)
    parser.add_argument("--out", type=Path, required=True, help="(required) output dataset folder, e.g. tfrecords/demo")
    add_config_flags(parser.add_argument_group("dataset"), PrepareConfig, "prepare")
    add_distribute_flags(parser)
    add_common_flags(parser)
    args = parser.parse_args(argv)
    if collection_error(args):
        parser.error(collection_error(args))
    if wants_collection(args) and getattr(args, "distribute.ray") is not None:
        parser.error("--ray prepares Open Images + YFCC100M (--oid-dir, --yfcc) or --demo; a collection is prepared "
                     "in this process")
    if not args.demo and not wants_collection(args) and (args.oid_dir is None or args.yfcc is None):
        parser.error("give --oid-dir and --yfcc, --manifest, --nuswide, --coco, or --demo")
    if args.demo and args.demo_size < 1:
        parser.error(f"--demo-size must be >= 1. Received: {args.demo_size}")
    return args


@guarded
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging(args.verbose)
    config = PrepareConfig(**config_overrides(args, "prepare"))
    from app.sources import oid
    from app.records.join import JoinHooks, prepare_dataset
    from app.records.spread import spread_hooks
    from app.sources.oid_yfcc import Sources
    from app.records.summary import summary
    from app.demo.dataset import prepare_demo

    refuse_output_over_inputs(args.out, {"--oid-dir": args.oid_dir, "--yfcc": args.yfcc, "--autotags": args.autotags,
                                         "--extra-tags": args.extra_tags, "--images": args.images,
                                         "--classes": args.classes, "--hierarchy": args.hierarchy,
                                         "--manifest": args.manifest, "--nuswide": args.nuswide, "--coco": args.coco},
                              "never")
    started = time.time()
    progress = not args.no_progress and sys.stderr.isatty()
    distributor = make_distributor(DistributeConfig(**config_overrides(args, "distribute")))
    hooks = spread_hooks(distributor, progress) if distributor.spreads else JoinHooks()
    with writing_to(args.out):
        try:
            if wants_collection(args):
                from app.records.builder import prepare_collection_dataset

                stats = prepare_collection_dataset(args, config)
            elif args.demo:
                stats = prepare_demo(args.out, args.demo_size, args.seed, config, progress, hooks)
            else:
                stats = prepare_dataset(lambda _: Sources(
                    oid=oid.OidPaths.find(args.oid_dir, classes=args.classes, hierarchy=args.hierarchy),
                    yfcc=args.yfcc, autotags=args.autotags, extra_tags=args.extra_tags, images=args.images),
                    args.out, config, progress, hooks)
        finally:
            distributor.close()
    print(summary(stats, args.out, time.time() - started))
    return stats


if __name__ == "__main__":
    main()
