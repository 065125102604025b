"""Recipes: a named result trained for several seeds by one command, and its report.

``python train.py --recipe NAME --seeds 0 1 2 3 4`` trains, for every seed, each stage of the recipe's chains
(lab/experiments.py: ``Recipe``, ``Stage``) in order, parents first: a stage whose run finished is kept, an
interrupted one is resumed, and a stage never starts from a parent that did not finish. Then it evaluates the
last stage of every chain, per seed, on fresh batches (``Recipe.eval_keys``: keys that no training run and no
choice between runs ever used) and writes ``<runs-root>/NAME/report.json`` and ``report.md``: the error per
size and seed, the success rate over seeds (every seed counted, failures and missing runs included) and the
wall time of every stage. ``python eval.py --recipe NAME`` rebuilds the report from the run directories.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from lab import experiments
from lab.config import TrainConfig
from lab.experiments import Recipe, Stage
from lab.rundir import run_dir


@dataclasses.dataclass(frozen=True)
class Control:
    """How runs are trained, not what they compute: chosen on the command line for every stage."""
    devices: int = 0
    fused_memory: str | None = None
    steps: int | None = None  # every stage's budget (a quick check of a recipe; the report says so)
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, applied to the preset before its configs are built
    parents_root: str | None = None  # where a stage's parent runs are read from (None: the runs root itself)
    progress: bool = True
    wandb: str | None = None


def stage_config(stage: Stage, seed: int, runs_root: str | Path, control: Control) -> TrainConfig:
    from lab import overrides

    exp = overrides.apply(experiments.get(stage.experiment), control.overrides)
    cfg = exp.config(experiments.spec(stage), seed, str(control.parents_root or runs_root))
    if control.steps is not None:
        cfg = dataclasses.replace(cfg, steps=control.steps, checkpoint_every=min(cfg.checkpoint_every, control.steps))
    cfg = dataclasses.replace(cfg, devices=control.devices)
    if control.fused_memory is not None:
        cfg = dataclasses.replace(cfg, model_config=dataclasses.replace(cfg.model_config,
                                                                        fused_memory=control.fused_memory))
    return cfg


def train_stage(stage: Stage, seed: int, runs_root: str | Path, control: Control, overwrite: bool = False,
                train_seed: int | None = None, workdir: Path | None = None) -> dict[str, Any] | None:
    """Train one stage for one seed unless its run finished; resume it if it was interrupted. Refuses (a
    ValueError naming the parent) when the stage's parent run did not finish. Returns the summary, or None
    when the run was kept. ``train_seed``/``workdir``: a selection candidate's training seed and run directory
    (default: ``seed`` and the stage's run directory)."""
    from lab import parallel, rundir, trainer

    cfg = stage_config(stage, seed, runs_root, control)
    if train_seed is not None:
        cfg = dataclasses.replace(cfg, seed=train_seed)
    workdir = workdir or stage.run_dir(seed, runs_root)
    if (workdir / SELECTION).exists():  # the run a recipe's selection chose: kept as it is
        if overwrite or not rundir.finished(workdir):
            raise ValueError(f"{workdir} holds the run a selection chose ({SELECTION}); move it aside to train "
                             "this stage again")
        print(f"{workdir}: chosen by selection, kept", file=sys.stderr)
        return None
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"{workdir} is a file; a run directory is expected there")
    if not overwrite and (workdir / "config.json").exists():  # a run of another configuration: a one-line error
        rundir.prepare_workdir(workdir, cfg, resume=True, overwrite=False)
    if not overwrite and rundir.finished(workdir, cfg.steps):
        print(f"{workdir}: finished already, kept", file=sys.stderr)
        return None
    parent = experiments.spec(stage).parent
    if parent is not None and not rundir.finished(parent.run_dir(seed, control.parents_root or runs_root)):
        where = parent.run_dir(seed, control.parents_root or runs_root)
        state = "did not finish" if (where / "config.json").exists() else "does not exist"
        raise ValueError(f"{stage} (seed {seed}) starts from {parent}, whose run {where} {state}; train it first "
                         f"(train.py --experiment {stage.experiment} --with-parents)")
    parallel.make_mesh(cfg)  # an impossible device count: an error before anything is printed or written
    print(f"== {stage} seed {seed} ({cfg.model}, {cfg.steps} steps x {cfg.batch_size})", file=sys.stderr, flush=True)
    summary = trainer.train(cfg, workdir, resume=not overwrite, overwrite=overwrite, progress=control.progress,
                            wandb_project=control.wandb)
    print(json.dumps({"workdir": str(workdir), **summary}), flush=True)
    return summary


def train_experiment(name: str, models: list[str] | None, seeds: list[int] | None, runs_root: str | Path,
                     control: Control, with_parents: bool = False, overwrite: bool = False) -> None:
    """Every (model, seed) of one preset (``models``/``seeds``: a subset), each with its earlier stages first when
    ``with_parents``; those are trained as their presets say (``control.overrides`` change only this preset)."""
    from lab import overrides

    exp = overrides.apply(experiments.get(name), control.overrides)  # bad --set: nothing trained
    exp.runs(models, seeds, str(runs_root))  # unknown models: an error before anything trains
    for spec in exp.models:
        if models and spec.label not in models:
            continue
        for seed in seeds if seeds is not None else exp.seeds:
            stage = Stage(exp.name, spec.label)
            for s in experiments.lineage(stage) if with_parents else [stage]:
                ctl = control if s == stage else dataclasses.replace(control, overrides=())
                train_stage(s, seed, runs_root, ctl, overwrite=overwrite and s == stage)


def train_recipe(recipe: Recipe, seeds: list[int], runs_root: str | Path, control: Control) -> dict[str, Any]:
    """Every stage of the recipe for every seed (headline model's chain first, seed by seed), then the report.
    With ``recipe.candidates`` > 1 the first stage of every chain is a selection (``select_first_stage``)."""
    for final in recipe.final:
        for seed in seeds:
            chain = experiments.lineage(final)
            for i, stage in enumerate(chain):
                if i == 0 and recipe.candidates > 1:
                    select_first_stage(recipe, stage, seed, runs_root, control)
                else:
                    train_stage(stage, seed, runs_root, control)
    return write_report(recipe, seeds, runs_root, control)


SELECTION = "selection.json"  # in a run directory that a selection filled: the candidates and the choice
CANDIDATE_SEED_STRIDE = 1000  # candidate c of seed s trains with seed s + c * 1000 (candidate 0: seed s itself)


def candidate_dir(stage: Stage, seed: int, c: int, runs_root: str | Path) -> Path:
    return run_dir(runs_root, stage.experiment, stage.model, seed, candidate=c)


def select_first_stage(recipe: Recipe, stage: Stage, seed: int, runs_root: str | Path, control: Control
                       ) -> dict[str, Any]:
    """Population-style selection: ``recipe.candidates`` runs of a chain's first stage (training seeds
    ``seed + c * 1000``, each in ``<model>-s<seed>-c<c>``, kept and resumed like any stage), each scored on the
    validation batch (``recipe.select_key``: never an evaluation key) at the stage's largest training size; the
    best is copied to the stage's own run directory, which later stages continue, with ``selection.json``
    (every candidate's validation error and training time, and the choice)."""
    import shutil

    from lab import rundir

    exp = experiments.get(stage.experiment)
    if experiments.spec(stage).parent is not None:
        raise ValueError(f"recipe {recipe.name}: selection is for a chain's first stage; {stage} has a parent")
    canonical = stage.run_dir(seed, runs_root)
    record_path = canonical / SELECTION
    if record_path.exists() and rundir.finished(canonical):
        print(f"{canonical}: chosen by selection already, kept", file=sys.stderr)
        return json.loads(record_path.read_text())
    if canonical.exists() and (not canonical.is_dir() or any(canonical.iterdir())):
        raise ValueError(f"{canonical} exists and no selection chose it; move it aside to let recipe "
                         f"{recipe.name} select among {recipe.candidates} runs of {stage}")
    size = exp.train_sizes[1]
    cands = []
    for c in range(recipe.candidates):
        wd, train_seed = candidate_dir(stage, seed, c, runs_root), seed + c * CANDIDATE_SEED_STRIDE
        train_stage(stage, seed, runs_root, control, train_seed=train_seed, workdir=wd)
        val = error_on(wd, stage, size, (recipe.select_key,), recipe.select_batch, recipe.select_scale)
        done = rundir.finished(wd) or {}
        cands.append({"candidate": c, "train_seed": train_seed, "run": str(wd),
                      "validation_error": val["error"], "wall_s": done.get("wall_s")})
    best = min(cands, key=lambda r: (r["validation_error"], r["candidate"]))
    record = {"stage": str(stage), "seed": seed, "size": size, "scale": recipe.select_scale, "select_key": recipe.select_key,
              "select_batch": recipe.select_batch, "candidates": cands, "chosen": best["candidate"],
              "wall_s": round(sum(r["wall_s"] or 0.0 for r in cands), 1)}
    tmp = canonical.with_name(canonical.name + ".selecting")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best["run"], tmp, ignore=shutil.ignore_patterns("fresh-eval.json"))
    (tmp / SELECTION).write_text(json.dumps(record, indent=1) + "\n")
    if canonical.exists():  # an empty directory (checked above)
        canonical.rmdir()
    tmp.rename(canonical)
    print(f"{stage} seed {seed}: candidate {best['candidate']} of {recipe.candidates} chosen (validation error "
          + ", ".join(f"{r['validation_error']:.4f}" for r in cands) + f" at size {size})", file=sys.stderr)
    return record


def fresh_error(workdir: Path, stage: Stage, size: int, recipe: Recipe) -> dict[str, Any]:
    """The run's error at one size on the recipe's fresh batches (cached in the run directory, keyed by the
    checkpoint it evaluates)."""
    return error_on(workdir, stage, size, recipe.eval_keys, recipe.eval_batch)


def error_on(workdir: Path, stage: Stage, size: int, keys: tuple[int, ...], batch: int, scale: float = 1.0
             ) -> dict[str, Any]:
    """The run's error at one size (``scale`` x its steps) on the batches of ``keys`` (``batch`` examples each) of
    the stage's evaluation task, cached in the run directory (``fresh-eval.json``), keyed by the checkpoint."""
    import numpy as np

    from lab import evaluation
    from lab.rundir import load_run

    cache_path = workdir / "fresh-eval.json"
    cache = {}
    if cache_path.exists():
        try:
            cache = json.loads(cache_path.read_text())
        except ValueError:
            cache = {}
    cfg, _, model, step = load_run(workdir)
    key = f"size={size} keys={','.join(map(str, keys))} batch={batch} step={step}" + (f" scale={scale:g}" if scale != 1 else "")
    if key in cache:
        return cache[key]
    # the task's own distribution, no training distribution (lab.diagnose's lists for the same keys)
    task = experiments.get(stage.experiment).eval_task(size, scale)
    ev = evaluation.Evaluator.of(model)
    wrong, t0 = [], time.perf_counter()
    for k in keys:  # lab.diagnose --seed k scores the same lists the same way
        wrong.append(evaluation.wrong_on(ev, task, batch, k)[3])
    w = np.concatenate(wrong)
    out = {"error": float(w.mean()), "stderr": float(w.std() / math.sqrt(len(w))), "examples": int(len(w)),
           "per_key": [float(x.mean()) for x in wrong], "checkpoint_step": step, "seconds": round(time.perf_counter() - t0, 1)}
    cache[key] = out
    cache_path.write_text(json.dumps(cache, indent=1) + "\n")
    return out


def report(recipe: Recipe, seeds: list[int], runs_root: str | Path, control: Control | None = None) -> dict[str, Any]:
    """The recipe's report from its run directories: per model and seed, the error at every size on the fresh
    batches (None where the chain's last run did not finish), per stage the wall time; the success rate over
    every seed asked for."""
    from lab import rundir

    control = control or Control()
    rep: dict[str, Any] = {"recipe": recipe.name, "description": recipe.description, "seeds": list(seeds),
                           "sizes": list(recipe.sizes), "headline_size": recipe.headline_size,
                           "success_error": recipe.success_error, "also": [list(c) for c in recipe.also],
                           "eval_keys": list(recipe.eval_keys),
                           "eval_examples": recipe.eval_batch * len(recipe.eval_keys),
                           "steps_override": control.steps, "overrides": list(control.overrides), "models": {}}
    for final in recipe.final:
        rows = []
        for seed in seeds:
            stages = []
            for stage in experiments.lineage(final):
                wd = stage.run_dir(seed, runs_root)
                done = rundir.finished(wd)
                row = {"stage": str(stage), "run": str(wd), "finished": done is not None,
                       "wall_s": done["wall_s"] if done else None, "steps": done["step"] if done else None}
                if done and (wd / SELECTION).exists():  # every candidate's training counts
                    row["selection"] = json.loads((wd / SELECTION).read_text())
                    row["wall_s"] = row["selection"]["wall_s"]
                stages.append(row)
            last = final.run_dir(seed, runs_root)
            errors = None
            if stages[-1]["finished"]:
                errors = {str(n): fresh_error(last, final, n, recipe) for n in recipe.sizes}
            rows.append({"seed": seed, "run": str(last), "errors": errors, "stages": stages,
                         "train_wall_s": round(sum(s["wall_s"] or 0.0 for s in stages), 1)})
        label = final.model
        ok = [r for r in rows if r["errors"] and all(r["errors"][str(n)]["error"] <= e for n, e in recipe.criteria())]
        rep["models"][label] = {"final": str(final), "seeds": rows, "successes": len(ok), "of": len(rows)}
    return rep


def markdown(rep: dict[str, Any]) -> str:
    sizes = rep["sizes"]
    lines = [f"# Recipe {rep['recipe']}", "", rep["description"] + ".", "",
             f"Error (1 - exact match) on {rep['eval_examples']:,} fresh examples per size (keys "
             f"{', '.join(map(str, rep['eval_keys']))}: never used in training or to choose anything); a seed "
             f"succeeds when its error at {rep['headline_size']} is at most {rep['success_error']:g}"
             + "".join(f", at {n} at most {e:g}" for n, e in rep.get("also", [])) + "."]
    if rep.get("steps_override"):
        lines.append(f"Every stage trained for only {rep['steps_override']} steps (--steps): a check of the recipe, "
                     "not its result.")
    if rep.get("overrides"):
        lines.append(f"Presets changed with --set {' '.join(rep['overrides'])}.")
    for label, m in rep["models"].items():
        lines += ["", f"## {label} ({m['final']}): {m['successes']} of {m['of']} seeds succeed", "",
                  "| seed | " + " | ".join(str(n) for n in sizes) + " | training (all stages) |",
                  "|---:|" + "---:|" * len(sizes) + "---:|"]
        for r in m["seeds"]:
            cells = [f"{r['errors'][str(n)]['error']:.4f}" if r["errors"] else "not trained" for n in sizes]
            lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {_duration(r['train_wall_s'])} |")
        stages = [s["stage"] for s in m["seeds"][0]["stages"]] if m["seeds"] else []
        lines += ["", "Wall time per stage (training only):", "",
                  "| seed | " + " | ".join(stages) + " |", "|---:|" + "---:|" * len(stages)]
        for r in m["seeds"]:
            lines.append(f"| {r['seed']} | " + " | ".join(_duration(s["wall_s"]) if s["finished"] else "-"
                                                           for s in r["stages"]) + " |")
        picks = [(r["seed"], s["selection"]) for r in m["seeds"] for s in r["stages"] if s.get("selection")]
        if picks:
            sel = picks[0][1]
            lines += ["", f"First stage: {len(sel['candidates'])} runs per seed (training seeds seed + 1000 c), the "
                      f"one with the lowest error on {sel['select_batch']:,} validation examples of size {sel['size']} with "
                      f"{sel['scale']:g}x the steps "
                      f"(key {sel['select_key']}) continued; its time above counts every run.", "",
                      "| seed | " + " | ".join(f"candidate {c['candidate']}" for c in sel["candidates"]) + " | chosen |",
                      "|---:|" + "---:|" * (len(sel["candidates"]) + 1)]
            for seed, sel in picks:
                lines.append(f"| {seed} | " + " | ".join(f"{c['validation_error']:.4f}" for c in sel["candidates"])
                             + f" | {sel['chosen']} |")
    return "\n".join(lines) + "\n"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min"


def write_report(recipe: Recipe, seeds: list[int], runs_root: str | Path, control: Control | None = None
                 ) -> dict[str, Any]:
    rep = report(recipe, seeds, runs_root, control)
    out = Path(runs_root) / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
    (out / "report.md").write_text(markdown(rep))
    figure(rep, recipe, out / "report.png")
    print(markdown(rep))
    print(f"wrote {out / 'report.md'}, report.json and the figure {out / 'report.png'}", file=sys.stderr)
    return rep


def figure(rep: dict[str, Any], recipe: Recipe, path: Path) -> None:
    """Error against problem size, one colour per model: every seed a thin line, the mean over seeds a thick
    one; the final stage's training sizes shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    lo, hi = experiments.get(recipe.final[0].experiment).train_sizes
    ax.axvspan(lo, hi, color="0.92", label=f"trained on sizes {lo}-{hi}")
    sizes = rep["sizes"]
    for i, (label, m) in enumerate(rep["models"].items()):
        rows = [[r["errors"][str(n)]["error"] for n in sizes] for r in m["seeds"] if r["errors"]]
        if not rows:
            continue
        for row in rows:
            ax.plot(sizes, row, color=f"C{i}", alpha=0.35, lw=1)
        ax.plot(sizes, np.mean(rows, 0), color=f"C{i}", lw=2.5, marker="o",
                label=f"{label} ({m['successes']}/{m['of']} seeds succeed)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_ylim(0, 1)
    ax.set_xlabel("problem size")
    ax.set_ylabel("error (1 - exact match)")
    ax.set_title(f"{rep['recipe']}: {rep['eval_examples']:,} fresh examples per size", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
