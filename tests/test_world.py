import base64
import collections
import hashlib
import json

import numpy as np
import pytest

from app.sources import oid
from app.sources import yfcc
from app.badrows import BadRows
from app.demo.world import WorldConfig, write_world


@pytest.fixture(scope="module")
def stats_world(tmp_path_factory):
    """A world large enough for stable statistics (small images keep it fast)."""
    root = tmp_path_factory.mktemp("stats_world")
    sources = write_world(root, WorldConfig(train_size=1400, validation_size=150, test_size=150, extra_yfcc=300,
                                            image_size=16, seed=11))
    truth = [json.loads(l) for l in (root / "truth.jsonl").read_text(encoding="utf-8").splitlines()]
    return sources, truth


def test_world_parses_with_the_real_readers_without_bad_rows(tiny_world):
    sources, _ = tiny_world
    bad = BadRows()
    for split in oid.SPLITS:
        images = list(oid.read_images(sources.oid.images[split], bad))
        assert images and all(im.subset == split for im in images)
        assert list(oid.read_labels(sources.oid.human_labels[split], bad))
        assert list(oid.read_labels(sources.oid.machine_labels[split], bad, machine=True))
    wanted = {str(i.flickr_id).encode() for s in oid.SPLITS for i in oid.read_images(sources.oid.images[s], bad)}
    assert yfcc.detect_layout(sources.yfcc) == 25
    assert list(yfcc.scan_dataset(sources.yfcc, wanted, bad))
    assert list(yfcc.read_autotags(sources.autotags, None, bad))
    assert list(yfcc.read_extra_tags(sources.extra_tags, None, bad))
    assert bad.total == 0, bad.report()


def test_md5s_match_the_jpegs(tiny_world):
    sources, _ = tiny_world
    images = list(oid.read_images(sources.oid.images["train"], BadRows()))
    for image in images:
        data = (sources.images / f"{image.image_id}.jpg").read_bytes()
        assert data[:3] == b"\xff\xd8\xff"
        assert base64.b64encode(hashlib.md5(data).digest()).decode() == image.md5


def test_machine_labels_are_at_least_half_and_sometimes_wrong(stats_world):
    sources, truth = stats_world
    classes = {t["image_id"]: set(t["classes"]) for t in truth}
    rows = list(oid.read_labels(sources.oid.machine_labels["train"], BadRows(), machine=True))
    assert min(c for _, _, c in rows) >= 0.5
    wrong = sum(m not in classes[i] for i, m, _ in rows) / len(rows)
    assert 0.02 < wrong < 0.3


def test_languages_tag_counts_and_untagged_share(stats_world):
    _, truth = stats_world
    langs = collections.Counter(t["language"] for t in truth)
    assert len(langs) >= 5
    assert 0.65 < langs["en"] / len(truth) < 0.85
    counts = np.array([len(t["tags"]) for t in truth])
    assert 0.25 <= (counts == 0).mean() <= 0.35
    assert np.median(counts[counts > 0]) < 10
    assert counts.max() > 100 and (counts > 100).mean() < 0.05


def test_tag_frequencies_are_zipfian(stats_world):
    _, truth = stats_world
    freq = np.array(sorted(collections.Counter(t for p in truth for t in p["tags"]).values(), reverse=True)[:200],
                    float)
    slope = np.polyfit(np.log(np.arange(1, len(freq) + 1)), np.log(freq), 1)[0]
    assert -1.8 < slope < -0.6


def test_images_and_tags_carry_different_information(stats_world):
    _, truth = stats_world
    objects = [o for t in truth if t["tags"] for o in t["objects"]]
    background = [o["tagged"] for o in objects if o["role"] == "background"]
    look_alike = [o["tagged"] for o in objects if o["look_alike"]]
    assert np.mean(background) < 0.2  # visible, rarely tagged: image-only information
    assert np.mean(look_alike) > 0.6  # shared look, usually tagged: tag-only information


def test_relevant_tags_come_first(stats_world):
    _, truth = stats_world
    from app.demo.lexicon import parse_lexicon

    names = {w for langs in parse_lexicon().values() for words in langs.values() for w in words}
    relevant, other = [], []
    for t in truth:
        for i, tag in enumerate(t["tags"]):
            (relevant if tag in names else other).append(i / max(len(t["tags"]) - 1, 1))
    assert np.mean(relevant) < np.mean(other) - 0.1


def test_same_seed_same_bytes(tmp_path):
    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    config = WorldConfig(train_size=30, validation_size=10, test_size=10, extra_yfcc=10, image_size=16, seed=5)
    write_world(tmp_path / "a", config)
    write_world(tmp_path / "b", config)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    write_world(tmp_path / "c", WorldConfig(**{**vars(config), "seed": 6}))
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_yfcc_only_photos_have_photos_download_urls_and_noisy_autotags(stats_world):
    from PIL import Image

    from app import resources
    from app.sources.hierarchy import Hierarchy

    sources, truth = stats_world
    extra = {t["flickr_id"]: t for t in truth if t["split"] == "yfcc"}
    assert len(extra) == 300
    lines = {}
    for line in sources.yfcc.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        lines[int(fields[1])] = fields
    for flickr_id, row in extra.items():
        assert row["image_id"] == f"yfcc-{flickr_id}"
        with Image.open(sources.images / f"yfcc-{flickr_id}.jpg") as image:
            image.load()
        assert lines[flickr_id][16].endswith(f"/{flickr_id}_{lines[flickr_id][21]}.jpg")  # download URL, secret
    mapping = dict(line.rsplit(",", 1) for line in resources.ALIGNED_AUTOTAGS.read_text().splitlines())
    mids = [m for m, _ in oid.read_classes(resources.CHALLENGE_CLASSES_CSV)]
    hierarchy = Hierarchy.from_json(resources.HIERARCHY_JSON, mids)
    tp = fp = fn = 0
    for photo, concepts in yfcc.read_autotags(sources.autotags, None, BadRows()):
        if photo not in extra:
            continue
        seen = {mapping[c] for c in concepts if mapping.get(c, "0") != "0" and mapping[c] in hierarchy.ancestors}
        seen |= {a for m in seen for a in hierarchy.ancestors[m]}
        true = set(extra[photo]["classes"])
        tp, fp, fn = tp + len(seen & true), fp + len(seen - true), fn + len(true - seen)
    assert 0.6 < tp / (tp + fp) < 0.95 and 0.3 < tp / (tp + fn) < 0.8  # useful, but noisy and partial
