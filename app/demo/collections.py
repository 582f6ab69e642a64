"""The demo world in the other layouts: a manifest with captions, and NUS-WIDE's real layout.

The world is generated as usual (`app.demo.world.write_world`: the same scenes, photos and tags
for a seed), then rewritten from its `truth.jsonl` and `images/`:

* `manifest`: `photos.csv` (id, image, tags, text, labels, split), `classes.csv` (the classes
  that occur, by name) and the JPEGs; labels are each photo's true classes (exhaustive); the
  world's YFCC100M-only photos (as many as the train photos) come with split `unlabelled` and no
  labels, for `pseudo_label.py`;
* `nuswide`: ImageList/, NUS_WID_Tags/All_Tags.txt, ConceptsList/Concepts81.txt,
  Groundtruth/AllLabels/ and Flickr/<concept>/<n>_<flickr id>.jpg, with one photo in twenty left
  out of Flickr/ (dead links, as in the real set); train and validation photos form the train list.

Captions are made from each scene's objects with the tag lexicon, in the photo's language (en,
de, fr, es, it); one photo in thirty gets an empty caption.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from app import resources
from app.sources import oid
from app.text.tags import TagDecodeError, decode_field
from app.text.normalize import split_tag_list
from app.demo.lexicon import parse_lexicon

CAPTION = {"en": ("A photo of {}.", " and "), "de": ("Ein Foto mit {}.", " und "),
           "fr": ("Une photo avec {}.", " et "), "es": ("Una foto con {}.", " y "), "it": ("Una foto con {}.", " e ")}


def caption(objects: list, language: str, lexicon: dict, number: int) -> str:
    """A caption naming a scene's main objects (then one background object) in `language`."""
    if number % 30 == 29:
        return ""
    template, conjunction = CAPTION.get(language, CAPTION["en"])
    names = [o["name"] for o in objects if o["role"] == "main"] + [o["name"] for o in objects
                                                                   if o["role"] == "background"][:1]
    words = [lexicon[n][language if language in CAPTION else "en"][0].replace("+", " ") for n in names]
    listed = ", ".join(words[:-1]) + conjunction + words[-1] if len(words) > 1 else words[0]
    return template.format(listed)


def _tags(raw: list) -> list:
    out = []
    for tag in raw:
        try:
            out.append(decode_field(tag))
        except TagDecodeError:
            out.append(tag)
    return out


def _truth(raw: Path, unlabelled: bool = False):
    """`(number, row)` of the world's labelled photos (and its YFCC100M-only ones if `unlabelled`)."""
    with open(raw / "truth.jsonl", encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            row = json.loads(line)
            if row["split"] != "yfcc" or unlabelled:
                yield number, row


def _class_names(raw: Path) -> dict:
    """`{mid: name}` of the classes that occur in the world (true classes, ancestors included)."""
    names = dict(oid.read_classes(resources.CHALLENGE_CLASSES_CSV))
    used = {mid for _, row in _truth(raw) for mid in row["classes"]}
    return {mid: names[mid] for mid in sorted(used, key=names.get)}


def write_manifest(raw: Path, out: Path) -> tuple[Path, Path]:
    """Writes `photos.csv` and `classes.csv` into `out` (images stay in `raw/images`)."""
    out.mkdir(parents=True, exist_ok=True)
    names, lexicon = _class_names(raw), parse_lexicon()
    (out / "classes.csv").write_text("".join(f"{n}\n" for n in names.values()), encoding="utf-8")
    with open(out / "photos.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "image", "tags", "text", "labels", "split"])
        for number, row in _truth(raw, unlabelled=True):
            known = row["split"] != "yfcc"
            tags = (" ".join(split_tag_list(tag)) for tag in _tags(row["tags"]))  # "rock, paper": one tag
            writer.writerow([row["image_id"], f"{row['image_id']}.jpg", "|".join(tags),
                             caption(row["objects"], row["language"], lexicon, number),
                             "|".join(names[m] for m in row["classes"]) if known else "",
                             row["split"] if known else "unlabelled"])
    return out / "photos.csv", out / "classes.csv"


def concept(name: str) -> str:
    """A NUS-WIDE style concept name: lower case, `_` for a space."""
    return name.lower().replace(" ", "_")


def write_nuswide(raw: Path, out: Path) -> None:
    """Writes the world's photos in NUS-WIDE's layout into `out`."""
    names = _class_names(raw)
    concepts = [concept(n) for n in names.values()]
    index = {mid: i for i, mid in enumerate(names)}
    for folder in ("ImageList", "NUS_WID_Tags", "ConceptsList", "Groundtruth/AllLabels", "Flickr"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / "ConceptsList" / "Concepts81.txt").write_text("".join(f"{c}\n" for c in concepts), encoding="utf-8")
    files = {key: open(out / path, "w", encoding="utf-8", newline="") for key, path in (
        ("all", "ImageList/Imagelist.txt"), ("train", "ImageList/TrainImagelist.txt"),
        ("test", "ImageList/TestImagelist.txt"), ("tags", "NUS_WID_Tags/All_Tags.txt"))}
    labels = [open(out / "Groundtruth/AllLabels" / f"Labels_{c}.txt", "w", encoding="utf-8", newline="")
              for c in concepts]
    try:
        for count, (number, row) in enumerate(_truth(raw), start=1):
            folder = concept(row["objects"][0]["name"])
            name = f"{count:04d}_{row['flickr_id']}.jpg"
            files["all"].write(f"C:\\ImageData\\Flickr\\{folder}\\{name}\r\n")
            files["test" if row["split"] == "test" else "train"].write(f"{folder}\\{name}\r\n")
            files["tags"].write(f"{row['flickr_id']}      " + " ".join(t.replace(" ", "") for t in _tags(row["tags"]))
                                + "\r\n")
            positive = {index[m] for m in row["classes"]}
            for i, handle in enumerate(labels):
                handle.write("1\r\n" if i in positive else "0\r\n")
            if number % 20 != 7:  # one photo in twenty: a dead link
                (out / "Flickr" / folder).mkdir(exist_ok=True)
                shutil.copyfile(raw / "images" / f"{row['image_id']}.jpg", out / "Flickr" / folder / name)
    finally:
        for handle in [*files.values(), *labels]:
            handle.close()


def write_demo_collection(args: argparse.Namespace, scratch: Path) -> argparse.Namespace:
    """Generates the demo world under `scratch` in `args.demo_format`; returns the flags that read it."""
    from app.demo.world import WorldConfig, write_world

    held_out = max(50, args.demo_size // 4)
    extra = args.demo_size if args.demo_format == "manifest" else 0
    write_world(scratch / "world", WorldConfig(train_size=args.demo_size, validation_size=held_out,
                                               test_size=held_out, extra_yfcc=extra, seed=args.seed))
    args = argparse.Namespace(**vars(args))
    if args.demo_format == "manifest":
        args.manifest, args.classes = write_manifest(scratch / "world", scratch / "manifest")
        args.images = scratch / "world" / "images"
    else:
        write_nuswide(scratch / "world", scratch / "nuswide")
        args.nuswide = scratch / "nuswide"
    args.demo = False
    return args

