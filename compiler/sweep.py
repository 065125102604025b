"""Exhaustive check of the compiled modsquare NTM against the task's reference solver.

    python -m compiler.sweep --max-n 65536 --out runs/compiled_sweep     # several minutes on 2 CPU cores

Three parts, each printed as agreement counts and wall time (and saved to sweep.json):
  exhaustive  every n in [2, max_n], float32 (the network as compiled by default);
  float64     random n up to 2^max_bits (default 30) with jax_enable_x64: half uniform in the top
              octave [2^(max_bits-1), 2^max_bits), half log-uniform in (max_n, 2^(max_bits-1));
  float32     random n per octave 2^b .. 2^(b+1) for b in --f32-bits, and the --f32-edge integers
              on each side of 2^24, to find where float32 stops being exact.
--max-n 0, --random 0, --f32-bits (empty) and --f32-edge 0 skip the parts.
"Agree" means round(output) == solve(n); "exact" means the output already was that integer.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from compiler.compile import compile_program
from compiler.programs import MODSQUARE, modsquare_steps
from compiler.run import decode, exact, run_constant_input
from tasks.modsquare import solve


def check(ns: np.ndarray, dtype, *, batch: int, chunk: int) -> dict:
    """Run the compiled NTM on every n in ns; agreement with solve(n)."""
    ns = np.asarray(ns, np.int64)
    t0 = time.time()
    with jax.enable_x64(dtype == jnp.float64):
        c = compile_program(MODSQUARE, dtype=dtype)
        steps = np.array([modsquare_steps(n) for n in ns])
        y = run_constant_input(c, ns[:, None], steps, batch=batch, chunk=chunk)
    t_ntm = time.time() - t0
    ref = np.array([solve(n) for n in ns])
    agree = decode(y) == ref
    return {
        "dtype": np.dtype(dtype).name, "count": int(len(ns)), "agree": int(agree.sum()),
        "exact": int((agree & exact(y)).sum()), "min_n": int(ns.min()), "max_n": int(ns.max()),
        "example_steps": int(steps.sum()), "max_steps": int(steps.max()), "ntm_seconds": round(t_ntm, 1),
        "reference_seconds": round(time.time() - t0 - t_ntm, 1), "disagree_n": ns[~agree][:20].tolist(),
    }


def _line(name: str, r: dict) -> str:
    return (f"{name}: {r['agree']}/{r['count']} agree ({r['exact']} exact integers), n in [{r['min_n']}, {r['max_n']}], "
            f"{r['dtype']}, {r['example_steps']:,} NTM steps (max {r['max_steps']:,}), NTM {r['ntm_seconds']} s, "
            f"reference {r['reference_seconds']} s" + (f", first disagreements {r['disagree_n']}" if r['disagree_n'] else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-n", type=int, default=65536)
    ap.add_argument("--random", type=int, default=32, help="random float64 n (0: skip)")
    ap.add_argument("--max-bits", type=int, default=30)
    ap.add_argument("--f32-bits", type=int, nargs="*", default=[21, 22, 23, 24, 25])
    ap.add_argument("--f32-per-octave", type=int, default=8)
    ap.add_argument("--f32-edge", type=int, default=0, help="check this many n on each side of 2^24 in float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="directory for sweep.json")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    report: dict = {"args": vars(args), "device": str(jax.devices()[0])}

    if args.max_n >= 2:
        r = check(np.arange(2, args.max_n + 1), jnp.float32, batch=256, chunk=256)
        report["exhaustive"] = r
        print(_line("exhaustive", r), flush=True)

    if args.random:
        top = 2 ** (args.max_bits - 1)
        half = args.random // 2
        ns = np.concatenate([rng.integers(top, 2 * top, half),
                             np.exp2(rng.uniform(np.log2(args.max_n + 1), args.max_bits - 1, args.random - half)).astype(np.int64)])
        r = check(ns, jnp.float64, batch=max(1, half), chunk=8192)
        report["float64_random"] = r
        print(_line("float64 random", r), flush=True)

    report["float32_octaves"] = []
    for b in args.f32_bits:
        ns = rng.integers(2**b, 2 ** (b + 1), args.f32_per_octave)
        r = check(ns, jnp.float32, batch=args.f32_per_octave, chunk=8192)
        r["octave"] = b
        report["float32_octaves"].append(r)
        print(_line(f"float32 octave 2^{b}", r), flush=True)

    if args.f32_edge:
        for name, ns in [("below", np.arange(2**24 - args.f32_edge, 2**24)), ("above", np.arange(2**24, 2**24 + args.f32_edge))]:
            r = check(ns, jnp.float32, batch=args.f32_edge, chunk=8192)
            r["edge"] = name
            report.setdefault("float32_edge", []).append(r)
            print(_line(f"float32 {name} 2^24", r), flush=True)

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "sweep.json"), "w") as f:
            json.dump(report, f, indent=1)
    ex = report.get("exhaustive")
    return 0 if ex is None or ex["agree"] == ex["count"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
