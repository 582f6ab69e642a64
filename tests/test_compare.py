import json

import pytest

from tuning import compare
from tuning.paired import PairedDifference, mean_std, t975

FLAGS = "--model tags --epochs 1 --tag-limit 10 --tag-threshold 2 --embedding-dim 8 --hidden-units 16 --batch-size 64"


def test_paired_difference_and_its_t_interval():
    d = PairedDifference.of([0.92, 0.921, 0.919], [0.90, 0.90, 0.90])  # differences 0.02, 0.021, 0.019
    mean, std = mean_std([0.02, 0.021, 0.019])
    half = 4.303 * std / 3 ** 0.5
    assert d.mean == pytest.approx(mean) and d.low == pytest.approx(mean - half) and d.high == pytest.approx(mean + half)
    assert d.verdict == "gain" and str(d).endswith("gain") and "[+0.01" in str(d)
    assert PairedDifference.of([0.90, 0.95, 0.85], [0.91, 0.91, 0.91]).verdict == "no gain"  # the interval holds 0
    assert PairedDifference.of([0.80, 0.81, 0.80], [0.90, 0.90, 0.91]).verdict == "loss"
    assert mean_std([0.5]) == (0.5, 0.0) and t975(2) == 4.303 and t975(40) == 2.042
    with pytest.raises(ValueError, match="Received: 3 and 2 values"):
        PairedDifference.of([1, 2, 3], [1, 2])


def test_arms_are_checked():
    config = compare.CompareConfig(name="x", control="--model tags", method="--model tags --seed 3")
    with pytest.raises(ValueError, match="method arm: --seed is set by the driver"):
        compare.make_arms(config)
    with pytest.raises(ValueError, match="two arms have the same flags"):
        compare.make_arms(compare.CompareConfig(name="x", control="--epochs 2", method="--epochs  2"))
    arms = compare.make_arms(compare.CompareConfig(name="x", method="--image-presence --image-dropout 0.5",
                                                   references="tags: --model tags; --model image"))
    assert [a.label for a in arms] == ["control", "method", "tags", "model-image"]
    assert [a.slug for a in arms] == ["defaults", "image-presence-image-dropout-0.5", "model-tags", "model-image"]
    args = compare.parse_args(["--name", "x", "--method", "--branch-scores", "--references", "--model image"])
    assert (vars(args)["compare.method"], vars(args)["compare.references"]) == ("--branch-scores", "--model image")
    assert compare._labelled("tags, best on validation: --model tags --dropout 0.3") == (
        "tags, best on validation", ("--model", "tags", "--dropout", "0.3"))
    assert compare._labelled("--text-encoder savedmodel:/x") == ("", ("--text-encoder", "savedmodel:/x"))


def test_every_arm_is_parsed_before_any_training_and_a_typo_names_its_arm(tiny_world, tmp_path, capsys):
    _, data_dir = tiny_world
    argv = ["--data", str(data_dir), "--out", str(tmp_path), "--name", "x", "--control", FLAGS]
    for more, said in ((["--method", "--wide-tag"],  # no prefix matching: not trained as --wide-tags
                        "error: method arm: unrecognized arguments: --wide-tag. Received: '--wide-tag'"),
                       (["--method", "--wide-tags", "--references", "--dropout 2"], "error: dropout-2 arm: flags: model: dropout rates must be in [0, 1)")):
        with pytest.raises(SystemExit):
            compare.main(argv + more)
        assert capsys.readouterr().err.startswith(said)
    assert not (tmp_path / "runs").exists()


def test_one_seed_is_reported_without_a_spread():
    text, _ = compare.report("x", "test", [7], {"mAP": {"control": [0.4], "method": [0.5]}})
    assert "seed 7 (one seed, no spread" in text and "| mAP | 0.4000 | 0.5000 |" in text
    assert "±" not in text and "(one seed: no interval)" in text and "| mAP | +0.1000 |" in text


def test_compare_trains_each_arm_on_the_same_seeds_and_pairs_them(tiny_world, tmp_path, capsys):
    _, data_dir = tiny_world
    argv = ["--data", str(data_dir), "--out", str(tmp_path), "--name", "stems", "--control", FLAGS,
            "--method", FLAGS + " --tag-normalization snowball", "--seeds", "2", "--first-seed", "4", "--splits", "test"]
    result = compare.main(argv)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    assert len(runs) == 4 and sum(r.endswith("seed4") for r in runs) == 2 and sum(r.endswith("seed5") for r in runs) == 2
    metrics = result["splits"]["test"]["metrics"]
    for seed_index, seed in enumerate((4, 5)):  # each value is that seed's own runs, evaluated
        saved = json.loads((tmp_path / "stems" / f"eval-test-seed{seed}.json").read_text())
        assert metrics["mAP"]["method"][seed_index] == saved["summary"]["method"]["map"]
        assert metrics["mAP"]["control"][seed_index] == saved["summary"]["control"]["map"]
        configs = [record["fingerprint"]["config"] for record in saved["runs"].values()]
        assert [c["train"]["seed"] for c in configs] == [seed, seed]
        assert [c["data"]["tag_normalization"] for c in configs] == ["none", "snowball"]  # control, method
    diff = PairedDifference.of(metrics["mAP"]["method"], metrics["mAP"]["control"])
    table = (tmp_path / "stems" / "compare.md").read_text()
    assert f"| mAP | {diff} |" in table and "mAP, tags withheld (80 photos)" in table
    assert "%.4f ± %.4f" % mean_std(metrics["mAP"]["control"]) in table
    capsys.readouterr()
    again = compare.main(argv)  # a second run trains and evaluates nothing: the same numbers
    assert again == result and "already complete" not in capsys.readouterr().out


def test_an_arm_on_its_own_dataset_must_share_validation_and_test(tiny_world, tmp_path):
    from app.config import PrepareConfig
    from app.records.builder import prepare_dataset

    sources, data_dir = tiny_world
    same = tmp_path / "same"  # other yfcc photos, the same validation and test
    other = tmp_path / "other"  # the same photos in other shards
    prepare_dataset(sources, same, PrepareConfig(tag_limit=10, tag_threshold=2, records_per_shard=64,
                                                 yfcc_split_size=10), progress=False)
    prepare_dataset(sources, other, PrepareConfig(tag_limit=10, tag_threshold=2, records_per_shard=32), progress=False)
    compare._check_same_scoring_splits(same, data_dir)
    with pytest.raises(ValueError, match="its validation split is not that of"):
        compare._check_same_scoring_splits(other, data_dir)
    arm = compare.Arm("x", ("--data", str(other)) + tuple(FLAGS.split()))
    with pytest.raises(ValueError, match="its validation split is not that of"):
        compare.train_arm(arm, 0, data_dir, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()
    long = compare.Arm("y", tuple(FLAGS.split()) + ("--pretrained", "a" * 300 + "{seed}"))
    assert len(long.slug) == 111 and long.slug != compare.Arm("z", long.flags + ("--seed",)).slug


def test_exhaustive_metrics_become_rows_per_system_and_seed():
    report = {"class_map": 0.5, "photo_map": 0.6, "top_k": {"of1": 0.7, "cf1": 0.4}}
    evaluations = [{"summary": {"method": {"map": 0.3}}, "slices": {}, "exhaustive": {"method": report}},
                   {"summary": {"method": {"map": 0.2}}, "slices": {}}]  # a split without exhaustive labels
    rows = compare.metric_rows(evaluations)
    assert rows["mAP"] == {"method": [0.3, 0.2]}
    assert rows["per-photo mAP"] == {"method": [0.6]} and rows["overall F1@3"] == {"method": [0.7]}
    assert rows["per-class mAP (every photo, every class)"] == {"method": [0.5]}
