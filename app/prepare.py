"""Prepare shards: Open Images + YFCC100M sources (or the embedded demo world) -> tfrecords/NAME.

Usage:
    python app/prepare.py --oid-dir DIR --yfcc FILE [--autotags FILE] [--extra-tags FILE]
                          [--images DIR] --out tfrecords/NAME
    python app/prepare.py --demo [--demo-size N] [--seed S] --out tfrecords/demo
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python app/prepare.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import input_errors, setup_logging  # noqa: E402

log = logging.getLogger("prepare")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Join Open Images with YFCC100M by Flickr id and write TFRecord shards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = parser.add_argument_group("real sources")
    src.add_argument("--oid-dir", type=Path, help="folder with the Open Images CSV/JSON files (real names)")
    src.add_argument("--yfcc", type=Path, help="yfcc100m_dataset file (25 or 23 fields; .gz/.bz2 ok)")
    src.add_argument("--autotags", type=Path, help="yfcc100m_autotags file (optional)")
    src.add_argument("--extra-tags", type=Path, help="TSV flickr_id<TAB>user_tags for photos missing in YFCC100M")
    src.add_argument("--images", type=Path, help="folder with ImageID.jpg files (optional)")
    src.add_argument("--classes", type=Path, help="override: class descriptions CSV (MID,DisplayName)")
    src.add_argument("--hierarchy", type=Path, help="override: hierarchy JSON")
    demo = parser.add_argument_group("embedded demo world")
    demo.add_argument("--demo", action="store_true", help="generate the offline demo world and prepare it")
    demo.add_argument("--demo-size", type=int, default=4000, help="train photos in the demo world (validation and test get a quarter each)")
    demo.add_argument("--seed", type=int, default=0, help="demo world seed")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder, e.g. tfrecords/demo")
    parser.add_argument("--tag-limit", type=int, default=20, help="default tag limit N for the saved vocabulary")
    parser.add_argument("--tag-threshold", type=int, default=10, help="vocabulary threshold T (train split)")
    parser.add_argument("--lowercase", action="store_true", help="fold tags to lower case")
    parser.add_argument("--records-per-shard", type=int, default=1024)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    if not args.demo and (args.oid_dir is None or args.yfcc is None):
        parser.error("give --oid-dir and --yfcc, or --demo")
    return args


@input_errors()
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging()
    from app.config import DataConfig
    from app.data import join, oid

    config = DataConfig(tag_limit=args.tag_limit, tag_threshold=args.tag_threshold, lowercase=args.lowercase,
                        records_per_shard=args.records_per_shard)
    started = time.time()
    if args.demo:
        from app.data.world import WorldConfig, write_world

        raw = args.out / "raw"
        log.info("generating the demo world (train=%d, seed=%d) in %s", args.demo_size, args.seed, raw)
        held_out = max(50, args.demo_size // 4)
        sources = write_world(raw, WorldConfig(train_size=args.demo_size, validation_size=held_out,
                                               test_size=held_out, extra_yfcc=max(100, args.demo_size * 3 // 4),
                                               seed=args.seed))
    else:
        overrides = {"classes": args.classes, "hierarchy": args.hierarchy}
        sources = join.Sources(
            oid=oid.OidPaths.find(args.oid_dir, **overrides),
            yfcc=args.yfcc, autotags=args.autotags, extra_tags=args.extra_tags, images=args.images,
        )
    stats = join.prepare(sources, args.out, config, progress=not args.no_progress)
    print(summary(stats, args.out, time.time() - started))
    return stats


def summary(stats: dict, out: Path, seconds: float) -> str:
    """Formats the end-of-run summary."""
    lines = [f"prepared {out} in {seconds:.1f}s"]
    for split, c in stats["splits"].items():
        lines.append(
            f"  {split:<10} {c['images']:>7} images | tags from YFCC100M {c.get('tags_from_yfcc', 0)}, "
            f"extra {c.get('tags_from_extra', 0)}, none {c.get('tags_from_none', 0)} | "
            f"{c.get('tags_kept', 0)} tags kept | {c.get('with_image', 0)} images"
        )
    lines.append(f"  vocabulary: {stats['vocabulary_size']} ids (limit {stats['config']['tag_limit']}, "
                 f"threshold {stats['config']['tag_threshold']}, train split)")
    top = ", ".join(f"{k} {v}" for k, v in list(stats["languages"].items())[:8])
    lines.append(f"  languages: {top}")
    bad = stats["bad_rows"]
    lines.append(f"  bad rows: {bad['total']}" + "".join(f"\n    {k}: {v}" for k, v in bad["by_reason"].items()))
    for reason, examples in bad["examples"].items():
        lines.extend(f"      e.g. {e}" for e in examples[:2])
    skipped = bad.get("skipped", {})
    for reason, count in skipped.get("by_reason", {}).items():
        lines.append(f"  skipped (valid rows not used) {reason}: {count}, e.g. {skipped['examples'][reason][0]}")
    lines.extend(f"  warning: {warning}" for warning in bad.get("warnings", []))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
