"""Text search over photos: the index against brute force, fingerprints, half-written folders, bad queries."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from app import search as search_cli
from app.retrieval.vector_index import SearchIndexError, VectorIndex, exact_neighbours


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_index_matches_brute_force_and_survives_a_save(tmp_path, kind):
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng.standard_normal((300, 24))), _unit(rng.standard_normal((20, 24)))
    index = VectorIndex(24, kind, {"vectors": "test"}, ef_search=300)
    index.add([f"p{i}" for i in range(200)], vectors[:200])
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    loaded.add([f"p{i}" for i in range(200, 300)], vectors[200:])  # photos added later: no rebuild
    truth = exact_neighbours(vectors, queries, 10)
    found = loaded.search(queries, 10)
    assert [[i for i, _ in row] for row in found] == [[f"p{r}" for r in row] for row in truth]
    scores = np.array([[s for _, s in row] for row in found])
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, truth, axis=1), atol=1e-5)


def test_half_written_or_changed_index_is_never_read(tmp_path):
    index = VectorIndex(4, "exact", {"vectors": "test"})
    index.add(["a", "b"], _unit(np.eye(4)[:2]))
    index.save(tmp_path / "idx")
    half = tmp_path / "half"  # what a build killed before its marker leaves
    shutil.copytree(tmp_path / "idx", half)
    (half / "index.json").unlink()
    with pytest.raises(SearchIndexError, match="not a complete index"):
        VectorIndex.load(half)
    with open(tmp_path / "idx" / "ids.jsonl", "a") as handle:  # a file changed after the marker
        handle.write('"c"\n')
    with pytest.raises(SearchIndexError, match="changed since the index was written"):
        VectorIndex.load(tmp_path / "idx")


def test_search_cli_on_a_tiny_world(tiny_world, tmp_path, capsys):
    """Index by mean tag vectors, query in two languages, extend, refuse another encoder, bad queries."""
    _, data_dir = tiny_world
    out = tmp_path / "idx"
    report = search_cli.main(["index", "--data", str(data_dir), "--out", str(out), "--split", "test"])
    assert report.added == report.size > 0 and report.kind == "exact"
    assert report.added + report.bad.skipped["no_tags"] == 80  # every test photo indexed or counted
    again = search_cli.main(["index", "--data", str(data_dir), "--out", str(out), "--split", "test"])
    assert again.added == 0 and again.already_present == report.size
    more = search_cli.main(["index", "--data", str(data_dir), "--out", str(out), "--split", "validation"])
    assert more.size == report.size + more.added and more.added > 0
    capsys.readouterr()

    answers = search_cli.main(["query", "--index", str(out), "dog", "Hund", "-k", "5", "--format", "json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == answers and [len(a["results"]) for a in answers] == [5, 5]
    index = VectorIndex.load(out)
    assert {a["results"][0]["id"] for a in answers} <= set(index.ids)

    marker = json.loads((out / "index.json").read_text())
    marker["fingerprint"]["encoder"] = "another-encoder@1"
    (out / "index.json").write_text(json.dumps(marker))
    with pytest.raises(SystemExit):
        search_cli.main(["query", "--index", str(out), "dog"])
    assert "built from another encoder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search_cli.main(["index", "--data", str(data_dir), "--out", str(out)])
    assert "built from another encoder" in capsys.readouterr().err


@pytest.mark.parametrize("query, message", [("", "query: empty"), ("  ,; ", "query: empty"),
                                            ("x" * (1 << 20), "over the limit")])
def test_bad_queries_are_one_line_errors(tmp_path, capsys, query, message):
    with pytest.raises(SystemExit):
        search_cli.main(["query", "--index", str(tmp_path / "none"), query])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_unknown_script_is_scored_with_a_warning():
    from app.retrieval.query import check_query

    assert check_query("Hund am Strand") == [] and check_query("собака") == [] and check_query("犬") == []
    [warning] = check_query("कुत्ता")
    assert "devanagari" in warning
