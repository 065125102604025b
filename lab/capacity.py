"""How big must a memoriser be? The smallest MLP and LSTM that answer modsquare for every n < 2^b.

    python -m lab.capacity --bits 4 5 6 7 8 9 10 11 12 --up-to lstm=10 --ntm runs/modsquare-serial-4/ntm-s0 \
        --out docs/results/modsquare-capacity

The seed's size question, measured: trained on every n < 2^b (capacity, not generalisation: nothing is held
out), how many parameters does a feedforward or recurrent network need to give the loop's answer k for
>= ``--target`` (0.99) of them? Against it stand the networks that search: the compiled NTM (``compiler.size``;
the same parameters for every n) and a trained bit-serial NTM (``--ntm RUN``: one model for every b, its error
measured on every n at each b through the evaluation path), and the lookup table (b x 2^b bits, in 32-bit
words).

The representations: the MLP (``lab.models.MLP``, one step) sees n's b bits at once on b input units and
gives k's b bits on b outputs; the LSTM (``lab.models.LSTM``) reads n one bit per step (least significant
first) over b steps, then gives k one bit per step over b answer steps (input 1 on). Either way sigmoid
cross-entropy per bit, and an n is answered when every bit of k is right. Parameters are counted as the
model has them (lab.models.count_params).

Each (model, b, width) is trained once (seed 0), full batch (every n < 2^b at once), for ``--steps`` Adam
steps with the learning rate decayed to 0 on a cosine. Widths lie on a grid in steps of about sqrt(2) from
``--min-width`` (``widths``); each b searches down and up from the width the last b needed (``sweep``). A
budget-bound answer: a width that misses within ``--steps`` steps might fit with more, so "smallest width"
means smallest within that budget (and one fit per width: a lucky or unlucky initialisation moves it a grid
step). Each fit is appended to tried.jsonl under ``--out`` as it finishes; capacity.json, capacity.md and
capacity.png are written at the end.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np

from lab.cli import Parser

MODEL_KINDS = ("mlp", "lstm")


def modsquare_table(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) for every n in 1..2^bits - 1: the loop's answer, from tasks.modsquare.solve."""
    from tasks.modsquare import solve

    n = np.arange(1, 2**bits, dtype=np.int64)
    return n, np.array([solve(int(m)) for m in n], np.int64)


def encode(n: np.ndarray, k: np.ndarray, bits: int, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs [T, B, X], targets [T, B, Y], mask [T, B]) of the module docstring's representations:
    the MLP's T = 1, X = Y = b; the LSTM's T = 2b, X = 2, Y = 1."""
    j = np.arange(bits)
    B = len(n)
    n_bits = ((n[:, None] >> j) & 1).astype(np.float32)  # [B, b]
    k_bits = ((k[:, None] >> j) & 1).astype(np.float32)
    if kind == "mlp":
        return n_bits[None], k_bits[None], np.ones((1, B), np.float32)
    inputs = np.zeros((2 * bits, B, 2), np.float32)
    inputs[:bits, :, 0] = n_bits.T
    inputs[bits:, :, 1] = 1.0
    targets = np.zeros((2 * bits, B, 1), np.float32)
    targets[bits:, :, 0] = k_bits.T
    mask = np.zeros((2 * bits, B), np.float32)
    mask[bits:] = 1.0
    return inputs, targets, mask


def fit(kind: str, width: int, bits: int, steps: int, lr: float, seed: int = 0) -> dict[str, Any]:
    """Train one ``kind`` network of hidden ``width`` on every n < 2^bits; its exact-match share and size."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from lab import models

    n, k = modsquare_table(bits)
    x, y, m = (jnp.asarray(a) for a in encode(n, k, bits, kind))
    (T, B), X, Y = m.shape, x.shape[-1], y.shape[-1]
    steps_arr = jnp.full((B,), T, jnp.int32)
    model = models.make_model(kind, X, Y, models.ModelConfig(hidden_size=width, mlp_one_output=True), T, seed)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt = tx.init(params)

    def loss_fn(p):
        logits, _ = nnx.merge(graphdef, p)(x, steps_arr)
        return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, y) * m[..., None]) / B

    @jax.jit
    def train(p, o):
        def body(_, po):
            p, o = po
            g = jax.grad(loss_fn)(p)
            u, o = tx.update(g, o, p)
            return optax.apply_updates(p, u), o
        return jax.lax.fori_loop(0, steps, body, (p, o))

    @jax.jit
    def exact(p):
        logits, _ = nnx.merge(graphdef, p)(x, steps_arr)
        right = ((logits > 0) == (y > 0.5)) | (m[..., None] == 0)  # [T, B, Y]
        return jnp.mean(jnp.all(right, axis=(0, 2)))

    t0 = time.perf_counter()
    params, opt = train(params, opt)
    loss = float(loss_fn(params))
    acc = float(exact(params)) if math.isfinite(loss) else 0.0  # a fit that diverged is a miss
    return {"model": kind, "bits": bits, "width": width, "params": models.count_params(model), "exact": acc,
            "loss": loss if math.isfinite(loss) else None, "examples": B, "steps": steps, "lr": lr,
            "seconds": round(time.perf_counter() - t0, 1)}


def widths(lo: int, hi: int) -> list[int]:
    """The width grid: lo, then steps of about sqrt(2) (distinct integers) up to hi."""
    out, w = [], float(lo)
    while round(w) <= hi:
        if not out or round(w) != out[-1]:
            out.append(int(round(w)))
        w *= math.sqrt(2)
    return out


def sweep(kinds: list[str], bits: list[int], steps: int, lr: float, min_width: int, max_width: int, target: float,
          log=print, record=None, up_to: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every fit tried, in order. Per kind and b, on the grid of ``widths``: from one grid step below the last
    b's answer, down while the width fits and up while it does not; the smallest fitting width is the answer
    (assuming that a wider network fits whatever a narrower one does). ``up_to``: the largest b per kind."""
    grid = widths(min_width, max_width)
    tried = []
    for kind in kinds:
        i = 0
        for b in [b for b in bits if b <= (up_to or {}).get(kind, b)]:
            fits: dict[int, bool] = {}
            i = max(i - 1, 0)
            while 0 <= i < len(grid) and i not in fits:
                r = fit(kind, grid[i], b, steps, lr)
                tried.append(r)
                if record is not None:
                    record(r)
                log(f"{kind:4s} b={b:2d} width={grid[i]:5d} params={r['params']:9,d} exact={r['exact']:.4f} "
                    f"({r['seconds']} s)")
                fits[i] = r["exact"] >= target
                i = i - 1 if fits[i] else i + 1
                if i in fits or i < 0:  # the boundary is found (or the narrowest width fits)
                    break
            if not any(fits.values()):  # the widest allowed misses: no answer for b or beyond
                break
            i = min(j for j, ok in fits.items() if ok)
    return tried


def needed(tried: list[dict[str, Any]], target: float) -> dict[str, dict[int, dict[str, Any]]]:
    """{kind: {b: the smallest fit that reaches target}}."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for r in tried:
        if r["exact"] >= target:
            cur = out.setdefault(r["model"], {}).get(r["bits"])
            if cur is None or r["params"] < cur["params"]:
                out[r["model"]][r["bits"]] = r
    return out


def lookup_words(bits: int) -> int:
    """A table of k for every n < 2^bits: 2^bits entries of ``bits`` bits, in 32-bit words."""
    return math.ceil(bits * 2**bits / 32)


def compiled_params() -> int:
    """Parameters of the compiled modsquare NTM (compiler/; the same for every n)."""
    import ntm
    from compiler.compile import compile_program
    from compiler.programs import MODSQUARE

    return ntm.num_params(compile_program(MODSQUARE).params)


def ntm_errors(run: str, bits: list[int], examples: int, seed: int) -> dict[str, Any]:
    """A trained modsquare_serial NTM's error on ``examples`` n of each width (every n, fresh batch)."""
    from lab import evaluation, models
    from lab.diagnose import load_serial_ntm

    cfg, task, model, _ = load_serial_ntm(run, None, "--ntm")
    ev = evaluation.Evaluator.of(model)
    err = {}
    for b in bits:
        t = task.with_sizes(b, b)
        err[b] = float(ev.metrics(t, evaluation.fixed_batch(t, examples, seed))["error"].mean())
    return {"run": run, "task": cfg.task, "params": models.count_params(model), "examples": examples, "seed": seed,
            "error": err}


def markdown(found: dict, tried: list[dict[str, Any]], ntm: dict | None, compiled: int, target: float,
             bits: list[int]) -> str:
    lines = [f"Smallest width (on a sqrt(2) grid) whose network gives k for >= {target:.0%} of every n < 2^b, "
             f"trained on all of them ({tried[0]['steps']:,} full-batch Adam steps at lr {tried[0]['lr']:g}, "
             "cosine decay); parameters in brackets.", "",
             "| b | n | " + " | ".join(f"{k.upper()}" for k in found)
             + " | lookup table (32-bit words) | compiled NTM |" + (" trained NTM: error |" if ntm else ""),
             "|---:|---:|" + "---:|" * len(found) + "---:|---:|" + ("---:|" if ntm else "")]
    for b in bits:
        cells = [f"{found[k][b]['width']} ({found[k][b]['params']:,})" if b in found[k]
                 else ("not reached" if any(r["model"] == k and r["bits"] == b for r in tried) else "not tried")
                 for k in found]
        lines.append(f"| {b} | {2**b - 1:,} | " + " | ".join(cells) + f" | {lookup_words(b):,} | {compiled:,} |"
                     + (f" {ntm['error'][b]:.3f} |" if ntm and b in ntm["error"] else (" |" if ntm else "")))
    if ntm:
        lines += ["", f"Trained NTM: {ntm['run']} ({ntm['params']:,} parameters, one model for every b; error on "
                      f"{ntm['examples']} fresh n of each width, key {ntm['seed']}, every n)."]
    lines += ["", "Every fit tried:", "", "| model | b | width | params | exact | seconds |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['bits']} | {r['width']} | {r['params']:,} | {r['exact']:.4f} | {r['seconds']} |"
              for r in tried]
    return "\n".join(lines) + "\n"


def figure(found: dict, ntm: dict | None, compiled: int, bits: list[int], target: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (kind, rows) in enumerate(found.items()):
        bs = sorted(rows)
        ax.semilogy(bs, [rows[b]["params"] for b in bs], "o-", color=f"C{i}",
                    label=f"{kind.upper()} trained on every n (smallest width to {target:.0%})")
    ax.semilogy(bits, [lookup_words(b) for b in bits], "^--", color="C2",
                label="lookup table (b x 2^b bits, 32-bit words)")
    ax.axhline(compiled, color="C3", ls="-", label=f"compiled NTM ({compiled:,}; every n)")
    if ntm:
        good = [b for b in bits if ntm["error"].get(b, 1.0) <= 1 - target]
        ax.axhline(ntm["params"], color="C4", ls=":", label=f"trained bit-serial NTM ({ntm['params']:,})")
        if good:
            ax.plot(good, [ntm["params"]] * len(good), "s", color="C4",
                    label=f"... where its error <= {1 - target:.0%}")
    ax.set_xlabel("b (every n < 2^b)")
    ax.set_ylabel("parameters")
    ax.set_title("modsquare: parameters to answer every n < 2^b", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--bits", type=int, nargs="+", default=list(range(4, 13)))
    p.add_argument("--models", nargs="+", choices=MODEL_KINDS, default=list(MODEL_KINDS))
    p.add_argument("--steps", type=int, default=3000, help="full-batch Adam steps per fit")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--min-width", type=int, default=4)
    p.add_argument("--max-width", type=int, default=1024)
    p.add_argument("--target", type=float, default=0.99, help="exact-match share a fit must reach")
    p.add_argument("--up-to", nargs="+", default=[], metavar="MODEL=B",
                   help="the largest b for a model (e.g. lstm=10: its full-batch fits at 11-12 bits take tens of "
                        "minutes each on 2 CPU cores)")
    p.add_argument("--ntm", default="", metavar="RUN", help="a trained modsquare_serial NTM run to draw beside them")
    p.add_argument("--ntm-examples", type=int, default=256, help="fresh n per width for --ntm")
    p.add_argument("--out", required=True, help="directory for capacity.json / .md / .png")
    a = p.parse_args(argv)
    if not all(2 <= b <= 16 for b in a.bits) or a.bits != sorted(set(a.bits)):
        raise ValueError(f"--bits must be increasing values in 2..16, got {a.bits}")
    if not 0 < a.target <= 1 or a.steps < 1 or a.lr <= 0 or not 1 <= a.min_width <= a.max_width:
        raise ValueError("need 0 < --target <= 1, --steps >= 1, --lr > 0 and 1 <= --min-width <= --max-width")
    up_to = {}
    for item in a.up_to:
        kind, _, b = item.partition("=")
        if kind not in MODEL_KINDS or not b.isdigit():
            raise ValueError(f"--up-to takes MODEL=B with MODEL in {MODEL_KINDS}, got {item!r}")
        up_to[kind] = int(b)
    if a.ntm_examples < 1:
        raise ValueError(f"--ntm-examples must be >= 1, got {a.ntm_examples}")
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        raise ValueError(f"--out {a.out} exists and is not a directory")
    kinds = list(dict.fromkeys(a.models))
    ntm = ntm_errors(a.ntm, a.bits, a.ntm_examples, seed=2) if a.ntm else None
    os.makedirs(a.out, exist_ok=True)  # before any fit: a bad --out fails first, and every fit is kept as it ends
    log_path = os.path.join(a.out, "tried.jsonl")
    open(log_path, "w").close()

    def record(r: dict[str, Any]) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(r) + "\n")

    tried = sweep(kinds, a.bits, a.steps, a.lr, a.min_width, a.max_width, a.target, record=record, up_to=up_to)
    found = needed(tried, a.target)
    for kind in kinds:
        found.setdefault(kind, {})
    compiled = compiled_params()
    with open(os.path.join(a.out, "capacity.json"), "w") as f:
        json.dump({"target": a.target, "bits": a.bits, "tried": tried, "compiled_ntm_params": compiled,
                   "trained_ntm": ntm}, f, indent=1)
    with open(os.path.join(a.out, "capacity.md"), "w") as f:
        f.write(markdown(found, tried, ntm, compiled, a.target, a.bits))
    figure(found, ntm, compiled, a.bits, a.target, os.path.join(a.out, "capacity.png"))
    print(f"wrote {a.out}/capacity.json, capacity.md, capacity.png")
    return 0


if __name__ == "__main__":
    import sys

    from lab.cli import run_cli

    sys.exit(run_cli(main))
