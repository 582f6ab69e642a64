"""The dataset folder is replaced whole, and readers refuse an incomplete or mixed one; bad
settings fail with one line before anything is written."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import evaluate, prepare, train
from app.records.dataset import DatasetError, DatasetInfo

ROOT = Path(__file__).resolve().parents[1]


def copy_dataset(data_dir: Path, to: Path) -> Path:
    shutil.copytree(data_dir, to, symlinks=True)
    return to


def one_line_error(capsys, call, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        call(*args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err and err[-1].startswith("error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


def test_a_killed_prepare_leaves_the_old_dataset_as_it_was(tmp_path):
    out = tmp_path / "demo"
    first = prepare.main(["--demo", "--demo-size", "60", "--out", str(out), "--no-progress"])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "app/prepare.py", "--demo", "--demo-size", "3000", "--seed", "5",
                             "--out", str(out), "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120  # kill it while it writes the new dataset beside the old one
    while time.time() < deadline and not list(tmp_path.glob(".demo.tmp-*/raw/images/*.jpg")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".demo.tmp-*")), "the kill came too late to test anything"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert DatasetInfo.load(out).fingerprint == first["fingerprint"]
    again = prepare.main(["--demo", "--demo-size", "60", "--out", str(out), "--no-progress"])
    assert again["fingerprint"] == first["fingerprint"]  # same seed, same bytes
    assert not list(tmp_path.glob(".demo.*-*"))  # the killed run's temporary folder is cleared


def test_incomplete_truncated_or_mixed_folders_are_refused_by_every_reader(tiny_world, tmp_path, capsys):
    _, data_dir = tiny_world
    no_marker = copy_dataset(data_dir, tmp_path / "no_marker")
    (no_marker / "dataset.json").unlink()
    truncated = copy_dataset(data_dir, tmp_path / "truncated")
    shard = sorted(truncated.glob("train-*.tfrecord"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    mixed = copy_dataset(data_dir, tmp_path / "mixed")
    shutil.copy(sorted(mixed.glob("train-*.tfrecord"))[0], mixed / "train-00000-of-00009.tfrecord")
    cases = [(no_marker, "incomplete dataset (no dataset.json"), (truncated, f"{shard}: "),
             (mixed, "train-00000-of-00009.tfrecord: a shard that the prepare run")]
    for folder, message in cases:
        with pytest.raises(DatasetError, match=message.replace("(", r"\(")):
            DatasetInfo.load(folder)
        line = one_line_error(capsys, train.main, ["--data", str(folder), "--out", str(tmp_path / "run"),
                                                   "--model", "tags", "--no-progress"])
        assert message in line and "prepare.py" in line
        assert not (tmp_path / "run").exists()
    from tuning import search

    line = one_line_error(capsys, search.main, ["--data", str(truncated), "--out", str(tmp_path / "search")])
    assert str(shard) in line


def test_a_changed_byte_in_a_shard_is_an_error_that_names_the_shard(tiny_world, tmp_path, capsys):
    _, data_dir = tiny_world
    folder = copy_dataset(data_dir, tmp_path / "flipped")
    shard = sorted(folder.glob("train-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1  # same size: DatasetInfo.load accepts it; the record's CRC does not
    shard.write_bytes(bytes(data))
    line = one_line_error(capsys, train.main, ["--data", str(folder), "--out", str(tmp_path / "run"), "--model",
                                               "tags", "--epochs", "1", "--no-progress"])
    assert line.startswith(f"error: {shard}: corrupt shard") and "prepare.py" in line, line


def test_bad_settings_fail_before_anything_is_written(tiny_world, tmp_path, capsys, monkeypatch):
    _, data_dir = tiny_world
    line = one_line_error(capsys, prepare.main, ["--demo", "--out", str(tmp_path / "d"), "--records-per-shard", "0"])
    assert "records_per_shard must be a finite number >= 1. Received: records_per_shard=0" in line
    assert not (tmp_path / "d").exists()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"train": {"epochs": "2"}}))
    line = one_line_error(capsys, train.main, ["--data", str(data_dir), "--config", str(config),
                                               "--out", str(tmp_path / "run")])
    assert f"{config}: train.epochs must be int. Received: '2'" in line
    config.write_text('{"model": {"pooling": "max",}}')
    assert f"{config}:1: not valid JSON" in one_line_error(capsys, train.main, ["--config", str(config)])
    import keras

    monkeypatch.setattr(keras.config, "keras_home", lambda: str(tmp_path / "empty_keras_home"), raising=False)
    line = one_line_error(capsys, train.main, ["--data", str(data_dir), "--out", str(tmp_path / "run"), "--model",
                                               "image", "--image-weights", "imagenet", "--no-progress"])
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in line and "Nothing is downloaded" in line
    assert not (tmp_path / "run").exists()
    missing = one_line_error(capsys, evaluate.main, ["--model", str(tmp_path / "nothing_here")])
    assert "no trained run here" in missing


def test_an_empty_validation_split_is_refused(tmp_path, capsys):
    from bench.synthetic import write_dataset

    info = write_dataset(tmp_path / "data", {"train": 40, "validation": 0, "test": 10}, vocab_size=50, limit=5,
                         per_shard=64, min_shards=1, num_classes=500)
    line = one_line_error(capsys, train.main, ["--data", str(info.data_dir), "--out", str(tmp_path / "run"),
                                               "--model", "tags", "--no-progress"])
    assert "the validation split is empty" in line and not (tmp_path / "run").exists()


def _full_disk(limit_bytes: int):
    """A child process whose writes past `limit_bytes` fail with EFBIG, as on a full disk."""
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_full_disk_is_one_line_and_loses_nothing(tiny_world, tmp_path):
    _, data_dir = tiny_world
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "demo"
    prepare.main(["--demo", "--demo-size", "60", "--out", str(out), "--no-progress"])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    full = subprocess.run([sys.executable, "app/prepare.py", "--demo", "--demo-size", "200", "--seed", "4", "--out",
                           str(out), "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                          preexec_fn=_full_disk(300_000), timeout=300)
    assert full.returncode == 2 and full.stderr.strip().splitlines()[-1] == \
        f"error: File too large (while writing {out})", full.stderr[-1000:]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list(tmp_path.glob(".demo.tmp-*"))
    flags = ["app/train.py", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--model", "tags",
             "--tag-limit", "10", "--tag-threshold", "2", "--epochs", "1", "--no-progress"]
    full = subprocess.run([sys.executable, *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                          preexec_fn=_full_disk(150_000), timeout=300)
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert full.stderr.strip().splitlines()[-1] == f"error: File too large (while writing {tmp_path / 'run'})"
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp" in p.name]  # no half-written file
    room = subprocess.run([sys.executable, *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert room.returncode == 0 and "trained tags model" in room.stdout, room.stderr[-1000:]
