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

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tasks.polymax import cheb_eval, maximise

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


def regret(c: Array, x: Array) -> np.ndarray:
    """max P - P(x) for coefficients c [B, D+1] and answers x [B] (the task's regret, clipped at 0)."""
    _, best, _ = maximise(c)
    return np.maximum(np.asarray(best - cheb_eval(c, x[:, None])[0][:, 0]), 0.0)
