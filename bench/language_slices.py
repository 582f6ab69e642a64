"""Test mAP per tag language of trained runs, paired over seeds against a control arm.

The demo world's photos are tagged in five languages (English 75%, then German, French, Spanish,
Italian); a tag's language is the one pycld2 detects on the photo's tags (`un`: undetected). For
each arm (a list of run folders, one per seed, in seed order) this prints the test mAP (Open Images
protocol) of each language slice, mean ± std, and the paired difference with the first arm.

    python bench/language_slices.py --data tfrecords/demo \\
        --arm "scratch=RUNS/model-tags-seed{0,1,2}" --arm "frozen=RUNS/model-tags-word-vectors-frozen-seed{0,1,2}"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.evaluation.metrics import sparse_mean_average_precision  # noqa: E402
from app.evaluation.scoring import TrainedModel  # noqa: E402
from app.evaluation.truth import load_truth  # noqa: E402
from app.records.dataset import DatasetInfo  # noqa: E402
from tuning.paired import PairedDifference, mean_std  # noqa: E402

LANGUAGES = ("all", "en", "de", "fr", "es", "it", "un")


def slice_maps(run: Path, info: DatasetInfo, truth) -> dict:
    """`{language: test mAP}` of one run."""
    scores = TrainedModel(run).score(info, "test", truth)
    out = {"all": sparse_mean_average_precision(truth.pairs, scores)}
    for code in LANGUAGES[1:]:
        rows = truth.language_is(code)
        if rows.any():
            pairs, kept = truth.pairs.select(rows)
            out[code] = sparse_mean_average_precision(pairs, scores[kept])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--arm", action="append", required=True, help="NAME=RUN_DIR{seed,seed,...}, the first: the control")
    args = p.parse_args()
    info = DatasetInfo.load(args.data)
    truth = load_truth(info, "test")
    arms = {}
    for spec in args.arm:
        name, _, pattern = spec.partition("=")
        head, _, rest = pattern.partition("{")
        seeds, _, tail = rest.partition("}")
        arms[name] = [slice_maps(Path(f"{head}{s}{tail}"), info, truth) for s in seeds.split(",")]
    sizes = {code: int(truth.language_is(code).sum()) for code in LANGUAGES[1:]}
    control = next(iter(arms))
    print("| language (test photos) | " + " | ".join(arms) + " | " +
          " | ".join(f"{a} − {control}" for a in list(arms)[1:]) + " |")
    print("|---" * (2 * len(arms)) + "|")
    for code in LANGUAGES:
        if code not in arms[control][0]:
            continue
        values = {a: [r[code] for r in runs] for a, runs in arms.items()}
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (mean_std(v) for v in values.values())]
        diffs = [str(PairedDifference.of(values[a], values[control])) for a in list(arms)[1:]]
        size = len(truth.image_ids) if code == "all" else sizes[code]
        print(f"| {code} ({size}) | " + " | ".join(cells + diffs) + " |")


if __name__ == "__main__":
    main()
