"""NTM addressing, reading and writing as small pure functions (Graves et al. 2014, sec. 3).

Each function works on ONE head of ONE example; vmap over heads and batch.
Shapes: N memory rows, M memory width, S shift range (shift vector has 2S+1 entries).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

EPS = 1e-8
_TINY = 1e-30


class HeadParams(NamedTuple):
    """Constrained addressing parameters of one head (leading head axes allowed)."""

    key: Array  # [M]
    beta: Array  # [] key strength >= 0
    gate: Array  # [] interpolation gate in [0, 1]
    shift: Array  # [2S+1] distribution over shifts -S..S
    gamma: Array  # [] sharpening >= 1

    @staticmethod
    def from_raw(raw: Array, memory_width: int, shift_range: int) -> "HeadParams":
        """Unconstrained controller outputs [..., M + 2S + 4] -> HeadParams."""
        M, S = memory_width, shift_range
        key = jnp.tanh(raw[..., :M])
        beta = jax.nn.softplus(raw[..., M])
        gate = jax.nn.sigmoid(raw[..., M + 1])
        shift = jax.nn.softmax(raw[..., M + 2 : M + 3 + 2 * S], axis=-1)
        gamma = 1.0 + jax.nn.softplus(raw[..., M + 3 + 2 * S])
        return HeadParams(key, beta, gate, shift, gamma)


def cosine_similarity(memory: Array, key: Array) -> Array:
    """memory [N, M], key [M] -> [N]; finite (and differentiable) for zero rows or keys."""
    dot = memory @ key  # [N]
    norms = jnp.sqrt(jnp.sum(memory * memory, axis=-1) + EPS) * jnp.sqrt(jnp.sum(key * key) + EPS)  # [N]
    return dot / norms


def content_weights(memory: Array, key: Array, beta: Array) -> Array:
    """Focus by content: softmax(beta * cos(key, row)) -> [N]."""
    return jax.nn.softmax(beta * cosine_similarity(memory, key))


def interpolate(w_content: Array, w_prev: Array, gate: Array) -> Array:
    """g * w_content + (1 - g) * w_prev -> [N]."""
    return gate * w_content + (1.0 - gate) * w_prev


def shift(w: Array, s: Array) -> Array:
    """Circular convolution of w [N] with a shift distribution s [2S+1] over offsets -S..S.

    out[i] = sum_j w[i - j] * s[j + S]: mass at row i moves to row i + j.
    """
    S = (s.shape[0] - 1) // 2
    out = jnp.zeros_like(w)
    for i, j in enumerate(range(-S, S + 1)):
        out = out + s[i] * _roll(w, j)
    return out


def _roll(w: Array, j: int) -> Array:
    """jnp.roll(w, j) for a static j, as one concatenate (jnp.roll under vmap is ~100x slower on CPU)."""
    j %= w.shape[0]
    return jnp.concatenate([w[w.shape[0] - j :], w[: w.shape[0] - j]]) if j else w


def sharpen(w: Array, gamma: Array) -> Array:
    """w^gamma / sum(w^gamma), computed as a softmax in log space (stable for large gamma)."""
    return jax.nn.softmax(gamma * jnp.log(jnp.maximum(w, _TINY)))


def address(memory: Array, w_prev: Array, head: HeadParams) -> Array:
    """The paper's pipeline: content -> interpolation -> shift -> sharpening. Returns [N]."""
    wc = content_weights(memory, head.key, head.beta)
    wg = interpolate(wc, w_prev, head.gate)
    return sharpen(shift(wg, head.shift), head.gamma)


def read(memory: Array, weights: Array) -> Array:
    """Weighted sum of rows: memory [N, M], weights [..., N] -> [..., M]."""
    return weights @ memory


def write(memory: Array, weights: Array, erase: Array, add: Array) -> Array:
    """Erase then add for W heads at once: weights [W, N], erase/add [W, M] -> memory [N, M].

    Erasures multiply (order-free), additions sum, as in the paper.
    """
    # A Python loop over the (static, small) head count: the gradient of jnp.prod is ~5x slower.
    keep = 1.0 - weights[0][:, None] * erase[0][None, :]  # [N, M]
    added = weights[0][:, None] * add[0][None, :]  # [N, M]
    for h in range(1, weights.shape[0]):
        keep = keep * (1.0 - weights[h][:, None] * erase[h][None, :])
        added = added + weights[h][:, None] * add[h][None, :]
    return memory * keep + added


# --- Transposed-memory variants used inside ntm.core's time loop ---------------------------------
# memory_t is memory.T, [M, N]. Same maths as the functions above; see core._step_t for why.


def _cosine_similarity_t(memory_t: Array, key: Array) -> Array:
    dot = key @ memory_t  # [N]
    norms = jnp.sqrt(jnp.sum(memory_t * memory_t, axis=0) + EPS) * jnp.sqrt(jnp.sum(key * key) + EPS)  # [N]
    return dot / norms


def _address_t(memory_t: Array, w_prev: Array, head: HeadParams) -> Array:
    wc = jax.nn.softmax(head.beta * _cosine_similarity_t(memory_t, head.key))
    wg = interpolate(wc, w_prev, head.gate)
    return sharpen(shift(wg, head.shift), head.gamma)


def _write_t(memory_t: Array, weights: Array, erase: Array, add: Array) -> Array:
    keep = 1.0 - erase[0][:, None] * weights[0][None, :]  # [M, N]
    added = add[0][:, None] * weights[0][None, :]  # [M, N]
    for h in range(1, weights.shape[0]):
        keep = keep * (1.0 - erase[h][:, None] * weights[h][None, :])
        added = added + add[h][:, None] * weights[h][None, :]
    return memory_t * keep + added


def _read_t(memory_t: Array, weights: Array) -> Array:
    return weights @ memory_t.T  # [..., M]
