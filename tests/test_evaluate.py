import json

import numpy as np
import pytest

from app import evaluate
from app.errors import InputError
from app.evaluation.csv_mode import evaluate_csv
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
        "0000000000000001,verification,/m/0bt9lr,1\n"    # dog -> animal positive too
        "0000000000000002,verification,/m/0jbk,0\n"      # animal negative -> dog, cat negative
        "0000000000000003,crowdsource-verification,/m/01yrx,1\n"
        "0000000000000003,verification,/m/0k4j,0\n")
    return tmp_path


def run_csv(folder, predictions: str):
    (folder / "p.csv").write_text("ImageID,LabelName,Score\n" + predictions)
    return evaluate_csv(folder / "p.csv", folder / "labels.csv", folder / "h.json", folder / "c.csv")


def test_csv_mode_applies_the_hierarchy(csv_files):
    result = run_csv(csv_files, "0000000000000001,/m/0bt9lr,0.9\n0000000000000002,/m/0bt9lr,0.8\n"
                                "0000000000000001,/m/0jbk,0.7\n0000000000000003,/m/0jbk,0.6\n"
                                "0000000000000002,/m/0jbk,0.5\n0000000000000003,/m/01yrx,0.4\n"
                                "0000000000000004,/m/01yrx,0.99\n")
    per = {m: v["ap"] for m, v in result.per_class.items()}
    assert per["/m/0bt9lr"] == 1.0  # 0000000000000001 (TP) ranks above 0000000000000002 (negative by expansion)
    assert per["/m/0jbk"] == 1.0  # images 1 and 3 positive by expansion, image 2 negative ranks last
    assert per["/m/01yrx"] == 1.0  # 0000000000000004 is unverified: its 0.99 is ignored
    assert "/m/0k4j" not in per  # no positive: left out of the mean
    assert result.map == 1.0 and result.classes_scored == 3


def test_csv_mode_accepts_image_ids_of_any_form(csv_files):
    # The same labels and predictions under ids that are not 16 hex digits (in the same code-point
    # order): the same APs; an unlabelled id is ignored with a warning, a repeat and an empty id named.
    rename = {"0000000000000001": "IMG 0001.jpg", "0000000000000002": "b/ü-2", "0000000000000003": "c3",
              "0000000000000004": "zz-unlabelled"}
    rows = ("0000000000000001,/m/0bt9lr,0.9\n0000000000000002,/m/0bt9lr,0.8\n0000000000000001,/m/0jbk,0.5\n"
            "0000000000000003,/m/0jbk,0.5\n0000000000000002,/m/0jbk,0.5\n0000000000000004,/m/01yrx,0.99\n")
    hex_result = run_csv(csv_files, rows)
    labels = (csv_files / "labels.csv").read_text()
    for old, new in rename.items():
        rows, labels = rows.replace(old, new), labels.replace(old, new)
    (csv_files / "labels.csv").write_text(labels, encoding="utf-8")
    result = run_csv(csv_files, rows)
    assert result.per_class == hex_result.per_class and result.images == 3
    assert "1 predictions are for images without verified labels" in result.warnings[0]
    with pytest.raises(InputError, match="p.csv:3: second prediction for image b/ü-2 class /m/0bt9lr"):
        run_csv(csv_files, "b/ü-2,/m/0bt9lr,0.5\nb/ü-2,/m/0bt9lr,0.6\n")
    with pytest.raises(InputError, match="p.csv:2: ImageID '' is empty"):
        run_csv(csv_files, ",/m/0bt9lr,0.5\n")


def test_csv_mode_scores_a_collection_with_its_own_class_ids(tmp_path):
    # A dataset of a collection: class ids that are not MIDs, the root "(root)" of its hierarchy.json.
    (tmp_path / "c.csv").write_text("cat,cat\n1,person\n")
    (tmp_path / "h.json").write_text(json.dumps({"LabelName": "(root)", "Subcategory": [{"LabelName": "cat"},
                                                                                      {"LabelName": "1"}]}))
    (tmp_path / "labels.csv").write_text("ImageID,Source,LabelName,Confidence\nphoto a,x,cat,1\nphoto a,x,1,0\n"
                                         "photo b,x,cat,0\nphoto b,x,1,1\n")
    (tmp_path / "p.csv").write_text("ImageID,LabelName,Score\nphoto a,cat,0.9\nphoto b,cat,0.2\nphoto b,1,0.1\n")
    result = evaluate_csv(tmp_path / "p.csv", tmp_path / "labels.csv", tmp_path / "h.json", tmp_path / "c.csv")
    assert {m: v["ap"] for m, v in result.per_class.items()} == {"cat": 1.0, "1": 1.0}


@pytest.mark.parametrize("rows,message", [
    ("0000000000000001,/m/0bt9lr\n", "p.csv:2: expected 3 fields"),
    ("0000000000000001,/m/nope,0.5\n", "p.csv:2: unknown class '/m/nope'"),
    ("0000000000000001,/m/0bt9lr,1.5\n", "p.csv:2: score 1.5 is outside [0, 1]"),
    ("0000000000000001,/m/0bt9lr,high\n", "p.csv:2: score 'high' is not a number"),
    ("0000000000000001,/m/0bt9lr,0.5\n0000000000000001,/m/0bt9lr,0.6\n",
     "p.csv:3: second prediction for image 0000000000000001 class /m/0bt9lr"),
])
def test_csv_mode_bad_input_names_file_and_line(csv_files, rows, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
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
    (csv_files / "p.csv").write_text("ImageID,LabelName,Score\n0000000000000001,/m/0bt9lr,2\n")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--predictions", str(csv_files / "p.csv"), "--labels", str(csv_files / "labels.csv"),
                       "--hierarchy", str(csv_files / "h.json"), "--classes", str(csv_files / "c.csv")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {csv_files / 'p.csv'}:2: score 2.0 is outside [0, 1]\n"


GOOD = "0000000000000001,/m/0bt9lr,0.9\n0000000000000003,/m/01yrx,0.4\n"


def cli(folder, capsys, *extra):
    """Runs CSV mode through `main`; returns (exit code, stdout, stderr)."""
    argv = ["--predictions", str(folder / "p.csv"), "--labels", str(folder / "labels.csv"), "--hierarchy",
            str(folder / "h.json"), "--classes", str(folder / "c.csv"), *extra]
    try:
        evaluate.main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def corrupt(folder, name, how):
    path = folder / name
    data = path.read_bytes()
    if how == "truncated gzip":
        import gzip

        path.write_bytes(gzip.compress(data)[:30])
    else:
        path.write_bytes(how(data))
    return path


@pytest.mark.parametrize("name,how,message", [
    ("p.csv", lambda d: d.replace(b"ImageID", b"Image"), "p.csv:1: expected the header ImageID,LabelName,Score, "
                                                          "got 'Image,LabelName,Score'"),
    ("labels.csv", lambda d: d.replace(b"LabelName", b"Label"), "labels.csv:1: missing columns ['LabelName']"),
    ("labels.csv", "truncated gzip", "labels.csv: truncated or corrupt gzip file"),
    ("labels.csv", lambda d: d.replace(b"/m/0k4j", b"/m/0nope"),
     "labels.csv:5: '0000000000000003,/m/0nope,0' (human_label_unknown_class; 1 bad label rows in all)"),
    ("labels.csv", lambda d: d.replace(b",1\n", b',"1\n', 1), "labels.csv:2: "),
    ("labels.csv", lambda d: d.split(b"\n")[0] + b"\n", "labels.csv: no verified labels (" ),
    ("labels.csv", lambda d: b"", "labels.csv: no verified labels ("),
    ("h.json", lambda d: d.replace(b'{"LabelName": "/m/01yrx"}', b'{"LabelName": "/m/01yrx", "Subcategory": '
                                                               b'[{"LabelName": "/m/0jbk"}]}'),
     "h.json: hierarchy has a cycle through '/m/"),
    ("h.json", lambda d: d.replace(b', {"LabelName": "/m/0k4j"}', b""), "h.json: lacks 1 of the 4 classes of the class "
                                                                       "list, e.g. /m/0k4j"),
    ("h.json", lambda d: d.replace(b'{"LabelName": "/m/0k4j"}', b'{"Name": "/m/0k4j"}'), "h.json: the node at "),
    ("c.csv", lambda d: d + b"/m/0jbk,Again\n", "c.csv:5: class /m/0jbk repeats line 1"),
    ("p.csv", lambda d: d.replace(b"0000000000000001", b"00000000000000f1").replace(b"000003", b"00000e"),
     "p.csv: none of the 2 predictions is for one of the 3 labelled images of "),
    ("p.csv", lambda d: d.replace(b"0.4", b"0.4\xff"), "p.csv:3: byte 0xff at column 30 is not UTF-8: "),
    ("labels.csv", None, "labels.csv: No such file or directory"),
    ("p.csv", lambda d: b"", "p.csv: empty file (0 bytes), expected the header ImageID,LabelName,Score"),
])
def test_csv_cli_bad_input_is_one_error_line_and_exit_code_2(csv_files, capsys, name, how, message):
    (csv_files / "p.csv").write_text("ImageID,LabelName,Score\n" + GOOD)
    if how is None:
        (csv_files / name).unlink()
    else:
        corrupt(csv_files, name, how)
    code, out, err = cli(csv_files, capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {csv_files}") and message in err and err.count("\n") == 1, err


def test_csv_cli_accepts_byte_order_marks_and_crlf(csv_files, capsys):
    (csv_files / "p.csv").write_text("ImageID,LabelName,Score\n" + GOOD)
    code, plain, _ = cli(csv_files, capsys, "--json")
    for name in ("p.csv", "labels.csv", "c.csv", "h.json"):
        corrupt(csv_files, name, lambda d: b"\xef\xbb\xbf" + d.replace(b"\n", b"\r\n"))
    code_windows, windows, err = cli(csv_files, capsys, "--json")
    assert code == code_windows == 0 and windows == plain and err == ""
    assert json.loads(plain)["map"] == pytest.approx(2 / 3)  # dog 1 (img1 only), animal 1/2, cat 1/2


def test_repeated_labels_are_warnings_and_a_positive_wins(csv_files, capsys):
    with open(csv_files / "labels.csv", "a") as handle:
        handle.write("0000000000000003,verification,/m/01yrx,0\n"   # line 6 conflicts with line 4: the positive wins
                     "0000000000000003,verification,/m/0k4j,0\n")   # line 7 repeats line 5
    result = run_csv(csv_files, "0000000000000002,/m/01yrx,0.9\n0000000000000003,/m/01yrx,0.4\n")
    assert result.per_class["/m/01yrx"]["ap"] == 0.5  # img3 positive, below img2's expanded negative
    labels = csv_files / "labels.csv"
    assert result.warnings == [
        f"{labels}: 1 rows human_label_duplicate (one label kept per image and class, a positive wins), "
        f"e.g. {labels}:7: '0000000000000003,/m/0k4j,0 (first at line 5)'",
        f"{labels}: 1 rows human_label_conflict (one label kept per image and class, a positive wins), "
        f"e.g. {labels}:6: '0000000000000003,/m/01yrx,0 (first at line 4)'"]
    code, out, err = cli(csv_files, capsys)
    assert code == 0 and out.startswith("mAP ") and "human_label_conflict" in err and "human_label_duplicate" in err


@pytest.mark.parametrize("rows,message", [
    ("0000000000000001,/m/0bt9lr,0.5\n0000000000000001,/m/0bt9lr,0.6\n0000000000000001,/m/0jbk,7\n",
     ":3: second prediction for image 0000000000000001 class /m/0bt9lr (first at line 2)"),
    ("0000000000000001,/m/0bt9lr,0.5\n0000000000000001,/m/0jbk,7\n0000000000000001,/m/0bt9lr,0.6\n",
     ":3: score 7.0 is outside [0, 1]"),
    ("0000000000000001,/m/0bt9lr,0.5\n,/m/0jbk,0.5\n", ":3: ImageID '' is empty"),
])
def test_csv_mode_stops_at_the_first_bad_prediction_row(csv_files, rows, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        run_csv(csv_files, rows)


def test_csv_mode_equals_the_dense_per_image_computation(tmp_path):
    """Random labels and predictions over the real classes and hierarchy: the streamed, class-blocked
    CSV mode gives the per-class AP of one dense matrix built image by image."""
    from app import resources
    from app.sources.hierarchy import Hierarchy
    from app.sources.oid import read_classes
    from app.evaluation.metrics import average_precisions

    mids = [m for m, _ in read_classes(resources.CHALLENGE_CLASSES_CSV)]
    hierarchy = Hierarchy.from_json(resources.HIERARCHY_JSON, mids)
    rng = np.random.default_rng(1)
    images = [f"{x:016x}" for x in sorted(rng.choice(2**60, 400, replace=False))]
    labels = {(rng.integers(400), mids[rng.integers(500)]): int(rng.integers(2)) for _ in range(3000)}
    predictions = {(rng.integers(450), rng.integers(500)): round(float(rng.random()), 2) for _ in range(20000)}
    (tmp_path / "labels.csv").write_text("ImageID,Source,LabelName,Confidence\n" + "".join(
        f"{images[i]},verification,{mid},{value}\n" for (i, mid), value in labels.items()))
    (tmp_path / "p.csv").write_text("ImageID,LabelName,Score\n" + "".join(
        f"{images[i] if i < 400 else f'{i:016x}'},{mids[c]},{s}\n" for (i, c), s in predictions.items()))
    result = evaluate_csv(tmp_path / "p.csv", tmp_path / "labels.csv", resources.HIERARCHY_JSON)

    verified = np.full((400, 500), -1, np.int8)
    for i in range(400):
        for mid, value in hierarchy.expand([(m, v) for (j, m), v in labels.items() if j == i]).items():
            verified[i, mids.index(mid)] = value
    scores = np.zeros((400, 500))
    for (i, c), s in predictions.items():
        if i < 400:
            scores[i, c] = s
    ap = average_precisions(scores, verified)
    assert result.classes_scored == int((~np.isnan(ap)).sum()) > 100
    assert {m: v["ap"] for m, v in result.per_class.items()} == pytest.approx(
        {mids[c]: ap[c] for c in range(500) if not np.isnan(ap[c])}, abs=1e-12)
    assert result.images == len({i for i, _ in labels}) and any("without verified labels" in w for w in result.warnings)


def test_csv_cli_error_has_no_traceback_in_a_real_process(csv_files):
    import subprocess
    import sys
    from pathlib import Path

    (csv_files / "p.csv").write_text("ImageID,LabelName,Score\n0000000000000001,/m/0bt9lr\n")
    script = Path(evaluate.__file__)
    done = subprocess.run([sys.executable, str(script), "--predictions", str(csv_files / "p.csv"), "--labels",
                           str(csv_files / "labels.csv"), "--hierarchy", str(csv_files / "h.json"), "--classes",
                           str(csv_files / "c.csv")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {csv_files / 'p.csv'}:2: expected 3 fields, got 2: '0000000000000001,/m/0bt9lr'\n"


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


@pytest.fixture(scope="module")
def tiny_runs(tiny_world, tmp_path_factory):
    """A tags-only and an image-only run on the tiny world, one epoch each."""
    from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from app.training.run import RunOptions, train

    _, data_dir = tiny_world
    root = tmp_path_factory.mktemp("runs")
    for kind in ("tags", "image"):
        config = RunConfig(data=DataConfig(tag_limit=10, tag_threshold=2),
                           model=ModelConfig(model=kind, embedding_dim=16, hidden_units=32, image_size=32),
                           train=TrainConfig(epochs=1, batch_size=32))
        train(data_dir, root / kind, config, RunOptions(progress=False))
    return [root / "tags", root / "image"]


def test_run_mode_report_json_and_protocols(tiny_runs, tmp_path, capsys):
    runs = tiny_runs
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "by_old_slice.png").write_bytes(b"from an earlier report")
    result = evaluate.main(["--model", str(runs[0]), "--compare", str(runs[1]), "--report", str(tmp_path / "r"),
                            "--floor", "0.5"])
    assert not (tmp_path / "r" / "by_old_slice.png").exists()  # the folder is replaced whole
    assert {"tags", "image", "machine labels", "most likely"} <= set(result.summary)
    assert any(name.startswith("late fusion") for name in result.summary)
    withheld = result.slices["withheld"]
    assert result.slice_sizes["withheld"] == {"image withheld": 80, "tags withheld": 80}
    assert withheld["image withheld"]["tags"] == result.summary["tags"]["map"]  # a tags-only model reads no image
    assert withheld["tags withheld"]["image"] == result.summary["image"]["map"]
    assert withheld["image withheld"]["image"] != result.summary["image"]["map"]  # re-scored on black images
    assert "machine labels" not in withheld["image withheld"]
    machine_rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("  machine labels")]
    assert machine_rows[-1].split()[-2:] == ["–", "–"]  # the slices table: no withheld score for a baseline
    assert (runs[0] / "thresholds.json").exists()
    report = (tmp_path / "r" / "report.md").read_text()
    for heading in ("## Systems", "### Tag language", "### With and without tags", "### Every photo with an input "
                    "withheld", "## AP by hierarchy level", "## Per-class AP", "## Every class"):
        assert heading in report
    assert (tmp_path / "r" / "per_class_ap.csv").read_text().count("\n") > 10
    from PIL import Image

    for png in ("per_class_ap.png", "best_worst.png", "model_vs_machine.png", "ap_by_level.png", "by_language.png",
                "by_tags.png", "by_withheld.png"):
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


def dense_evaluation(runs, data_dir, protocol, floor):
    """Run mode computed the plain way: dense `[photos, classes]` arrays, photos sorted by ImageID,
    the metrics written out in tests/test_metrics.py. Returns `(systems' scores, test labels, fusion
    weight's mAPs on validation, the run's thresholds)`."""
    from app.records.dataset import DatasetInfo
    from app.evaluation.scoring import TrainedModel
    from conftest import dense_scores, dense_split
    from test_metrics import reference_semantics, reference_thresholds

    info = DatasetInfo.load(data_dir)
    splits = {split: dense_split(data_dir, split) for split in ("test", "validation", "train")}
    order = {split: np.argsort(arrays["ids"], kind="stable") for split, arrays in splits.items()}
    scores = {}
    for run in map(TrainedModel, runs):
        m = run.config.model
        for split in ("test", "validation"):
            raw = dense_scores(run.model, run.preprocessor.tags, info, split, m.image_size if m.uses_image else None)
            scores[run.name, split] = np.where(raw >= floor, raw, 0.0)[order[split]].astype(np.float64)
    val = splits["validation"]["verified"][order["validation"]]
    thresholds = (reference_thresholds(scores["tags", "validation"], val) if floor else
                  np.array(json.loads((runs[0] / "thresholds.json").read_text())["thresholds"]))
    fusion = {w: np.nanmean(reference_semantics(w * scores["image", "validation"]
                                                + (1 - w) * scores["tags", "validation"], val, protocol))
              for w in np.linspace(0, 1, 21)}
    train = splits["train"]["verified"]
    test = {key: value[order["test"]] for key, value in splits["test"].items()}
    systems = {"tags": scores["tags", "test"], "image": scores["image", "test"],
               "machine labels": test["machine"].astype(np.float64),
               "most likely": np.tile((train == 1).sum(0) > (train == 0).sum(0), (len(test["ids"]), 1)) * 1.0}
    return systems, test, fusion, thresholds


@pytest.mark.parametrize("protocol,floor", [("challenge", 0.0), ("study", 0.5)])
def test_run_mode_equals_the_dense_computation(tiny_runs, tiny_world, protocol, floor):
    from app.evaluation.run_mode import evaluate_run
    from test_metrics import reference_semantics, reference_threshold_scores, reference_top_k

    _, data_dir = tiny_world
    result = evaluate_run(tiny_runs[0], compare=[tiny_runs[1]], protocol=protocol, floor=floor)
    systems, test, fusion, thresholds = dense_evaluation(tiny_runs, data_dir, protocol, floor)
    w = result.fusion_weight
    assert fusion[w] == pytest.approx(max(fusion.values()), abs=1e-12)  # the best λ on validation
    systems[f"late fusion (λ={w:.2f})"] = w * systems["image"] + (1 - w) * systems["tags"]
    verified = test["verified"]
    assert set(result.summary) == set(systems) and result.positives == (verified == 1).sum(0).tolist()
    for name, scores in systems.items():
        ap = reference_semantics(scores, verified, protocol)
        np.testing.assert_allclose(result.per_class[name], ap, rtol=0, atol=1e-9, equal_nan=True)
        expected = {"map": np.nanmean(ap), **reference_threshold_scores(scores, verified,
                                                                        thresholds if name == "tags" else 0.5)}
        for k in (1, 3, 5):
            expected[f"precision@{k}"], expected[f"recall@{k}"] = reference_top_k(scores, verified, k)
        assert {key: result.summary[name][key] for key in expected} == pytest.approx(expected, abs=1e-9), name
    english, undetected = test["languages"] == "en", test["languages"] == "un"
    for key, label, rows in [("language", "en", english), ("language", "other", ~english & ~undetected),
                             ("language", "undetected", undetected), ("tags", "with tags", test["has_tags"]),
                             ("tags", "without tags", ~test["has_tags"])]:
        assert result.slice_sizes[key][label] == rows.sum() > 0
        assert result.slices[key][label] == pytest.approx(
            {name: np.nanmean(reference_semantics(s[rows], verified[rows], protocol)) for name, s in systems.items()},
            abs=1e-9)
