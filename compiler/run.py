"""Running compiled programs on the NTM (``ntm.unroll``), batched, and decoding the answer.

Inputs are the program's integer inputs as real numbers, one X-vector per step (modsquare: n on
every step). The answer is the NTM output at the example's last step, an integer-valued real;
``decode`` rounds it (and ``exact`` tells whether it already was an integer).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import ntm
from compiler.compile import Compiled

Array = jax.Array


def final_outputs(params, cfg: ntm.NTMConfig, xs: Array, steps: Array) -> Array:
    """Batched sequences xs [B, T, X], steps [B] (1 <= steps <= T) -> output at each last step [B]."""

    def one(x, n):
        ys, _, _ = ntm.unroll(params, cfg, x, n)  # [T, 1]
        return ys[n - 1, 0]

    return jax.vmap(one)(xs, steps)


@functools.partial(jax.jit, static_argnames=("cfg", "chunk"))
def _chunk(params, cfg: ntm.NTMConfig, state: ntm.NTMState, x: Array, todo: Array, y_last: Array, chunk: int):
    """Advance a batch by up to ``chunk`` steps of constant input x [B, X]; todo [B] steps left."""
    ns = jnp.clip(todo, 0, chunk)

    def one(s, xi, n):
        inputs = jnp.broadcast_to(xi, (chunk, xi.shape[0]))  # [T, X]
        ys, _, final = ntm.unroll(params, cfg, inputs, n, state=s)
        return final, ys[jnp.maximum(n - 1, 0), 0]

    state, y = jax.vmap(one)(state, x, ns)
    return state, jnp.where(ns > 0, y, y_last), todo - ns


def run_constant_input(compiled: Compiled, x: np.ndarray, steps: np.ndarray, *, batch: int = 256, chunk: int = 128,
                       return_state: bool = False):
    """The same input on every step (modsquare): x [B, X], steps [B] -> final outputs [B] (and the
    final NTMState of every example, leading axis B, when ``return_state``).

    Examples run sorted by step count in batches of ``batch`` (the last one padded), each batch
    in chunks of ``chunk`` steps passing the NTM state along: memory does not grow with the step
    count, a batch stops after its longest example, and every call compiles one shape.
    """
    params, cfg = compiled.params, compiled.cfg
    dtype = params["heads"]["w"].dtype
    x, steps = np.asarray(x), np.asarray(steps)
    order = np.argsort(steps, kind="stable")
    state0 = ntm.initial_state(params, cfg)
    ys, states = np.zeros(len(steps), np.dtype(dtype)), []
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        pad = np.concatenate([idx, np.full(batch - len(idx), idx[-1])])
        state = jax.tree.map(lambda a: jnp.broadcast_to(a, (batch, *a.shape)), state0)
        todo = jnp.asarray(steps[pad], jnp.int32)
        y = jnp.zeros((batch,), dtype)
        xb = jnp.asarray(x[pad], dtype)
        for _ in range(-(-int(steps[idx].max()) // chunk)):
            state, y, todo = _chunk(params, cfg, state, xb, todo, y, chunk)
        ys[idx] = np.asarray(y)[: len(idx)]
        if return_state:
            states.append((idx, jax.tree.map(lambda a: np.asarray(a)[: len(idx)], state)))
    if not return_state:
        return ys
    inverse = np.argsort(np.concatenate([i for i, _ in states]))
    merged = jax.tree.map(lambda *a: np.concatenate(a)[inverse], *[s for _, s in states])
    return ys, merged


def decode(y: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(y, np.float64)).astype(np.int64)


def exact(y: np.ndarray) -> np.ndarray:
    return np.asarray(y) == np.rint(np.asarray(y))


def save_outputs(out: str, name: str, data: dict, markdown: str) -> None:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md`` (what each compiler command saves)."""
    import json
    import os

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(markdown)
