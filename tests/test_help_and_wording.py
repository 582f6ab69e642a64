"""What a new user reads (issue 32, item 10): help without `(default: None)`, flags explained,
counts in the singular when there is one."""

from __future__ import annotations

import json

import pytest

from app import download, evaluate, prepare


def help_text(main, capsys) -> str:
    with pytest.raises(SystemExit):
        main(["--help"])
    return " ".join(capsys.readouterr().out.split())


def test_download_help_shows_no_empty_defaults_and_has_verbose(capsys):
    text = help_text(download.parse_args, capsys)
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "--out IMAGES_DIR images folder (IMAGES_DIR) for prepare --images --split" in text  # required: no default
    assert "--verbose" in text and "(default: 640)" in text


def test_prepare_help_explains_the_tag_limit_and_threshold(capsys):
    text = help_text(prepare.main, capsys)
    assert "counts each train photo's first TAG_LIMIT tags" in text
    assert "a tag enters that vocabulary when it is among the first TAG_LIMIT tags of at least TAG_THRESHOLD" in text
    assert "A small collection needs a small threshold" in text


def test_one_class_and_one_image_are_singular(tmp_path, capsys):
    (tmp_path / "c.csv").write_text("cat,cat\n")
    (tmp_path / "h.json").write_text(json.dumps({"LabelName": "(root)", "Subcategory": [{"LabelName": "cat"}]}))
    (tmp_path / "labels.csv").write_text("ImageID,Source,LabelName,Confidence\nphoto a,x,cat,1\n")
    (tmp_path / "p.csv").write_text("ImageID,LabelName,Score\nphoto a,cat,0.9\n")
    evaluate.main(["--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "labels.csv"),
                   "--hierarchy", str(tmp_path / "h.json"), "--classes", str(tmp_path / "c.csv")])
    assert capsys.readouterr().out == "mAP 1.000000 over 1 class, 1 image (challenge protocol)\n"
