"""Classical optimisers on polymax with a budget of queries: what a learned optimiser with the same oracle is
measured against. Each strategy maximises P on [0, 1] from Q queries of P (and P' for gradient ascent) and
answers its best queried point; the trajectory of its queries comes back too (for figures).

- ``grid``: Q evenly spaced points, endpoints included (covers [0, 1]; no feedback used);
- ``random``: Q uniform points;
- ``golden``: golden-section search (brackets a maximum; exact for a unimodal P);
- ``gradient``: gradient ascent from R evenly spaced starts (P' oracle), Q / R steps each; the step size
  ``lr / (d + 1)^2`` (the curvature of a Chebyshev series grows as d^2), lr chosen on the same distribution.

Shapes: B batch, D + 1 coefficients, Q queries.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tasks import feedback_of
from tasks.polymax import MATCH_REGRET, cheb_eval, maximise

Array = jax.Array
GOLDEN = (math.sqrt(5) - 1) / 2  # 0.618...


def _best(c: Array, xs: Array) -> tuple[Array, Array]:
    """The best of the queried points xs [B, Q] -> (answer [B], xs)."""
    p = cheb_eval(c, xs)[0]
    return jnp.take_along_axis(xs, jnp.argmax(p, 1)[:, None], 1)[:, 0], xs


def grid(c: Array, q: int, key: Array | None = None) -> tuple[Array, Array]:
    xs = jnp.broadcast_to(jnp.linspace(0.0, 1.0, q)[None], (c.shape[0], q))
    return _best(c, xs)


def random(c: Array, q: int, key: Array | None = None) -> tuple[Array, Array]:
    return _best(c, jax.random.uniform(jax.random.key(0) if key is None else key, (c.shape[0], q)))


def golden(c: Array, q: int, key: Array | None = None) -> tuple[Array, Array]:
    """Golden-section search on [0, 1]: two interior points, then one new point per query inside the bracket
    that holds the larger of the two."""
    B = c.shape[0]
    f = lambda x: cheb_eval(c, x[:, None])[0][:, 0]  # noqa: E731
    a, b = jnp.zeros(B), jnp.ones(B)
    x1, x2 = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    f1, f2 = f(x1), f(x2)
    xs = [x1, x2][:q]
    for _ in range(q - 2):
        left = f1 >= f2  # the maximum is in [a, x2]
        a, b = jnp.where(left, a, x1), jnp.where(left, x2, b)
        new = jnp.where(left, b - GOLDEN * (b - a), a + GOLDEN * (b - a))
        fn = f(new)
        x1, f1, x2, f2 = (jnp.where(left, new, x2), jnp.where(left, fn, f2),
                          jnp.where(left, x1, new), jnp.where(left, f1, fn))
        xs.append(new)
    return _best(c, jnp.stack(xs, 1))


def gradient(c: Array, q: int, key: Array | None = None, starts: int = 0, lr: float = 0.5) -> tuple[Array, Array]:
    """Gradient ascent with restarts: ``starts`` (0: about sqrt(q)) evenly spaced starts, the q queries shared
    between them; each query is a point where P and P' are read, the next point x + lr P'(x) / (d + 1)^2."""
    B, D1 = c.shape
    r = starts or max(1, round(math.sqrt(q)))
    r = min(r, q)
    per = [q // r + (i < q % r) for i in range(r)]
    scale = lr / D1**2
    xs = []
    for i, n in enumerate(per):
        x = jnp.full((B,), (i + 0.5) / r)
        for _ in range(n):
            xs.append(x)
            slope = cheb_eval(c, x[:, None])[1][:, 0]
            x = jnp.clip(x + scale * slope, 0.0, 1.0)
    return _best(c, jnp.stack(xs, 1))


STRATEGIES: dict[str, Callable[..., tuple[Array, Array]]] = {
    "grid": grid, "random": random, "golden": golden, "gradient": gradient}


def regret(c: Array, x: Array, best: Array | None = None) -> np.ndarray:
    """max P - P(x) for coefficients c [B, D+1] and answers x [B] (the task's regret, clipped at 0); ``best``:
    max P where the caller has it already."""
    best = maximise(c)[1] if best is None else best
    return np.maximum(np.asarray(best - cheb_eval(c, jnp.asarray(x)[:, None])[0][:, 0]), 0.0)


# ---- a trained model with the query oracle against the classical optimisers, at equal numbers of queries ----


def model_queries(ev: Any, batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """A model's run (``ev``: a lab.evaluation.Evaluator) on a closed-loop polymax batch of one degree d:
    (answer x [B], queries [B, Q]), its queries being its outputs on steps d .. steps - 2 (each answered on the
    next step) and its answer its output on the last step."""
    logits, _ = ev.forward(batch)
    x = np.asarray(jax.nn.sigmoid(logits[..., 0]))  # [T, B]
    d, steps = int(batch.size[0]), np.asarray(batch.steps)
    if not (steps == steps[0]).all() or not (np.asarray(batch.size) == d).all():
        raise ValueError("model_queries: needs a batch of one degree and one step count")
    return x[steps[0] - 1], x[d:steps[0] - 1].T


def searches(ev: Any, batch: Any, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(answer [B], queries [B, Q]) of the model and of every classical strategy given its Q queries."""
    out = {"model": model_queries(ev, batch)}
    q = out["model"][1].shape[1]
    for name, f in STRATEGIES.items():
        x, xs = f(batch.aux, q, jax.random.key(seed))
        out[name] = (np.asarray(x), np.asarray(xs))
    return out


def best_so_far(c: Array, queries: np.ndarray, best: Array) -> np.ndarray:
    """Median over examples of the regret of the best query among the first k, for k = 1 .. Q -> [Q]."""
    p = np.asarray(cheb_eval(c, jnp.asarray(queries, jnp.float32))[0])  # [B, Q]
    return np.median(np.maximum(np.asarray(best)[:, None] - np.maximum.accumulate(p, 1), 0.0), 0)


def describe(c: Array, queries: np.ndarray) -> dict[str, float]:
    """How a sequence of queries [B, Q] moves: the median spread (max - min: a grid covers [0, 1], a local method
    does not), the share of moves (|step| > 1e-3) that go the way P' pointed at the point they left (gradient
    ascent: 1; a grid or random search about 0.5), and the median size of the last move (0: settled)."""
    q = np.asarray(queries, np.float64)
    slope = np.asarray(cheb_eval(c, jnp.asarray(queries, jnp.float32))[1])[:, :-1]  # [B, Q-1]
    move = np.diff(q, axis=1)
    big = np.abs(move) > 1e-3
    uphill = (np.sign(move) == np.sign(slope)) & big
    return {"spread": float(np.median(q.max(1) - q.min(1))),
            "uphill": float(uphill.sum() / max(big.sum(), 1)) if q.shape[1] > 1 else float("nan"),
            "last_move": float(np.median(np.abs(move[:, -1]))) if q.shape[1] > 1 else float("nan")}


def _load(run: str) -> tuple[Any, Any]:
    """(evaluation task, Evaluator) of a polymax run: one Evaluator, so one compile per batch shape."""
    from lab.evaluation import Evaluator
    from lab.rundir import load_run

    cfg, task, model, _ = load_run(run)
    if cfg.task != "polymax":
        raise ValueError(f"{run}: not a polymax run (task {cfg.task})")
    return task, Evaluator.of(model)


def _batch(task: Any, degree: int, scale: float, batch_size: int, seed: int) -> tuple[Any, Any]:
    """The task at one degree and step multiplier, and its fixed batch of key ``seed``."""
    from lab.evaluation import fixed_batch

    t = dataclasses.replace(task.with_sizes(degree, degree), step_scale=scale)
    return t, fixed_batch(t, batch_size, seed)


def compare(run: str, degrees: tuple[int, ...], scales: tuple[float, ...] = (1.0,), batch_size: int = 4096,
            seed: int = 2) -> list[dict]:
    """One row per (degree, step multiplier, strategy): the model of ``run`` (a polymax run) and, where it has a
    query oracle, every classical strategy with the same queries (without one, "queries" counts the steps after
    the coefficients), on a fresh batch of key ``seed``: median and mean regret, the share within the task's
    match tolerance, how the queries move (``describe``), the best-so-far curve and, for the model, how far its
    answer is below its best query."""
    task, ev = _load(run)
    rows = []
    for d in degrees:
        for scale in scales:
            t, batch = _batch(task, d, scale, batch_size, seed)
            c = batch.aux
            best = maximise(c)[1]
            base = {"degree": d, "scale": scale, "queries": int(batch.steps[0]) - (d + 1)}
            if feedback_of(task) is None:  # thinking steps (or none): the model alone
                x = ev.metrics(t, batch)["regret"]  # the task's own regret
                rows.append({**base, "strategy": "model", "median": float(np.median(x)), "mean": float(x.mean()),
                             "match": float((x < MATCH_REGRET).mean())})
                continue
            for name, (x, xs) in searches(ev, batch, seed).items():
                r = regret(c, x, best)
                row = {**base, "strategy": name, "median": float(np.median(r)), "mean": float(r.mean()),
                       "match": float((r < MATCH_REGRET).mean()), "curve": best_so_far(c, xs, best).tolist(),
                       **describe(c, xs)}
                if name == "model":
                    p_queries = np.asarray(cheb_eval(c, jnp.asarray(xs))[0]).max(1)
                    p_answer = np.asarray(cheb_eval(c, jnp.asarray(x)[:, None])[0])[:, 0]
                    row["answer_below_best_query"] = float(np.median(p_queries - p_answer))
                rows.append(row)
    return rows


def figure(run: str, degree: int, path: str, scale: float = 1.0, shown: int = 3, batch_size: int = 4096,
           seed: int = 2) -> str:
    """The query trajectories of a run with an oracle and of the classical strategies (random search left out)
    on ``shown`` polynomials of ``degree`` (the first of the key-``seed`` batch), beside each one's median
    best-so-far regret curve."""
    from lab import figures

    task, ev = _load(run)
    if feedback_of(task) is None:
        raise ValueError(f"{run}: the figure needs a polymax run with a query oracle")
    _, batch = _batch(task, degree, scale, batch_size, seed)
    c, best = batch.aux, maximise(batch.aux)[1]
    found = {n: xs for n, (_, xs) in searches(ev, batch, seed).items() if n != "random"}
    grid = jnp.broadcast_to(jnp.linspace(0, 1, 201, dtype=jnp.float32), (shown, 201))
    polys = np.asarray(cheb_eval(c[:shown], grid)[0])
    pairs = {n: (v[:shown], np.asarray(cheb_eval(c[:shown], jnp.asarray(v[:shown], jnp.float32))[0]))
             for n, v in found.items()}
    curves = {n: best_so_far(c, v, best) for n, v in found.items()}
    q = found["model"].shape[1]
    figures.query_trajectories(curves, polys, pairs, path, title=f"{run}: degree {degree}, {q} queries")
    return path


def markdown(rows: list[dict]) -> str:
    names = list(dict.fromkeys(r["strategy"] for r in rows))
    out = ["| degree | scale | queries | " + " | ".join(names) + " |", "|---:|---:|---:|" + "---:|" * len(names)]
    keys = list(dict.fromkeys((r["degree"], r["scale"], r["queries"]) for r in rows))
    for k in keys:
        cells = {r["strategy"]: r for r in rows if (r["degree"], r["scale"], r["queries"]) == k}
        out.append(f"| {k[0]} | {k[1]:g} | {k[2]} | " + " | ".join(
            f"{cells[n]['median']:.3g} ({cells[n]['mean']:.3g})" for n in names) + " |")
    return "\n".join(out)


def behaviour_markdown(rows: list[dict]) -> str:
    """How each strategy's queries move (``describe``), per degree and multiplier."""
    out = ["| degree | scale | strategy | spread | uphill moves | last move | answer below best query |",
           "|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        if "spread" in r:
            below = f"{r['answer_below_best_query']:.3g}" if "answer_below_best_query" in r else ""
            out.append(f"| {r['degree']} | {r['scale']:g} | {r['strategy']} | {r['spread']:.2f} | {r['uphill']:.2f} | "
                       f"{r['last_move']:.3g} | {below} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    from lab.rundir import RunDirError

    p = argparse.ArgumentParser(prog="python -m lab.optimisers", description="A polymax run's median (mean) regret "
                                "per degree and test-time step multiplier; with a query oracle, beside grid, random, "
                                "golden-section and gradient ascent given the same queries, and how the queries move.")
    p.add_argument("runs", nargs="+")
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6, 8, 12])
    p.add_argument("--scales", type=float, nargs="+", default=[1.0])
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--json", default="")
    p.add_argument("--figure", default="", help="PNG of the first run's queries at --figure-degree beside the "
                   "classical strategies'")
    p.add_argument("--figure-degree", type=int, default=6)
    a = p.parse_args(argv)
    try:
        if a.batch_size < 1 or min(a.sizes) < 1 or min(a.scales) <= 0:
            raise ValueError("--batch-size and --sizes need integers >= 1, --scales positive numbers")
        rows = []
        for run in a.runs:
            rs = compare(run, tuple(a.sizes), tuple(a.scales), a.batch_size, a.seed)
            rows += [{**r, "run": run} for r in rs]
            print(f"\n{run}: median (mean) regret\n\n{markdown(rs)}")
            if any("spread" in r for r in rs):
                print(f"\nhow the queries move\n\n{behaviour_markdown(rs)}")
        if a.figure:
            print(f"\nfigure: {figure(a.runs[0], a.figure_degree, a.figure, batch_size=a.batch_size, seed=a.seed)}")
    except (ValueError, RunDirError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
