"""The cache of parsed rows (`app.records.parsed_cache`): the same batches as parsing the records,
read on later epochs, never read for other inputs, never read partial, and bounded."""

import json
import os
import time

import numpy as np
import pytest

from app import resources
from app.config import ModelConfig
from app.fileio import TEMP_MARK
from app.model.preprocess import TagLookup
from app.model.preprocessor import ContextualPreprocessor
from app.records import parsed_cache, schema
from app.records.dataset import DatasetInfo, DatasetWriter
from app.records.pipeline import make_dataset
from app.sources.oid import read_classes
from app.text.tags import Vocabulary

TOKENS = [f"tag{i}" for i in range(40)]
CLASSES = 12


def write_dataset(folder, seed: int, count: int = 90) -> DatasetInfo:
    """Two shards per split of random photos: tags (some out of vocabulary), positives with soft
    targets, verified negatives."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(folder) as writer:
        for split in ("train", "validation"):
            records = []
            for i in range(count):
                tags = list(dict.fromkeys(f"tag{t}" for t in rng.integers(0, 60, rng.integers(0, 9))))
                labels = sorted(set(rng.integers(0, CLASSES, rng.integers(0, 5)).tolist()))
                negatives = sorted(set(rng.integers(0, CLASSES, rng.integers(0, 3)).tolist()) - set(labels))
                records.append(schema.PhotoRecord(f"{i:016x}", i, tags, "en", "yfcc", label_ids=labels + negatives,
                                                  label_targets=[0.9] * len(labels) + [0.0] * len(negatives),
                                                  verified_pos=labels, verified_neg=negatives))
            writer.add_shards(schema.write_shards(records, writer.path, split, 2))
        writer.write_metadata(read_classes(resources.CHALLENGE_CLASSES_CSV)[:CLASSES],
                              resources.HIERARCHY_JSON.read_text(encoding="utf-8"),
                              Vocabulary(TOKENS, list(range(len(TOKENS), 0, -1)), 6, 1))
        writer.write_stats({"splits": {s: {"images": count} for s in ("train", "validation")}})
        writer.commit()
    return DatasetInfo.load(folder)


def tags_preprocessor(info: DatasetInfo, limit: int = 6) -> ContextualPreprocessor:
    vocab = Vocabulary(info.vocab.tokens, info.vocab.counts, limit, 1)
    return ContextualPreprocessor.for_model(ModelConfig(model="tags"), vocab)


def batches(info, preprocessor, cache_root=None, batch_size=16, **kwargs) -> list:
    """Two epochs' batches of the train split (new shuffles), then the validation split in order."""
    out = []
    for seed in (1, 2):
        ds = make_dataset(info, "train", preprocessor, batch_size=batch_size, training=True, seed=seed, repeat=True,
                          cache_root=cache_root, **kwargs)
        out += list(ds.take(7).as_numpy_iterator())
    return out + list(make_dataset(info, "validation", preprocessor, batch_size=batch_size, cache_root=cache_root,
                                   **kwargs).as_numpy_iterator())


def assert_same(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for (inputs, targets, mask), (want_inputs, want_targets, want_mask) in zip(got, expected):
        assert sorted(inputs) == sorted(want_inputs)
        for name in inputs:
            np.testing.assert_array_equal(inputs[name], want_inputs[name])
        np.testing.assert_array_equal(targets, want_targets)
        np.testing.assert_array_equal(mask, want_mask)


def row_files(cache_root) -> dict:
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(cache_root.rglob(f"*{parsed_cache.SUFFIX}"))}


@pytest.mark.parametrize("verified_only", [False, True])
def test_cached_rows_give_the_batches_of_the_parsed_records(tmp_path, verified_only):
    info = write_dataset(tmp_path / "data", seed=0)
    preprocessor = tags_preprocessor(info)
    expected = batches(info, preprocessor, verified_only=verified_only)
    assert_same(batches(info, preprocessor, tmp_path / "cache", verified_only=verified_only), expected)
    assert len(row_files(tmp_path / "cache")) == 4  # train and validation, two shards each
    assert expected[0][2].shape == ((16, CLASSES) if verified_only else (16, 1))
    for repeat in (False, True):  # the same static shapes (a full batch's, when repeated)
        specs = [make_dataset(info, "train", preprocessor, batch_size=16, repeat=repeat, verified_only=verified_only,
                              cache_root=cache_root).element_spec for cache_root in (None, tmp_path / "cache")]
        assert specs[0] == specs[1]


@pytest.mark.parametrize("kind", ["contextual", "image"])
def test_feature_rows_are_zipped_with_the_cached_rows(tmp_path, kind):
    info = write_dataset(tmp_path / "data", seed=1)
    tags = TagLookup(info.vocab) if kind == "contextual" else None  # an image model caches only its labels
    preprocessor = ContextualPreprocessor(tags, 32, image_presence=kind == "contextual")
    rng = np.random.default_rng(0)
    features = {}
    for split in ("train", "validation"):
        features[split] = [str(tmp_path / f"{os.path.basename(shard)}.f32") for shard in info.shard_files(split)]
        for shard, path in zip(info.shard_files(split), features[split]):
            rng.random((info.shard_records(shard), preprocessor.feature_dim + 1), np.float32).tofile(path)

    def read(cache_root=None):
        return [batch for split in ("train", "validation") for batch in make_dataset(
            info, split, preprocessor, batch_size=16, training=split == "train", feature_files=features[split],
            cache_root=cache_root).as_numpy_iterator()]

    expected = read()
    assert sorted(expected[0][0]) == (["image_features", "image_present", "tag_ids"] if tags else ["image_features"])
    assert_same(read(tmp_path / "cache"), expected)
    assert_same(read(tmp_path / "cache"), expected)


def test_later_pipelines_read_the_rows_and_other_inputs_get_their_own(tmp_path):
    info = write_dataset(tmp_path / "data", seed=2)
    preprocessor, cache = tags_preprocessor(info), tmp_path / "cache"
    expected = batches(info, preprocessor, cache)
    written = row_files(cache)
    assert_same(batches(info, preprocessor, cache), expected)
    assert row_files(cache) == written  # nothing parsed again
    # The rows are what later pipelines read: a mark written into them comes out as a tag id.
    layout = row_layout(cache)
    for path in written:
        words = np.fromfile(path, np.int32).reshape(-1, layout.record_bytes // 4)
        words[:, 0] = 39
        words.tofile(path)
    marked = make_dataset(info, "validation", preprocessor, batch_size=16, cache_root=cache)
    assert {int(ids[0]) for inputs, _, _ in marked.as_numpy_iterator() for ids in inputs["tag_ids"]} == {39}
    # Another tag limit is another preprocessor: its own folder, its own rows.
    longer = tags_preprocessor(info, limit=8)
    assert_same(batches(info, longer, cache), batches(info, longer))
    assert len(list(cache.glob(f"{parsed_cache.LAYOUT}-*"))) == 2
    # New data at the same path (a dataset prepared again): another fingerprint, other rows.
    info = write_dataset(tmp_path / "data", seed=3)
    assert_same(batches(info, preprocessor, cache), batches(info, preprocessor))
    assert len(list(cache.glob(f"{parsed_cache.LAYOUT}-*"))) == 3


def test_partial_files_and_foreign_folders_are_never_read(tmp_path):
    info = write_dataset(tmp_path / "data", seed=4)
    preprocessor, cache = tags_preprocessor(info), tmp_path / "cache"
    expected = batches(info, preprocessor)
    batches(info, preprocessor, cache)
    first, second = sorted(row_files(cache))[:2]
    with open(first, "r+b") as handle:  # a row file cut short
        handle.truncate(first.stat().st_size - 4)
    killed = second.with_name(f".{second.stem}.12345.abc{TEMP_MARK}{parsed_cache.SUFFIX}")
    killed.write_bytes(b"\0" * 100)  # a killed build's temporary file, hours old
    os.utime(killed, (time.time() - 2 * parsed_cache.STALE_SECONDS,) * 2)
    second.unlink()
    assert_same(batches(info, preprocessor, cache), expected)
    assert not killed.exists() and first.stat().st_size % row_layout(cache).record_bytes == 0
    key_file = next(cache.glob(f"{parsed_cache.LAYOUT}-*")) / parsed_cache.KEY_FILE
    key_file.write_text(key_file.read_text().replace('"verified_only": false', '"verified_only": true'))
    for path in row_files(cache):
        path.write_bytes(b"\0" * path.stat().st_size)  # rows of another key: zeros
    assert_same(batches(info, preprocessor, cache), expected)


def test_a_root_keeps_the_most_recently_used_caches(tmp_path):
    info = write_dataset(tmp_path / "data", seed=5, count=20)
    cache = tmp_path / "cache"
    for limit in range(2, 3 + parsed_cache.KEPT):
        make_dataset(info, "validation", tags_preprocessor(info, limit), batch_size=8, cache_root=cache)
        time.sleep(0.01)
    kept = list(cache.glob(f"{parsed_cache.LAYOUT}-*"))
    assert len(kept) == parsed_cache.KEPT
    oldest = parsed_cache.ParsedCache(cache, make_key(info, tags_preprocessor(info, 2))).dir
    assert oldest not in kept


def make_key(info, preprocessor) -> parsed_cache.CacheKey:
    return parsed_cache.CacheKey(info.fingerprint, preprocessor.fingerprint(), info.num_classes, False, False, ())


def row_layout(cache) -> parsed_cache.RowLayout:
    """The row layout of the (first) cache folder's validation split."""
    folder = next(cache.glob(f"{parsed_cache.LAYOUT}-*"))
    return parsed_cache.RowLayout.from_json(json.loads((folder / "validation" / parsed_cache.ROWS_FILE).read_text()))
