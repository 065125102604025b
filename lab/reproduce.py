"""Regenerate every figure and table of the README:  make figures  (= python -m lab.reproduce --preset small)

Each step calls the same commands a user would (train.py, eval.py, python -m compiler.*, lab.bench),
then copies what the README shows into docs/: figures to ``<docs>/figures``, tables (JSON + Markdown)
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
                                                      "modsquare-search"),
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


def main(argv: list[str] | None = None) -> int:
    from lab.cli import Parser

    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--only", nargs="+", default=None,
                    help="only these steps (copy, experiments, recipes, detect, compiled, bench, assoc), or single "
                         "ones such as experiments:argmax-quick or detect:argmax-quick")
    args = ap.parse_args(argv)
    from lab.cli import use_every_core

    use_every_core()  # one CPU device per core unless the user chose (before JAX starts)
    p = PRESETS[args.preset]
    known = {"copy", "experiments", "detect", "recipes", "compiled", "bench", "assoc",
             *(f"experiments:{n}" for n in p["experiments"]), *(f"detect:{n}" for n in p["detect"]),
             *(f"recipes:{n}" for n in p["recipes"])}
    if args.only and set(args.only) - known:
        ap.error(f"--only: unknown step(s) {sorted(set(args.only) - known)}; choose from {sorted(known)}")
    runs, docs = Path(p["runs"]), Path(p["docs"])
    figs, results = docs / "figures", docs / "results"
    figs.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_call = time.time()

    import eval as eval_py
    import train as train_py

    def step(name: str, fn: Callable[[], None]) -> None:
        if args.only and name not in args.only and name.split(":")[0] not in args.only:
            return
        t0 = time.time()
        print(f"== reproduce ({args.preset}): {name}", file=sys.stderr, flush=True)
        fn()
        timings[name] = round(time.time() - t0, 1)
        print(f"== {name}: {timings[name]} s", file=sys.stderr, flush=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            raise SystemExit(f"reproduce: {what} failed (exit {rc})")

    def copy_seeds() -> None:
        from lab import summary

        for s in range(p["copy_seeds"]):
            wd = runs / "copy10" / f"s{s}"
            if not (wd / "checkpoints").is_dir():
                check(train_py.main(["--task", "copy", "--seed", str(s), "--target", "0.1", "--log-every", "80",
                                     "--workdir", str(wd), "--overwrite", "--no-progress"]), f"copy seed {s}")
        summary.main([str(runs / "copy10" / f"s{s}") for s in range(p["copy_seeds"])]
                     + ["--target", "0.1", "--json", str(results / "copy10-summary.json")])
        check(eval_py.main([str(runs / "copy10" / "s0"), "--sizes", "10", "20", "40", "80", "120"]), "copy eval")
        shutil.copy(runs / "copy10" / "s0" / "example.png", figs / "copy-ntm-example.png")
        shutil.copy(runs / "copy10" / "s0" / "eval.json", results / "copy-s0-eval.json")

    def experiment(name: str) -> Callable[[], None]:
        def run() -> None:
            check(train_py.main(["--experiment", name, "--runs-root", str(runs), "--no-progress"]),
                  f"training {name}")
            check(eval_py.main(["--experiment", name, "--runs-root", str(runs)]), f"evaluating {name}")
            rep = runs / name / "report"
            shutil.copy(rep / "comparison.png", figs / f"{name}.png")
            shutil.copy(rep / "results.json", results / f"{name}.json")
            shutil.copy(rep / "results.md", results / f"{name}.md")
            if name in HEADS and (rep / "ntm_heads.png").exists():
                shutil.copy(rep / "ntm_heads.png", figs / HEADS[name])
        return run

    def recipe(name: str) -> Callable[[], None]:
        def run() -> None:
            seeds = ["--seeds", *p["recipe_seeds"]] if p["recipe_seeds"] else []
            check(train_py.main(["--recipe", name, *seeds, "--runs-root", str(runs), "--no-progress"]),
                  f"recipe {name}")
            for f in ("report.json", "report.md"):
                shutil.copy(runs / name / f, results / f"recipe-{name}.{f.split('.')[1]}")
            shutil.copy(runs / name / "report.png", figs / f"{name}.png")
        return run

    def detect(name: str) -> Callable[[], None]:
        def run() -> None:
            examples = ["--examples", str(p["detect_examples"])] if p.get("detect_examples") else []
            check(eval_py.main(["detect", "--experiment", name, "--runs-root", str(runs), *examples]), f"detect {name}")
            out = runs / name / "detect"
            shutil.copy(out / "detect.png", figs / f"detect-{name}.png")
            shutil.copy(out / "detect.json", results / f"detect-{name}.json")
            shutil.copy(out / "detect.md", results / f"detect-{name}.md")
        return run

    def compiled() -> None:
        from compiler import show, size, sweep

        show.main(["--n", "200", "--png", str(figs / "compiled-heads.png")])
        size.main(["--out", str(results / "compiled-size")])
        shutil.copy(results / "compiled-size" / "size.png", figs / "compiled-size.png")
        if p["sweep"]:
            sweep.main(["--max-n", "65536", "--out", str(results / "compiled-sweep")])

    def bench() -> None:
        from lab import bench as b

        b.main(["--out", str(results / "bench-cpu.json")])

    def assoc() -> None:
        wd = runs / "assoc-b32"
        if not (wd / "checkpoints").is_dir():
            check(train_py.main(["--task", "associative_recall", "--seed", "0", "--batch-size", "32", "--lr", "3e-3",
                                 "--lr-half-life", "3000", "--target", "0.1", "--log-every", "100", "--workdir", str(wd),
                                 "--no-progress"]), "associative recall")
        check(eval_py.main([str(wd)]), "associative recall eval")
        shutil.copy(wd / "eval.json", results / "assoc-s0-eval.json")

    if p["copy_seeds"]:
        step("copy", copy_seeds)
    for name in p["recipes"]:  # first: the experiments below may be their stages (finished runs are kept)
        step(f"recipes:{name}", recipe(name))
    for name in p["experiments"]:
        step(f"experiments:{name}", experiment(name))
    for name in p["detect"]:
        step(f"detect:{name}", detect(name))
    step("compiled", compiled)
    if p["bench"]:
        step("bench", bench)
    if p["assoc"]:
        step("assoc", assoc)
    path = results / "timings.json"
    try:
        old = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        old = {}
    old = old if isinstance(old, dict) and isinstance(old.get("steps", {}), dict) else {}
    # a partial call (--only) updates its steps' times and keeps the last whole call's record
    record = {**old, "steps": {**old.get("steps", {}), **timings}} if args.only else {"steps": timings}
    if not args.only:  # a whole call: its time from start to end, and where it ran
        record["one_call"] = {"seconds": round(time.time() - t_call, 1), "date": time.strftime("%Y-%m-%d"),
                              "command": "python -m lab.reproduce " + shlex.join(argv if argv is not None else sys.argv[1:]),
                              "machine": machine()}
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"reproduce ({args.preset}): {time.time() - t_call:.0f} s; figures in {figs}, tables in {results}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
