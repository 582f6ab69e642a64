"""Writing demo photos in the real source formats: Open Images CSV rows, YFCC100M lines, autotags."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote

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


def yfcc_line(line_no: int, photo, rng) -> str:
    farm, server = int(rng.integers(1, 10)), int(rng.integers(1000, 9999))
    secret, original = (f"{int(rng.integers(16**9, 16**10)):010x}" for _ in range(2))
    url = f"http://farm{farm}.staticflickr.com/{server}/{photo.flickr_id}_{secret}.jpg"
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


def autotags_line(objects: list, mids: dict, concepts: dict, rng) -> str:
    out = []
    for name, role in objects:
        options = concepts.get(mids[name])
        if options and rng.random() < (0.7 if role == "main" else 0.3):
            out.append(f"{quote(str(rng.choice(options)), safe='').replace('%20', '+')}:{rng.uniform(0.5, 1.0):.3f}")
    return ",".join(out)
