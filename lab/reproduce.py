"""Regenerate every figure and table of the README:  make figures  (= python -m lab.reproduce --preset small)

Each step calls the library functions behind the commands a user would run (``train.py --recipe`` /
``--experiment``: lab.recipes; ``eval.py``: lab.compare, lab.evaluation, lab.detect; python -m compiler.*;
lab.bench), then copies what the README shows into docs/: figures to ``<docs>/figures``, tables (JSON + Markdown)
to ``<docs>/results``. Finished runs in the runs root are reused (delete it for a run from scratch);
``timings.json`` records how long each step took on this machine and, for a whole call, ``one_call``.

Presets:
  small  what the README shows: the argmax-quick recipe (make train's: the NTM and a parameter-matched MLP,
         two stages, 1 seed) with its report figure, its last stage compared at every size and step
         multiplier, the behavioural detector on its models and the ground-truth zoo, the compiled NTM's
         figures; runs in runs/figures-small, outputs in docs/. The headline table's numbers come from the
         recipes (``train.py --recipe``), not from this preset.
  full   every recipe over five seeds (``train.py --recipe NAME --seeds 0 1 2 3 4``, reports copied to
         docs/full/results), every other kept preset at its whole budget and seeds with detection, copy
         10 seeds, associative recall, the compiled NTM's exhaustive sweep and the CPU benchmark; runs in
         runs/, outputs in docs/full/.
"""
from __future__ import annotations

import functools
import json
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

PRESETS = {
    "small": {"runs": "runs/figures-small", "docs": "docs", "recipes": ("argmax-quick",), "recipe_seeds": None,
              "experiments": ("argmax-quick-hard",), "detect": ("argmax-quick-hard",), "copy_seeds": 0,
              "sweep": False, "assoc": False, "bench": False},
    "full": {"runs": "runs", "docs": "docs/full", "recipes": ("argmax-quick", "argmax-direct", "argmax-search",
                                                      "modsquare-search", "modsquare-serial"),
             "recipe_seeds": ["0", "1", "2", "3", "4"],
             "experiments": ("argmax-quick-hard", "modsquare-value", "polymax"),
             "detect": ("argmax-quick-hard", "modsquare-value", "polymax", "argmax-ties2"),
             "copy_seeds": 10, "sweep": True, "assoc": True, "bench": True},
}
HEADS = {"argmax-quick-hard": "argmax-quick-ntm-heads.png"}  # an experiment's NTM-heads figure, where the README shows one


def machine() -> str:
    """The CPU model and core count, as the benchmark records them."""
    from lab.cli import usable_cores

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {usable_cores()} cores"


def _parse(argv: list[str] | None):
    from lab.cli import Parser

    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--only", nargs="+", default=None,
                    help="only these steps (copy, experiments, recipes, detect, compiled, bench, assoc), or single "
                         "ones such as experiments:argmax-quick or detect:argmax-quick")
    args = ap.parse_args(argv)
    p = PRESETS[args.preset]
    known = {"copy", "experiments", "detect", "recipes", "compiled", "bench", "assoc",
             *(f"experiments:{n}" for n in p["experiments"]), *(f"detect:{n}" for n in p["detect"]),
             *(f"recipes:{n}" for n in p["recipes"])}
    if args.only and set(args.only) - known:
        ap.error(f"--only: unknown step(s) {sorted(set(args.only) - known)}; choose from {sorted(known)}")
    return args


class Steps:
    """The steps of a preset, each a call into the library that writes runs under ``runs`` and copies what the
    README shows to ``figs`` and ``results``."""

    def __init__(self, p: dict, runs: Path, figs: Path, results: Path):
        from lab import recipes

        self.p, self.runs, self.figs, self.results = p, runs, figs, results
        self.control = recipes.Control(progress=False)

    def _train_single(self, workdir: Path, **fields) -> None:
        """One run with the task's defaults (what ``train.py --task TASK ...`` trains), unless it has checkpoints."""
        from lab import trainer
        from lab.config import TrainConfig, task_defaults

        if not (workdir / "checkpoints").is_dir():
            cfg = TrainConfig(**{**task_defaults(fields["task"]), **fields})
            trainer.train(cfg, workdir, overwrite=True, progress=False)

    def copy(self) -> None:
        from lab import evaluation, summary

        seeds = range(self.p["copy_seeds"])
        for s in seeds:
            self._train_single(self.runs / "copy10" / f"s{s}", task="copy", seed=s, target=0.1, log_every=80)
        summary.main([str(self.runs / "copy10" / f"s{s}") for s in seeds]
                     + ["--target", "0.1", "--json", str(self.results / "copy10-summary.json")])
        evaluation.report_run(self.runs / "copy10" / "s0", [10, 20, 40, 80, 120])
        shutil.copy(self.runs / "copy10" / "s0" / "example.png", self.figs / "copy-ntm-example.png")
        shutil.copy(self.runs / "copy10" / "s0" / "eval.json", self.results / "copy-s0-eval.json")

    def experiment(self, name: str) -> None:
        from lab import compare, experiments, recipes

        recipes.train_experiment(name, None, None, self.runs, self.control)
        compare.compare(experiments.get(name), self.runs)
        rep = self.runs / name / "report"
        shutil.copy(rep / "comparison.png", self.figs / f"{name}.png")
        for f in ("results.json", "results.md"):
            shutil.copy(rep / f, self.results / f"{name}.{f.split('.')[1]}")
        if name in HEADS and (rep / "ntm_heads.png").exists():
            shutil.copy(rep / "ntm_heads.png", self.figs / HEADS[name])

    def recipe(self, name: str) -> None:
        from lab import experiments, recipes

        recipe = experiments.get_recipe(name)
        seeds = [int(s) for s in self.p["recipe_seeds"]] if self.p["recipe_seeds"] else list(recipe.seeds)
        recipes.train_recipe(recipe, seeds, self.runs, self.control)
        for f in ("report.json", "report.md"):
            shutil.copy(self.runs / name / f, self.results / f"recipe-{name}.{f.split('.')[1]}")
        shutil.copy(self.runs / name / "report.png", self.figs / f"{name}.png")

    def detect(self, name: str) -> None:
        from lab import detect, experiments

        detect.detect_experiment(experiments.get(name), str(self.runs), self.p.get("detect_examples", 1024))
        out = self.runs / name / "detect"
        shutil.copy(out / "detect.png", self.figs / f"detect-{name}.png")
        for f in ("detect.json", "detect.md"):
            shutil.copy(out / f, self.results / f"detect-{name}.{f.split('.')[1]}")

    def compiled(self) -> None:
        from compiler import show, size, sweep

        show.main(["--n", "200", "--png", str(self.figs / "compiled-heads.png")])
        size.main(["--out", str(self.results / "compiled-size")])
        shutil.copy(self.results / "compiled-size" / "size.png", self.figs / "compiled-size.png")
        if self.p["sweep"]:
            sweep.main(["--max-n", "65536", "--out", str(self.results / "compiled-sweep")])

    def bench(self) -> None:
        from lab import bench

        bench.main(["--out", str(self.results / "bench-cpu.json")])

    def assoc(self) -> None:
        from lab import evaluation

        wd = self.runs / "assoc-b32"
        self._train_single(wd, task="associative_recall", seed=0, batch_size=32, lr=3e-3, lr_half_life=3000,
                           target=0.1, log_every=100)
        evaluation.report_run(wd)
        shutil.copy(wd / "eval.json", self.results / "assoc-s0-eval.json")

    def plan(self) -> list[tuple[str, Callable[[], None]]]:
        """(name, step) in order: the recipes first (the experiments after them may be their stages)."""
        p = self.p
        out: list[tuple[str, Callable[[], None]]] = [("copy", self.copy)] if p["copy_seeds"] else []
        out += [(f"recipes:{n}", functools.partial(self.recipe, n)) for n in p["recipes"]]
        out += [(f"experiments:{n}", functools.partial(self.experiment, n)) for n in p["experiments"]]
        out += [(f"detect:{n}", functools.partial(self.detect, n)) for n in p["detect"]]
        out += [("compiled", self.compiled)]
        return out + [(n, getattr(self, n)) for n in ("bench", "assoc") if p[n]]


def write_timings(path: Path, timings: dict[str, float], partial: bool, argv: list[str] | None, t_call: float) -> None:
    """timings.json: each step's seconds; a whole call also its time from start to end and where it ran (a partial
    call, --only, updates its steps' times and keeps the last whole call's record)."""
    try:
        old = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        old = {}
    old = old if isinstance(old, dict) and isinstance(old.get("steps", {}), dict) else {}
    record = {**old, "steps": {**old.get("steps", {}), **timings}} if partial else {"steps": timings}
    if not partial:
        record["one_call"] = {"seconds": round(time.time() - t_call, 1), "date": time.strftime("%Y-%m-%d"),
                              "command": "python -m lab.reproduce " + shlex.join(argv if argv is not None else sys.argv[1:]),
                              "machine": machine()}
    path.write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from lab.cli import use_every_core

    use_every_core()  # one CPU device per core unless the user chose (before JAX starts)
    p = PRESETS[args.preset]
    runs, docs = Path(p["runs"]), Path(p["docs"])
    figs, results = docs / "figures", docs / "results"
    figs.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_call = time.time()
    for name, fn in Steps(p, runs, figs, results).plan():
        if args.only and name not in args.only and name.split(":")[0] not in args.only:
            continue
        t0 = time.time()
        print(f"== reproduce ({args.preset}): {name}", file=sys.stderr, flush=True)
        fn()
        timings[name] = round(time.time() - t0, 1)
        print(f"== {name}: {timings[name]} s", file=sys.stderr, flush=True)
    write_timings(results / "timings.json", timings, bool(args.only), argv, t_call)
    print(f"reproduce ({args.preset}): {time.time() - t_call:.0f} s; figures in {figs}, tables in {results}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    from lab.cli import run_cli

    sys.exit(run_cli(main))
