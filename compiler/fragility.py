"""How fragile is the compiled modsquare NTM? Accuracy under Gaussian noise on its weights.

    python -m compiler.fragility --out runs/compiled_fragility     # fragility.json/.md; ~1-2 min

Every parameter (controller, heads, output, initial memory and weightings) gets noise of relative
standard deviation sigma, in one of two modes:
  relative   w * (1 + sigma * eps), eps ~ N(0, 1) per weight: zeros stay zero (the wiring survives);
  additive   w + sigma * rms(w) * eps per parameter array: zeros become small nonzero weights.
Accuracy = fraction of a fixed set of n (default: 256 n, log-uniform in [2, 2^12], steps <= 340)
whose decoded answer round(y) equals the task's reference, averaged over noise seeds.
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

from compiler.compile import Compiled, compile_program
from compiler.programs import MODSQUARE, modsquare_steps
from compiler.run import decode, run_constant_input, save_outputs
from tasks.modsquare import solve

SIGMAS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
BANDS = ((2, 16), (16, 256), (256, 4097))  # accuracy is also reported for n in [lo, hi)


def fixed_ns(count: int = 256, max_bits: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.unique(np.exp2(rng.uniform(1, max_bits, count)).astype(np.int64))


@functools.partial(jax.jit, static_argnames="mode")
def perturb(params, sigma: float, key: jax.Array, mode: str = "relative"):
    """Parameters with Gaussian noise of relative std sigma (see the module docstring for modes)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for w, k in zip(leaves, keys):
        eps = jax.random.normal(k, w.shape, w.dtype)
        if mode == "relative":
            out.append(w * (1 + sigma * eps))
        elif mode == "additive":
            out.append(w + sigma * jnp.sqrt(jnp.mean(w * w)) * eps)
        else:
            raise ValueError(f"mode must be 'relative' or 'additive', got {mode!r}")
    return jax.tree.unflatten(treedef, out)


def fragility(ns: Sequence[int], sigmas: Sequence[float] = SIGMAS, seeds: int = 3, mode: str = "relative",
              compiled: Compiled | None = None) -> list[dict]:
    c = compiled or compile_program(MODSQUARE)
    ns = np.asarray(ns)
    steps = np.array([modsquare_steps(n) for n in ns])
    ref = np.array([solve(n) for n in ns])
    rows = []
    for sigma in sigmas:
        right, finite = [], []
        for s in range(seeds):
            noisy = Compiled(c.program, c.cfg, perturb(c.params, sigma, jax.random.key(s), mode), c.layout)
            y = run_constant_input(noisy, ns[:, None], steps, chunk=512)
            ok = np.isfinite(y)
            finite.append(float(ok.mean()))
            right.append(ok & (decode(np.where(ok, y, -1)) == ref))
        right = np.array(right)  # [seeds, n]
        bands = {f"[{lo},{hi})": float(right[:, (ns >= lo) & (ns < hi)].mean())
                 for lo, hi in BANDS if ((ns >= lo) & (ns < hi)).any()}
        rows.append({"mode": mode, "sigma": sigma, "accuracy": float(right.mean()),
                     "accuracy_per_seed": right.mean(1).tolist(), "accuracy_by_n": bands,
                     "finite": float(np.mean(finite)), "num_n": int(len(ns)), "max_steps": int(steps.max())})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--max-bits", type=int, default=12)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    ns = fixed_ns(args.count, args.max_bits)
    t0 = time.time()
    rows = [r for mode in ("relative", "additive") for r in fragility(ns, seeds=args.seeds, mode=mode)]
    band_names = list(rows[0]["accuracy_by_n"])
    lines = [f"{len(ns)} distinct n log-uniform in [2, 2^{args.max_bits}], {args.seeds} noise seeds, float32",
             "", f"| noise | sigma | accuracy | per seed | {' | '.join('n in ' + b for b in band_names)} |",
             "|---|---|---|---|" + "---|" * len(band_names)]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['sigma']:.0e} | {r['accuracy']:.3f} | "
                     f"{', '.join(f'{a:.3f}' for a in r['accuracy_per_seed'])} | "
                     + " | ".join(f"{r['accuracy_by_n'][b]:.3f}" for b in band_names) + " |")
    md = "\n".join(lines) + "\n"
    save_outputs(args.out, "fragility", {"ns": ns.tolist(), "rows": rows, "seconds": time.time() - t0}, md)
    print(md)
    print(f"{time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
