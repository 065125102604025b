"""Evaluate trained runs.  python eval.py runs/copy-s0 [more runs...]

For each run directory: metrics at the training sizes and beyond (copy: lengths 10-120), written
to eval.json + eval.md, and figures learning_curve.png and example.png (inputs, targets, outputs
and the NTM's read/write weightings over one example, as in Graves 2014 Fig. 6).
With several runs and --out, also a combined table and figures there.
A recipe's report (lab/recipes.py), rebuilt from its run directories:  python eval.py --recipe argmax-search

Detection (lab/detect/):  python eval.py detect RUN [RUN...]  writes RUN/detect/ (signatures,
figure, the decision rule's verdict);  python eval.py detect --experiment NAME  adds the
ground-truth zoo and the calibration table, in <runs-root>/NAME/detect/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.cli import Parser


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="eval.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories written by train.py")
    p.add_argument("--experiment", default=None,
                   help="compare every run of a named preset (lab/experiments.py); report in <runs-root>/<experiment>/report")
    p.add_argument("--recipe", default=None,
                   help="rebuild a recipe's report (<runs-root>/<recipe>/report.md) from its run directories")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="with --recipe: these seeds (default: the recipe's)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="problem sizes to evaluate (default: the task's training sizes and beyond)")
    p.add_argument("--batch-size", type=int, default=256, help="examples per size")
    p.add_argument("--example-size", type=int, default=None,
                   help="size of the example in example.png (default: the largest training size)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    p.add_argument("--out", default=None, help="directory for the combined table and figures of several runs")
    p.add_argument("--compiled", type=int, nargs="+", default=None, metavar="N",
                   help="also draw the compiled modsquare NTM (compiler/) on these n: heads and registers over "
                        "the whole run, into --out (default runs/compiled)")
    return p


def detect_parser() -> argparse.ArgumentParser:
    p = Parser(prog="eval.py detect", description="Behavioural signatures of search and the "
                                "decision rule's verdict, per run; with --experiment, calibrated on the ground-truth zoo",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories of a search task (modsquare, argmax, polymax)")
    p.add_argument("--experiment", default=None, help="every run of this preset plus the zoo")
    p.add_argument("--recipe", default=None, help="every stage of this recipe's chains for --seeds, beside the zoo "
                   "of its headline preset and the weights' evidence")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="with --recipe (default: the recipe's seeds)")
    p.add_argument("--calibration", nargs="+", default=None, metavar="DIR",
                   help="detect directories (each with a detect.json) to pool: hit rates by zoo part and what each "
                        "signature says per mechanism, into --out (default: the current directory)/calibration.md")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--examples", type=int, default=1024, help="examples in the main evaluation batch (each point of the step and size sweeps: min(256, this))")
    p.add_argument("--out", default=None, help="output directory for --experiment (default <runs-root>/NAME/detect)")
    return p


def detect(argv: list[str]) -> int:
    args = detect_parser().parse_args(argv)
    if args.examples < 64:
        raise ValueError(f"--examples must be >= 64 (quartiles and distribution fits), got {args.examples}")
    if not args.runs and not args.experiment and not args.recipe and not args.calibration:
        raise ValueError("give run directories, --experiment NAME, --recipe NAME or --calibration DIR...")
    from lab import detect as det

    if args.calibration:
        reports = det.read_reports(args.calibration)  # every report checked before anything is written
        out = Path(args.out or ".")
        out.mkdir(parents=True, exist_ok=True)
        (out / "calibration.md").write_text(det.calibration_markdown(reports))
        print(f"wrote {out / 'calibration.md'}", file=sys.stderr)
    if args.recipe:
        from lab import experiments

        recipe = experiments.get_recipe(args.recipe)
        rep = det.detect_recipe(recipe, args.seeds or list(recipe.seeds), args.runs_root, args.examples, args.out)
        out = Path(args.out) if args.out else Path(args.runs_root) / args.recipe / "detect"
        print((out / "detect.md").read_text())
        print(f"wrote {out} ({len(rep['trained'])} trained runs)", file=sys.stderr)
    if args.experiment:
        from lab import experiments

        det.detect_experiment(experiments.get(args.experiment), args.runs_root, args.examples, args.out)
        out = Path(args.out) if args.out else Path(args.runs_root) / args.experiment / "detect"
        print((out / "detect.md").read_text())
        print(f"wrote {out}", file=sys.stderr)
    for res in det.detect_runs(args.runs, args.examples):
        print(f"{res.name}: {det.decide(res.rec)} (bootstrap {det.format_shares(res.rec['verdict_bootstrap'])})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from lab.cli import use_every_core

    use_every_core()  # one CPU device per core unless the user chose (before JAX starts)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "detect":
        return detect(argv[1:])
    args = parser().parse_args(argv)
    if args.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2, got {args.batch_size}")
    if args.sizes and min(args.sizes) < 1:
        raise ValueError(f"--sizes must be >= 1, got {args.sizes}")
    if args.example_size is not None and args.example_size < 1:
        raise ValueError(f"--example-size must be >= 1, got {args.example_size}")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; a directory is expected")
    for run in args.runs:  # every run checked before any is evaluated (and its files rewritten)
        if not (Path(run) / "config.json").is_file():
            raise ValueError(f"{run} is not a run directory (no config.json)")
    from lab import evaluation

    if args.compiled:
        from compiler.show import heads_png

        out = Path(args.out or "runs/compiled")
        out.mkdir(parents=True, exist_ok=True)
        for n in args.compiled:
            if n < 2:
                raise ValueError(f"--compiled: n must be >= 2, got {n}")
            heads_png(n, str(out / f"compiled_heads_n{n}.png"))
            print(f"wrote {out / f'compiled_heads_n{n}.png'}", file=sys.stderr)
        if not args.runs and not args.experiment:
            return 0
    if args.recipe:
        from lab import experiments, recipes

        if args.experiment or args.runs:
            raise ValueError("--recipe reports on its own runs; give no --experiment or run directories with it")
        recipe = experiments.get_recipe(args.recipe)
        seeds = args.seeds if args.seeds is not None else list(recipe.seeds)
        if not any((s.run_dir(seed, args.runs_root) / "config.json").is_file() for s in recipe.final for seed in seeds):
            raise ValueError(f"no run of recipe {recipe.name} under {args.runs_root} for seeds {seeds}; train it with "
                             f"train.py --recipe {recipe.name}")
        recipes.write_report(recipe, seeds, args.runs_root)
        return 0
    if args.experiment:
        from lab import compare, experiments

        report = compare.compare(experiments.get(args.experiment), args.runs_root, args.batch_size)
        print(compare.markdown(report))
        print(f"wrote {Path(args.runs_root) / args.experiment / 'report'}", file=sys.stderr)
        if not args.runs:
            return 0
    elif not args.runs:
        raise ValueError("give run directories or --experiment NAME")

    reports = []
    for run in args.runs:
        report = evaluation.report_run(run, args.sizes, args.batch_size, args.step, args.example_size)
        print(evaluation.markdown_table(report))
        print(f"wrote eval.json, eval.md, learning_curve.png, example.png into {run}", file=sys.stderr)
        reports.append(report)
    if args.out and len(reports) > 1:
        evaluation.report_combined(reports, args.out)
        print(f"wrote combined results to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from lab.cli import run_cli

    sys.exit(run_cli(main))
