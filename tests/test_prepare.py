import json

import numpy as np
import tensorflow as tf

from app.records import schema
from app.records.dataset import DatasetInfo
from app.records.pipeline import make_dataset
from app.records.schema import iter_tags
from app.model.preprocess import TagLookup
from app.model.preprocessor import ContextualPreprocessor
from app.evaluation.truth import load_truth
from conftest import DATA, image_lines, label_lines


def test_round_trip_sources_to_shards_and_back(tiny_world):
    sources, data_dir = tiny_world
    stats = json.loads((data_dir / "stats.json").read_text())
    truth = {json.loads(l)["image_id"]: json.loads(l) for l in (sources.images.parent / "truth.jsonl").open()}
    assert {s: c["images"] for s, c in stats["splits"].items()} == {"train": 240, "validation": 80, "test": 80,
                                                                    "yfcc": 60}
    assert stats["bad_rows"]["total"] == 0
    assert not list(data_dir.glob(".*tmp"))  # no half-written shard left behind
    info = DatasetInfo.load(data_dir)
    assert len(info.shard_files("train")) >= 2
    seen = 0
    for serialized in tf.data.TFRecordDataset(info.shard_files("train")).batch(64):
        ex = schema.parse_batch(serialized)
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


def test_tf_data_batches_and_split_truth_line_up(tiny_world):
    _, data_dir = tiny_world
    info = DatasetInfo.load(data_dir)
    preprocessor = ContextualPreprocessor(TagLookup(info.vocab), 32)
    ds = make_dataset(info, "validation", preprocessor, batch_size=16, verified_only=True)
    inputs, targets, mask = next(iter(ds))
    assert inputs["tag_ids"].shape == (16, 10) and inputs["image"].shape == (16, 32, 32, 3)
    truth = load_truth(info, "validation")
    verified = np.full((truth.num_images, info.num_classes), -1)  # photos in ImageID order
    verified[truth.pairs.rows, truth.pairs.classes] = truth.pairs.positive
    first = verified[truth.shard_rows[:16]]  # the first 16 photos in shard order, as tf.data reads them
    np.testing.assert_array_equal(mask.numpy() > 0, first >= 0)
    np.testing.assert_array_equal(targets.numpy()[first == 1], 1.0)


def test_rebuilt_vocabulary_matches_the_saved_one(tiny_world):
    _, data_dir = tiny_world
    info = DatasetInfo.load(data_dir)
    from app.text.tags import build_vocabulary

    rebuilt = build_vocabulary(iter_tags(info.shard_files("train")), info.vocab.limit, info.vocab.threshold)
    assert rebuilt.tokens == info.vocab.tokens
    smaller = info.vocabulary(2, 5)
    assert smaller.limit == 2 and set(smaller.tokens) < set(info.vocab.tokens) | set(smaller.tokens)


def test_prepare_saves_a_snowball_vocabulary_that_runs_rebuild_alike(tiny_world, tmp_path):
    from app.config import PrepareConfig
    from app.records.builder import prepare_dataset

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


# --- bad inputs through the prepare command line (issue 12) ---------------------------------------


def real_oid_dir(tmp_path):
    """A tiny Open Images folder from the real samples (6 photos a split) and a YFCC100M file."""
    from app.sources.oid import SPLITS

    root = tmp_path / "oid"
    root.mkdir()
    for code, split in enumerate(SPLITS):  # other photos in each split (one photo in two splits is an error)
        images = image_lines(6, 16 * code, code, split)
        (root / f"{split}-images-with-rotation.csv").write_text("\n".join(images) + "\n")
        (root / f"{split}-annotations-human-imagelabels-boxable.csv").write_text(
            "\n".join(label_lines(6, start=16 * code)) + "\n")
    (tmp_path / "yfcc100m_dataset").write_text((DATA / "yfcc100m_dataset.sample.tsv").read_text())
    return root


def prepare_cli(tmp_path, capsys, *extra):
    from app import prepare

    root = real_oid_dir(tmp_path) if not (tmp_path / "oid").exists() else tmp_path / "oid"
    try:
        stats = prepare.main(["--oid-dir", str(root), "--yfcc", str(tmp_path / "yfcc100m_dataset"), "--out",
                              str(tmp_path / "out"), "--no-progress", *extra])
        code = 0
    except SystemExit as exit_info:
        stats, code = None, exit_info.code
    out, err = capsys.readouterr()
    return code, stats, out, err


def test_prepare_cli_bad_input_is_one_error_line_and_exit_code_2(tmp_path, capsys):
    import gzip

    root = real_oid_dir(tmp_path)
    images = root / "validation-images-with-rotation.csv"
    images.write_bytes(gzip.compress(images.read_bytes())[:40])
    labels = root / "test-annotations-human-imagelabels-boxable.csv"
    labels.write_text(labels.read_text().replace("Confidence", "Confidance"))
    tree = tmp_path / "h.json"
    tree.write_text('{"LabelName": "/m/0bl9f", "Subcategory": [{"LabelName": "/m/014sv8"}]}')
    for extra, message in (((), f"{images}: truncated or corrupt gzip file"),
                           (("--hierarchy", str(tree)), f"{tree}: lacks 499 of the 500 classes of the class list")):
        code, _, out, err = prepare_cli(tmp_path, capsys, *extra)
        assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    images.write_text("\n".join(image_lines(6, 16, 1, "validation")) + "\n")
    code, _, _, err = prepare_cli(tmp_path, capsys)
    assert code == 2 and err.startswith(f"error: {labels}:1: missing columns ['Confidence']"), err




def test_prepare_counts_bad_rows_and_warns_on_empty_inputs(tmp_path, capsys):
    root = real_oid_dir(tmp_path)
    (root / "validation-images-with-rotation.csv").write_text(image_lines(0)[0] + "\n")  # header only
    (root / "test-annotations-human-imagelabels-boxable.csv").write_bytes(b"")
    lines = label_lines(6)
    lines[2] = lines[2].replace(",", ',"', 1)  # unclosed quote: line 3 only
    lines += [lines[1], lines[4].replace(",0", ",1"), "0000000000000001,verification,/m/0unknown,1"]
    (root / "train-annotations-human-imagelabels-boxable.csv").write_text("\n".join(lines) + "\n")
    (root / "train-annotations-machine-imagelabels.csv").write_text(
        (DATA / "v3-annotations-machine.sample.csv").read_text().replace("000002b66c9c498e", f"{1:016x}"))
    code, stats, out, _ = prepare_cli(tmp_path, capsys)
    assert code == 0 and stats["splits"]["train"]["images"] == 6
    train = root / "train-annotations-human-imagelabels-boxable.csv"
    assert stats["bad_rows"]["by_reason"] == {"human_label_bad_quoting": 1, "human_label_duplicate": 1,
                                              "human_label_conflict": 1, "human_label_unknown_class": 1}
    assert stats["bad_rows"]["examples"]["human_label_bad_quoting"][0].startswith(f"{train}:3: ")
    # the validation labels of a split without images, the machine labels of photos no list has: counted skips
    assert stats["bad_rows"]["skipped"]["by_reason"] == {"machine_label_outside_classes": 7,
                                                         "human_label_image_not_listed": 6,
                                                         "machine_label_image_not_listed": 2}
    warnings = [f"{root / 'validation-images-with-rotation.csv'}: no data rows (header only)",
                "validation: 0 images (" + str(root / "validation-images-with-rotation.csv") + ")",
                f"{root / 'test-annotations-human-imagelabels-boxable.csv'}: empty file (0 bytes)",
                "test: 0 images with verified labels (" + str(root / "test-annotations-human-imagelabels-boxable.csv")
                + "): nothing to score on this split"]
    assert stats["bad_rows"]["warnings"] == warnings
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["bad_rows"]["warnings"] == warnings
    assert all(f"warning: {w}" in out for w in warnings) and "machine_label_outside_classes: 7" in out
