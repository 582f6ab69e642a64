"""Pseudo-label the YFCC100M photos outside Open Images with a trained teacher, for a student.

    python app/pseudo_label.py --teacher saved_models/contextual --out tfrecords/demo-taught
    python app/train.py --model image --data tfrecords/demo-taught --name student

The teacher (any finished run) scores every photo of the dataset's `yfcc` split. The new dataset
folder OUT holds the dataset's Open Images train photos plus the selected yfcc photos, with the
teacher's scores as soft targets, and the same validation and test photos (shards are hard-linked,
not copied). Selection: each class's top K photos (Yalniz et al.), or a minimum score. See
app/training/teacher.py. With --ray, Ray actors (one per GPU, or per CPU) score the shards, each
loading the teacher once (docs/scale.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python app/pseudo_label.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, add_config_flags, config_overrides, guarded, setup_logging  # noqa: E402
from app.config import DistributeConfig, PseudoLabelConfig  # noqa: E402
from app.distributor import add_distribute_flags, make_distributor  # noqa: E402


@guarded
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="(required) a finished run folder, e.g. "
                                                              "saved_models/contextual")
    p.add_argument("--data", type=Path,
                   help="the dataset with the yfcc split to label [default: the one the teacher was trained on]")
    p.add_argument("--out", type=Path, required=True, help="(required) the new dataset folder")
    add_config_flags(p, PseudoLabelConfig, "pseudo")
    add_distribute_flags(p)
    add_common_flags(p)
    args = p.parse_args(argv)
    config = PseudoLabelConfig(**config_overrides(args, "pseudo"))
    distribute = DistributeConfig(**config_overrides(args, "distribute"))
    setup_logging(args.verbose)
    from app.runs.rundir import RunDir
    from app.training.teacher import pseudo_label

    data = args.data or RunDir(args.teacher).require_complete().data_dir
    distributor = make_distributor(distribute)
    try:
        stats = pseudo_label(args.teacher, data, args.out, config, progress=not args.no_progress and sys.stderr.isatty(),
                             distributor=distributor)
    finally:
        distributor.close()
    print(f"wrote {args.out}/: {stats['kept']} of {stats['scored']} yfcc photos pseudo-labelled by {args.teacher} "
          f"({stats['teacher_model']} model); train it with: python app/train.py --data {args.out} --model image")
    return stats


if __name__ == "__main__":
    main()
