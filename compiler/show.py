"""Print what the compiled modsquare NTM does: its wiring and, for one n, every step.

    python -m compiler.show --n 20        # a few seconds
    python -m compiler.show --n 200 --png docs/compiled_ntm/heads.png   # also the head-trajectory figure

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


def heads_png(n: int, path: str) -> None:
    """Figure of one whole run (``ntm.unroll``'s trace): every head's weighting over the two memory rows
    at every step, and the registers i, s, k, best (memory row 0 decoded) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = compile_program(MODSQUARE)
    T = modsquare_steps(n)
    xs = jnp.full((T, 1), float(n))

    def run(x):  # registers after every step: scan over ntm.step, same code path as ntm.unroll
        def body(s, xt):
            s, y = ntm.step(c.params, s, xt, c.cfg)
            return s, (s.memory[0, : len(c.layout.registers)], s.read_weights, s.write_weights, y)
        return jax.lax.scan(body, ntm.initial_state(c.params, c.cfg), x)[1]

    regs_t, rw, ww, ys = (np.asarray(a) for a in jax.jit(run)(xs))
    ys_u, trace, _ = jax.jit(lambda x: ntm.unroll(c.params, c.cfg, x))(xs)
    assert np.array_equal(np.asarray(trace.write_weights), ww) and np.array_equal(np.asarray(ys_u), ys)
    regs_t = regs_t * 2.0**c.layout.value_bits
    W = ww.shape[1]
    labels = ["read head (registers)", "write 0: i+1, s+2i+1 (always)", "write 1: s -= n (2nd reduction)",
              "write 2: s -= n", "write 3: k, best := i, s if s > best"]
    heads = [rw[:, 0]] + [ww[:, j] for j in range(W)]  # each [T, N]
    t = np.arange(1, T + 1)
    fig, axes = plt.subplots(len(heads) + 1, 1, figsize=(11, 1.0 * len(heads) + 3.2), sharex=True,
                             gridspec_kw={"height_ratios": [0.55] * len(heads) + [3]})
    for ax, w, lab in zip(axes, heads, labels):
        ax.imshow(w.T, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
                  extent=(0.5, T + 0.5, 1.5, -0.5))
        ax.set_yticks([0, 1], ["row 0 (regs)", "row 1 (scratch)"], fontsize=7)
        ax.set_title(lab, fontsize=8, loc="left", pad=2)
    ax = axes[-1]
    for j, name in enumerate(c.layout.registers):
        ax.step(t, regs_t[:, j], where="post", label=name, lw=1)
    ax.axhline(n, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("NTM step t (one loop iteration each)")
    ax.set_ylabel("register value")
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    fig.suptitle(f"compiled modsquare NTM, n = {n}: {T} steps, answer k = {int(round(float(ys[-1, 0])))}; "
                 "black = weight 1 (every weighting is exactly one-hot)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--png", help="also save the head-trajectory figure of the run at --n here")
    args = ap.parse_args(argv)
    if args.png:
        heads_png(args.n, args.png)
        print(f"wrote {args.png}")
        return 0
    print(compile_program(MODSQUARE).describe())
    print()
    print(step_table(args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
