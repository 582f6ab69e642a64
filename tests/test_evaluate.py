import json

import numpy as np
import pytest

from app import evaluate
from app.evaluation.baselines import late_fusion, machine_label_scores, most_likely_scores, tune_fusion_weight
from app.evaluation.metrics import summary_metrics, threshold_scores, top_k_scores, tune_class_thresholds
from conftest import DATA

HIERARCHY = {"LabelName": "/m/0bl9f", "Subcategory": [
    {"LabelName": "/m/0jbk", "Subcategory": [{"LabelName": "/m/0bt9lr"}, {"LabelName": "/m/01yrx"}]},
    {"LabelName": "/m/0k4j"}]}
CLASSES = "/m/0jbk,Animal\n/m/0bt9lr,Dog\n/m/01yrx,Cat\n/m/0k4j,Car\n"


@pytest.fixture
def csv_files(tmp_path):
    (tmp_path / "h.json").write_text(json.dumps(HIERARCHY))
    (tmp_path / "c.csv").write_text(CLASSES)
    (tmp_path / "labels.csv").write_text(
        "ImageID,Source,LabelName,Confidence\n"
        "img1,verification,/m/0bt9lr,1\n"    # dog -> animal positive too
        "img2,verification,/m/0jbk,0\n"      # animal negative -> dog, cat negative
        "img3,crowdsource-verification,/m/01yrx,1\n"
        "img3,verification,/m/0k4j,0\n")
    return tmp_path


def run_csv(folder, predictions: str):
    (folder / "p.csv").write_text("ImageID,LabelName,Score\n" + predictions)
    return evaluate.evaluate_csv(folder / "p.csv", folder / "labels.csv", folder / "h.json", folder / "c.csv")


def test_csv_mode_applies_the_hierarchy(csv_files):
    result = run_csv(csv_files, "img1,/m/0bt9lr,0.9\nimg2,/m/0bt9lr,0.8\nimg1,/m/0jbk,0.7\nimg3,/m/0jbk,0.6\n"
                                "img2,/m/0jbk,0.5\nimg3,/m/01yrx,0.4\nimg4,/m/01yrx,0.99\n")
    per = {m: v["ap"] for m, v in result["per_class"].items()}
    assert per["/m/0bt9lr"] == 1.0  # img1 (TP) ranks above img2 (negative by expansion)
    assert per["/m/0jbk"] == 1.0  # img1, img3 positive by expansion, img2 negative ranks last
    assert per["/m/01yrx"] == 1.0  # img4 is unverified: its 0.99 is ignored
    assert "/m/0k4j" not in per  # no positive: left out of the mean
    assert result["map"] == 1.0 and result["classes_scored"] == 3


@pytest.mark.parametrize("rows,message", [
    ("img1,/m/0bt9lr\n", "p.csv:2: expected 3 fields"),
    ("img1,/m/nope,0.5\n", "p.csv:2: unknown class '/m/nope'"),
    ("img1,/m/0bt9lr,1.5\n", "p.csv:2: score 1.5 is outside [0, 1]"),
    ("img1,/m/0bt9lr,high\n", "p.csv:2: score 'high' is not a number"),
    ("img1,/m/0bt9lr,0.5\nimg1,/m/0bt9lr,0.6\n", "p.csv:3: second prediction for image img1 class /m/0bt9lr"),
])
def test_csv_mode_bad_input_names_file_and_line(csv_files, rows, message):
    with pytest.raises(evaluate.InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_csv(csv_files, rows)


def test_csv_cli_on_real_format_samples(tmp_path, capsys):
    labels = DATA / "train-annotations-human-imagelabels-boxable.sample.csv"
    rows = [line.split(",") for line in labels.read_text().splitlines()[1:]]
    (tmp_path / "p.csv").write_text("ImageID,LabelName,Score\n" + "".join(
        f"{image},{mid},{0.9 if confidence == '1' else 0.1}\n" for image, _, mid, confidence in rows))
    from app import resources

    evaluate.main(["--predictions", str(tmp_path / "p.csv"), "--labels", str(labels), "--hierarchy",
                   str(resources.HIERARCHY_JSON), "--classes", str(resources.BOXABLE_CLASSES_CSV), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["map"] == pytest.approx(1.0)  # every positive outscores every negative
    assert result["classes_scored"] >= 1


def test_cli_exits_with_the_message(csv_files, capsys):
    (csv_files / "p.csv").write_text("ImageID,LabelName,Score\nimg1,/m/0bt9lr,2\n")
    with pytest.raises(SystemExit, match="outside"):
        evaluate.main(["--predictions", str(csv_files / "p.csv"), "--labels", str(csv_files / "labels.csv"),
                       "--hierarchy", str(csv_files / "h.json"), "--classes", str(csv_files / "c.csv")])


def test_baselines_on_a_tiny_known_case():
    train = np.array([[1, 0, -1], [1, 0, 1], [0, 0, 1]])
    # class 0: 2 pos > 1 neg -> present; class 1: 0 pos -> absent; class 2: 2 pos > 0 neg -> present
    np.testing.assert_array_equal(most_likely_scores(train, 2), [[1, 0, 1], [1, 0, 1]])
    assert machine_label_scores(np.array([[0.7, 0.0]], np.float32)).dtype == np.float64
    verified = np.array([[1, 0], [0, 1], [1, -1], [0, 1]])
    # each model separates one class perfectly and is flat on the other: only a mix gets both
    image = np.array([[0.9, 0.5], [0.1, 0.5], [0.9, 0.5], [0.1, 0.5]])
    tags = np.array([[0.5, 0.1], [0.5, 0.9], [0.5, 0.5], [0.5, 0.9]])
    weight, best = tune_fusion_weight(image, tags, verified)
    assert 0 < weight < 1 and best == 1.0
    np.testing.assert_allclose(late_fusion(image, tags, 1.0), image)


def test_extra_metrics_by_hand():
    verified = np.array([[1, 0, -1, 1], [0, 1, 1, -1]])
    scores = np.array([[0.9, 0.8, 0.99, 0.1], [0.2, 0.6, 0.4, 0.99]])
    at1 = top_k_scores(scores, verified, 1)  # the unverified 0.99s never count
    assert at1["precision@1"] == 1.0 and at1["recall@1"] == pytest.approx(0.5)
    at2 = top_k_scores(scores, verified, 2)  # image 0: pos, neg; image 1: pos, pos
    assert at2["precision@2"] == pytest.approx((1 / 2 + 1) / 2)
    t = threshold_scores(scores, verified, 0.5)  # judged: 6 entries; predicted: .9 .8 .6 -> TP 2, FP 1, FN 2
    assert t["micro_f1"] == pytest.approx(4 / 7) and t["hamming_loss"] == pytest.approx(3 / 6)
    thresholds = tune_class_thresholds(scores, verified)
    assert thresholds[0] == 0.9 and thresholds[3] == 0.1
    # class 1 (neg 0.8 above pos 0.6) is best at 0.6 with F1 2/3; the other classes reach F1 1
    assert thresholds[1] == 0.6
    assert summary_metrics(scores, verified, thresholds)["macro_f1"] == pytest.approx((3 + 2 / 3) / 4)


def test_run_mode_report_json_and_protocols(tiny_world, tmp_path, capsys):
    from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from app.training.run import RunOptions, train

    _, data_dir = tiny_world
    runs = []
    for kind in ("tags", "image"):
        config = RunConfig(data=DataConfig(tag_limit=10, tag_threshold=2),
                           model=ModelConfig(model=kind, embedding_dim=16, hidden_units=32, image_size=32),
                           train=TrainConfig(epochs=1, batch_size=32))
        train(data_dir, tmp_path / kind, config, RunOptions(progress=False))
        runs.append(tmp_path / kind)
    result = evaluate.main(["--model", str(runs[0]), "--compare", str(runs[1]), "--report", str(tmp_path / "r"),
                            "--floor", "0.5"])
    assert {"tags", "image", "machine labels", "most likely"} <= set(result.summary)
    assert any(name.startswith("late fusion") for name in result.summary)
    withheld = result.slices["withheld"]
    assert result.slice_sizes["withheld"] == {"image withheld": 80, "tags withheld": 80}
    assert withheld["image withheld"]["tags"] == result.summary["tags"]["map"]  # a tags-only model reads no image
    assert withheld["tags withheld"]["image"] == result.summary["image"]["map"]
    assert withheld["image withheld"]["image"] != result.summary["image"]["map"]  # re-scored on black images
    assert "machine labels" not in withheld["image withheld"]
    machine_row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("  machine labels"))
    assert machine_row.split()[-2:] == ["-", "-"]  # the terminal table: no withheld score for a baseline
    assert (runs[0] / "thresholds.json").exists()
    report = (tmp_path / "r" / "report.md").read_text()
    assert "10 best and 10 worst" in report and "By tag language" in report
    from PIL import Image

    for png in ("per_class_ap.png", "best_worst.png", "model_vs_machine.png", "ap_by_level.png", "by_language.png",
                "by_tags.png"):
        with Image.open(tmp_path / "r" / png) as image:
            assert image.size[0] > 200 and len(set(image.convert("L").getdata())) > 5  # not blank
    capsys.readouterr()
    study = evaluate.main(["--model", str(runs[0]), "--json", "--protocol", "study"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["protocol"] == "study" and printed["summary"]["tags"]["map"] == pytest.approx(study.summary["tags"]["map"])
    assert set(printed["per_class_ap"]["tags"]) == set(printed["classes"])  # every class's AP, keyed by MID
    # every verified (image, class) is a detection under the study's rule, so the all-or-nothing
    # most-likely baseline scores at least as well as under the challenge rule (where 0 is no prediction)
    challenge = evaluate.main(["--model", str(runs[0])])
    assert study.summary["most likely"]["map"] >= challenge.summary["most likely"]["map"]
