"""Early stopping on validation mAP through `train.py`: it stops, keeps its place across a resume,
and a stopped run is complete until it is given more patience."""

from __future__ import annotations

import json

from app import train


def test_a_run_without_validation_gain_stops_early_and_resumes_with_more_patience(tiny_world, tmp_path, capsys):
    _, data_dir = tiny_world
    run = tmp_path / "run"

    def fit(*flags: str):
        # Learning rate 0: the weights never move, so validation mAP never beats epoch 1.
        result = train.main(["--data", str(data_dir), "--out", str(run), "--model", "tags", "--tag-limit", "10",
                             "--tag-threshold", "2", "--embedding-dim", "8", "--hidden-units", "16", "--batch-size",
                             "64", "--learning-rate", "0", "--no-progress", *flags])
        return result, capsys.readouterr().out, json.loads((run / "metrics.json").read_text())

    result, out, metrics = fit("--epochs", "2", "--early-stopping-patience", "2")
    assert len(result.history) == 2 and not metrics["stopped_early"]  # 1 epoch without gain: not yet
    result, out, metrics = fit("--epochs", "6", "--early-stopping-patience", "2")  # goes on from epoch 2
    assert [row["epoch"] for row in result.history] == [1, 2, 3]  # the best epoch (1) came back from the checkpoint
    assert metrics["stopped_early"] and metrics["best_epoch"] == 1 and "stopped early" in out
    for flags in (("--epochs", "6"), ("--epochs", "9")):  # more epochs alone would stop again at once
        result, out, _ = fit(*flags, "--early-stopping-patience", "2")
        assert result.status == "complete" and out.startswith("already complete")
    result, _, metrics = fit("--epochs", "6", "--early-stopping-patience", "3")
    assert result.status == "trained" and metrics["epochs"] == 4 and metrics["stopped_early"]
    result, _, metrics = fit("--epochs", "6", "--early-stopping-patience", "0")  # 0: every epoch
    assert metrics["epochs"] == 6 and not metrics["stopped_early"] and metrics["best_epoch"] == 1
