"""Prepare a dataset: Open Images + YFCC100M sources (or the embedded demo world) -> tfrecords/NAME.

    python app/prepare.py --oid-dir DIR --yfcc FILE [--autotags FILE] [--extra-tags FILE]
                          [--images DIR] --out tfrecords/NAME
    python app/prepare.py --demo [--demo-size N] [--seed S] [--demo-format oid|manifest|nuswide] --out tfrecords/demo
    python app/prepare.py --manifest photos.csv|photos.jsonl --images DIR --classes classes.csv
                          [--hierarchy tree.json] [--labels exhaustive|partial] --out tfrecords/NAME
    python app/prepare.py --nuswide DIR | --coco DIR --out tfrecords/NAME

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
from app.config import PrepareConfig  # noqa: E402
from app.data.collections.cli import add_collection_flags, collection_error, wants_collection  # noqa: E402

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
    src.add_argument("--classes", type=Path, help="Open Images: override the class descriptions CSV (MID,DisplayName); --manifest: "
                                                    "the class list (name or name,id per line)")
    src.add_argument("--hierarchy", type=Path, help="override: hierarchy JSON (Open Images form; with --manifest, "
                                                      "--nuswide or --coco: class names or ids)")
    demo = parser.add_argument_group("embedded demo world")
    demo.add_argument("--demo", action="store_true", help="generate the offline demo world and prepare it")
    demo.add_argument("--demo-size", type=int, default=4000,
                      help="train photos in the demo world; validation and test get a quarter each, YFCC100M-only "
                           "photos three times as many [default: 4000]")
    demo.add_argument("--seed", type=int, default=0, help="demo world seed [default: 0]")
    add_collection_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="(required) output dataset folder, e.g. tfrecords/demo")
    add_config_flags(parser.add_argument_group("dataset"), PrepareConfig, "prepare")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    if collection_error(args):
        parser.error(collection_error(args))
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
    from app.data import join, oid
    from app.data.dataset import DatasetWriter
    from app.data.sources import Sources

    started = time.time()
    progress = not args.no_progress and sys.stderr.isatty()
    with writing_to(args.out), DatasetWriter(args.out) as writer:
        if wants_collection(args):
            from app.data.collections.build import prepare_collection
            from app.data.collections.cli import open_collection

            stats = prepare_collection(open_collection(args, writer.path / "raw"), writer, config)
            stats["fingerprint"] = writer.commit()
            print(summary(stats, args.out, time.time() - started))
            return stats
        if args.demo:
            from app.demo.world import WorldConfig, write_world

            held_out = max(50, args.demo_size // 4)
            log.info("generating the demo world (train=%d, seed=%d)", args.demo_size, args.seed)
            sources = write_world(writer.path / "raw", WorldConfig(
                train_size=args.demo_size, validation_size=held_out, test_size=held_out,
                extra_yfcc=3 * args.demo_size, seed=args.seed))
        else:
            found = oid.OidPaths.find(args.oid_dir, classes=args.classes, hierarchy=args.hierarchy)
            sources = Sources(oid=found, yfcc=args.yfcc, autotags=args.autotags, extra_tags=args.extra_tags,
                              images=args.images)
        for split, path in sources.oid.human_labels.items():
            subset = " (the boxable subset: no full file found)" if path and path.stem.endswith("-boxable") else ""
            log.info("%s: human-verified labels from %s%s", split, path, subset)
        stats = join.prepare(sources, writer, config, progress=progress)
        stats["fingerprint"] = writer.commit()
    print(summary(stats, args.out, time.time() - started))
    return stats


def summary(stats: dict, out: Path, seconds: float) -> str:
    """Formats the end-of-run summary."""
    lines = [f"prepared {out} in {seconds:.1f}s (fingerprint {stats['fingerprint'][:12]})"]
    for split, c in stats["splits"].items():
        if "collection" in stats:  # app/data/collections: no YFCC100M join
            lines.append(f"  {split:<10} {c['images']:>7} images | {c.get('with_tags', 0)} with tags, "
                         f"{c.get('with_text', 0)} with text, {c.get('with_targets', 0)} with a label | "
                         f"{c.get('with_image', 0)} with an image, {c.get('without_image', 0)} without")
            continue
        lines.append(
            f"  {split:<10} {c['images']:>7} images | tags from YFCC100M {c.get('tags_from_yfcc', 0)}, "
            f"extra {c.get('tags_from_extra', 0)}, none {c.get('tags_from_none', 0)} | "
            f"{c.get('tags_kept', 0)} tags kept | {c.get('with_image', 0)} with an image, "
            f"{c.get('without_image', 0)} without"
        )
    lines.append(f"  vocabulary: {stats['vocabulary_size']} ids (limit {stats['config']['tag_limit']}, "
                 f"threshold {stats['config']['tag_threshold']}, normalization "
                 f"{stats['config'].get('tag_normalization', 'none')}, train split)")
    top = ", ".join(f"{k} {v}" for k, v in list(stats["languages"].items())[:8])
    lines.append(f"  languages: {top}")
    if stats.get("image_folder"):
        lines.append(_reasons("photos without an image", stats["image_folder"]["without_image"]))
    bad = stats["bad_rows"]
    lines.append(_reasons("bad rows", bad))
    skipped = bad.get("skipped", {})
    for reason, count in skipped.get("by_reason", {}).items():
        lines.append(f"  skipped (valid rows not used) {reason}: {count}, e.g. {skipped['examples'][reason][0]}")
    lines.extend(f"  warning: {warning}" for warning in bad.get("warnings", []))
    return "\n".join(lines)


def _reasons(title: str, counted: dict) -> str:
    """`title: total`, then each reason's count and first two examples (a `BadRows.to_dict()`)."""
    lines = [f"  {title}: {counted['total']}"]
    for reason, count in counted["by_reason"].items():
        lines.append(f"    {reason}: {count}")
        lines.extend(f"      e.g. {e}" for e in counted["examples"].get(reason, [])[:2])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
