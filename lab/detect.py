"""Detecting learned search from inputs and outputs alone, calibrated on models whose mechanism we know.

Every model, trained or not, is a *solver*: (task, batch) -> logits in the task's own output format,
scored by the task's own ``metrics`` (error, regret). The ground-truth zoo (``zoo``) answers by a
known mechanism and is encoded into logits, so it goes through exactly the evaluation path of the
trained models:

  search      ``loop``: the reference loop over the candidates the example's steps show (the step
              count ties the loop to the problem: with fewer steps it sees fewer candidates);
              ``compiled``: the compiled NTM of compiler/ (modsquare only), a real network doing the loop;
  partial     ``best-of-K``: K candidates drawn uniformly (with replacement) from those shown, the best
              kept: its regret really is the minimum of K draws of a random guess's regret;
  memoriser   ``lookup``: a table of every training-split instance (modsquare), the nearest stored n for
              any other;
  heuristic   a closed form per task: modsquare the largest i with i*i < n; argmax the first value
              >= 1 - 1/L; polymax the best of x in {0, 1/4, 1/2, 3/4, 1};
  trained     the trained MLP of the experiment (a feedforward net: it cannot loop).

Signatures (``signatures``), each from a fixed evaluation batch:
  1. metric vs test-time step multiplier, on easy and hard examples (difficulty below / above median):
     the gain from more steps (error at 0.5x minus at 1x), the best multiplier, the rise after it;
  2. metric vs problem size with steps scaled (extrapolation);
  3. easy-vs-hard gap: error in the hardest minus the easiest difficulty quartile, bootstrap 95% CI;
  4. regret distribution: P(regret = 0), then fits of (a) the minimum of K draws of a uniformly random
     candidate's regret on the same instances (K by least Kolmogorov-Smirnov distance), (b) an
     exponential and (c) a Weibull (the extreme-value family of minima) to the positive regrets, each
     with its KS distance and the 5% critical value;
  5. agreement with the reference search: exact match, on near ties (hardest decile), and how often a
     wrong answer is the runner-up;
  plus, where the task has a held-out split, the memorisation gap: error on held-out minus training instances.

``decide`` is the stated decision rule; ``calibrate`` applies it to the zoo and reports how often it is right.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import numpy as np

from lab import evaluation
from lab.experiments import Experiment
from tasks import Batch, Candidates, SearchTask, Task

Solver = Callable[[Task, Batch], jax.Array]  # -> logits [T, B, Y]

K_GRID = tuple(sorted({int(round(2 ** (e / 2))) for e in range(0, 21)}))  # 1 .. 1024, ~sqrt(2) apart
DETECT_SEED = evaluation.EVAL_SEED + 7
MIN_ERRORS = 50  # positive regrets needed before the shape of their distribution is judged
ROUND_DECIMALS = 4  # regrets are compared after rounding (modsquare's distinct regrets differ by >= 1/n > 1e-4)


# ---- the zoo: solvers whose mechanism is known, answering through the task's own output format ----
# (what a task searches over, and how answers become logits, is the task's: tasks.base.SearchTask)


def search_task(task: Task) -> SearchTask:
    """The task, checked to be a search task (one that says what its candidates are)."""
    if not isinstance(task, SearchTask):
        raise ValueError(f"detect: {task.name} is not a search task (tasks.base.SearchTask: candidates, a loop, "
                         "a heuristic); detection needs one (argmax, modsquare, polymax)")
    return task


@dataclasses.dataclass
class Member:
    name: str
    mechanism: str  # "search" | "partial search" | "memoriser" | "heuristic" | "feedforward"
    solve: Solver
    held_out: bool = False  # not looked at while the rule's thresholds were chosen

    @property
    def searches(self) -> bool:
        return self.mechanism == "search"


def loop_solver(task: SearchTask, batch: Batch) -> jax.Array:
    """The search: the best candidate the example's steps show (polymax: the exact maximiser of the
    polynomial as shown), ties to the earliest, as the loop's strict '>'."""
    return task.encode_answers(batch, task.loop_answers(batch))


def best_of_k_solver(k: int, seed: int = 0) -> Solver:
    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        rng = np.random.default_rng(seed)
        shown = np.isfinite(c.value)
        counts = shown.sum(1)
        # K uniform draws among each example's shown candidates (with replacement)
        ranks = (rng.random((len(counts), k)) * counts[:, None]).astype(np.int64)  # [B, K]
        order = np.argsort(~shown, axis=1, kind="stable")  # shown candidates first, in order
        picks = np.take_along_axis(order, ranks, 1)  # [B, K] candidate indices
        vals = np.take_along_axis(c.value, picks, 1)
        best = np.take_along_axis(picks, np.argmax(vals, 1)[:, None], 1)[:, 0]
        return task.encode_answers(batch, np.take_along_axis(c.answer, best[:, None], 1)[:, 0])

    return solve


def heuristic_solver(task: SearchTask, batch: Batch) -> jax.Array:
    """The task's closed form that does not search (SearchTask.heuristic_answers)."""
    return task.encode_answers(batch, task.heuristic_answers(batch))


def lookup_solver(lookup: Callable[[Batch], np.ndarray]) -> Solver:
    """A memoriser: the task's table of its training instances (SearchTask.memoriser)."""
    return lambda task, batch: task.encode_answers(batch, lookup(batch))


def compiled_solver(program: str) -> Solver:
    """A compiled NTM of compiler/ (``program``: its name in compiler/programs.py; today modsquare's loop):
    n on every step, steps - 1 NTM steps (the task gives loop_bound(n) + 2 at 1x; the compiled loop needs
    loop_bound(n) + 1), answer rounded. The compiled program does not know the loop bound (the step count is
    its bound), so with more steps than 1x it goes on comparing candidates past floor(n^0.7): its
    "overthinking" is real, unlike the `loop`'s."""
    from compiler import programs
    from compiler.compile import compile_program
    from compiler.run import decode as decode_real, run_constant_input
    from tasks.modsquare import batch_n

    compiled = compile_program(getattr(programs, program))

    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        n = np.asarray(batch_n(batch)).astype(np.int64)
        steps = np.maximum(np.asarray(batch.steps) - 1, 1)
        y = run_constant_input(compiled, n[:, None].astype(np.float32), steps)
        return task.encode_answers(batch, np.clip(decode_real(y), 0, 2**task.output_size - 1))

    return solve


def model_solver(model: Any) -> Solver:
    ev = evaluation.Evaluator.of(model)
    return lambda task, batch: ev.forward(batch)[0]


def zoo(exp: Experiment, mlp_model: Any | None = None, ks: tuple[int, ...] = (2, 8, 32),
        held_out_ks: tuple[int, ...] = (4, 16)) -> list[Member]:
    """The ground-truth members for an experiment's task. ``held_out_ks``: best-of-K members added after
    RULE's thresholds were fixed on the others (K = 2, 8, 32), a check that the rule is not fitted to them."""
    train = _split_task(exp, "train", *exp.train_sizes)
    members = [Member("loop", "search", loop_solver)]
    if train.compiled_program:
        members.append(Member("compiled NTM", "search", compiled_solver(train.compiled_program)))
    members += [Member(f"best-of-{k}", "partial search", best_of_k_solver(k)) for k in ks]
    members += [Member(f"best-of-{k} (held out)", "partial search", best_of_k_solver(k, seed=1), held_out=True)
                for k in held_out_ks]
    lookup = train.memoriser()
    if lookup is not None:
        members.append(Member("lookup", "memoriser", lookup_solver(lookup)))
    members.append(Member("heuristic", "heuristic", heuristic_solver))
    if mlp_model is not None:
        members.append(Member("trained MLP", "feedforward", model_solver(mlp_model)))
    return members


# ---- signatures ----


def _split_task(exp: Experiment, split: str, lo: int, hi: int) -> SearchTask:
    """The experiment's task on one split of its instances (tasks with a held-out split), sizes lo..hi."""
    from tasks import make_task

    task = search_task(make_task(exp.task, **exp.task_options))
    if task.has_split:
        task = dataclasses.replace(task, split=split)
    return task.with_sizes(lo, hi)


def _has_split(exp: Experiment) -> bool:
    from tasks import make_task

    return search_task(make_task(exp.task, **exp.task_options)).has_split


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


def easy_hard(error: np.ndarray, difficulty: np.ndarray, reps: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Error per difficulty quartile, and hardest minus easiest quartile with a bootstrap 95% CI
    (examples resampled within each quartile)."""
    order = np.argsort(difficulty, kind="stable")
    bins = np.array_split(order, 4)
    rng = np.random.default_rng(seed)
    q1, q4 = error[bins[0]], error[bins[-1]]
    gaps = [q4[rng.integers(0, len(q4), len(q4))].mean() - q1[rng.integers(0, len(q1), len(q1))].mean()
            for _ in range(reps)]
    return {"quartiles": [float(error[b].mean()) for b in bins], "gap": float(q4.mean() - q1.mean()),
            "gap_ci": [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))]}


def min_of_k_cdf(cand_regret: np.ndarray, r: np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """Pooled CDF at r of the minimum of k uniform draws (with replacement) from each example's candidate
    regrets (nan = not a candidate): mean_b 1 - (1 - p_b(r))^k, p_b(r) = P(candidate regret <= r)."""
    srt = np.sort(np.where(np.isnan(cand_regret), np.inf, cand_regret), axis=1)
    m = np.isfinite(srt).sum(1)  # [B]
    p = np.stack([np.searchsorted(row, r, side="right") for row in srt]) / m[:, None]  # [B, R]
    return np.stack([(1 - (1 - p) ** kk).mean(0) for kk in np.atleast_1d(k)])  # [K, R]


def fit_min_of_k(regret: np.ndarray, cand_regret: np.ndarray, k_grid: tuple[int, ...] = K_GRID,
                 max_points: int = 512) -> dict[str, Any]:
    """K whose min-of-K distribution is closest (KS) to the observed regrets. Both are rounded to
    ROUND_DECIMALS first: the task scores regret in float32 (and polymax's x passes through a sigmoid), so
    an atom a rounding error away would otherwise count as a miss."""
    regret, cand_regret = np.round(regret, ROUND_DECIMALS), np.round(cand_regret, ROUND_DECIMALS)
    support = np.nanquantile(cand_regret, np.linspace(0, 1, max_points))
    # both CDFs are step functions: compare right limits at every jump of the sample (and a grid of
    # the candidates' jumps); comparing a left limit with a right limit would count every atom as a miss
    pts = np.unique(np.concatenate([regret, support, [0.0]]))
    F = min_of_k_cdf(cand_regret, pts, np.array(k_grid))  # [K, R]
    G = np.searchsorted(np.sort(regret), pts, side="right") / len(regret)
    d = np.abs(G[None] - F).max(1)  # [K]
    i = int(np.argmin(d))
    # the shape test: the positive regrets against the min-of-K law conditioned on regret > 0 (matching
    # P(regret = 0) alone is easy: K is chosen for it)
    pos = regret[regret > 0]
    out = {"k": int(k_grid[i]), "ks": float(d[i]), "crit_5pct": 1.36 / math.sqrt(len(regret)),
           "ks_by_k": dict(zip(map(str, k_grid), map(float, d))), "at_grid_edge": i in (0, len(k_grid) - 1),
           "positive": int(len(pos)), "ks_positive": None, "crit_positive_5pct": None}
    if len(pos):
        f0 = F[i][np.searchsorted(pts, 0.0)]
        if f0 < 1:
            cond = (F[i] - f0) / (1 - f0)
            Gp = np.searchsorted(np.sort(pos), pts, side="right") / len(pos)
            keep = pts > 0
            out["ks_positive"] = float(np.abs(Gp[keep] - cond[keep]).max())
            out["crit_positive_5pct"] = 1.36 / math.sqrt(len(pos))
    return out


def fit_families(regret: np.ndarray) -> dict[str, Any]:
    """Exponential and Weibull fits to the positive regrets (the zero atom is reported separately)."""
    from scipy import stats

    regret = np.round(regret, ROUND_DECIMALS)
    pos = regret[regret > 0]
    out: dict[str, Any] = {"p_zero": float(np.mean(regret <= 0)), "positive": int(len(pos))}
    if len(pos) < 20:
        out["note"] = "fewer than 20 positive regrets: no fit"
        return out
    crit = 1.36 / math.sqrt(len(pos))
    scale = float(pos.mean())
    out["exponential"] = {"scale": scale, "ks": float(stats.kstest(pos, "expon", args=(0, scale)).statistic),
                          "crit_5pct": crit}
    shape, _, wscale = stats.weibull_min.fit(pos, floc=0)
    out["weibull"] = {"shape": float(shape), "scale": float(wscale),
                      "ks": float(stats.kstest(pos, "weibull_min", args=(shape, 0, wscale)).statistic), "crit_5pct": crit}
    return out


def agreement(m: dict[str, np.ndarray], cand: Candidates) -> dict[str, float]:
    """Exact match overall and on near ties (hardest decile), and the share of wrong answers that are the
    runner-up (the second-best candidate)."""
    wrong = m["error"] > 0.5
    diff = m["difficulty"]
    near = diff >= np.quantile(diff, 0.9)
    reg = np.where(np.isnan(cand.regret), np.inf, cand.regret)
    order = np.argsort(reg, axis=1, kind="stable")
    second = np.take_along_axis(cand.answer, order[:, 1:2], 1)[:, 0]
    out = {"exact_match": float(1 - wrong.mean()), "near_tie_exact_match": float(1 - wrong[near].mean()),
           "runner_up_share_of_errors": float("nan")}
    if cand.answer.dtype.kind != "f" and wrong.any():  # polymax answers are reals: no runner-up candidate
        out["runner_up_share_of_errors"] = float((m["answer"] == second)[wrong].mean())
    return out


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
        return self.exp.eval_task(self.exp.train_sizes[0]).with_sizes(*self.exp.train_sizes)


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
    beyond = [r for r in rec["by_size"] if r["size"] > exp.train_sizes[1] and "error" in r]
    inside = [r for r in rec["by_size"] if r["size"] <= exp.train_sizes[1] and "error" in r]
    if beyond and inside:
        rec["extrapolation"] = {"largest_size": beyond[-1]["size"], "error": beyond[-1]["error"],
                                "rise": beyond[-1]["error"] - inside[-1]["error"]}

    # 3. easy vs hard
    rec["easy_hard"] = easy_hard(m["error"], m["difficulty"])
    # 4. loss (regret) distribution
    rec["min_of_k"] = fit_min_of_k(m["regret"], cand.regret)
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


# ---- the decision rule ----

RULE = """\
Decision rule (fixed before it is applied to trained models; thresholds read off the zoo):
 1. search        error <= 0.05 on held-out instances at the training sizes, error <= 0.1 at the largest size
                  beyond them (steps scaled), and fewer steps hurt (error at 0.5x steps - at 1x >= 0.1);
 2. memoriser     else, if the task has a held-out split and held-out error - training-instance error >= 0.25;
 3. partial search else, if the regret distribution is a minimum of K draws of a random candidate's regret:
                  KS distance below its 5% critical value 1.36/sqrt(examples), with 2 <= K < 1024, and the
                  positive regrets (at least 50) shaped like that law conditioned on regret > 0 (KS below
                  1.36/sqrt(positives));
 4. heuristic     otherwise (a fixed function that neither loops over candidates nor memorises)."""


def decide(rec: dict[str, Any]) -> str:
    steps, ext, mem, mk = rec.get("steps", {}), rec.get("extrapolation"), rec.get("memorisation"), rec["min_of_k"]
    gain = steps.get("error", {}).get("gain", 0.0)
    if rec["error"] <= 0.05 and ext is not None and ext["error"] <= 0.1 and gain >= 0.1:
        return "search"
    if mem is not None and mem["gap"] >= 0.25:
        return "memoriser"
    if (mk["ks"] <= mk["crit_5pct"] and 2 <= mk["k"] < K_GRID[-1] and mk.get("positive", 0) >= MIN_ERRORS
            and mk.get("ks_positive") is not None and mk["ks_positive"] <= mk["crit_positive_5pct"]):
        return "partial search"
    return "heuristic"


def bootstrap_verdict(rec: dict[str, Any], m: dict[str, np.ndarray], reps: int = 200, seed: int = 0) -> dict[str, float]:
    """How stable the verdict is: the rule re-applied with the main batch's error (and the sweep points'
    errors, as binomial draws) resampled; fraction of resamples per label."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    n_sweep = 256
    for _ in range(reps):
        r = dict(rec)
        r["error"] = float(m["error"][rng.integers(0, len(m["error"]), len(m["error"]))].mean())
        if "steps" in rec and rec["steps"]:
            e = {x["scale"]: rng.binomial(n_sweep, x["error"]) / n_sweep for x in rec["by_scale"]}
            r["steps"] = {"error": {"gain": e[0.5] - e[1.0]}} if 0.5 in e and 1.0 in e else {}
        if rec.get("extrapolation"):
            ext = dict(rec["extrapolation"])
            ext["error"] = rng.binomial(n_sweep, ext["error"]) / n_sweep
            ext["rise"] = ext["error"] - (rec["extrapolation"]["error"] - rec["extrapolation"]["rise"])
            r["extrapolation"] = ext
        if rec.get("memorisation"):
            mem = dict(rec["memorisation"])
            mem["gap"] = r["error"] - rng.binomial(n_sweep, mem["train_error"]) / n_sweep
            r["memorisation"] = mem
        label = decide(r)
        counts[label] = counts.get(label, 0) + 1
    return {k: v / reps for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def _truth(mechanism: str) -> str:
    """The label the rule should give each zoo mechanism (a feedforward net is not a searcher; which
    non-search label it gets is not checked)."""
    return {"feedforward": "not search"}.get(mechanism, mechanism)


def correct(mechanism: str, label: str) -> bool:
    t = _truth(mechanism)
    return label != "search" if t == "not search" else label == t


# ---- report ----


def row(name: str, mechanism: str, rec: dict[str, Any]) -> dict[str, Any]:
    """The calibration-table row of one model: its signatures in a line."""
    s = rec.get("steps", {})
    ext = rec.get("extrapolation") or {}
    mem = rec.get("memorisation") or {}
    fam = rec["families"]
    return {
        "model": name, "mechanism": mechanism, "error": rec["error"], "regret": rec["regret"],
        "step_gain": s.get("error", {}).get("gain"), "step_gain_easy": s.get("easy", {}).get("gain"),
        "step_gain_hard": s.get("hard", {}).get("gain"), "overthink": s.get("error", {}).get("overthink"),
        "best_scale": rec["best_scale"], "extrap_error": ext.get("error"), "extrap_rise": ext.get("rise"),
        "easy_hard_gap": rec["easy_hard"]["gap"], "easy_hard_ci": rec["easy_hard"]["gap_ci"],
        "k": rec["min_of_k"]["k"], "k_ks": rec["min_of_k"]["ks"], "k_ks_pos": rec["min_of_k"].get("ks_positive"), "p_zero": fam["p_zero"],
        "exp_ks": fam.get("exponential", {}).get("ks"), "weibull_ks": fam.get("weibull", {}).get("ks"),
        "weibull_shape": fam.get("weibull", {}).get("shape"), "near_tie_match": rec["agreement"]["near_tie_exact_match"],
        "runner_up": rec["agreement"]["runner_up_share_of_errors"], "memo_gap": mem.get("gap"),
        "label": decide(rec), "held_out": bool(rec.get("held_out", False)),
    }


def _f(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, list):
        return "[" + ", ".join(_f(v, nd) for v in x) + "]"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


COLUMNS = [("model", "model"), ("mechanism", "truth"), ("error", "error"), ("step_gain", "gain 0.5x->1x"),
           ("step_gain_easy", "gain easy"), ("step_gain_hard", "gain hard"), ("overthink", "overthink"),
           ("extrap_error", "error largest"), ("easy_hard_gap", "hard-easy"), ("easy_hard_ci", "95% CI"),
           ("p_zero", "P(regret=0)"), ("k", "K (min-of-K)"), ("k_ks", "KS"), ("k_ks_pos", "KS of regret>0"), ("weibull_ks", "Weibull KS"),
           ("exp_ks", "exp KS"), ("near_tie_match", "near-tie match"), ("runner_up", "runner-up share"),
           ("memo_gap", "memo gap"), ("label", "rule says")]


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(h for _, h in COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    for r in rows:
        lines.append("| " + " | ".join(_f(r.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


# ---- drivers: eval.py detect ----


@dataclasses.dataclass
class Result:
    name: str
    mechanism: str  # ground truth for zoo members, "trained" for trained models
    rec: dict[str, Any]
    m: dict[str, np.ndarray]  # per-example arrays of the main batch
    cand_regret: np.ndarray


def measure(name: str, mechanism: str, solve: Solver, plan: Plan) -> Result:
    rec, m = signatures(solve, plan)
    task = plan.main_task()
    cand = search_task(task).candidates(_batch(task, plan.examples, DETECT_SEED))
    return Result(name, mechanism, rec, m, cand.regret)


def experiment_for_run(run: Any, cfg: Any) -> Experiment:
    """The experiment a run belongs to (its parent directory's name), or one built from its config."""
    from pathlib import Path

    from lab import experiments

    parent = Path(run).resolve().parent.name
    if parent in experiments.EXPERIMENTS and experiments.EXPERIMENTS[parent].task == cfg.task:
        return experiments.EXPERIMENTS[parent]
    from tasks import make_task

    try:
        task = search_task(make_task(cfg.task, **cfg.task_options))
    except ValueError as e:
        raise ValueError(f"{run}: {e}") from None
    lo, hi = cfg.min_size, cfg.max_size
    sizes = task.extrapolation_sizes(hi)
    split = {"in_range_options": {"split": "holdout"}, "beyond_options": {"split": "all"}} if task.has_split else {}
    return Experiment(name=Path(run).name, description=f"{cfg.task} run {run}", task=cfg.task,
                      task_options=dict(cfg.task_options), train_sizes=(lo, hi), eval_sizes=tuple(sizes),
                      ntm=cfg.model_config, models=(), steps=cfg.steps, **split)


def detect_runs(runs: list[str], examples: int = 1024) -> list[Result]:
    """``eval.py detect RUN...``: signatures + verdict per run, written to RUN/detect/."""
    from pathlib import Path

    from lab.trainer import load_run

    results = []
    for run in runs:
        cfg, _, model, step = load_run(run)
        exp = experiment_for_run(run, cfg)
        res = measure(Path(run).name, "trained", model_solver(model), Plan.of(exp, examples))
        res.rec["verdict_bootstrap"] = bootstrap_verdict(res.rec, res.m)
        write(Path(run) / "detect", [res], exp, f"{Path(run).name} ({cfg.model}, step {step})")
        results.append(res)
    return results


def detect_experiment(exp: Experiment, root: str = "runs", examples: int = 1024, out: str | None = None) -> dict[str, Any]:
    """``eval.py detect --experiment NAME``: the zoo (with the experiment's trained MLP) and every trained
    run of the experiment, one calibration table + verdicts, written to <root>/<NAME>/detect/."""
    from pathlib import Path

    from lab.compare import find_runs
    from lab.trainer import load_run

    runs = find_runs(exp, Path(root))
    plan = Plan.of(exp, examples)
    mlp = load_run(runs["mlp"][0])[2] if "mlp" in runs else None
    results = []
    for z in zoo(exp, mlp):
        results.append(measure(z.name, z.mechanism, z.solve, plan))
        results[-1].rec["held_out"] = z.held_out
    for label, dirs in runs.items():
        for d in dirs:
            if label == "mlp" and d == runs["mlp"][0]:
                continue  # already in the zoo as "trained MLP"
            cfg, _, model, _ = load_run(d)
            res = measure(d.name, "trained", model_solver(model), plan)
            res.rec["verdict_bootstrap"] = bootstrap_verdict(res.rec, res.m)
            results.append(res)
    return write(Path(out) if out else Path(root) / exp.name / "detect", results, exp, exp.name)


def write(out: Any, results: list[Result], exp: Experiment, title: str) -> dict[str, Any]:
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [row(r.name, r.mechanism, r.rec) for r in results]
    zoo_rows = [r for r in rows if r["mechanism"] != "trained"]
    right = [correct(r["mechanism"], r["label"]) for r in zoo_rows]
    held = [ok for ok, r in zip(right, zoo_rows) if r["held_out"]]
    report = {"experiment": exp.name, "task": exp.task, "train_sizes": list(exp.train_sizes), "rule": RULE,
              "zoo_correct": int(sum(right)), "zoo_total": len(right), "held_out_correct": int(sum(held)),
              "held_out_total": len(held), "rows": rows,
              "verdicts": {r.name: r.rec.get("verdict_bootstrap") for r in results if r.mechanism == "trained"},
              "signatures": {r.name: r.rec for r in results}}
    (out / "detect.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    md = markdown(rows, f"{title}: signatures and the rule's label")
    if zoo_rows:
        md += (f"\nThe rule labels {sum(right)}/{len(right)} zoo members correctly ({sum(held)}/{len(held)} of the "
               "held-out members, which were not looked at when its thresholds were chosen).\n")
    for name, v in report["verdicts"].items():
        md += f"\n{name}: verdict {decide(report['signatures'][name])!r}; bootstrap share per label {_f_dict(v)}"
    (out / "detect.md").write_text(md + "\n\n```\n" + RULE + "\n```\n")
    plot(results, exp, out / "detect.png", title)
    return report


def calibration_markdown(reports: list[dict[str, Any]]) -> str:
    """One table over several experiments' detect.json: every zoo member's signatures and label, the
    rule's hit rate, and the verdicts on the trained models."""
    lines = ["| experiment | " + " | ".join(h for _, h in COLUMNS) + " |", "|---|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    hit = tot = held_hit = held_tot = 0
    verdicts = []
    for rep in reports:
        for r in rep["rows"]:
            lines.append(f"| {rep['experiment']} | " + " | ".join(_f(r.get(k)) for k, _ in COLUMNS) + " |")
            if r["mechanism"] != "trained":
                ok = correct(r["mechanism"], r["label"])
                hit, tot = hit + ok, tot + 1
                if r.get("held_out"):
                    held_hit, held_tot = held_hit + ok, held_tot + 1
        verdicts += [f"- {rep['experiment']} / {name}: **{rep['rows'][[x['model'] for x in rep['rows']].index(name)]['label']}**"
                     f" (bootstrap: {_f_dict(v)})" for name, v in rep["verdicts"].items()]
    return ("## Detection: calibration on the ground-truth zoo, then verdicts on trained models\n\n"
            + "\n".join(lines) + f"\n\nThe rule labels **{hit}/{tot}** zoo members correctly "
            "(a feedforward MLP counts as correct with any label but search); "
            f"**{held_hit}/{held_tot}** of the held-out members (best-of-K with K not used, and a random "
            "stream not seen, when the thresholds were chosen).\n\n"
            "Verdicts on trained models:\n\n" + "\n".join(verdicts) + "\n\n```\n" + RULE + "\n```\n")


def _f_dict(d: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in (d or {}).items())


def plot(results: list[Result], exp: Experiment, path: Any, title: str) -> None:
    from lab import figures

    plt = figures._plt()
    fig, ax = plt.subplots(1, 4, figsize=(20, 4.2))
    for i, r in enumerate(results):
        style = dict(ls="-" if r.mechanism == "trained" else "--", marker="o", ms=3, color=f"C{i % 10}")
        sc = r.rec["by_scale"]
        ax[0].plot([s["scale"] for s in sc], [s["easy"] for s in sc], label=f"{r.name} easy", alpha=0.5, **{**style, "marker": "^"})
        ax[0].plot([s["scale"] for s in sc], [s["hard"] for s in sc], label=f"{r.name} hard", **style)
        pts = [(s["size"], s["error"]) for s in r.rec["by_size"] if "error" in s]
        if pts:
            ax[1].plot(*zip(*pts), label=r.name, **style)
        ax[2].plot([1, 2, 3, 4], r.rec["easy_hard"]["quartiles"], label=r.name, **style)
        reg = np.sort(np.round(r.m["regret"], ROUND_DECIMALS))
        ax[3].step(reg, np.arange(1, len(reg) + 1) / len(reg), where="post", color=style["color"], ls=style["ls"],
                   label=f"{r.name} (K={r.rec['min_of_k']['k']}, KS {r.rec['min_of_k']['ks']:.2f})")
        k = r.rec["min_of_k"]["k"]
        grid = np.unique(np.concatenate([reg, [0.0]]))
        ax[3].plot(grid, min_of_k_cdf(np.round(r.cand_regret, ROUND_DECIMALS), grid, k)[0], color=style["color"], ls=":", lw=1)
    ax[0].set(xscale="log", xlabel="test-time step multiplier", ylabel="error", title="1. steps: easy (^, faint) and hard halves")
    ax[1].axvspan(*exp.train_sizes, color="gray", alpha=0.15)
    ax[1].set(xlabel="size (steps scaled)", ylabel="error", title="2. extrapolation")
    ax[2].set(xlabel="difficulty quartile (1 = easiest)", ylabel="error", title="3. easy vs hard")
    ax[3].set(xscale="symlog", xlabel="regret (symlog)", ylabel="CDF", title="4. regret CDF; dotted: best min-of-K fit",
              xlim=(0, None))
    ax[3].set_xscale("symlog", linthresh=1e-3)
    for a in ax:
        a.grid(alpha=0.3)
    ax[1].legend(fontsize=6)
    ax[3].legend(fontsize=6)
    fig.suptitle(f"{title}: dashed = ground-truth zoo, solid = trained")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
