"""Train a model on a task.  python train.py --task copy --model ntm --seed 0 --workdir runs/copy-s0

Or every model of a named experiment:  python train.py --experiment argmax-extrapolation
Thin entry point: parse flags, build configs, call lab.trainer.train. `python train.py -h`
lists every flag; each task's defaults are the paper's set-up.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from lab import cli, trainer

    args = cli.train_parser().parse_args(argv)
    cli.use_every_core()  # one CPU device per core unless the user chose (before JAX starts)
    trainer.maybe_initialize_distributed()
    if args.experiment:
        return run_experiment(args)
    cfg = cli.config_from_args(args)
    workdir = args.workdir or f"runs/{cfg.task}-{cfg.model}-s{cfg.seed}"
    summary = trainer.train(cfg, workdir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
                            wandb_project=args.wandb)
    print(json.dumps({"workdir": workdir, **summary}))
    return 0


def run_experiment(args) -> int:
    """Train every (model, seed) of a preset; finished runs are kept and skipped, interrupted ones resumed."""
    from lab import experiments, trainer
    from lab.checkpoint import Checkpointer

    exp = experiments.get(args.experiment)
    if args.task_option:
        raise ValueError("--task-option sets a single run's task; a preset fixes its own (lab/experiments.py)")
    for name, cfg in exp.runs(args.models, args.seeds, args.runs_root):
        if args.steps is not None:
            cfg = dataclasses.replace(cfg, steps=args.steps, checkpoint_every=min(cfg.checkpoint_every, args.steps))
        # how a preset runs (not what it computes) may be chosen here: devices, the NTM's fused kernel
        cfg = dataclasses.replace(cfg, devices=args.devices)
        if args.fused_memory is not None:
            cfg = dataclasses.replace(cfg, model_config=dataclasses.replace(cfg.model_config, fused_memory=args.fused_memory))
        workdir = Path(args.runs_root) / exp.name / name
        if not args.overwrite and (workdir / "checkpoints").is_dir():
            ck = Checkpointer(workdir / "checkpoints")
            done = (ck.latest_step() or 0) >= cfg.steps
            ck.close()
            if done:
                print(f"{workdir}: finished already, kept", file=sys.stderr)
                continue
        print(f"== {exp.name}: {name} ({cfg.model}, {cfg.steps} steps x {cfg.batch_size})", file=sys.stderr)
        summary = trainer.train(cfg, workdir, resume=not args.overwrite, overwrite=args.overwrite,
                                progress=not args.no_progress, wandb_project=args.wandb)
        print(json.dumps({"workdir": str(workdir), **summary}))
    return 0


if __name__ == "__main__":
    from lab.cli import run_cli

    sys.exit(run_cli(main))
