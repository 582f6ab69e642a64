import json

import numpy as np
import tensorflow as tf

from app.data import records
from app.data.dataset import DatasetInfo
from app.data.pipeline import iter_tags, load_eval_arrays, make_dataset
from app.data.preprocess import TagLookup


def test_round_trip_sources_to_shards_and_back(tiny_world):
    sources, data_dir = tiny_world
    stats = json.loads((data_dir / "stats.json").read_text())
    truth = {json.loads(l)["image_id"]: json.loads(l) for l in (sources.images.parent / "truth.jsonl").open()}
    assert {s: c["images"] for s, c in stats["splits"].items()} == {"train": 240, "validation": 80, "test": 80}
    assert stats["bad_rows"]["total"] == 0
    assert not list(data_dir.glob(".*tmp"))  # no half-written shard left behind
    info = DatasetInfo.load(data_dir)
    assert len(info.shard_files("train")) >= 2
    seen = 0
    for serialized in tf.data.TFRecordDataset(info.shard_files("train")).batch(64):
        ex = records.parse_batch(serialized)
        for i, image_id in enumerate(ex["image_id"].numpy().astype(str)):
            t = truth[image_id]
            tags = [x.decode() for x in ex["tags"][i].numpy()]
            assert tags == [x for x in (s.replace("+", " ") for s in _decoded(t["tags"])) if not x.isdigit()]
            positives = {info.classes[j][0] for j in ex["verified_pos"][i].numpy()}
            assert positives <= set(t["classes"])  # expanded positives are true classes
            assert not {info.classes[j][0] for j in ex["verified_neg"][i].numpy()} & set(t["classes"])
            assert ex["image"][i].numpy()[:3] == b"\xff\xd8\xff"
            seen += 1
    assert seen == 240


def _decoded(tags):
    from urllib.parse import unquote_plus

    out = []
    for tag in tags:
        text = unquote_plus(tag)
        if text not in out:
            out.append(text)
    return out


def test_tf_data_batches_and_eval_arrays_line_up(tiny_world):
    _, data_dir = tiny_world
    info = DatasetInfo.load(data_dir)
    lookup = TagLookup(info.vocab)
    ds = make_dataset(info, "validation", lookup=lookup, image_size=32, batch_size=16, verified_only=True)
    inputs, targets, mask = next(iter(ds))
    assert inputs["tag_ids"].shape == (16, 10) and inputs["image"].shape == (16, 32, 32, 3)
    arrays = load_eval_arrays(info, "validation")
    np.testing.assert_array_equal(mask.numpy() > 0, arrays.verified[:16] >= 0)
    np.testing.assert_array_equal(targets.numpy()[arrays.verified[:16] == 1], 1.0)


def test_rebuilt_vocabulary_matches_the_saved_one(tiny_world):
    _, data_dir = tiny_world
    info = DatasetInfo.load(data_dir)
    from app.data.tags import build_vocabulary

    rebuilt = build_vocabulary(iter_tags(info.shard_files("train")), info.vocab.limit, info.vocab.threshold)
    assert rebuilt.tokens == info.vocab.tokens
    smaller = info.vocabulary(2, 5)
    assert smaller.limit == 2 and set(smaller.tokens) < set(info.vocab.tokens) | set(smaller.tokens)


def test_prepare_saves_a_snowball_vocabulary_that_runs_rebuild_alike(tiny_world, tmp_path):
    from app.config import PrepareConfig
    from app.data.join import prepare_dataset

    sources, data_dir = tiny_world
    prepare_dataset(sources, tmp_path / "d", PrepareConfig(tag_limit=10, tag_threshold=2, records_per_shard=64,
                                                           tag_normalization="snowball"), progress=False)
    info = DatasetInfo.load(tmp_path / "d")
    assert info.vocab.normalization == "snowball" and info.vocab.forms
    assert info.stats["config"]["tag_normalization"] == "snowball"
    plain = DatasetInfo.load(data_dir)
    rebuilt = plain.vocabulary(10, 2, "snowball")  # a run asking the plain dataset for stems streams its train split
    assert rebuilt == info.vocab and rebuilt.size < plain.vocab.size


def test_prepare_cli_summary(tmp_path, capsys):
    from app import prepare

    stats = prepare.main(["--demo", "--demo-size", "60", "--out", str(tmp_path / "d"), "--no-progress",
                          "--tag-threshold", "2"])
    out = capsys.readouterr().out
    assert "train" in out and "vocabulary" in out and "bad rows: 0" in out
    assert stats["splits"]["train"]["images"] == 60
