"""Prepare a dataset: Open Images + YFCC100M sources (or the embedded demo world) -> tfrecords/NAME.

    python app/prepare.py --oid-dir DIR --yfcc FILE [--autotags FILE] [--extra-tags FILE]
                          [--images DIR] --out tfrecords/NAME
    python app/prepare.py --demo [--demo-size N] [--seed S] [--demo-format oid|manifest|nuswide] --out tfrecords/demo
    python app/prepare.py --manifest photos.csv|photos.jsonl --images DIR --classes classes.csv
                          [--hierarchy tree.json] [--labels exhaustive|partial] --out tfrecords/NAME
    python app/prepare.py --nuswide DIR | --coco DIR --out tfrecords/NAME
    python app/prepare.py --mirflickr DIR [--split-seed N | --split-file FILE] [--test-fraction 0.3]
                          [--validation-fraction 0.1] --out tfrecords/NAME

The dataset is written into a temporary folder beside --out and swapped in only when complete.
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
from app.badrows import BadRows  # noqa: E402
from app.config import PrepareConfig  # noqa: E402
from app.errors import InputError  # noqa: E402
from app.demo.collections import write_demo_collection  # noqa: E402
from app.demo.world import WorldConfig  # noqa: E402
from app.fileio import refuse_output_over_inputs  # noqa: E402
from app.sources.base import Collection  # noqa: E402
from app.sources.classes import ClassList, flat_tree, read_class_list, read_hierarchy  # noqa: E402
from app.sources.coco import Coco  # noqa: E402
from app.sources.manifest import LABEL_MODES, ManifestReader  # noqa: E402
from app.sources.mirflickr import MirFlickr  # noqa: E402
from app.sources.nuswide import NusWide  # noqa: E402
from app.sources.photo import HashSplit  # noqa: E402

log = logging.getLogger("prepare")

# Datasets read from a folder in their real layout: `--NAME DIR` opens `reader(args)`, a reader with
# `classes`, `images`, `made_from()` and `photos(bad)` (exhaustive labels).
FOLDER_SOURCES = {
    "nuswide": (lambda args: NusWide(args.nuswide, args.validation_fraction), "a NUS-WIDE folder in its real layout"),
    "coco": (lambda args: Coco(args.coco, args.validation_fraction),
             "a COCO 2017 folder (annotations/, train2017/, val2017/)"),
    "mirflickr": (lambda args: MirFlickr(args.mirflickr, args.split_file),
                  "a MIRFLICKR-25K folder (all_imgs.txt, all_tags.txt, all_labels.txt, [mirflickr/im<N>.jpg])"),
}
TEST_FRACTION = 0.2
MIRFLICKR_TEST_FRACTION = 0.3  # 60/10/30: a random split as its papers draw (it has no official one)
COLLECTIONS = ("manifest", *FOLDER_SOURCES)
DEMO_FORMATS = ("oid", "manifest", "nuswide")


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
    add_common_flags(parser)
    args = parser.parse_args(argv)
    if collection_error(args):
        parser.error(collection_error(args))
    if not args.demo and not wants_collection(args) and (args.oid_dir is None or args.yfcc is None):
        parser.error(f"give --oid-dir and --yfcc, {', '.join(f'--{name}' for name in COLLECTIONS)}, or --demo")
    if args.demo and args.demo_size < 1:
        parser.error(f"--demo-size must be >= 1. Received: {args.demo_size}")
    return args


@guarded
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging(args.verbose)
    config = PrepareConfig(**config_overrides(args, "prepare"))
    from app.demo.dataset import prepare_demo
    from app.records.builder import prepare_dataset
    from app.records.summary import summary
    from app.sources import oid
    from app.sources.oid_yfcc import OidYfccFiles

    refuse_output_over_inputs(args.out, {"--oid-dir": args.oid_dir, "--yfcc": args.yfcc, "--autotags": args.autotags,
                                         "--extra-tags": args.extra_tags, "--images": args.images,
                                         "--classes": args.classes, "--hierarchy": args.hierarchy,
                                         **{f"--{name}": getattr(args, name) for name in COLLECTIONS},
                                         "--split-file": args.split_file}, "never")
    started = time.time()
    progress = not args.no_progress and sys.stderr.isatty()
    with writing_to(args.out):
        if wants_collection(args):
            stats = prepare_dataset(lambda scratch: open_collection(args, scratch / "raw"), args.out, config, progress)
        elif args.demo:
            stats = prepare_demo(args.out, args.demo_size, args.seed, config, progress)
        else:
            stats = prepare_dataset(lambda _: OidYfccFiles(
                oid=oid.OidPaths.find(args.oid_dir, classes=args.classes, hierarchy=args.hierarchy), yfcc=args.yfcc,
                autotags=args.autotags, extra_tags=args.extra_tags, images=args.images), args.out, config, progress)
    print(summary(stats, args.out, time.time() - started))
    return stats


def add_collection_flags(parser: argparse.ArgumentParser, demo_group: argparse._ArgumentGroup) -> None:
    """Adds the collection flags (--images, --classes and --hierarchy are shared with Open Images);
    --demo-format goes to the demo flags."""
    group = parser.add_argument_group("your own photos (docs/your-own-photos.md)")
    group.add_argument("--manifest", type=Path, help="photos.csv or photos.jsonl: id, image, tags, text, labels, "
                                                     "[negatives], [split]; needs --classes")
    for name, (_, help_text) in FOLDER_SOURCES.items():
        group.add_argument(f"--{name}", type=Path, help=help_text)
    group.add_argument("--labels", choices=LABEL_MODES, default="exhaustive",
                       help="exhaustive: every class a photo does not list is a verified negative; partial: only "
                            "the listed positives and the negatives column are verified [default: exhaustive]")
    group.add_argument("--test-fraction", type=float, default=None,
                       help=f"photos without a split column: the share hashed into test [default: {TEST_FRACTION}; "
                            f"--mirflickr: {MIRFLICKR_TEST_FRACTION}]")
    group.add_argument("--validation-fraction", type=float, default=0.1,
                       help="the share hashed into validation, cut from what test leaves (NUS-WIDE, COCO: from the "
                            "official train split) [default: 0.1]")
    group.add_argument("--split-seed", type=int, default=0,
                       help="the seed of the hash split of photos without a split column (another seed, another "
                            "split) [default: 0]")
    group.add_argument("--split-file", type=Path,
                       help="--mirflickr: `id,split` lines (id im<N>, split train, validation or test) naming every "
                            "photo's split, instead of the hash split")
    demo_group.add_argument("--demo-format", choices=DEMO_FORMATS, default="oid",
                            help="with --demo: write the demo world as Open Images + YFCC100M files (oid), as a "
                                 "manifest with captions, or in the NUS-WIDE layout [default: oid]")


def wants_collection(args: argparse.Namespace) -> bool:
    """Whether the flags name a collection (not the Open Images + YFCC100M sources)."""
    return any(getattr(args, name) for name in COLLECTIONS) or (args.demo and args.demo_format != "oid")


def collection_error(args: argparse.Namespace) -> str | None:
    """A usage error in the collection flags, or None."""
    given = [name for name in COLLECTIONS if getattr(args, name)]
    if len(given) + bool(args.demo) > 1 or (given and (args.oid_dir or args.yfcc)):
        return f"give one source: {', '.join(f'--{name}' for name in COLLECTIONS)}, --demo, or --oid-dir with --yfcc"
    if args.split_file and not args.mirflickr:
        return "--split-file goes with --mirflickr (a manifest has its split column)"
    if args.manifest and args.classes is None:
        return "--manifest needs --classes (a CSV of class names, `name` or `name,id` per line)"
    return None


def open_collection(args: argparse.Namespace, scratch: Path) -> Collection:
    """The collection the flags name; a demo world is first written under `scratch`."""
    test = args.test_fraction if args.test_fraction is not None else (
        MIRFLICKR_TEST_FRACTION if args.mirflickr else TEST_FRACTION)
    split = HashSplit(test, args.validation_fraction, args.split_seed)
    if args.images is not None and not args.images.is_dir():
        raise InputError(f"{args.images}: --images is not a folder (no such folder, or a file)")
    if args.demo:
        args = write_demo_collection(args, scratch)
    bad = BadRows()
    if args.manifest:
        classes = read_class_list(args.classes)
        return Collection("manifest", ManifestReader(args.manifest, classes, args.labels), classes,
                          _tree(args, classes, bad), args.labels, args.images, split, (args.manifest, args.classes),
                          bad)
    name = next(name for name in FOLDER_SOURCES if getattr(args, name))
    reader = FOLDER_SOURCES[name][0](args)
    images = args.images or reader.images
    if images is not None and not Path(images).is_dir():
        bad.warn(f"{images}: no images folder: every photo goes without its image (give --images)")
        images = None
    return Collection(name, reader, reader.classes, _tree(args, reader.classes, bad), "exhaustive",
                      images, split, reader.made_from(), bad)


def _tree(args: argparse.Namespace, classes: ClassList, bad: BadRows) -> dict:
    return read_hierarchy(args.hierarchy, classes, bad)[0] if args.hierarchy else flat_tree(classes)


if __name__ == "__main__":
    main()
