"""The signatures of one solver on an experiment's fixed batches: error against the test-time step multiplier (easy
and hard halves), against size (extrapolation), by difficulty quartile, the regret distribution, agreement with the
loop, and the memorisation gap where the task has a held-out split."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from lab import evaluation
from lab.detect.loopfit import loop_fit
from lab.detect.rule import MIN_ERRORS
from lab.detect.stats import agreement, easy_hard, fit_families, fit_min_of_k, fit_min_of_share
from lab.detect.zoo import Solver, _has_split, _split_task, search_task
from lab.experiments import Experiment
from tasks import Batch, Task

DETECT_SEED = evaluation.EVAL_SEED + 7


def per_example(solve: Solver, task: Task, batch: Batch) -> dict[str, np.ndarray]:
    logits = solve(task, batch)
    m = {k: np.asarray(v, np.float64) for k, v in evaluation.task_metrics(task)(logits, batch).items()}
    m["answer"] = search_task(task).decode_answers(batch, logits)
    m["difficulty"] = np.asarray(batch.difficulty, np.float64)
    return m


@functools.lru_cache(maxsize=32)
def _batch(task: Task, size: int, seed: int) -> Batch:
    """The fixed batch every solver of a report is measured on (drawn once: the zoo and the trained models share it)."""
    return evaluation.fixed_batch(task, size, seed)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where the signatures are measured: the experiment's tasks, and batch sizes."""

    exp: Experiment
    examples: int = 1024  # main batch (training sizes): distributions, quartiles, agreement
    sweep_examples: int = 256  # per point of the step and size sweeps
    scales: tuple[float, ...] | None = None  # default: the experiment's, plus 0.5 and 1

    @classmethod
    def of(cls, exp: Experiment, examples: int) -> "Plan":
        """The command line's plan: ``examples`` in the main batch, at most as many per sweep point."""
        return cls(exp, examples=examples, sweep_examples=min(cls.sweep_examples, examples))

    def main_task(self) -> Task:
        """The evaluation task over the training sizes (built at the largest: a held-out split may have no
        instance at the smallest, e.g. no 3-bit n is held out)."""
        return self.exp.eval_task(self.exp.train_sizes[1]).with_sizes(*self.exp.train_sizes)


def signatures(solve: Solver, plan: Plan) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every signature of one solver -> (report dict, per-example arrays of the main batch)."""
    exp = plan.exp
    task = plan.main_task()
    batch = _batch(task, plan.examples, DETECT_SEED)
    m = per_example(solve, task, batch)
    cand = search_task(task).candidates(batch)
    med = np.median(m["difficulty"])
    rec: dict[str, Any] = {"error": float(m["error"].mean()), "regret": float(m["regret"].mean())}

    # 1. steps: error at each multiplier, easy / hard halves (one fixed batch per multiplier)
    by_scale = []
    for c in sorted({*(plan.scales or exp.scales), 0.5, 1.0}):
        t = dataclasses.replace(task, step_scale=task.step_scale * c)
        b = _batch(t, plan.sweep_examples, DETECT_SEED + 1)
        try:
            mc = per_example(solve, t, b)
        except ValueError as e:  # e.g. an MLP whose input cannot hold that many steps
            rec.setdefault("skipped_scales", {})[str(c)] = str(e)
            continue
        hard = _hard_half(mc["difficulty"])
        by_scale.append({"scale": c, "error": float(mc["error"].mean()), "easy": float(mc["error"][~hard].mean()),
                         "hard": float(mc["error"][hard].mean()), "regret": float(mc["regret"].mean())})
    rec["by_scale"] = by_scale
    err = {r["scale"]: r for r in by_scale}
    best = min(by_scale, key=lambda r: (r["error"], r["scale"]))
    rec["steps"] = {part: {"gain": err[0.5][part] - err[1.0][part],
                           "overthink": max(r[part] for r in by_scale if r["scale"] >= best["scale"]) - best[part]}
                    for part in ("error", "easy", "hard")} if 0.5 in err and 1.0 in err else {}
    rec["best_scale"] = best["scale"]

    # 2. sizes, steps scaled with size (scale 1)
    rec["by_size"] = [evaluation.evaluate_on(_ErrorOnly(solve), lambda s=s: exp.eval_task(s), plan.sweep_examples, size=s)
                      for s in exp.eval_sizes]
    outside = [r for r in rec["by_size"] if r["size"] > exp.train_sizes[1] and "error" in r]
    inside = [r for r in rec["by_size"] if r["size"] <= exp.train_sizes[1] and "error" in r]
    if outside and inside:
        rec["extrapolation"] = {"largest_size": outside[-1]["size"], "error": outside[-1]["error"],
                                "rise": outside[-1]["error"] - inside[-1]["error"]}

    # 6. the imprecise loop: (comparator, sigma, leak) fitted at the training sizes and at the largest size beyond them,
    #    its margin curves there, and the growth the first predicts. Only where the candidates are the answers (argmax, modsquare):
    #    polymax's answer is a real x, and its candidate grid is too coarse beyond degree ~12 to stand for the loop
    #    (the batch beyond is measured where the loop fit or clause 4 needs it)
    rec["min_of_k"] = fit_min_of_k(m["regret"], cand.regret)  # 4. (below)
    rec["min_of_share"] = fit_min_of_share(m["regret"], cand.regret)
    loops = cand.answer.dtype.kind in "iu"
    few = rec["min_of_k"]["positive"] < MIN_ERRORS
    beyond = _beyond(solve, exp, plan) if loops or few else None
    rec["loop_fit"] = (loop_fit((cand, m["error"]), None if beyond is None else (beyond[0], beyond[1]["error"]))
                       if loops else None)

    # 3. easy vs hard
    rec["easy_hard"] = easy_hard(m["error"], m["difficulty"])
    # 4. loss (regret) distribution: the min-of-K and share laws (above), and, where the main batch has too few errors to test the law's shape, at the largest size beyond
    #    (where a partial search errs more): the same two laws on that batch (every task, polymax included: its
    #    regrets there are against the same candidate grid as at the training sizes)
    if few and beyond is not None:
        bc, mb = beyond
        rec["laws_beyond"] = {"min_of_k": fit_min_of_k(mb["regret"], bc.regret),
                              "min_of_share": fit_min_of_share(mb["regret"], bc.regret)}
    rec["families"] = fit_families(m["regret"])
    # 5. agreement with the reference search
    rec["agreement"] = agreement(m, cand)
    # memorisation gap (tasks with a held-out split): held-out minus training instances
    if _has_split(exp):
        tr = _split_task(exp, "train", *exp.train_sizes)
        mt = per_example(solve, tr, _batch(tr, plan.sweep_examples, DETECT_SEED + 2))
        ho = m["error"]
        rec["memorisation"] = {"train_error": float(mt["error"].mean()), "holdout_error": float(ho.mean()),
                               "gap": float(ho.mean() - mt["error"].mean())}
    rec["difficulty_median"] = float(med)
    return rec, m


def _beyond(solve: Solver, exp: Experiment, plan: Plan) -> tuple[Any, dict[str, np.ndarray]] | None:
    """(candidates, per-example metrics) on a fixed batch at the experiment's largest size beyond training, or
    None (no such size, or a solver whose input cannot hold it)."""
    beyond = [s for s in exp.eval_sizes if s > exp.train_sizes[1]]
    if not beyond:
        return None
    task = exp.eval_task(max(beyond))
    batch = _batch(task, plan.examples, DETECT_SEED + 3)
    try:
        mb = per_example(solve, task, batch)
    except ValueError:
        return None
    return search_task(task).candidates(batch), mb


def _hard_half(difficulty: np.ndarray) -> np.ndarray:
    """The harder half by rank (ties split by order, so neither half is empty)."""
    hard = np.zeros(len(difficulty), bool)
    hard[np.argsort(difficulty, kind="stable")[len(difficulty) // 2 :]] = True
    return hard


class _ErrorOnly:
    """Adapts a solver to evaluation.evaluate_on (which calls .metrics(task, batch))."""

    def __init__(self, solve: Solver) -> None:
        self.solve = solve

    def metrics(self, task: Task, batch: Batch) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in evaluation.task_metrics(task)(self.solve(task, batch), batch).items()}
