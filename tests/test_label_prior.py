"""The label prior (each class scored by its train frequency) in evaluate's exhaustive table, against
hand-computed figures."""

from __future__ import annotations

import numpy as np
import pytest

from app import evaluate, prepare, train
from app.evaluation.baselines import label_prior

# Train: a in 3 of 4 photos, b in 2, c in 1. Test: x1 has c, x2 a and b, x3 b.
PHOTOS = """id,tags,labels,split
t1,x|y,a|b,train
t2,x,a,train
t3,y,a|c,train
t4,z,b,train
v1,x,a,validation
x1,y,c,test
x2,x,a|b,test
x3,z,b,test
"""


def test_label_prior_is_the_train_frequency():
    np.testing.assert_allclose(label_prior([3, 2, 0, 0], [1, 2, 4, 0]), [0.75, 0.5, 0.0, 0.0])


def test_label_prior_row_of_the_exhaustive_table_matches_the_hand_computation(tmp_path, capsys):
    (tmp_path / "photos.csv").write_text(PHOTOS)
    (tmp_path / "classes.csv").write_text("a\nb\nc\n")
    data, run = tmp_path / "data", tmp_path / "run"
    prepare.main(["--manifest", str(tmp_path / "photos.csv"), "--classes", str(tmp_path / "classes.csv"),
                  "--tag-threshold", "1", "--out", str(data), "--no-progress"])
    train.main(["--data", str(data), "--model", "tags", "--tag-threshold", "1", "--embedding-dim", "4",
                "--hidden-units", "4", "--epochs", "1", "--out", str(run), "--no-progress"])
    capsys.readouterr()
    result = evaluate.main(["--model", str(run)])
    prior = result.exhaustive["label prior"]
    # Every test photo ranks a (0.75) > b (0.5) > c (0.25): x1's positive is 3rd (AP 1/3), x2's are 1st and
    # 2nd (AP 1), x3's is 2nd (AP 1/2).
    assert prior["photo_map"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    # One score per class ties every photo: each class's AP is its test frequency (1/3, 2/3, 1/3).
    assert prior["class_map"] == pytest.approx(4 / 9)
    # Top-3 of 3 classes: every class predicted for every photo, 4 of the 9 right, every positive found.
    assert prior["top_k"]["op"] == pytest.approx(4 / 9) and prior["top_k"]["orecall"] == pytest.approx(1.0)
    assert result.exhaustive["most likely"]["photo_map"] < prior["photo_map"]  # its 0/1 scores tie b with c
    assert "label prior" in capsys.readouterr().out
