"""Joining Open Images with YFCC100M on the Flickr id, and turning the result into shards."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from app.config import PrepareConfig
from app.data import oid, records, yfcc
from app.data.badrows import BadRows
from app.data.dataset import CLASSES, HIERARCHY, STATS, VOCAB, DatasetWriter
from app.data.hierarchy import Hierarchy
from app.data.image_folder import ImageFolder
from app.data.language import detect_language
from app.data.stemming import build_normalized_vocabulary
from app.data.tags import clean_tags
from app.data.sources import Sources
from app.fileio import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def prepare_dataset(sources: Sources, out_dir: str | Path, config: PrepareConfig, progress: bool = True) -> dict:
    """Joins the sources into a new dataset folder, swapped into place when complete.

    Returns:
        The stats (also in `stats.json`), plus the dataset's `fingerprint`.
    """
    with DatasetWriter(out_dir) as writer:
        stats = prepare(sources, writer, config, progress)
        return {**stats, "fingerprint": writer.commit()}


def prepare(sources: Sources, writer: DatasetWriter, config: PrepareConfig, progress: bool = True) -> dict:
    """Reads every source, joins them, and writes shards plus metadata into the writer's folder.

    Args:
        sources: the Open Images / YFCC100M files.
        writer: the dataset being written (the caller commits it).
        config: vocabulary and shard layout.
        progress: show progress bars.

    Returns:
        The stats dictionary that is also written to `stats.json`.
    """
    out_dir = writer.path
    bad = BadRows()
    classes = oid.read_classes(sources.oid.classes)
    mids = [mid for mid, _ in classes]
    class_index = {mid: i for i, mid in enumerate(mids)}
    hierarchy = Hierarchy.from_json(sources.oid.hierarchy, mids)

    images = _read_images(sources.oid.images, bad)
    wanted = {str(im.flickr_id).encode() for split in images for im in images[split]}

    user_tags, sources_of = _read_tags(sources, wanted, bad, progress)
    autotags = _read_autotags(sources.autotags, wanted, class_index, bad) if sources.autotags else {}

    stats = {"splits": {}, "bad_rows": None, "languages": collections.Counter(), "config": dataclasses.asdict(config)}
    folder = ImageFolder(sources.images, bad) if sources.images else None
    split_records = {}
    for split in oid.SPLITS:
        human = _group_labels(sources.oid.human_labels.get(split), bad, hierarchy.known_mids(), machine=False)
        machine = _group_labels(sources.oid.machine_labels.get(split), bad, mids, machine=True)
        out = []
        counts = collections.Counter()
        loaded = folder.iter_load(images[split], bad) if folder else itertools.repeat(b"")
        bar = tqdm(images[split], desc=f"join {split}", disable=not progress, unit="img")
        for image, image_bytes in zip(bar, loaded):
            tags = clean_tags(user_tags.get(image.flickr_id, ()), config.lowercase)
            source = sources_of.get(image.flickr_id, "none")
            verified = hierarchy.expand(human.get(image.image_id, ()))
            machine_scores = {m: s for m, s in machine.get(image.image_id, ()) if m in class_index}
            record = records.PhotoRecord(
                image_id=image.image_id,
                flickr_id=image.flickr_id,
                tags=tags,
                language=detect_language(tags),
                tag_source=source,
                **_targets(verified, machine_scores, class_index),
                **autotags.get(image.flickr_id, {}),
                image=image_bytes,
            )
            out.append(record)
            counts[f"tags_from_{source}"] += 1
            counts["with_tags"] += bool(tags)
            counts["with_image"] += bool(record.image)
            counts["without_image"] += not record.image
            counts["with_verified_labels"] += bool(verified)
            counts["tags_kept"] += len(tags)
            stats["languages"][record.language] += 1
        counts["images"] = len(out)
        if split != "train" and out and not counts["with_verified_labels"]:
            bad.warn(f"{split}: 0 images with verified labels ({sources.oid.human_labels.get(split)}): "
                     f"nothing to score on this split")
        stats["splits"][split] = dict(counts)
        split_records[split] = out

    vocab = build_normalized_vocabulary(((r.language, r.tags) for r in split_records["train"]), config.tag_limit,
                                        config.tag_threshold, config.lowercase, config.tag_normalization)
    for split, recs in split_records.items():
        count = records.shard_count(len(recs), config.records_per_shard, config.min_shards)
        writer.add_shards(records.write_shards(recs, out_dir, split, count))
    write_metadata(out_dir, classes, sources.oid.hierarchy, vocab)
    stats["vocabulary_size"] = vocab.size
    stats["bad_rows"] = bad.to_dict()
    stats["image_folder"] = folder.stats() if folder else None
    stats["languages"] = dict(stats["languages"].most_common())
    atomic_write_json(out_dir / STATS, stats)
    log.info("%s", bad.report())
    return stats


def write_metadata(out_dir: Path, classes: list, hierarchy_path: Path, vocab) -> None:
    """Writes classes.csv, hierarchy.json and vocab.tsv beside the shards."""
    atomic_write_text(out_dir / CLASSES, "".join(f"{mid},{_csv_field(name)}\n" for mid, name in classes))
    atomic_write_text(out_dir / HIERARCHY, Path(hierarchy_path).read_text(encoding="utf-8"))
    vocab.save(out_dir / VOCAB)


def _csv_field(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


def _read_images(paths: dict, bad: BadRows) -> dict:
    """`{split: [OidImage]}`, each ImageID once; a split without images is a warning."""
    images = {}
    for split in oid.SPLITS:
        images[split] = _dedupe_images(list(oid.read_images(paths[split], bad)), str(paths[split]), bad)
        if not images[split]:
            bad.warn(f"{split}: 0 images ({paths[split]})")
    return images


def _dedupe_images(rows: list, path: str, bad: BadRows) -> list:
    seen, out = set(), []
    for row in rows:
        if row.image_id in seen:
            bad.add("oid_duplicate_image", path, row.line_no, row.image_id)
            continue
        seen.add(row.image_id)
        out.append(row)
    return out


def _read_tags(sources: Sources, wanted: set, bad: BadRows, progress: bool) -> tuple[dict, dict]:
    size = os.path.getsize(sources.yfcc)
    tags, origin = {}, {}
    with tqdm(total=size, desc="scan YFCC100M", unit="B", unit_scale=True, disable=not progress) as bar:
        for photo in yfcc.scan_dataset(sources.yfcc, wanted, bad, progress=bar.update):
            tags[photo.photo_id] = photo.user_tags
            origin[photo.photo_id] = "yfcc"
    if sources.extra_tags:
        missing = {str(i).encode() for i in (int(w) for w in wanted) if i not in tags}
        for photo_id, extra in yfcc.read_extra_tags(sources.extra_tags, missing, bad):
            if photo_id not in tags:
                tags[photo_id] = extra
                origin[photo_id] = "extra"
    return tags, origin


def _read_autotags(path: Path, wanted: set, class_index: dict, bad: BadRows) -> dict:
    mapping = yfcc.load_autotag_mapping()
    out = {}
    for photo_id, concepts in yfcc.read_autotags(path, wanted, bad):
        best: dict = {}
        for concept, score in concepts.items():
            mid = mapping.get(concept)
            if mid in class_index and score > best.get(class_index[mid], 0.0):
                best[class_index[mid]] = score
        ids = sorted(best)
        out[photo_id] = {"autotag_ids": ids, "autotag_scores": [best[i] for i in ids]}
    return out


def _group_labels(path: Optional[Path], bad: BadRows, mids: list, machine: bool) -> dict:
    """`{image_id: [(mid, confidence)]}`, one label per (image, class) (`oid.load_labels`)."""
    grouped = collections.defaultdict(list)
    if path is not None:
        table = oid.load_labels(path, bad, mids, machine=machine)
        image_ids = table.image_ids()
        for image, label, value in zip(table.image.tolist(), table.label.tolist(), table.value.tolist()):
            grouped[image_ids[image]].append((mids[label], value if machine else int(value)))
    return grouped


def _targets(verified: dict, machine: dict, class_index: dict) -> dict:
    """Training targets: verified labels where present, machine confidence elsewhere."""
    targets = {class_index[m]: float(s) for m, s in machine.items()}
    targets.update({class_index[m]: float(v) for m, v in verified.items()})
    ids = sorted(i for i, t in targets.items() if t > 0)
    machine_ids = sorted(class_index[m] for m in machine)
    return {
        "label_ids": ids,
        "label_targets": [targets[i] for i in ids],
        "verified_pos": sorted(class_index[m] for m, v in verified.items() if v == 1),
        "verified_neg": sorted(class_index[m] for m, v in verified.items() if v == 0),
        "machine_ids": machine_ids,
        "machine_scores": [float(machine[m]) for m in sorted(machine, key=class_index.get)],
    }
