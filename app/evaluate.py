"""Score predictions with the Open Images challenge image-level mAP.

Any model's predictions, from CSV files in the Open Images formats:
    python app/evaluate.py --predictions P.csv --labels L.csv --hierarchy H.json [--classes C.csv] [--json]
                           [--protocol challenge|study]

A trained run on its shards, with baselines, more metrics and a report:
    python app/evaluate.py --model saved_models/contextual [--data tfrecords/demo] [--split test]
                           [--floor 0.5] [--compare saved_models/tags saved_models/image] [--report DIR]

A dataset whose class list is not the run's (a run with an embedding head, `train.py --embedding-head`)
is scored zero-shot: each class by the calibrated cosine of the photo's vector with its name, in any
of the text encoder's languages (docs/open-vocabulary.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python app/evaluate.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, guarded, setup_logging  # noqa: E402
from app.evaluation.metrics import PROTOCOLS  # noqa: E402
from app.fileio import refuse_output_over_inputs  # noqa: E402

log = logging.getLogger("evaluate")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csv_mode = p.add_argument_group("CSV mode (any model)")
    csv_mode.add_argument("--predictions", type=Path, help="ImageID,LabelName,Score CSV")
    csv_mode.add_argument("--labels", type=Path, help="human-verified labels CSV (Open Images format)")
    csv_mode.add_argument("--hierarchy", type=Path, help="hierarchy JSON")
    csv_mode.add_argument("--classes", type=Path, help="MID,DisplayName CSV [default: the 500 challenge classes]")
    run_mode = p.add_argument_group("run mode (a trained model)")
    run_mode.add_argument("--model", type=Path, help="run folder, e.g. saved_models/contextual")
    run_mode.add_argument("--data", type=Path, help="dataset folder [default: the one the run was trained on]")
    run_mode.add_argument("--split", default="test", choices=["train", "validation", "test"], help="[default: test]")
    run_mode.add_argument("--floor", type=float, default=0.0,
                          help="scores below this become 0 (0.5 compares fairly with machine labels) [default: 0]")
    run_mode.add_argument("--compare", type=Path, nargs="*", default=[],
                          help="other runs (a tags-only and an image-only one add late fusion)")
    run_mode.add_argument("--report", type=Path, help="write report.md and plots into this folder")
    both = p.add_argument_group("both modes")
    both.add_argument("--protocol", choices=PROTOCOLS, default="challenge",
                      help="challenge: a score of 0 is no prediction; study: every verified (image, class) is a "
                           "detection, 0 included, as the 2020 study scored [default: challenge]")
    both.add_argument("--json", action="store_true", help="print the full result as JSON (every class's AP)")
    add_common_flags(p)
    args = p.parse_args(argv)
    if args.model is None and None in (args.predictions, args.labels, args.hierarchy):
        p.error("give --predictions, --labels and --hierarchy, or --model")
    return args


@guarded
def main(argv=None):
    args = parse_args(argv)
    setup_logging(args.verbose, tensorflow=args.model is not None)
    refuse_output_over_inputs(args.report, _inputs(args), "new", own_mark="report.md")
    if args.model is None:
        from app.evaluation.csv_mode import evaluate_csv
        from app.wording import plural

        result = evaluate_csv(args.predictions, args.labels, args.hierarchy, args.classes, args.protocol)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.json:
            print(json.dumps({**dataclasses.asdict(result), "protocol": args.protocol}, indent=2))
        else:
            print(f"mAP {result.map:.6f} over {plural(result.classes_scored, 'class')}, {plural(result.images, 'image')} "
                  f"({args.protocol} protocol)")
        return result
    if _other_classes(args):
        return _zero_shot(args)
    from app.evaluation.run_mode import evaluate_run

    result = evaluate_run(args.model, args.data, args.split, args.floor, args.compare, args.protocol,
                          progress=not args.no_progress and sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_summary(result))
    if args.report:
        from app.evaluation.report import write_report

        files = write_report(args.report, result)
        print(f"  report: {args.report}/ ({', '.join(files)})", file=sys.stderr if args.json else sys.stdout)
    return result


def _other_classes(args: argparse.Namespace) -> bool:
    """Whether `--data` holds another class list than the run was trained on."""
    if args.data is None:
        return False
    from app.records.dataset import DatasetInfo
    from app.runs.rundir import RunDir

    return [m for m, _ in DatasetInfo.load(args.data).classes] != [m for m, _ in RunDir(args.model).load_classes()]


def _zero_shot(args: argparse.Namespace) -> dict:
    """Another class list: every class scored zero-shot by the run's embedding head."""
    from app.errors import InputError
    from app.evaluation.zero_shot import evaluate_zero_shot
    from app.wording import plural

    if args.compare or args.report or args.floor:
        raise InputError(f"{args.data} has another class list than {args.model}: it is scored zero-shot, without "
                         f"--compare, --report or --floor")
    result = evaluate_zero_shot(args.model, args.data, args.split, args.protocol)
    from app.evaluation.reliability import small_split_warning

    warning = small_split_warning(args.split, result["images"])
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
        result["warnings"] = [warning]
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(f"zero-shot ({args.data} has another class list; the run's embedding head): mAP {result['map']:.4f} "
              f"over {plural(result['classes_scored'], 'class')} ({result['new_classes']} never trained on), "
              f"{plural(result['images'], 'image')}, {args.split} split ({args.protocol} protocol)")
    return result


def _inputs(args: argparse.Namespace) -> dict:
    """Every file and folder the command reads, the run's own dataset included (`--data` by default)."""
    data = args.data
    if data is None and args.model is not None and args.report is not None:
        from app.runs.rundir import RunDir

        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # (no record: evaluate_run says)
            data = RunDir(args.model).data_dir
    return {"--model": args.model, "--data": data, "--predictions": args.predictions, "--labels": args.labels,
            "--hierarchy": args.hierarchy, "--classes": args.classes, **{f"--compare {run}": run for run in args.compare}}


def format_summary(result) -> str:
    """The comparison table and the slices table, for the terminal.

    Args:
        result: a `RunEvaluation`.

    Returns:
        The lines, joined.
    """
    from app.evaluation.tables import exhaustive_table, headline, slice_table, summary_table, text

    lines = [headline(result), *(f"warning: {warning}" for warning in result.warnings), *text(summary_table(result))]
    if result.exhaustive:
        lines += ["exhaustive labels (every photo scored for every class; app/evaluation/exhaustive.py):",
                  *text(exhaustive_table(result))]
    if result.slices:
        lines += ["mAP on slices of photos (each over the classes with a verified positive among its photos):",
                  *text(slice_table(result, list(result.slices), group_line=True))]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
