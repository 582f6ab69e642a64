"""The embedded demo world: a realistic Open Images + YFCC100M dataset generated offline.

Everything is written in the real source formats (Open Images V5 CSVs and hierarchy, the
25-field `yfcc100m_dataset`, the autotags pack, an extra-tags TSV and JPEGs) and then goes
through the normal readers (`app.sources.oid_yfcc`). What makes it hard in the ways Flickr is hard:

* scenes follow themes, so classes co-occur (dogs with balls, cars with traffic lights);
* the image and the tags complement each other: background objects (trees, windows, street
  lights) are visible but rarely tagged, while persons (man/woman/boy/girl) and drinks
  (wine/beer/coffee) share one look per group, so only the tags tell them apart;
* tags are multilingual (about 75% English), with synonyms, inflections, homographs,
  misspellings, multi-word and split multi-word tags, Zipfian noise tags (years, cameras,
  places, user names), heavy-tailed counts, relevant tags early, and about 30% untagged photos;
* human-verified labels are sparse, machine labels are >= 0.5 and sometimes wrong;
* YFCC100M photos outside Open Images (three times the train split by default) have photos, user
  tags and autotags from a noisy, partial autotagger, but no labels: material for weak
  pre-training and for a teacher's pseudo-labels.

`truth.jsonl` records each photo's true classes and which were visible and tagged. Photos are made
and written one at a time, so a world of any size streams to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app import resources
from app.sources import oid
from app.sources.hierarchy import Hierarchy
from app.sources.oid_yfcc import OidYfccFiles
from app.sources.yfcc import load_autotag_mapping
from app.demo.formats import WorldFiles, autotags_line, image_row, yfcc_line, yfcc_only_id
from app.demo.lexicon import parse_lexicon
from app.demo.render import COLORS, SHAPES, TEXTURES, render

# (theme, weight, main classes with weights, background classes, chance of a person)
THEMES = [
    ("pets", 10, "Dog:6 Cat:5 Bird:1 Parrot:0.5 Fish:0.5 Teddy bear:0.3 Football:0.6", "Chair/Door/Window/Table", 0.35),
    ("street", 8, "Car:5 Bus:2 Truck:1.5 Bicycle:3 Motorcycle:1.5", "Traffic light/Street light/House/Tree/Window", 0.4),
    ("city", 8, "House:3 Skyscraper:3 Tower:2 Castle:1.5 Fountain:1 Lighthouse:0.8 Flag:1", "Tree/Street light/Window/Door/Car", 0.3),
    ("nature", 9, "Tree:4 Flower:4 Rose:2 Sunflower:1.5 Butterfly:1.5 Bee:1 Mushroom:1 Bird:2", "Bench/Tree", 0.2),
    ("food", 7, "Pizza:3 Cake:3 Hamburger:2 Ice cream:1.5 Bread:2 Wine:2 Beer:2 Coffee:3", "Table/Chair/Candle", 0.3),
    ("fruit", 4, "Apple:3 Banana:2 Orange:2 Lemon:1.5 Strawberry:2 Tomato:1.5 Pumpkin:1", "Table", 0.1),
    ("zoo", 5, "Elephant:3 Giraffe:2 Zebra:2 Lion:2 Tiger:1.5 Monkey:2 Penguin:1.5 Bear:1", "Tree", 0.2),
    ("farm", 4, "Horse:4 Sheep:3 Pig:2 Chicken:2 Duck:2", "Tree/House", 0.3),
    ("water", 5, "Boat:5 Swan:2 Duck:2 Lighthouse:1 Surfboard:1.5 Umbrella:1 Sunglasses:1", "Flag", 0.4),
    ("travel", 4, "Airplane:3 Train:3 Backpack:2 Tent:1.5 Camera:1.5 Sunglasses:1 Hat:1", "Window/Bench", 0.5),
    ("music", 3, "Guitar:5 Drum:3", "Chair/Window", 0.9),
    ("home", 4, "Book:3 Laptop:3 Mobile phone:3 Clock:2 Candle:1 Coffee:1.5", "Table/Chair/Window/Door", 0.4),
    ("holiday", 3, "Christmas tree:3 Candle:2 Balloon:2 Cake:1 Snowman:1.5 Teddy bear:1", "Window/Door", 0.4),
    ("sport", 3, "Football:3 Skateboard:2 Surfboard:2 Kite:1.5 Bicycle:1", "Tree/Flag", 0.8),
    ("people", 8, "Hat:2 Sunglasses:1.5 Umbrella:1 Backpack:1 Mobile phone:1", "Street light/Window", 1.0),
]
PERSONS = "Man:4 Woman:4 Girl:2 Boy:2"
# Classes in one group look the same: only tags can tell them apart.
LOOK_ALIKE = [("Man", "Woman", "Boy", "Girl"), ("Wine", "Beer", "Coffee"), ("Flower", "Rose")]
BACKGROUND_TAG_RATE = 0.08
NOISE_TAGS = ("canon nikon sony iphone dslr 50mm eos d90 travel summer vacation holiday family friends nature "
              "art light sky night bw blackandwhite instagram square iphoneography street city beach park "
              "london paris berlin rome madrid california new+york san+francisco los+angeles zürich köln "
              "são+paulo méxico chat pain gift hdr macro bokeh sunset trip fun party wedding geotagged").split()
SPLIT_TAGS = {"new+york": ("new", "york"), "san+francisco": ("san", "francisco"), "los+angeles": ("los", "angeles")}


@dataclass
class WorldConfig:
    """Size, seed and noise levels of the demo world.

    Args:
        train_size / validation_size / test_size: Open Images photos per split.
        extra_yfcc: YFCC100M photos that are not in Open Images (they have photos, user tags and
            autotags, but no Open Images labels).
        image_size: JPEG side in pixels.
        seed: the same seed gives byte-identical files.
        language_mix: share of photos per tag language.
        untagged_share: photos whose tag field is empty.
        misspell_rate: chance that a class name is misspelt.
        noise_scale: scale of the heavy-tailed number of noise tags.
        machine_error_rate: chance of a wrong machine label per photo.
        missing_from_yfcc: OID photos absent from YFCC100M whose tags come from the extra-tags TSV.
        unmatched_share: OID photos neither in YFCC100M nor in the extra-tags TSV.
        autotag_miss_rate: chance that the autotagger misses a main object (background: 1.5x).
        autotag_false_rate: mean number of wrong autotags per photo (scene words and wrong classes).
    """

    train_size: int = 4000
    validation_size: int = 1000
    test_size: int = 1000
    extra_yfcc: int = 12000
    image_size: int = 64
    seed: int = 0
    language_mix: dict = field(default_factory=lambda: {"en": 0.75, "de": 0.08, "fr": 0.07, "es": 0.06, "it": 0.04})
    untagged_share: float = 0.24
    misspell_rate: float = 0.05
    noise_scale: float = 2.5
    machine_error_rate: float = 0.3
    missing_from_yfcc: float = 0.03
    unmatched_share: float = 0.01
    autotag_miss_rate: float = 0.35
    autotag_false_rate: float = 1.2

    @classmethod
    def sized(cls, train_size: int, seed: int = 0) -> "WorldConfig":
        """A world of `train_size` train photos: validation and test get a quarter each (at least
        50), YFCC100M-only photos three times as many."""
        held_out = max(50, train_size // 4)
        return cls(train_size=train_size, validation_size=held_out, test_size=held_out, extra_yfcc=3 * train_size,
                   seed=seed)

    @property
    def sizes(self) -> dict:
        """Photos per kind: the Open Images splits and `yfcc` (YFCC100M only)."""
        return {"train": self.train_size, "validation": self.validation_size, "test": self.test_size,
                "yfcc": self.extra_yfcc}


@dataclass
class Photo:
    split: str  # train, validation, test, or yfcc (YFCC100M only)
    objects: list  # (class name, role) with role "main" | "background"
    language: str = "un"
    tags: list = field(default_factory=list)
    tagged: list = field(default_factory=list)
    image_id: str = ""
    flickr_id: int = 0


class _World:
    def __init__(self, config: WorldConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.lexicon = parse_lexicon()
        classes = oid.read_classes(resources.CHALLENGE_CLASSES_CSV)
        self.mid = {name: mid for mid, name in classes}
        self.hierarchy = Hierarchy.from_json(resources.HIERARCHY_JSON, [m for m, _ in classes])
        self.themes = [(name, w, _weights(main), bg.split("/"), p) for name, w, main, bg, p in THEMES]
        self.persons = _weights(PERSONS)
        populated = sorted({c for _, _, m, bg, _ in self.themes for c in [*m[0], *bg]} | set(self.persons[0]))
        missing = [c for c in populated if c not in self.mid or c not in self.lexicon]
        if missing:
            raise ValueError(f"demo classes missing from the class list or lexicon: {missing}")
        self.populated = populated
        self.looks = self._assign_looks(populated)
        self.noise_vocab = self._noise_vocabulary()
        self.concepts, self.scene_concepts = _autotag_concepts()
        # ImageIDs: a bijection of the photo's number (unique without remembering any); Flickr ids grow.
        self._id_mul, self._id_add = int(self.rng.integers(1, 2**61)) * 2 + 1, int(self.rng.integers(0, 2**62))
        self._flickr_id = 10**9

    def _assign_looks(self, names: list) -> dict:
        combos = [(s, c, t) for s in range(len(SHAPES)) for c in range(len(COLORS)) for t in range(len(TEXTURES))]
        order = self.rng.permutation(len(combos))
        looks, i = {}, 0
        for name in names:
            group = next((g for g in LOOK_ALIKE if name in g), (name,))
            if group[0] in looks:
                looks[name] = looks[group[0]]
                continue
            looks[name] = combos[order[i]]
            i += 1
        return looks

    def _noise_vocabulary(self) -> list:
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        made = ["".join(self.rng.choice(letters, self.rng.integers(4, 10))) for _ in range(3000)]
        users = [f"{w}{self.rng.integers(1, 99)}" for w in made[:300]]
        years = [str(y) for y in range(2004, 2015)]
        vocab = list(NOISE_TAGS) + years + ["rock%2C+paper"] + made[300:] + users
        return vocab

    # === Scenes ===
    def scene(self, split: str) -> Photo:
        rng = self.rng
        weights = np.array([t[1] for t in self.themes], float)
        _, _, (names, probs), background, person_rate = self.themes[rng.choice(len(self.themes), p=weights / weights.sum())]
        count = min(len(names), 1 + rng.binomial(2, 0.3))
        main = list(rng.choice(names, size=count, replace=False, p=probs))
        if rng.random() < person_rate:
            main.insert(int(rng.integers(0, len(main) + 1)), str(rng.choice(self.persons[0], p=self.persons[1])))
        if rng.random() < 0.1:  # an object from another theme
            other = self.themes[rng.integers(len(self.themes))][2][0]
            main.append(str(rng.choice(other)))
        objects = [(str(n), "main") for n in dict.fromkeys(main)]
        for name in background:
            if rng.random() < 0.35 and name not in main:
                objects.append((name, "background"))
        return Photo(split, objects)

    def truth_classes(self, photo: Photo) -> list:
        mids = set()
        for name, _ in photo.objects:
            mids.add(self.mid[name])
            mids |= self.hierarchy.ancestors[self.mid[name]]
        return sorted(mids)

    # === Tags ===
    def make_tags(self, photo: Photo) -> None:
        rng, cfg = self.rng, self.config
        langs = list(cfg.language_mix)
        mix = np.array([cfg.language_mix[l] for l in langs], float)
        photo.language = str(rng.choice(langs, p=mix / mix.sum()))
        if rng.random() < cfg.untagged_share:
            return
        relevant = []
        for name, role in photo.objects:
            rate = BACKGROUND_TAG_RATE if role == "background" else 0.9
            if rng.random() >= rate:
                continue
            photo.tagged.append(name)
            lang = "en" if rng.random() < 0.12 else photo.language
            words = self.lexicon[name][lang]
            word = words[min(int(rng.zipf(2.0)) - 1, len(words) - 1)]
            if rng.random() < cfg.misspell_rate:
                word = _misspell(word, rng)
            if "+" in word and rng.random() < 0.3:
                relevant.extend(word.split("+"))
            else:
                relevant.append(word)
            if rng.random() < 0.25 and len(words) > 1:  # a synonym or inflection too
                relevant.append(words[int(rng.integers(len(words)))])
        noise = []
        for _ in range(min(int(rng.pareto(1.2) * cfg.noise_scale), 400)):
            word = self.noise_vocab[min(int(rng.zipf(1.3)) - 1, len(self.noise_vocab) - 1)]
            noise.extend(SPLIT_TAGS[word] if word in SPLIT_TAGS and rng.random() < 0.3 else [word])
        keys = [j + rng.exponential(0.8) for j in range(len(relevant))]
        keys += list(rng.uniform(0.5, 1.5 + len(noise), size=len(noise)))
        merged = [w for _, w in sorted(zip(keys, relevant + noise), key=lambda kw: kw[0])]
        photo.tags = list(dict.fromkeys(merged))

    # === Labels ===
    def machine_labels(self, photo: Photo) -> list:
        rng, out = self.rng, {}
        for name, role in photo.objects:
            group = next((g for g in LOOK_ALIKE if name in g), (name,))
            seen_as = name if rng.random() < 0.6 else str(rng.choice(group))  # look-alikes get confused
            if rng.random() < (0.85 if role == "main" else 0.4):
                confidence = round(float(rng.uniform(0.6 if role == "main" else 0.5, 1.0)), 1)
                out[self.mid[seen_as]] = confidence
                for parent in sorted(self.hierarchy.ancestors[self.mid[seen_as]]):  # as Open Images does
                    if rng.random() < 0.8:
                        out[parent] = max(out.get(parent, 0.0), confidence)
        if rng.random() < self.config.machine_error_rate:
            wrong = self.populated[int(rng.integers(len(self.populated)))]
            out.setdefault(self.mid[wrong], round(float(rng.uniform(0.5, 0.75)), 1))
        return sorted(out.items())

    def human_labels(self, photo: Photo, truth: list, machine: list) -> list:
        rng = self.rng
        truth_set = set(truth)
        leaves = [self.mid[n] for n, _ in photo.objects]
        positives = list(dict.fromkeys(str(m) for m in rng.permutation(leaves)[: 1 + rng.binomial(2, 0.5)]))
        if rng.random() < 0.3:
            positives.append(str(rng.choice(truth)))
        negatives = [m for m, _ in machine if m not in truth_set]
        for _ in range(rng.integers(1, 4)):
            candidate = self.mid[self.populated[int(rng.integers(len(self.populated)))]]
            if candidate not in truth_set:
                negatives.append(candidate)
        labels = [(m, 1) for m in dict.fromkeys(positives)] + [(m, 0) for m in dict.fromkeys(negatives)]
        return [labels[i] for i in rng.permutation(len(labels))]



def _weights(text: str) -> tuple:
    names, weights = [], []
    for token in _split_weighted(text):
        name, weight = token.rsplit(":", 1)
        names.append(name)
        weights.append(float(weight))
    w = np.array(weights)
    return names, w / w.sum()


def _split_weighted(text: str) -> list:
    """Splits `Teddy bear:0.3 Dog:6` into `['Teddy bear:0.3', 'Dog:6']` (names may hold spaces)."""
    out, current = [], []
    for word in text.split():
        current.append(word)
        if ":" in word:
            out.append(" ".join(current))
            current = []
    return out


def _misspell(word: str, rng) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    if rng.random() < 0.5:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _autotag_concepts() -> tuple[dict, list]:
    """The real autotag concepts: `{class MID: [concepts]}` and the concepts of no Open Images class."""
    mapping = load_autotag_mapping()
    by_mid: dict = {}
    for concept, mid in sorted(mapping.items()):
        by_mid.setdefault(mid, []).append(concept)
    unmapped = []
    with open(resources.ALIGNED_AUTOTAGS, encoding="utf-8") as handle:
        for line in handle:
            concept, _, mid = line.rstrip("\n").rpartition(",")
            if mid == "0":
                unmapped.append(concept)
    return by_mid, sorted(unmapped)


class _Stream(_World):
    """The world as a stream of photos, each written as soon as it is made."""

    def kinds(self):
        """Photo kinds in a random interleaving with exact counts (a random merge of the splits)."""
        left = dict(self.config.sizes)
        while any(left.values()):
            kinds = [k for k, n in left.items() if n]
            counts = np.array([left[k] for k in kinds], float)
            kind = kinds[int(self.rng.choice(len(kinds), p=counts / counts.sum()))]
            left[kind] -= 1
            yield kind

    def new_photo(self, kind: str, number: int) -> Photo:
        photo = self.scene(kind)
        self._flickr_id += int(self.rng.integers(1, 20000))
        photo.flickr_id = self._flickr_id
        photo.image_id = f"{(number * self._id_mul + self._id_add) % 2**62:016x}" if kind != "yfcc" else ""
        self.make_tags(photo)
        return photo

    def emit(self, photo: Photo, files: WorldFiles, number: int) -> None:
        """Writes one photo's image, rows and truth."""
        rng, cfg = self.rng, self.config
        jpeg = render(photo.objects, self.looks, rng, cfg.image_size)
        truth = self.truth_classes(photo)
        if photo.split == "yfcc":
            files.image(yfcc_only_id(photo.flickr_id), jpeg)
            in_yfcc, in_extra = True, False
        else:
            files.image(photo.image_id, jpeg)
            where = rng.random()
            in_yfcc, in_extra = where >= cfg.missing_from_yfcc + cfg.unmatched_share, where < cfg.missing_from_yfcc
            machine = self.machine_labels(photo)
            human = [[photo.image_id, "verification" if number % 3 else "crowdsource-verification", m, c]
                     for m, c in self.human_labels(photo, truth, machine)]
            files.oid_rows(photo.split, image_row(photo, jpeg, number, rng), human,
                           [[photo.image_id, "machine", m, c] for m, c in machine])
            if in_extra:
                files.extra_tags(photo.flickr_id, photo.tags)
        if in_yfcc:
            files.yfcc_rows(yfcc_line(files.yfcc_lines, photo, rng), photo.flickr_id, autotags_line(self.autotags(photo)))
        files.truth_row(_truth(self, photo, truth, in_yfcc or in_extra))

    def autotags(self, photo: Photo) -> list:
        """A noisy, partial autotagger: misses objects, confuses look-alikes, names the scene, and
        sometimes sees a class that is not there. Returns `[(concept, score)]`."""
        rng, cfg = self.rng, self.config
        out: dict = {}
        for name, role in photo.objects:
            miss = cfg.autotag_miss_rate * (1.5 if role == "background" else 1.0)
            group = next((g for g in LOOK_ALIKE if name in g), (name,))
            seen_as = name if rng.random() < 0.7 else str(rng.choice(group))
            options = self.concepts.get(self.mid[seen_as]) or [c for a in sorted(self.hierarchy.ancestors[self.mid[seen_as]])
                                                               for c in self.concepts.get(a, [])]
            if options and rng.random() >= miss:
                out.setdefault(str(rng.choice(options)), round(float(rng.uniform(0.6, 1.0)), 3))
        for _ in range(int(rng.poisson(cfg.autotag_false_rate))):
            if rng.random() < 0.7:  # scene and style words: no Open Images class
                concept = str(rng.choice(self.scene_concepts))
            else:  # a class that is not in the photo
                options = self.concepts.get(self.mid[self.populated[int(rng.integers(len(self.populated)))]])
                concept = str(rng.choice(options)) if options else str(rng.choice(self.scene_concepts))
            out.setdefault(concept, round(float(rng.uniform(0.5, 0.8)), 3))
        return sorted(out.items(), key=lambda kv: -kv[1])


def write_world(out_dir: str | Path, config: WorldConfig = WorldConfig()) -> OidYfccFiles:
    """Generates the demo world into `out_dir` in the real source formats, streaming: memory stays
    flat in the number of photos.

    Writes `oid/` (Open Images CSVs, class list, hierarchy), `yfcc100m_dataset`, `yfcc100m_autotags`,
    `extra_tags.tsv`, `images/` (`ImageID.jpg` for Open Images photos, `yfcc-ID.jpg` for the YFCC100M
    photos outside it, whose download URL is in their YFCC100M line) and `truth.jsonl`.

    Args:
        out_dir: folder to (re)create.
        config: sizes, seed and noise levels.

    Returns:
        The files to pass to `app.records.builder.prepare_dataset`.
    """
    world = _Stream(config)
    with WorldFiles(Path(out_dir), oid.SPLITS) as files:
        for number, kind in enumerate(world.kinds()):
            world.emit(world.new_photo(kind, number), files, number)
    out = Path(out_dir)
    return OidYfccFiles(oid=oid.OidPaths.find(out / "oid"), yfcc=out / "yfcc100m_dataset",
                   autotags=out / "yfcc100m_autotags", extra_tags=out / "extra_tags.tsv", images=out / "images")


def _truth(world: _World, photo: Photo, truth: list, has_tags_source: bool) -> dict:
    tagged = set(photo.tagged) if has_tags_source else set()
    return {
        "image_id": photo.image_id or yfcc_only_id(photo.flickr_id),
        "flickr_id": photo.flickr_id,
        "split": photo.split,
        "language": photo.language,
        "classes": truth,
        "objects": [{"class": world.mid[n], "name": n, "role": r, "visible": True, "tagged": n in tagged,
                     "look_alike": any(n in g for g in LOOK_ALIKE)} for n, r in photo.objects],
        "tags": photo.tags if has_tags_source else [],
    }
