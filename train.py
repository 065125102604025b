"""Train a model on a task.  python train.py --task copy --model ntm --seed 0 --workdir runs/copy-s0

Or every model of a named preset:  python train.py --experiment argmax-quick [--set lr=1e-3]
Or a recipe (chains of stages, several seeds, a report):  python train.py --recipe argmax-search --seeds 0 1
Thin entry point: parse flags, build configs, call lab.trainer.train. `python train.py -h`
lists every flag; each task's defaults are the paper's set-up.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from lab import cli, parallel, trainer

    args = cli.train_parser().parse_args(argv)
    cli.use_every_core()  # one CPU device per core unless the user chose (before JAX starts)
    parallel.maybe_initialize_distributed()
    for flag in ("experiment", "recipe", "runs_root"):
        if getattr(args, flag) is not None and not getattr(args, flag).strip():
            raise ValueError(f"--{flag.replace('_', '-')} is empty")
    if args.recipe or args.experiment:
        return run_preset(args)
    if args.with_parents:
        raise ValueError("--with-parents goes with --experiment NAME")
    from lab import overrides

    cfg = overrides.apply(cli.config_from_args(args), args.overrides)
    if args.workdir is not None and not args.workdir.strip():
        raise ValueError("--workdir is empty")
    workdir = args.workdir or f"runs/{cfg.task}-{cfg.model}-s{cfg.seed}"
    if args.resume and not (Path(workdir) / "config.json").is_file():
        raise ValueError(f"--resume: {workdir} holds no run to resume (no config.json)")
    summary = trainer.train(cfg, workdir, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
                            wandb_project=args.wandb)
    print(json.dumps({"workdir": workdir, **summary}))
    return 0


def run_preset(args) -> int:
    """--recipe: every stage of every chain for each seed, then the report. --experiment: every (model, seed) of
    a preset (with --with-parents, each model's earlier stages first). Finished runs are kept, interrupted ones
    resumed; a stage never starts from a parent run that did not finish."""
    from lab import experiments, recipes

    for flag, field in (("task_option", "task_options"), ("train_option", "train_distribution")):
        if getattr(args, flag):
            raise ValueError(f"--{flag.replace('_', '-')} sets a single run's option; with a preset use --set "
                             f"{field}.KEY=VALUE")
    if args.recipe and args.experiment:
        raise ValueError("give --recipe or --experiment, not both")
    if Path(args.runs_root).exists() and not Path(args.runs_root).is_dir():
        raise ValueError(f"--runs-root {args.runs_root} is a file; a directory is expected")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    control = recipes.Control(devices=args.devices, fused_memory=args.fused_memory, steps=args.steps,
                              overrides=tuple(args.overrides), progress=not args.no_progress, wandb=args.wandb,
                              parents_root=args.parents_root)
    if args.recipe:
        recipe = experiments.get_recipe(args.recipe)
        if args.models:
            raise ValueError("--models chooses a preset's models; a recipe trains all of its chains")
        if args.parents_root:
            raise ValueError("--parents-root goes with --experiment; a recipe trains its own parents")
        if args.overrides:
            raise ValueError("--set changes one preset; a recipe's stages are several (train a stage with "
                             "--experiment NAME --with-parents --set ...)")
        seeds = args.seeds if args.seeds is not None else list(recipe.seeds)
        recipe.stages()  # every stage exists before anything trains
        recipes.train_recipe(recipe, seeds, args.runs_root, control)
        return 0
    if args.with_parents and args.parents_root:
        raise ValueError("--with-parents trains the parents under --runs-root; --parents-root reads them elsewhere: "
                         "give one of the two")
    recipes.train_experiment(args.experiment, args.models, args.seeds, args.runs_root, control,
                             with_parents=args.with_parents, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    from lab.cli import run_cli

    sys.exit(run_cli(main))
