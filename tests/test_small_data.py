"""A user's own small collection (issue 32): figures on a handful of photos are flagged, not dressed
up; --text-input follows the data; a model that would read nothing is refused before training;
the report's best and worst classes never repeat each other."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app import evaluate, prepare, train
from app.config import ModelConfig, RunConfig
from app.evaluation.reliability import MIN_RELIABLE_PHOTOS
from app.records.dataset import DatasetInfo
from app.training.usable import check_inputs, random_weights_warning

TINY = ["--epochs", "1", "--embedding-dim", "4", "--hidden-units", "8", "--no-progress"]
CLASSES = "person,1\ncat,2\nlecturer,3\n"


def manifest(folder, rows: str, *flags: str):
    """A prepared manifest collection (`id,tags,text,labels,split` rows) of the README's three classes."""
    folder.mkdir()
    (folder / "classes.csv").write_text(CLASSES)
    (folder / "photos.csv").write_text("id,tags,text,labels,split\n" + rows)
    prepare.main(["--manifest", str(folder / "photos.csv"), "--classes", str(folder / "classes.csv"),
                  "--out", str(folder / "data"), "--no-progress", *flags])
    return folder / "data"


README = ("IMG_0001,lecture|hall,A lecturer at the board,3,train\nIMG_0002,kitten,A cat asleep on a sofa,cat,test\n"
          "IMG_0003,crowd|street,People in the street,person,validation\n")


def test_a_handful_of_photos_gives_flagged_figures_and_untuned_thresholds(tmp_path, capsys):
    """The README's three photos: one validation photo chose the best epoch (its mAP swings between
    0 and 1), so the summary, the log and metrics.json say so, the thresholds stay at 0.5 (were tuned
    to 2e-19), and evaluate flags its one test photo."""
    data = manifest(tmp_path / "mine", README)
    capsys.readouterr()
    train.main(["--data", str(data), "--model", "tags", "--tag-threshold", "1", "--out", str(tmp_path / "run"), *TINY])
    out = capsys.readouterr().out
    assert (f"warning: the validation split has 1 photo, under {MIN_RELIABLE_PHOTOS}: its mAP is unreliable (on a "
            f"handful of photos an AP is 0 or 1 by chance); it chose the best epoch") in out
    assert f"warning: the test split has 1 photo, under {MIN_RELIABLE_PHOTOS}" in out
    assert (f"warning: thresholds not tuned: the validation split has 1 photo, under {MIN_RELIABLE_PHOTOS}; every "
            f"class uses 0.5") in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["warnings"]) == 3 and all(w in out for w in metrics["warnings"])
    thresholds = json.loads((tmp_path / "run" / "thresholds.json").read_text())
    assert thresholds["thresholds"] == [0.5] * 3 and thresholds["split"] is None and "not tuned" in thresholds["note"]
    evaluate.main(["--model", str(tmp_path / "run"), "--no-progress"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("test split of ") and ": 1 photo, 1 class with a verified positive" in lines[0]
    assert lines[1].startswith(f"warning: the test split has 1 photo, under {MIN_RELIABLE_PHOTOS}")


def test_text_input_follows_the_data_and_a_model_reading_nothing_is_refused(tmp_path, capsys):
    """Captions and no tags: --text-input defaults to text (the model read nothing but the image, issue
    32). A model that would read nothing usable (no tags, an empty vocabulary, no text) is refused
    before anything is written."""
    rows = "".join(f"p{i},,a {word} photo of a {word},{word},{split}\n" for i, (word, split) in enumerate(
        [("cat", "train"), ("person", "train"), ("cat", "validation"), ("person", "test")] * 2))
    captions = manifest(tmp_path / "captions", rows)
    train.main(["--data", str(captions), "--model", "tags", "--text-threshold", "1", "--out", str(tmp_path / "run"),
                *TINY])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["text_input"] == "text"
    tagged = manifest(tmp_path / "tagged", "".join(",".join(row.split(",")[:2] + [""] + row.split(",")[3:]) + "\n"
                                                   for row in README.splitlines()))  # no captions
    refused = [(captions, ["--text-input", "tags"], "would read nothing usable: no train photo has tags"),
               (tagged, [], "would read nothing usable: its tag vocabulary is empty (--tag-threshold 10 keeps no "
                            "tag of the train split; lower it)"),
               (tagged, ["--text-input", "text", "--text-threshold", "1"], "would read nothing usable: no train photo "
                                                                            "has text")]
    for data, flags, message in refused:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            train.main(["--data", str(data), "--model", "tags", "--out", str(tmp_path / "refused"), *flags, *TINY])
        assert exit_.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
        assert not (tmp_path / "refused").exists()


def test_an_unusable_input_and_random_image_weights_on_real_photos_are_warnings(tmp_path, monkeypatch, capsys):
    data = manifest(tmp_path / "mine", README)
    info = DatasetInfo.load(data)
    from app.model.preprocessor import ContextualPreprocessor
    from app.config import DataConfig

    config = RunConfig(model=ModelConfig(model="contextual"), data=DataConfig(tag_threshold=1))
    preprocessor = ContextualPreprocessor.for_run(config.model, config.data, info)
    assert check_inputs(info, config, preprocessor) == [
        f"a contextual model with --text-input tags on {data}: no train photo has an image, so it learns from its "
        f"tags alone"]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    warning = random_weights_warning(info, config)
    cache = tmp_path / "keras" / "models"
    assert warning.startswith("the image branch's ResNet50 has random weights (--image-weights none)")
    assert f"put resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 in {cache}/" in warning
    assert random_weights_warning(info, RunConfig(model=ModelConfig(model="tags"))) is None
    with pytest.raises(SystemExit):
        train.main(["--data", str(data), "--model", "image", "--image-weights", "imagenet", "--out",
                    str(tmp_path / "run"), "--no-progress"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"ImageNet weights for ResNet50 are not in the Keras cache ({cache / 'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'})" in line
    assert "keras.applications.ResNet50(include_top=False, weights='imagenet')" in line
    assert not (tmp_path / "run").exists()


def test_the_worst_classes_never_repeat_the_best_when_their_aps_tie_and_collection_ids_are_no_mids():
    from app.evaluation.report_data import best_and_worst
    from app.evaluation.run_mode import RunEvaluation

    def evaluation(ap):
        n = len(ap)
        return RunEvaluation(name="run", data="d", split="test", floor=0.0, protocol="challenge",
                             class_mids=[f"c{i}" for i in range(n)], class_names=[f"class {i}" for i in range(n)],
                             levels=[1] * n, positives=[3] * n, summary={"run": {"map": float(np.mean(ap))}},
                             per_class={"run": np.asarray(ap, float)})

    tied = best_and_worst(evaluation([1.0] * 10))
    assert len(tied.best) == len(tied.worst) == 5 and not set(tied.best) & set(tied.worst)
    mixed = best_and_worst(evaluation([0.9, 0.1, 1.0, 0.5, 0.2, 0.7]))
    assert list(mixed.best) == [2, 0, 5] and list(mixed.worst) == [1, 4, 3]
    from app.evaluation.tables import class_table

    assert class_table(evaluation([1.0]), [0]).header[0][:2] == ["class", "class id"]  # a collection's: no "MID"
