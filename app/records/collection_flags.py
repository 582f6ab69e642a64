"""`prepare.py`'s flags for collections (--manifest, --nuswide, --coco, --labels, split fractions,
--demo-format) and turning them into a `Collection`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from app.badrows import BadRows
from app.errors import InputError
from app.sources.classes import ClassList, flat_tree, read_class_list, read_hierarchy
from app.sources.manifest import LABEL_MODES, ManifestReader
from app.sources.photo import HashSplit

if TYPE_CHECKING:
    from app.records.builder import Collection

DEMO_FORMATS = ("oid", "manifest", "nuswide")


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
    group.add_argument("--labels", choices=LABEL_MODES, default="exhaustive",
                       help="exhaustive: every class a photo does not list is a verified negative; partial: only "
                            "the listed positives and the negatives column are verified [default: exhaustive]")
    group.add_argument("--test-fraction", type=float, default=0.2,
                       help="photos without a split column: the share hashed into test [default: 0.2]")
    group.add_argument("--validation-fraction", type=float, default=0.1,
                       help="the share hashed into validation, cut from what test leaves (NUS-WIDE, COCO: from the "
                            "official train split) "
                            "[default: 0.1]")
    (demo_group or parser).add_argument("--demo-format", choices=DEMO_FORMATS, default="oid",
                                        help="with --demo: write the demo world as Open Images + YFCC100M files "
                                             "(oid), as a manifest with captions, or in the NUS-WIDE layout "
                                             "[default: oid]")


def wants_collection(args: argparse.Namespace) -> bool:
    """Whether the flags name a collection (not the Open Images + YFCC100M sources)."""
    return bool(args.manifest or args.nuswide or args.coco or (args.demo and args.demo_format != "oid"))


def collection_error(args: argparse.Namespace) -> Optional[str]:
    """A usage error in the collection flags, or None."""
    given = [flag for flag in ("manifest", "nuswide", "coco") if getattr(args, flag)]
    if len(given) + bool(args.demo) > 1 or (given and (args.oid_dir or args.yfcc)):
        return "give one source: --manifest, --nuswide, --coco, --demo, or --oid-dir with --yfcc"
    if args.manifest and args.classes is None:
        return "--manifest needs --classes (a CSV of class names, `name` or `name,id` per line)"
    return None


def open_collection(args: argparse.Namespace, scratch: Path) -> "Collection":
    """The collection the flags name; a demo world is first written under `scratch`."""
    from app.records.builder import Collection

    split = HashSplit(args.test_fraction, args.validation_fraction)
    if args.images is not None and not args.images.is_dir():
        raise InputError(f"{args.images}: --images is not a folder (no such folder, or a file)")
    if args.demo:
        from app.demo.collections import write_demo_collection

        args = write_demo_collection(args, scratch)
    bad = BadRows()
    if args.manifest:
        classes = read_class_list(args.classes)
        source = ManifestReader(args.manifest, classes, args.labels)
        return Collection("manifest", source, classes, _tree(args, classes, bad), args.labels, args.images, split,
                          (args.manifest, args.classes), bad)
    if args.nuswide:
        from app.sources.nuswide import NusWide

        source = NusWide(args.nuswide, args.validation_fraction)
    else:
        from app.sources.coco import Coco

        source = Coco(args.coco, args.validation_fraction)
    images = args.images or source.images
    if not images.is_dir():
        bad.warn(f"{images}: no images folder: every photo goes without its image (give --images)")
        images = None
    return Collection("nuswide" if args.nuswide else "coco", source, source.classes,
                      _tree(args, source.classes, bad), "exhaustive", images, split, source.made_from(), bad)


def _tree(args: argparse.Namespace, classes: ClassList, bad: BadRows) -> dict:
    return read_hierarchy(args.hierarchy, classes, bad)[0] if args.hierarchy else flat_tree(classes)
