"""A prepared dataset's stats (`stats.json`, written by `app.records.builder`)
as a short report."""

from __future__ import annotations

from pathlib import Path


def summary(stats: dict, out: Path, seconds: float) -> str:
    """Formats the end-of-run summary."""
    lines = [f"prepared {out} in {seconds:.1f}s (fingerprint {stats['fingerprint'][:12]})"]
    for split, c in stats["splits"].items():
        if "collection" in stats:  # app/sources/: no YFCC100M join
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
