"""Regenerate every figure and table of the README:  make figures  (= python -m lab.reproduce --preset small)

Each step calls the same commands a user would (train.py, eval.py, python -m compiler.*, lab.bench),
then copies what the README shows into docs/: figures to ``<docs>/figures``, tables (JSON + Markdown)
to ``<docs>/results``. Finished runs in the runs root are reused (delete it for a run from scratch);
``timings.json`` records how long each step took on this machine.

Presets:
  small  one seed per experiment at half the preset's training budget, copy 10 seeds, the CPU
         benchmark, the compiled NTM's figures; runs in runs/figures-small, outputs in docs/.
         About 83 minutes on 2 CPU cores (its parts measured: docs/results/timings.json).
  full   every seed and the preset's whole budget, plus associative recall and the compiled NTM's
         exhaustive sweep; runs in runs/, outputs in docs/full/. Its expected runtime is stated in
         the README (from the runs' own wall clocks).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

SEARCH_EXPERIMENTS = ("argmax-extrapolation", "argmax-labels", "argmax-long", "argmax-spread", "argmax-sharp",
                      "argmax-trace", "argmax-ties", "argmax-ties2",
                      "modsquare-value", "modsquare-index", "modsquare-none", "modsquare-many",
                      "modsquare-hidden-n", "modsquare-random", "modsquare-curriculum", "modsquare-short-random",
                      "modsquare-trace", "polymax")
DETECT_EXPERIMENTS = ("modsquare-value", "argmax-extrapolation", "argmax-long", "argmax-spread", "argmax-sharp",
                      "polymax")
PRESETS = {
    "small": {"runs": "runs/figures-small", "docs": "docs", "seeds": ["0"], "budget": 0.5, "copy_seeds": 10,
              "sweep": False, "assoc": False},
    "full": {"runs": "runs", "docs": "docs/full", "seeds": None, "budget": 1.0, "copy_seeds": 10,
             "sweep": True, "assoc": True},
}


def main(argv: list[str] | None = None) -> int:
    from lab.cli import Parser

    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--only", nargs="+", default=None,
                    help="only these steps (copy, experiments, detect, compiled, bench, assoc), or single ones "
                         "such as experiments:argmax-long or detect:polymax")
    args = ap.parse_args(argv)
    from lab.cli import use_every_core

    use_every_core()  # one CPU device per core unless the user chose (before JAX starts)
    p = PRESETS[args.preset]
    known = {"copy", "experiments", "detect", "compiled", "bench", "assoc", "detect:calibration",
             *(f"experiments:{n}" for n in SEARCH_EXPERIMENTS), *(f"detect:{n}" for n in DETECT_EXPERIMENTS)}
    if args.only and set(args.only) - known:
        ap.error(f"--only: unknown step(s) {sorted(set(args.only) - known)}; choose from {sorted(known)}")
    runs, docs = Path(p["runs"]), Path(p["docs"])
    figs, results = docs / "figures", docs / "results"
    figs.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

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
            from lab import experiments

            exp = experiments.get(name)
            flags = ["--experiment", name, "--runs-root", str(runs), "--no-progress",
                     "--steps", str(int(exp.steps * p["budget"]))]
            if p["seeds"]:
                flags += ["--seeds", *p["seeds"]]
            check(train_py.main(flags), f"training {name}")
            check(eval_py.main(["--experiment", name, "--runs-root", str(runs)]), f"evaluating {name}")
            rep = runs / name / "report"
            shutil.copy(rep / "comparison.png", figs / f"{name}.png")
            shutil.copy(rep / "results.json", results / f"{name}.json")
            shutil.copy(rep / "results.md", results / f"{name}.md")
            heads = {"argmax-extrapolation": "argmax-ntm-heads.png", "argmax-long": "argmax-long-ntm-heads.png",
                     "argmax-spread": "argmax-spread-ntm-heads.png", "argmax-sharp": "argmax-sharp-ntm-heads.png"}
            if name in heads and (rep / "ntm_heads.png").exists():
                shutil.copy(rep / "ntm_heads.png", figs / heads[name])
        return run

    def detect(name: str) -> Callable[[], None]:
        def run() -> None:
            check(eval_py.main(["detect", "--experiment", name, "--runs-root", str(runs)]), f"detect {name}")
            out = runs / name / "detect"
            shutil.copy(out / "detect.png", figs / f"detect-{name}.png")
            shutil.copy(out / "detect.json", results / f"detect-{name}.json")
            shutil.copy(out / "detect.md", results / f"detect-{name}.md")
        return run

    def calibration() -> None:
        from lab import detect as det

        reports = [json.loads((results / f"detect-{n}.json").read_text()) for n in DETECT_EXPERIMENTS
                   if (results / f"detect-{n}.json").exists()]
        (results / "detect-calibration.md").write_text(det.calibration_markdown(reports))

    def compiled() -> None:
        from compiler import show, size, sweep

        show.main(["--n", "200", "--png", str(figs / "compiled-heads.png")])
        size.main(["--out", str(results / "compiled-size")])
        shutil.copy(results / "compiled-size" / "size.png", figs / "compiled-size.png")
        if p["sweep"]:
            sweep.main(["--max-n", "65536", "--out", str(results / "compiled-sweep")])

    def bench() -> None:
        from lab import bench as b

        b.main(["--batch-sizes", "1", "16", "64", "256", "1024", "--tasks", "copy", "argmax",
                "--models", "ntm", "lstm", "mlp", "--out", str(results / "bench-cpu.json")])

    def assoc() -> None:
        wd = runs / "assoc-b32"
        if not (wd / "checkpoints").is_dir():
            check(train_py.main(["--task", "associative_recall", "--seed", "0", "--batch-size", "32", "--lr", "3e-3",
                                 "--lr-half-life", "3000", "--target", "0.1", "--log-every", "100", "--workdir", str(wd),
                                 "--no-progress"]), "associative recall")
        check(eval_py.main([str(wd)]), "associative recall eval")
        shutil.copy(wd / "eval.json", results / "assoc-s0-eval.json")

    step("copy", copy_seeds)
    for name in SEARCH_EXPERIMENTS:
        step(f"experiments:{name}", experiment(name))
    for name in DETECT_EXPERIMENTS:
        step(f"detect:{name}", detect(name))
    step("detect:calibration", calibration)
    step("compiled", compiled)
    step("bench", bench)
    if p["assoc"]:
        step("assoc", assoc)
    old = json.loads((results / "timings.json").read_text()) if (results / "timings.json").exists() else {}
    total = sum(timings.values())
    # a partial call (--only) updates its steps' times but leaves the last whole call's total alone
    record = {**old, **timings} if args.only else {**old, **timings, "total_s (this call)": round(total, 1)}
    (results / "timings.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"reproduce ({args.preset}): {total:.0f} s; figures in {figs}, tables in {results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
