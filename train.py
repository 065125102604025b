"""Train a model on a task.  python train.py --task copy --model ntm --seed 0 --workdir runs/copy-s0

Thin entry point: parse flags, build a TrainConfig, call lab.trainer.train. `python train.py -h`
lists every flag; each task's defaults are the paper's set-up.
"""
from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    from lab import cli, trainer

    args = cli.train_parser().parse_args(argv)
    cfg = cli.config_from_args(args)
    workdir = args.workdir or f"runs/{cfg.task}-{cfg.model}-s{cfg.seed}"
    summary = trainer.train(cfg, workdir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    print(json.dumps({"workdir": workdir, **summary}))
    return 0


if __name__ == "__main__":
    from lab.cli import run_cli

    sys.exit(run_cli(main))
