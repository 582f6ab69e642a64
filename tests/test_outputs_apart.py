"""Issue 24: every command refuses an output that is, holds or would replace one of its inputs (through
symbolic links, hard links and `..`), before it writes anything."""

import json
import os
import shutil

import pytest

from app import download, evaluate, export, predict, prepare, train


def refused(capsys, main, argv) -> str:
    """Runs a command that must stop with one `error:` line and exit code 2; returns the line."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "choose another output" in err
    return err


def snapshot(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_refuses_an_output_over_its_sources(tiny_world, tmp_path, capsys):
    sources, _ = tiny_world
    root = tmp_path / "data"
    shutil.copytree(sources.oid.classes.parent, root / "oid")
    shutil.copy(sources.yfcc, root / "yfcc100m_dataset")
    (tmp_path / "link").symlink_to(root)
    os.link(root / "yfcc100m_dataset", tmp_path / "hard")
    before = snapshot(root)
    argv = ["--oid-dir", str(root / "oid"), "--yfcc", str(root / "yfcc100m_dataset"), "--no-progress", "--out"]
    for out, why in ((root, "holds the input --oid-dir"), (tmp_path / "link", "holds the input --oid-dir"),
                     (root / "oid" / ".." / "..", "holds the input --oid-dir"),
                     (root / "oid" / "new", "lies inside the input --oid-dir"),
                     (tmp_path / "hard", "is the input --yfcc")):
        assert why in refused(capsys, prepare.main, argv + [str(out)])
    assert snapshot(root) == before and not (root / "oid" / "new").exists()
    prepare.main(argv + [str(tmp_path / "ds")])
    capsys.readouterr()
    assert not [p.name for p in (tmp_path / "ds").iterdir() if p.name.startswith(".")]  # no leftover temporaries
    (tmp_path / "ds" / "my-run").mkdir()
    (tmp_path / "ds" / "my-run" / "model.keras").write_text("keep me")  # a re-prepare would delete it
    with pytest.raises(SystemExit):
        prepare.main(argv + [str(tmp_path / "ds")])
    assert "my-run: not a part of the dataset" in capsys.readouterr().err
    assert (tmp_path / "ds" / "my-run" / "model.keras").read_text() == "keep me"


def test_predict_evaluate_export_train_download_and_search_refuse_their_inputs(tmp_path, capsys):
    from tuning import compare, search

    run = tmp_path / "run"
    (run / "serving").mkdir(parents=True)
    (run / "model.keras").write_bytes(b"weights")
    rows = tmp_path / "photos.csv"
    rows.write_text("image_path,tags\n,dog\n")
    (tmp_path / "same.csv").symlink_to(rows)
    os.link(rows, tmp_path / "hard.csv")
    (tmp_path / "data").mkdir()
    (run / "run.json").write_text(json.dumps({"data": str(tmp_path / "data")}))  # the run's own dataset
    before = snapshot(tmp_path)
    base = ["--model", str(run), "--input", str(rows), "--output"]
    assert "is the input --input" in refused(capsys, predict.main, base + [str(rows)])
    assert "is the input --input" in refused(capsys, predict.main, base + [str(tmp_path / "same.csv")])
    assert "is the input --input" in refused(capsys, predict.main, base + [str(tmp_path / "hard.csv")])
    assert "would replace a part of the input --model" in refused(capsys, predict.main,
                                                                  base + [str(run / "model.keras")])
    report = ["--model", str(run), "--no-progress", "--report"]
    assert "is the input --model" in refused(capsys, evaluate.main, report + [str(run / "serving" / "..")])
    assert "would replace a part of" in refused(capsys, evaluate.main, report + [str(run / "serving")])
    assert "is the input --data" in refused(capsys, evaluate.main, report + [str(tmp_path / "data")])
    assert "holds the input --model" in refused(capsys, export.main, ["--model", str(run), "--out", str(tmp_path)])
    assert "is the input --data" in refused(capsys, train.main, ["--data", str(run), "--out", str(run),
                                                                 "--no-progress"])
    assert "is the input --oid-dir" in refused(capsys, download.main, ["--oid-dir", str(run), "--out", str(run)])
    assert "holds the input --data" in refused(capsys, search.main, ["--data", str(run), "--out", str(tmp_path)])
    assert "holds the input --data" in refused(capsys, compare.main, ["--data", str(run), "--out", str(tmp_path),
                                                                       "--name", "x"])
    assert "lies inside the input --data" in refused(capsys, train.main, ["--data", str(run), "--out", str(run / "r"),
                                                                          "--no-progress"])
    assert snapshot(tmp_path) == before
