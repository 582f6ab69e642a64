import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import pytest

from app.config import RunConfig
from tuning import search
from tuning.hypermodel import TagHyperModel

ROOT = Path(__file__).resolve().parents[1]


def test_limit_and_threshold_change_the_vocabulary_and_input_shape(tiny_world):
    _, data_dir = tiny_world
    hypermodel = TagHyperModel(data_dir, epochs=1)
    shapes = {}
    for limit, threshold in ((2, 2), (10, 2), (10, 20)):
        hp = kt.HyperParameters()
        hp.Fixed("tag_limit", limit)
        hp.Fixed("tag_threshold", threshold)
        model = hypermodel.build(hp)
        shapes[(limit, threshold)] = (model.input["tag_ids"].shape[1], model.get_layer("tag_embedding").input_dim)
    assert shapes[(2, 2)][0] == 2 and shapes[(10, 2)][0] == 10
    assert shapes[(10, 2)][1] > shapes[(10, 20)][1]  # a higher threshold keeps fewer tags
    assert shapes[(2, 2)][1] != shapes[(10, 2)][1]
    cached = hypermodel.lookup(10, 2)
    assert hypermodel.lookup(10, 2) is cached  # built once, reused across trials
    assert shapes[(10, 2)] == (cached.limit, cached.vocab_size)  # the model's shape comes from the lookup


def test_small_search_resumes_and_its_best_config_trains(tiny_world, tmp_path, capsys):
    _, data_dir = tiny_world
    out = tmp_path / "search"
    args = ["--data", str(data_dir), "--max-trials", "2", "--epochs", "2", "--out", str(out)]
    search.main(args)
    assert "one run, no spread" in capsys.readouterr().out  # not "± 0.0000 over 1 runs"
    trials = sorted(p.name for p in out.glob("trial_*"))
    assert len(trials) == 2
    stamps = {p.name: (p / "trial.json").stat().st_mtime_ns for p in out.glob("trial_*")}
    best = search.main(args[:2] + ["--max-trials", "3"] + args[4:] + ["--repeat-top", "1", "--seeds", "2"])
    assert " over 2 runs): " in capsys.readouterr().out  # the best of each cell, re-run with 2 seeds
    assert sorted(p.name for p in out.glob("trial_*")) == trials + ["trial_2"]
    assert all((out / name / "trial.json").stat().st_mtime_ns == stamps[name] for name in trials)  # not redone
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("trial_id")
    scores = [json.loads((out / t / "trial.json").read_text())["score"] for t in trials + ["trial_2"]]
    assert all(0 < s <= 1 for s in scores)  # the objective is validation mAP
    assert 0 < best["mean_map"] <= 1
    for name in ("heatmap_mean.png", "heatmap_std.png", "pooling.png"):
        assert (out / name).stat().st_size > 1000
    config = RunConfig.load(out / "best_config.json")
    assert config.data.tag_limit == best["tag_limit"] and config.model.pooling == best["pooling"]
    assert config.model.image_size == 64 and config.model.image_weights == "none"  # every field is written
    for trial in trials + ["trial_2"]:  # each trial trains into a run folder, like train.py, scored the same way
        run_metrics = json.loads((out / trial / "run" / "metrics.json").read_text())
        assert json.loads((out / trial / "trial.json").read_text())["score"] == pytest.approx(run_metrics["val_map"])
    keras_tuner_in_a_fresh_process(out, data_dir, trials + ["trial_2"])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "app/train.py", "--config", str(out / "best_config.json"), "--data",
                           str(data_dir), "--out", str(tmp_path / "best"), "--epochs", "1", "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert RunConfig.load(tmp_path / "best" / "config.json").data.tag_limit == best["tag_limit"]


def keras_tuner_in_a_fresh_process(out: Path, data_dir: Path, trials: list) -> None:
    """KerasTuner's own API on a finished search: `results_summary()`, `get_best_models()`, and each
    trial's hyperparameters in TensorBoard's HParams data (read with `EventAccumulator`)."""
    code = f"""
import json, sys
import keras, numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tuning.search import open_tuner
tuner = open_tuner({str(out)!r}, {str(data_dir)!r})
tuner.results_summary(num_trials=1)
best = tuner.get_best_models(1)[0]
trial = tuner.oracle.get_best_trials(1)[0]
saved = keras.saving.load_model(tuner.trial_run_dir(trial.trial_id) / "model.keras")
ids = np.arange(best.input["tag_ids"].shape[1], dtype="int32")[None] % 5
assert np.allclose(best({{"tag_ids": ids}}), saved({{"tag_ids": ids}}))
hparams = {{}}
for trial_id in {trials!r}:
    events = EventAccumulator(str(tuner.trial_run_dir(trial_id.split("_")[1]) / "logs"))
    events.Reload()
    data = plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams[trial_id] = {{k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in data.session_start_info.hparams.items()}}
print(json.dumps({{"best": trial.trial_id, "limit": best.input["tag_ids"].shape[1], "hparams": hparams}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary, used = done.stdout.rsplit("\n", 2)[0], json.loads(done.stdout.splitlines()[-1])
    best = max(trials, key=lambda t: json.loads((out / t / "trial.json").read_text())["score"])
    values = json.loads((out / best / "trial.json").read_text())["hyperparameters"]["values"]
    assert f"trial_{used['best']}" == best and used["limit"] == values["tag_limit"]
    assert 'Objective(name="val_map", direction="max")' in summary
    assert all(f"{name}: {values[name]}" in summary for name in values), summary  # every searched value
    for trial in trials:
        logged = json.loads((out / trial / "trial.json").read_text())["hyperparameters"]["values"]
        assert used["hparams"][trial] == pytest.approx(logged), trial


def test_distributed_search_with_a_chief_and_two_workers(tiny_world, tmp_path):
    _, data_dir = tiny_world
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "dist"
    procs = []
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERASTUNER_TUNER_ID": tuner_id,
               "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
        procs.append(subprocess.Popen(
            [sys.executable, "tuning/search.py", "--data", str(data_dir), "--max-trials", "4", "--epochs", "1",
             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for proc in procs:
        try:
            text, _ = proc.communicate(timeout=400)
        finally:
            proc.kill()
        outputs.append(text)
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    assert "search finished" in outputs[0]
    assert all("finished its trials" in o for o in outputs[1:])
    trials = list(out.glob("trial_*"))
    assert len(trials) == 4
    per_worker = [sum(" INFO trial " in line for line in o.splitlines()) for o in outputs[1:]]
    assert sum(per_worker) == 4 and all(n >= 1 for n in per_worker), per_worker  # the workers shared the trials
