"""Download the Open Images photos: verify, turn upright, shrink, write atomically, keep a manifest.

Usage:
    python app/download.py --oid-dir DIR --out IMAGES_DIR [--split train validation test]
                           [--source original|thumbnail] [--max-side 640] [--workers 16]
                           [--retries 3] [--timeout 30] [--only-tagged --yfcc FILE [--extra-tags FILE]]
                           [--shard i/N] [--retry-permanent]
    python app/download.py --oid-dir DIR --out IMAGES_DIR --yfcc-split N --yfcc FILE   # the yfcc split's photos
    python app/download.py --manifest photos.csv|photos.jsonl --out IMAGES_DIR   # a photo manifest's URLs

Re-running the same command resumes: photos already `ok` are not requested again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python app/download.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import (DefaultsHelpFormatter, add_common_flags, at_least, console_script, fail,  # noqa: E402
                     setup_logging)
from app.fileio import refuse_output_over_inputs  # noqa: E402

log = logging.getLogger("download")
SPLITS = ("train", "validation", "test")


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"expected i/N with 0 <= i < N, got {text!r}")
    return int(index), int(count)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download Open Images photos (OriginalURL, MD5-checked) into IMAGES_DIR/ab/ImageID.jpg "
                    "with a manifest.csv; a re-run resumes.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--oid-dir", type=Path, metavar="DIR", help="folder with the Open Images image CSVs")
    parser.add_argument("--manifest", type=Path, metavar="PHOTOS",
                        help="instead of --oid-dir: a photo manifest (docs/your-own-photos.md) whose image URLs to "
                             "fetch, for prepare --manifest PHOTOS --images IMAGES_DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="IMAGES_DIR", help="images folder (IMAGES_DIR) for prepare --images")
    parser.add_argument("--split", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits to download")
    parser.add_argument("--source", choices=("original", "thumbnail"), default="original",
                        help="OriginalURL (MD5-checked) or Thumbnail300KURL (no MD5 exists)")
    parser.add_argument("--max-side", type=at_least(0), default=640, metavar="N",
                        help="longer side of stored photos in pixels, never enlarged; 0 keeps the original size")
    parser.add_argument("--quality", type=at_least(1), default=90, metavar="Q", help="JPEG quality of re-encoded photos")
    parser.add_argument("--workers", type=at_least(1), default=16, metavar="N", help="concurrent downloads (64 suits a fast link)")
    parser.add_argument("--retries", type=at_least(0), default=3, metavar="N", help="extra attempts on 5xx, 429 and timeouts")
    parser.add_argument("--timeout", type=at_least(0.001, float), default=30.0, metavar="S", help="seconds to connect and per read")
    parser.add_argument("--backoff", type=at_least(0.0, float), default=1.0, metavar="S",
                        help="first retry delay in seconds, doubled at each retry")
    tagged = parser.add_argument_group("only photos with user tags (the study's dataset)")
    tagged.add_argument("--only-tagged", action="store_true", help="download only photos with user tags")
    tagged.add_argument("--yfcc", type=Path, metavar="FILE", help="yfcc100m_dataset file (needed by --only-tagged)")
    tagged.add_argument("--extra-tags", type=Path, metavar="FILE", help="TSV flickr_id<TAB>user_tags for photos missing in YFCC100M")
    parser.add_argument("--yfcc-split", type=at_least(1), metavar="N",
                        help="download the photos of prepare's weakly labelled yfcc split instead (prepare's "
                             "--yfcc-split-size N: YFCC100M photos outside Open Images, from their YFCC100M download "
                             "URL, stored as yfcc-ID.jpg; needs --yfcc)")
    parser.add_argument("--shard", type=_shard, metavar="I/N", help="download only shard i of N (by a hash of the ImageID), "
                                                     "with its own manifest-i-of-N.csv")
    parser.add_argument("--retry-permanent", action="store_true",
                        help="also retry photos that earlier runs found gone (404, 410, unavailable)")
    parser.add_argument("--proxy", metavar="URL", help="HTTP proxy URL for every request")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    if (args.oid_dir is None) == (args.manifest is None):
        parser.error("give --oid-dir or --manifest")
    if args.manifest is not None and (args.yfcc_split is not None or args.only_tagged):
        parser.error("--manifest takes neither --yfcc-split nor --only-tagged")
    if args.yfcc_split is not None:
        if args.yfcc is None or args.only_tagged or args.source != "original":
            parser.error("--yfcc-split needs --yfcc, and takes neither --only-tagged nor --source")
    elif args.only_tagged != (args.yfcc is not None):
        parser.error("--only-tagged and --yfcc go together")
    if args.extra_tags is not None and not args.only_tagged:
        parser.error("--extra-tags is only used with --only-tagged")
    return args


@console_script
def main(argv=None):
    """Runs the download; returns its `DownloadSummary`."""
    args = parse_args(argv)
    setup_logging(args.verbose, tensorflow=False)
    from app.badrows import BadRows
    from app.downloader.download import DownloadConfig, download
    from app.downloader.reader import yfcc_split_items
    from app.downloader.fetch import FetchConfig
    from app.downloader.manifest import manifest_name

    bad = BadRows()
    progress = not args.no_progress and sys.stderr.isatty()
    config = DownloadConfig(max_side=args.max_side, quality=args.quality, workers=args.workers,
                            manifest=manifest_name(args.shard), retry_permanent=args.retry_permanent,
                            fetch=FetchConfig(timeout=args.timeout, retries=args.retries, backoff=args.backoff,
                                              proxy=args.proxy))
    try:
        refuse_output_over_inputs(args.out, {"--oid-dir": args.oid_dir, "--yfcc": args.yfcc,
                                             "--extra-tags": args.extra_tags, "--manifest": args.manifest}, "any")
        if args.manifest is not None:
            from app.downloader.urls import manifest_download_items

            total = sum(1 for _ in manifest_download_items(args.manifest))
            log.info("%d photos with a URL in %s; writing to %s", total, args.manifest, args.out)
            summary = download(manifest_download_items(args.manifest), args.out, config, progress=progress,
                               total=total)
        elif args.yfcc_split is not None:
            total, items = yfcc_split_items(args.oid_dir, args.yfcc, args.yfcc_split, bad, args.shard, progress)
            log.info("%d photos of the yfcc split selected (shard %s); writing to %s", total,
                     "all" if args.shard is None else "%d/%d" % args.shard, args.out)
            summary = download(items, args.out, config, progress=progress, total=total)
        else:
            summary = _download_oid(args, bad, config, progress)
    except (OSError, ValueError) as err:
        if args.verbose:
            raise
        fail(str(err))
    print(f"downloaded into {args.out / config.manifest}: {summary.report()}")
    if bad.total:
        print(f"input {bad.report()}")
    if summary.failed and not (summary.ok or summary.skipped_ok):
        fail(f"none of the {summary.failed} photos could be downloaded; see {args.out / config.manifest}")
    return summary


def _download_oid(args, bad, config, progress: bool):
    from app.badrows import BadRows
    from app.downloader.download import download
    from app.downloader.reader import OidSelection, find_image_files, oid_items, tagged_flickr_ids

    files = find_image_files(args.oid_dir, tuple(args.split))
    log.info("image lists: %s", ", ".join(f"{split} {path.name}" for split, path in files.items()))
    tagged = tagged_flickr_ids(files, args.yfcc, args.extra_tags, bad, progress) if args.only_tagged else None
    if tagged is not None:
        log.info("%d photos have user tags", len(tagged))
    selection = OidSelection(files, args.source, args.shard, tagged)
    log.info("counting the selected photos (one pass over the image lists, for the progress bar)")
    total = sum(1 for _ in oid_items(selection, BadRows()))
    log.info("%d photos selected (source %s, shard %s); writing to %s", total, args.source,
             "all" if args.shard is None else "%d/%d" % args.shard, args.out)
    return download(oid_items(selection, bad), args.out, config, progress=progress, total=total)

if __name__ == "__main__":
    main()
