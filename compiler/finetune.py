"""Does the compiled modsquare loop survive gradient fine-tuning? Adam from the compiled weights.

    python -m compiler.finetune --out runs/compiled_finetune     # finetune.json/.md; ~2-3 min CPU

Loss: the compiled read-out is a real number y (the NTM output at each example's last step) that
should equal the integer answer k, so the natural differentiable loss is squared error, scaled
by n so that every n weighs about the same: ``mean(((y - k) / n)^2)`` over a batch of n drawn
uniformly from [2, train_max_n]. The batch runs through ``ntm.unroll`` (``compiler.run.
final_outputs``: vmap over examples padded to the longest step count of the training range, each
with its own ``num_steps``), so the gradient flows through the project's own NTM code path.

Starts: the exact compiled weights (noise 0), and the same weights with relative Gaussian noise
sigma (``compiler.fragility.perturb``), which already breaks large n. Per start and learning rate,
optax Adam for ``steps`` updates; exact-match accuracy (round(y) == k) on a fixed set of n inside
the training range and beyond it is measured before and after, together with the loss curve,
gradient statistics (finite? largest entry?) and how far the weights moved.
"""
from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from compiler.compile import Compiled, compile_program
from compiler.fragility import fixed_ns, perturb
from compiler.programs import MODSQUARE, modsquare_steps
from compiler.run import decode, exact, final_outputs, run_constant_input, save_outputs
from tasks.modsquare import solve

LRS = (0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-2)
NOISES = (0.0, 1e-5)


def loss_fn(params, cfg, ns: jax.Array, ks: jax.Array, steps: jax.Array, T: int) -> jax.Array:
    """mean(((y - k) / n)^2), y = NTM output at each example's last step (ns, ks, steps: [B])."""
    xs = jnp.broadcast_to(ns.astype(jnp.float32)[:, None, None], (ns.shape[0], T, 1))
    y = final_outputs(params, cfg, xs, steps)
    return jnp.mean(((y - ks) / ns) ** 2)


def accuracy(compiled: Compiled, params, ns: np.ndarray) -> dict:
    """Exact-match accuracy of round(y) against the reference, and the fraction of exact-integer y."""
    c = Compiled(compiled.program, compiled.cfg, params, compiled.layout)
    steps = np.array([modsquare_steps(n) for n in ns])
    y = run_constant_input(c, ns[:, None], steps, chunk=512)
    ok = np.isfinite(y)
    right = ok & (decode(np.where(ok, y, -1)) == np.array([solve(n) for n in ns]))
    return {"accuracy": float(right.mean()), "exact_integer": float((ok & exact(np.where(ok, y, 0.5))).mean()),
            "finite": float(ok.mean())}


def _optimizer(lr: float) -> optax.GradientTransformation:
    """Adam whose learning rate lives in the optimiser state: one compiled update serves every lr."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


@functools.partial(jax.jit, static_argnames=("cfg", "T"))
def _update(cfg, T: int, p, o, ns, ks, st):
    loss, g = jax.value_and_grad(loss_fn)(p, cfg, ns, ks, st, T)
    leaves = jax.tree.leaves(g)
    stats = {"loss": loss,
             "grad_finite": jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])),
             "grad_max": jnp.max(jnp.stack([jnp.max(jnp.where(jnp.isfinite(a), jnp.abs(a), 0)) for a in leaves])),
             "grad_norm": optax.global_norm(g),
             "grad_nonzero": sum(jnp.sum(a != 0) for a in leaves)}
    u, o = _optimizer(0.0).update(g, o, p)
    return optax.apply_updates(p, u), o, stats


def finetune(compiled: Compiled, params, lr: float, steps: int = 200, batch: int = 32, train_max_n: int = 512,
             seed: int = 0) -> tuple[dict, list[dict]]:
    """Adam(lr) for ``steps`` updates from ``params``; returns (final params, per-step log)."""
    T = modsquare_steps(train_max_n)
    opt = _optimizer(lr)
    rng = np.random.default_rng(seed)
    o = opt.init(params)
    log = []
    for _ in range(steps):
        ns = rng.integers(2, train_max_n + 1, batch)
        ks = np.array([solve(n) for n in ns])
        st = np.array([modsquare_steps(n) for n in ns])
        params, o, s = _update(compiled.cfg, T, params, o, jnp.asarray(ns, jnp.float32), jnp.asarray(ks, jnp.float32),
                              jnp.asarray(st, jnp.int32))
        log.append({k: (v.item() if hasattr(v, "item") else v) for k, v in s.items()})
    return params, log


def moved(p0, p1) -> dict:
    """Largest absolute and relative (over nonzero weights) change of any weight."""
    a0, a1 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)]).astype(np.float64) for p in (p0, p1))
    d = np.abs(a1 - a0)
    nz = a0 != 0
    fin = np.isfinite(a1)
    if not fin.all():
        return {"max_abs": float("nan"), "max_rel_nonzero": float("nan"), "zeros_made_nonzero": -1,
                "changed": int((~fin | (d != 0)).sum()), "finite": False}
    return {"max_abs": float(d.max()), "max_rel_nonzero": float((d[nz] / np.abs(a0[nz])).max()),
            "zeros_made_nonzero": int(((a1 != 0) & ~nz).sum()), "changed": int((d != 0).sum()),
            "finite": bool(np.isfinite(a1).all())}


def run(lrs: Sequence[float] = LRS, noises: Sequence[float] = NOISES, steps: int = 200, batch: int = 32,
        train_max_n: int = 512, eval_max_bits: int = 12, seed: int = 0) -> dict:
    c = compile_program(MODSQUARE)
    eval_sets = {f"train [2,{train_max_n}]": fixed_ns(64, int(np.log2(train_max_n)), seed=1),
                 f"beyond ({train_max_n},{2**eval_max_bits}]": np.unique(np.exp2(
                     np.random.default_rng(2).uniform(np.log2(train_max_n + 1), eval_max_bits, 64)).astype(np.int64))}
    rows = []
    for noise in noises:
        p0 = c.params if noise == 0 else perturb(c.params, noise, jax.random.key(seed), "relative")
        before = {name: accuracy(c, p0, ns) for name, ns in eval_sets.items()}
        for lr in lrs:
            t0 = time.time()
            p1, log = finetune(c, p0, lr, steps, batch, train_max_n, seed)
            after = {name: accuracy(c, p1, ns) for name, ns in eval_sets.items()}
            rows.append({"noise": noise, "lr": lr, "steps": steps, "batch": batch, "before": before, "after": after,
                         "loss": [r["loss"] for r in log], "grad_norm": [r["grad_norm"] for r in log],
                         "grad_max": max(r["grad_max"] for r in log),
                         "grad_all_finite": all(r["grad_finite"] for r in log),
                         "grad_nonfinite_steps": sum(not r["grad_finite"] for r in log),
                         "grad_nonzero_max": max(r["grad_nonzero"] for r in log),
                         "moved": moved(p0, p1), "seconds": time.time() - t0})
            print(f"noise {noise:g} lr {lr:g}: loss {log[0]['loss']:.3g} -> {log[-1]['loss']:.3g}, "
                  f"acc {[round(v['accuracy'], 3) for v in before.values()]} -> "
                  f"{[round(v['accuracy'], 3) for v in after.values()]} ({time.time() - t0:.1f} s)", flush=True)
    return {"train_max_n": train_max_n, "eval_sets": {k: v.tolist() for k, v in eval_sets.items()}, "rows": rows}


def markdown(res: dict) -> str:
    names = list(res["eval_sets"])
    r0 = res["rows"][0]
    marks = sorted({0, 1, 10, 50, r0["steps"] - 1} & set(range(r0["steps"])))
    lines = [f"Adam, {r0['steps']} steps, batch {r0['batch']} n uniform in [2, {res['train_max_n']}], "
             "loss mean(((y - k)/n)^2), float32; accuracy = round(y) == k on "
             + ", ".join(f"{len(v)} n in {k}" for k, v in res["eval_sets"].items()), "",
             "| start noise | lr | " + " | ".join(f"acc {n} before -> after" for n in names)
             + " | loss at step " + ", ".join(map(str, marks)) + " | max finite grad entry | nonzero grad entries | steps with non-finite grads | max rel. change of a nonzero weight |",
             "|---|---|" + "---|" * len(names) + "---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['noise']:g} | {r['lr']:g} | "
                     + " | ".join(f"{r['before'][n]['accuracy']:.3f} -> {r['after'][n]['accuracy']:.3f}" for n in names)
                     + " | " + ", ".join(f"{r['loss'][i]:.3g}" for i in marks)
                     + f" | {r['grad_max']:.3g} | {r['grad_nonzero_max']} | {r['grad_nonfinite_steps']} | "
                     + (f"{r['moved']['max_rel_nonzero']:.3g} |" if r["moved"]["finite"] else "weights NaN |"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--train-max-n", type=int, default=512)
    ap.add_argument("--lrs", default=",".join(map(str, LRS)))
    ap.add_argument("--noises", default=",".join(map(str, NOISES)))
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    res = run([float(v) for v in args.lrs.split(",")], [float(v) for v in args.noises.split(",")],
              args.steps, args.batch, args.train_max_n)
    res["seconds"] = time.time() - t0
    md = markdown(res)
    save_outputs(args.out, "finetune", res, md)
    print(md)
    print(f"{res['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
