"""Print what the compiled modsquare NTM does: its wiring and, for one n, every step.

    python -m compiler.show --n 20        # a few seconds

Per step t: the registers in memory row 0 after the step (decoded: column * 2^32), the row each
write head landed on (0 = registers, 1 = scratch) and the output y.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import ntm
from compiler.compile import compile_program
from compiler.programs import MODSQUARE, modsquare_steps


def step_table(n: int) -> str:
    c = compile_program(MODSQUARE)
    T = modsquare_steps(n)
    state = ntm.initial_state(c.params, c.cfg)
    step = jax.jit(lambda s, x: ntm.step(c.params, s, x, c.cfg))
    regs = c.layout.registers
    W = c.cfg.num_write_heads
    head_names = " ".join(f"h{j}" for j in range(W))
    lines = [f"n = {n}, steps = floor(n^0.7) + 1 = {T}", "",
             f"| t | {' | '.join(regs)} | rows of write heads {head_names} | read row | y |",
             "|---|" + "---|" * len(regs) + "---|---|---|"]
    for t in range(1, T + 1):
        state, y = step(state, jnp.array([float(n)]))
        row0 = np.asarray(state.memory[0, : len(regs)]) * 2.0**c.layout.value_bits
        rows = " ".join(str(int(np.argmax(w))) for w in np.asarray(state.write_weights))
        lines.append(f"| {t} | " + " | ".join(str(int(v)) for v in row0) +
                     f" | {rows} | {int(np.argmax(state.read_weights[0]))} | {float(y[0]):g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args(argv)
    print(compile_program(MODSQUARE).describe())
    print()
    print(step_table(args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
