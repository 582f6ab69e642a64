"""Writing demo photos in the real source formats: Open Images CSV rows, YFCC100M lines, autotags.

`WorldFiles` holds every output file of a world open and writes one photo's rows at a time, so a
world of any size streams to disk.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
from pathlib import Path
from urllib.parse import quote

from app import resources

IMAGE_HEADER = ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL", "Author",
                "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation"]
LABEL_HEADER = ["ImageID", "Source", "LabelName", "Confidence"]
IMAGE_FILES = {"train": "train-images-with-labels-with-rotation.csv", "validation": "validation-images-with-rotation.csv",
               "test": "test-images-with-rotation.csv"}


def encode_tags(tags: list) -> str:
    """Tags in YFCC100M form: each URL-encoded with `+` for a space, joined by commas."""
    return ",".join(quote(t, safe="+%") for t in tags)


def image_row(photo, jpeg: bytes, i: int, rng) -> list:
    farm, server = int(rng.integers(1, 10)), int(rng.integers(1000, 9999))
    secret = f"{int(rng.integers(16**9, 16**10)):010x}"
    form = i % 4
    if form == 0:
        url = f"https://farm{farm}.staticflickr.com/{server}/{photo.flickr_id}_{secret}_o.jpg"
    elif form == 1:
        url = f"https://c{farm % 8 + 1}.staticflickr.com/{farm}/{server}/{photo.flickr_id}_{secret}_o.jpg"
    elif form == 2:
        url = f"https://live.staticflickr.com/{server}/{photo.flickr_id}_{secret}_o.jpg"
    else:
        url = f"https://farm{farm}.staticflickr.com//{server}/{photo.flickr_id}_{secret}_o.jpg"
    user = f"user{photo.flickr_id % 997}"
    md5 = base64.b64encode(hashlib.md5(jpeg).digest()).decode()
    title = " ".join(photo.tags[:3]) or "untitled, photo"
    return [photo.image_id, photo.split, url, f"https://www.flickr.com/photos/{user}/{photo.flickr_id}",
            "https://creativecommons.org/licenses/by/2.0/", f"https://www.flickr.com/people/{user}/", user,
            title, len(jpeg), md5, f"https://c{farm}.staticflickr.com/{farm}/{server}/{photo.flickr_id}_{secret}_z.jpg",
            "0.0"]


def yfcc_download_url(flickr_id: int, farm: int, server: int, secret: str) -> str:
    """A YFCC100M download URL (field 16): the photo's static Flickr URL."""
    return f"http://farm{farm}.staticflickr.com/{server}/{flickr_id}_{secret}.jpg"


def yfcc_line(line_no: int, photo, rng) -> str:
    farm, server = int(rng.integers(1, 10)), int(rng.integers(1000, 9999))
    secret, original = (f"{int(rng.integers(16**9, 16**10)):010x}" for _ in range(2))
    url = yfcc_download_url(photo.flickr_id, farm, server, secret)
    digest = "".join(f"{b:x}" for b in hashlib.md5(url.encode()).digest())
    user = f"{int(rng.integers(10**7, 10**8))}@N0{int(rng.integers(0, 8))}"
    taken = f"20{int(rng.integers(4, 14)):02d}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d} 12:00:00.0"
    device = str(rng.choice(["Canon+EOS+400D", "NIKON+D90", "Apple+iPhone+4", "SONY+DSC-W55", ""]))
    title = quote(" ".join(t.replace("+", " ") for t in photo.tags[:2]) or "IMG", safe="").replace("%20", "+")
    description = quote("A photo, taken on my trip" if rng.random() < 0.3 else "", safe="").replace("%20", "+")
    lon, lat = (f"{rng.uniform(-180, 180):.6f}", f"{rng.uniform(-80, 80):.6f}") if rng.random() < 0.4 else ("", "")
    fields = [str(line_no), str(photo.flickr_id), digest, user, f"user{photo.flickr_id % 997}", taken,
              str(int(rng.integers(1.1e9, 1.4e9))), device, title, description, encode_tags(photo.tags), "",
              lon, lat, "16" if lon else "", f"http://www.flickr.com/photos/{user}/{photo.flickr_id}/", url,
              "Attribution License", "http://creativecommons.org/licenses/by/2.0/", str(server), str(farm),
              secret, original, "jpg", "0"]
    return "\t".join(fields)


def yfcc_only_id(flickr_id: int) -> str:
    """The key of a YFCC100M photo outside Open Images (its images file is `yfcc-ID.jpg`)."""
    return f"yfcc-{flickr_id}"


class WorldFiles:
    """A world's files, open for streaming: `oid/` CSVs per split, `yfcc100m_dataset`,
    `yfcc100m_autotags`, `extra_tags.tsv`, `images/` and `truth.jsonl`.

    Args:
        out: the world folder (re)created empty.
        splits: the Open Images splits.
    """

    def __init__(self, out: Path, splits: tuple):
        self.out = Path(out)
        if self.out.exists():
            shutil.rmtree(self.out)
        (self.out / "oid").mkdir(parents=True)
        (self.out / "images").mkdir()
        for source, name in ((resources.CHALLENGE_CLASSES_CSV, "challenge-2019-classes-description-500.csv"),
                             (resources.BOXABLE_CLASSES_CSV, "class-descriptions-boxable.csv"),
                             (resources.HIERARCHY_JSON, "bbox_labels_600_hierarchy.json")):
            shutil.copy(source, self.out / "oid" / name)
        self.handles, self.csv = [], {}
        for split in splits:
            names = (IMAGE_FILES[split], f"{split}-annotations-human-imagelabels-boxable.csv",
                     f"{split}-annotations-machine-imagelabels.csv")
            writers = [csv.writer(self._open(f"oid/{n}"), lineterminator="\n") for n in names]
            for writer, header in zip(writers, (IMAGE_HEADER, LABEL_HEADER, LABEL_HEADER)):
                writer.writerow(header)
            self.csv[split] = writers
        self.yfcc, self.autotags = self._open("yfcc100m_dataset"), self._open("yfcc100m_autotags")
        self.extra, self.truth = self._open("extra_tags.tsv"), self._open("truth.jsonl")
        self.yfcc_lines = 0

    def _open(self, name: str):
        self.handles.append(open(self.out / name, "w", encoding="utf-8", newline=""))
        return self.handles[-1]

    def __enter__(self) -> "WorldFiles":
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.close()

    def image(self, key: str, jpeg: bytes) -> None:
        (self.out / "images" / f"{key}.jpg").write_bytes(jpeg)

    def oid_rows(self, split: str, image: list, human: list, machine: list) -> None:
        meta, human_csv, machine_csv = self.csv[split]
        meta.writerow(image)
        human_csv.writerows(human)
        machine_csv.writerows(machine)

    def yfcc_rows(self, line: str, flickr_id: int, autotags: str) -> None:
        self.yfcc.write(line + "\n")
        self.autotags.write(f"{flickr_id}\t{autotags}\n")
        self.yfcc_lines += 1

    def extra_tags(self, flickr_id: int, tags: list) -> None:
        self.extra.write(f"{flickr_id}\t{encode_tags(tags)}\n")

    def truth_row(self, row: dict) -> None:
        self.truth.write(json.dumps(row, ensure_ascii=False) + "\n")


def autotags_line(concepts: list) -> str:
    """`concept:score,...` with each concept URL-encoded as in the autotags pack."""
    return ",".join(f"{quote(c, safe='').replace('%20', '+')}:{score:.3f}" for c, score in concepts)
