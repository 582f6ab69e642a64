"""`prepare.py`'s flags for collections (--manifest, --nuswide, --coco, --mirflickr, --labels, the split,
--demo-format) and turning them into a `Collection`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from app.sources.classes import ClassList, flat_tree, read_class_list, read_hierarchy
from app.sources.manifest import LABEL_MODES, ManifestReader
from app.sources.photo import HashSplit

if TYPE_CHECKING:
    from app.records.builder import Collection

DEMO_FORMATS = ("oid", "manifest", "nuswide")
SOURCES = ("manifest", "nuswide", "coco", "mirflickr")
TEST_FRACTION = 0.2
MIRFLICKR_TEST_FRACTION = 0.3  # 60/10/30: a random split as its papers draw (it has no official one)


def add_collection_flags(parser: argparse.ArgumentParser, demo_group: argparse._ArgumentGroup | None = None) -> None:
    """Adds the collection flags (--images, --classes and --hierarchy are shared with Open Images).

    Args:
        parser: the command's parser.
        demo_group: the argument group of the demo flags, where --demo-format is listed (default: the parser).
    """
    group = parser.add_argument_group("your own photos (docs/your-own-photos.md)")
    group.add_argument("--manifest", type=Path, help="photos.csv or photos.jsonl: id, image, tags, text, labels, "
                                                     "[negatives], [split]; needs --classes")
    group.add_argument("--nuswide", type=Path, help="a NUS-WIDE folder in its real layout")
    group.add_argument("--coco", type=Path, help="a COCO 2017 folder (annotations/, train2017/, val2017/)")
    group.add_argument("--mirflickr", type=Path, help="a MIRFLICKR-25K folder (all_imgs.txt, all_tags.txt, "
                                                      "all_labels.txt, [mirflickr/im<N>.jpg])")
    group.add_argument("--labels", choices=LABEL_MODES, default="exhaustive",
                       help="exhaustive: every class a photo does not list is a verified negative; partial: only "
                            "the listed positives and the negatives column are verified [default: exhaustive]")
    group.add_argument("--test-fraction", type=float, default=None,
                       help=f"photos without a split column: the share hashed into test [default: {TEST_FRACTION}; "
                            f"--mirflickr: {MIRFLICKR_TEST_FRACTION}]")
    group.add_argument("--validation-fraction", type=float, default=0.1,
                       help="the share hashed into validation, cut from what test leaves (NUS-WIDE, COCO: from the "
                            "official train split) "
                            "[default: 0.1]")
    group.add_argument("--split-seed", type=int, default=0,
                       help="the seed of the hash split of photos without a split column (another seed, another "
                            "split) [default: 0]")
    group.add_argument("--split-file", type=Path,
                       help="--mirflickr: `id,split` lines (id im<N>, split train, validation or test) naming every "
                            "photo's split, instead of the hash split")
    (demo_group or parser).add_argument("--demo-format", choices=DEMO_FORMATS, default="oid",
                                        help="with --demo: write the demo world as Open Images + YFCC100M files "
                                             "(oid), as a manifest with captions, or in the NUS-WIDE layout "
                                             "[default: oid]")


def wants_collection(args: argparse.Namespace) -> bool:
    """Whether the flags name a collection (not the Open Images + YFCC100M sources)."""
    return any(getattr(args, flag) for flag in SOURCES) or bool(args.demo and args.demo_format != "oid")


def collection_error(args: argparse.Namespace) -> Optional[str]:
    """A usage error in the collection flags, or None."""
    given = [flag for flag in SOURCES if getattr(args, flag)]
    if len(given) + bool(args.demo) > 1 or (given and (args.oid_dir or args.yfcc)):
        return "give one source: --manifest, --nuswide, --coco, --mirflickr, --demo, or --oid-dir with --yfcc"
    if args.split_file and not args.mirflickr:
        return "--split-file goes with --mirflickr (a manifest has its split column)"
    if args.manifest and args.classes is None:
        return "--manifest needs --classes (a CSV of class names, `name` or `name,id` per line)"
    return None


def open_collection(args: argparse.Namespace, scratch: Path) -> "Collection":
    """The collection the flags name; a demo world is first written under `scratch`."""
    from app.records.builder import Collection

    test = args.test_fraction if args.test_fraction is not None else (
        MIRFLICKR_TEST_FRACTION if args.mirflickr else TEST_FRACTION)
    split = HashSplit(test, args.validation_fraction, args.split_seed)
    if args.demo:
        from app.demo.collections import write_demo_collection

        args = write_demo_collection(args, scratch)
    if args.manifest:
        classes = read_class_list(args.classes)
        source = ManifestReader(args.manifest, classes, args.labels)
        return Collection("manifest", source, classes, _tree(args, classes), args.labels, args.images, split,
                          (args.manifest, args.classes))
    if args.nuswide:
        from app.sources.nuswide import NusWide

        source, kind = NusWide(args.nuswide, args.validation_fraction), "nuswide"
    elif args.mirflickr:
        from app.sources.mirflickr import MirFlickr

        source, kind = MirFlickr(args.mirflickr, args.split_file), "mirflickr"
    else:
        from app.sources.coco import Coco

        source, kind = Coco(args.coco, args.validation_fraction), "coco"
    return Collection(kind, source, source.classes, _tree(args, source.classes), "exhaustive",
                      args.images or source.images, split, source.made_from())


def _tree(args: argparse.Namespace, classes: ClassList) -> dict:
    return read_hierarchy(args.hierarchy, classes)[0] if args.hierarchy else flat_tree(classes)
