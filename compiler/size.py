"""How big must a network be to answer modsquare up to n? A table and a figure.

    python -m compiler.size --out runs/compiled_size      # size.json, size.md, size.png; < 10 s

Three ways to answer every n' <= n (n = 2^4 .. 2^30):
  compiled NTM   the constant parameter set of ``compile_program(MODSQUARE)`` run for
                 steps(n) = floor(n^0.7) + 1 steps (memory, not parameters, carries the loop);
  unrolled       the same computation as a feedforward network with one copy of the step's weights
                 (controller, heads, output) per step: step_params * steps(n) parameters;
  lookup table   every answer memorised: n entries of ceil(log2 n) bits.
Both networks are also counted by nonzero parameters only (most head weights of the compiled
step are zero: the wiring is sparse), which moves the crossovers.
Parameters are counted in bits as 32-bit floats below n = 2^F32_BITS (float32 runs are exact
there, see compiler.sweep) and 64-bit floats beyond. "Memorising stops being cheaper" where the
lookup table needs more bits than the network.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Iterable

import jax
import numpy as np

import ntm
from compiler.compile import compile_program
from compiler.programs import MODSQUARE
from compiler.run import save_outputs
from tasks.modsquare import loop_bound

F32_BITS = 23  # float32 is guaranteed exact for n < 5.5e6 and measured exact on random n below 2^23 (compiler.sweep); float64 from 2^23


def _word_bits(n: int) -> int:
    return 32 if n < 2**F32_BITS else 64


def _counts() -> dict[str, int]:
    """Parameters of the compiled modsquare NTM: all / per step (without the initial state), dense / nonzero."""
    c = compile_program(MODSQUARE)
    nonzero = lambda tree: sum(int(np.count_nonzero(np.asarray(a))) for a in jax.tree.leaves(tree))  # noqa: E731
    return {"total": ntm.num_params(c.params), "step": ntm.num_params(c.params) - ntm.num_params(c.params["init"]),
            "total_nonzero": nonzero(c.params), "step_nonzero": nonzero(c.params) - nonzero(c.params["init"])}


def size_table(bits: Iterable[int] = range(4, 31)) -> list[dict]:
    k = _counts()
    total, step = k["total"], k["step"]
    rows = []
    for b in bits:
        n = 2**b
        steps = loop_bound(n) + 1
        w = _word_bits(n)
        row = {
            "log2_n": b, "n": n, "ntm_params": total, "step_params": step, "ntm_steps": steps,
            "unrolled_params": steps * step, "lookup_entries": n, "lookup_bits": n * math.ceil(math.log2(n)),
            "word_bits": w, "ntm_bits": total * w, "unrolled_bits": steps * step * w,
            "ntm_nonzero": k["total_nonzero"], "step_nonzero": k["step_nonzero"],
            "unrolled_nonzero": steps * k["step_nonzero"],
            "ntm_nonzero_bits": k["total_nonzero"] * w, "unrolled_nonzero_bits": steps * k["step_nonzero"] * w,
        }
        row["cheapest"] = min(("ntm", "unrolled", "lookup"), key=lambda k: row[f"{k}_bits"])
        row["lookup_cheaper_than_ntm"] = row["lookup_bits"] < row["ntm_bits"]
        row["lookup_cheaper_than_unrolled"] = row["lookup_bits"] < row["unrolled_bits"]
        rows.append(row)
    return rows


def crossover(bits_key: str, nonzero: bool = False, lo: int = 2, hi: int = 2**60) -> int:
    """Smallest n with lookup bits >= the network's bits ("ntm" or "unrolled"); doubling, then
    bisection inside the octave where the lookup table overtakes."""
    k = _counts()
    total, step = (k["total_nonzero"], k["step_nonzero"]) if nonzero else (k["total"], k["step"])

    def net(n: int) -> int:
        return (total if bits_key == "ntm" else (loop_bound(n) + 1) * step) * _word_bits(n)

    def lookup(n: int) -> int:
        return n * math.ceil(math.log2(n))

    n = lo
    while lookup(n) < net(n):  # coarse doubling, then bisection inside the last octave
        n *= 2
        if n > hi:
            return -1
    a, b = n // 2, n
    while b - a > 1:
        m = (a + b) // 2
        a, b = (a, m) if lookup(m) >= net(m) else (m, b)
    return b


def markdown(rows: list[dict], x: dict[str, int]) -> str:
    lines = ["| n | NTM params (nonzero) | NTM steps | unrolled params (nonzero) | lookup bits | NTM bits | unrolled bits | cheapest |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " (lookup > NTM)" if not r["lookup_cheaper_than_ntm"] else ""
        lines.append(f"| 2^{r['log2_n']} | {r['ntm_params']} ({r['ntm_nonzero']}) | {r['ntm_steps']:,} | "
                     f"{r['unrolled_params']:,} ({r['unrolled_nonzero']:,}) | {r['lookup_bits']:,} | {r['ntm_bits']:,} | "
                     f"{r['unrolled_bits']:,} | {r['cheapest']}{mark} |")
    lines += ["", f"Bits = parameters x {rows[0]['word_bits']} (float32) for n < 2^{F32_BITS}, x 64 (float64) from there.",
              "Memorising (a lookup table) stops being cheaper than searching at:", ""]
    for key, label in [("ntm", "compiled NTM"), ("ntm_nonzero", "compiled NTM, nonzero weights only"),
                       ("unrolled", "unrolled network"), ("unrolled_nonzero", "unrolled network, nonzero weights only")]:
        lines.append(f"- {label}: n = {x[key]:,} (2^{math.log2(x[key]):.2f})")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], x: dict[str, int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax.loglog(n, [r["ntm_bits"] for r in rows], "o-", label="compiled NTM (constant params)")
    ax.loglog(n, [r["unrolled_bits"] for r in rows], "s-", label="unrolled feedforward (params x steps)")
    ax.loglog(n, [r["ntm_nonzero_bits"] for r in rows], "o:", color="C0", alpha=0.6, label="compiled NTM, nonzero only")
    ax.loglog(n, [r["unrolled_nonzero_bits"] for r in rows], "s:", color="C1", alpha=0.6, label="unrolled, nonzero only")
    ax.loglog(n, [r["lookup_bits"] for r in rows], "^-", color="C2", label="lookup table (n x log2 n bits)")
    for key, color in [("ntm", "C0"), ("unrolled_nonzero", "C1")]:
        if x[key] <= n[-1]:
            ax.axvline(x[key], color=color, ls="--", lw=1)
            ax.annotate(f"lookup > {key}\nn={x[key]:,}", (x[key], rows[0]["lookup_bits"]), textcoords="offset points",
                        xytext=(4, 0), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (answers memorised / searched for every n' <= n)")
    ax.set_ylabel(f"bits (float32 words below 2^{F32_BITS}, float64 from there)")
    ax.set_title(f"size; lookup > dense unrolled only at n = 2^{math.log2(x['unrolled']):.1f}", fontsize=9)
    ax.legend(fontsize=8)
    ax2.loglog(n, [r["ntm_steps"] for r in rows], "o-", color="C0")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("n")
    ax2.set_ylabel("NTM steps = floor(n^0.7) + 1")
    ax2.set_title("time: the compiled NTM pays in steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for size.json, size.md, size.png")
    ap.add_argument("--min-bits", type=int, default=4)
    ap.add_argument("--max-bits", type=int, default=30)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = size_table(range(args.min_bits, args.max_bits + 1))
    x = {"ntm": crossover("ntm"), "ntm_nonzero": crossover("ntm", nonzero=True),
         "unrolled": crossover("unrolled"), "unrolled_nonzero": crossover("unrolled", nonzero=True)}
    md = markdown(rows, x)
    save_outputs(args.out, "size", {"rows": rows, "crossover_lookup_exceeds": x, "f32_bits": F32_BITS}, md)
    figure(rows, x, os.path.join(args.out, "size.png"))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
