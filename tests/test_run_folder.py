"""The run folder as a user meets it, through the command lines: finished runs are reported, not
retrained; other data or config are refused before anything is written; one process per folder;
kill -9 resumes exactly; predict without an export; the documented multi-worker command."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from app.runs.rundir import RunDir
from app.training.run import RunOptions, train
from conftest import with_flag

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--tag-limit", "10", "--tag-threshold", "2", "--embedding-dim", "16", "--hidden-units", "32",
        "--image-size", "32", "--batch-size", "32", "--epochs", "2", "--no-progress"]


def cli(workspace: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs `python app/X.py ARGS` in the user's workspace (relative paths resolve there)."""
    script, *rest = args
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *rest], cwd=workspace, capture_output=True, text=True,
                          env=env, timeout=timeout)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tiny_world, tmp_path_factory):
    """A user's folder: tfrecords/demo is the tiny world, and a tags model is trained."""
    _, data_dir = tiny_world
    root = tmp_path_factory.mktemp("user")
    (root / "tfrecords").mkdir()
    (root / "tfrecords" / "demo").symlink_to(data_dir)
    done = cli(root, "app/train.py", "--model", "tags", *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained tags model for 2 epochs" in done.stdout
    return root


def test_rerun_of_a_finished_run_reports_it_and_trains_nothing(workspace):
    before = snapshot(workspace / "saved_models" / "tags")
    done = cli(workspace, "app/train.py", "--model", "tags", *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("already complete: saved_models/tags/") and "nothing was trained now" in done.stdout
    metrics = json.loads((workspace / "saved_models" / "tags" / "metrics.json").read_text())
    assert f"test mAP {metrics['test_map']:.4f}" in done.stdout and "trained tags model" not in done.stdout
    assert snapshot(workspace / "saved_models" / "tags") == before


def test_other_data_config_or_flags_are_refused_before_anything_is_written(workspace, tmp_path):
    run = workspace / "saved_models" / "tags"
    before = snapshot(run)
    other = tmp_path / "other"
    made = cli(workspace, "app/prepare.py", "--demo", "--demo-size", "60", "--seed", "9", "--tag-threshold", "2",
               "--out", str(other), "--no-progress")
    assert made.returncode == 0, made.stderr[-2000:]
    best = tmp_path / "best_config.json"  # what a tuning search writes
    RunConfig(data=DataConfig(tag_limit=5, tag_threshold=2), model=ModelConfig(model="tags"),
              train=TrainConfig(epochs=2)).save(best)
    cases = [(["--model", "tags", *TINY, "--data", str(other)], "dataset "),
             (["--model", "tags", *with_flag(TINY, "--hidden-units", "64")], "model.hidden_units 32 -> 64"),
             (["--config", str(best), "--name", "tags"], "data.tag_limit 10 -> 5")]
    for flags, difference in cases:
        done = cli(workspace, "app/train.py", *flags)
        assert done.returncode == 2, done.stdout + done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("error: saved_models/tags holds another run (") and difference in lines[-1]
        assert "--overwrite" in lines[-1] and "Traceback" not in done.stderr
        assert snapshot(run) == before  # config.json, vocab.tsv, model: untouched
    scored = cli(workspace, "app/evaluate.py", "--model", "saved_models/tags", "--json")
    assert scored.returncode == 0, scored.stderr[-2000:]  # the run still evaluates
    assert json.loads(scored.stdout)["name"] == "tags"
    replaced = cli(workspace, "app/train.py", "--model", "tags", *with_flag(TINY, "--hidden-units", "24"), "--name",
                   "replaced")
    assert replaced.returncode == 0
    again = cli(workspace, "app/train.py", "--model", "tags", *with_flag(TINY, "--hidden-units", "16"), "--name",
                "replaced", "--overwrite")
    assert again.returncode == 0 and "trained tags model" in again.stdout, again.stderr[-2000:]
    assert RunDir(workspace / "saved_models" / "replaced").load_config().model.hidden_units == 16


def test_a_second_process_on_the_same_folder_gets_a_clear_error(workspace):
    with RunDir(workspace / "saved_models" / "tags").lock():
        done = cli(workspace, "app/train.py", "--model", "tags", *TINY)
    assert done.returncode == 2
    assert f"error: saved_models/tags is in use by another process (pid {os.getpid()})" in done.stderr


def test_kill_9_mid_run_then_rerun_reaches_the_uninterrupted_weights(workspace, tiny_world):
    _, data_dir = tiny_world
    flags = with_flag(TINY, "--epochs", "8")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app/train.py"), "--model", "tags", "--name", "killed",
                             *flags], cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = workspace / "saved_models" / "killed" / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and (not history.exists() or len(history.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (workspace / "saved_models" / "killed" / "metrics.json").exists()  # really killed mid-run
    done = cli(workspace, "app/train.py", "--model", "tags", "--name", "killed", *flags)
    assert done.returncode == 0 and "trained tags model for 8 epochs" in done.stdout, done.stderr[-2000:]
    config = RunDir(workspace / "saved_models" / "killed").load_config()
    whole = train(data_dir, workspace / "whole", config, RunOptions(progress=False))
    for a, b in zip(keras.saving.load_model(workspace / "whole" / "model.keras").get_weights(),
                    keras.saving.load_model(workspace / "saved_models" / "killed" / "model.keras").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert json.loads((workspace / "saved_models" / "killed" / "metrics.json").read_text())["test_map"] == \
        pytest.approx(whole.metrics["test_map"], abs=1e-6)


def test_predict_on_a_run_that_was_never_exported(workspace):
    assert not (workspace / "saved_models" / "tags" / "serving").exists()
    done = cli(workspace, "app/predict.py", "--model", "saved_models/tags", "--tags", "dog,hund")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["top_k"][0]["mid"].startswith("/m/")


def readme_command(pattern: str) -> list:
    """The documented command line (docs/training.md) matching `pattern`, split into arguments after `python`."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    line = next(line.strip() for line in text.splitlines() if re.search(pattern, line))
    words = line.split()
    assert words[0] == "python", line
    return words[1:]


def test_the_readme_multi_worker_command_after_the_other_readme_steps(workspace):
    command = readme_command(r"--local-workers 2")
    done = cli(workspace, *command, *TINY, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "[worker 0] trained tags model for 2 epochs" in done.stdout
    assert "[worker 1] worker finished 2 epochs" in done.stdout
    name = command[command.index("--name") + 1]
    losses = [[line.split("loss=")[1].split(",")[0] for line in done.stdout.splitlines()
               if f"[worker {i}]" in line and "epoch 2/2:" in line] for i in (0, 1)]
    assert losses[0] == losses[1] and losses[0]  # one model, trained in lockstep
    again = cli(workspace, *command, *TINY, timeout=400)  # finished: every worker agrees, nothing hangs
    assert again.returncode == 0 and "[worker 0] already complete" in again.stdout, again.stdout[-2000:]
    refused = cli(workspace, *command, *with_flag(TINY, "--hidden-units", "48"), timeout=400)
    assert refused.returncode == 2, refused.stdout[-2000:]
    assert f"saved_models/{name} holds another run" in refused.stdout


def _swap_two_vocabulary_words(path: Path) -> None:
    header, first, second, *rest = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([header, second, first, *rest]), encoding="utf-8")


EDITS = {"vocab.tsv": _swap_two_vocabulary_words,
         "preprocessor.json": lambda p: p.write_text(p.read_text().replace('"inputs"', '"inputs" '), encoding="utf-8"),
         "thresholds.json": lambda p: p.write_text(p.read_text().replace("0.", "0.0", 1), encoding="utf-8")}


def test_an_edited_run_folder_is_refused_by_train_export_predict_and_evaluate(workspace, tiny_world, tmp_path, capsys):
    """Any edit of a file the run wrote (here: two words swapped in vocab.tsv, a space in
    preprocessor.json, one threshold) is one error line naming it from each command; the refused
    export leaves nothing behind (were accepted, with other scores, issue 32)."""
    from app import evaluate, export, predict
    from app import train as train_cli

    _, data_dir = tiny_world
    for name, edit in EDITS.items():
        run = tmp_path / name
        shutil.copytree(workspace / "saved_models" / "tags", run)
        edit(run / name)
        commands = [(train_cli, ["--model", "tags", *TINY, "--data", str(data_dir), "--out", str(run)]),
                    (export, ["--model", str(run)]), (predict, ["--model", str(run), "--tags", "dog"]),
                    (evaluate, ["--model", str(run), "--data", str(data_dir)])]
        for command, argv in commands:
            with pytest.raises(SystemExit) as exit_:
                command.main(argv)
            err = capsys.readouterr().err.strip().splitlines()
            assert exit_.value.code == 2 and not any("Traceback" in line for line in err) and err[-1] == (
                f"error: {run / name}: edited since the run wrote it (its size or SHA-256 is not the one run.json "
                f"records); restore it, or retrain the run (python app/train.py ... --overwrite)"), (command, err)
        assert not (run / "serving").exists()


def test_a_setting_newer_than_a_run_is_no_difference_at_its_default():
    """A run recorded before a setting existed computed what its default computes: it resumes, not refused."""
    from app.runs.rundir import Fingerprint

    config = RunConfig(model=ModelConfig(model="contextual")).fingerprint()
    older = {section: dict(fields) for section, fields in config.items()}
    del older["model"]["branch_scores"]
    assert Fingerprint("d", older, "1").differences(Fingerprint("d", config, "1")) == []
    config["model"]["branch_scores"] = True  # but asking for it is another run
    assert Fingerprint("d", older, "1").differences(Fingerprint("d", config, "1")) == [
        "model.branch_scores None -> True"]
