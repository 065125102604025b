"""Associative recall (Graves 2014, sec. 4.3): see a list of items, then one of them as a query,
and output the item that followed it in the list.

An item is `item_len` random bit vectors of `width` bits. Input channels: `width` data bits,
1 item delimiter, 1 query delimiter. Example with K items (s = item_len + 1,
T = K*s + item_len + 2 + item_len steps):
  for k in 0..K-1: step k*s shows the item delimiter alone, steps k*s+1..k*s+item_len item k;
  step K*s shows the query delimiter, the next item_len steps the query item q (uniform among
  the first K-1 items), then a second query delimiter at K*s+item_len+1;
  the final item_len steps have blank inputs, and the model must output item q+1 on them.
Only those item_len answer steps are scored. If the query item occurs more than once in the list
(probability about K^2 * 2^-(item_len*width+1)) the answer is the item after its first
occurrence, so the answer is always determined by the inputs.
Size = K in [min_size, max_size] (min_size >= 2), uniform; difficulty = K.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Batch, BitTask, check_range, sample_sizes, time_index

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AssociativeRecall(BitTask):
    name: ClassVar[str] = "associative_recall"
    eval_sizes: ClassVar[tuple[int, ...]] = (3, 6, 9, 12)
    min_size: int = 2
    max_size: int = 6
    item_len: int = 3
    width: int = 6

    def __post_init__(self) -> None:
        check_range("associative_recall items", self.min_size, self.max_size, minimum=2)
        check_range("associative_recall item_len", self.item_len, self.item_len)
        check_range("associative_recall width", self.width, self.width)

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width

    def steps_for(self, n_items):
        return n_items * (self.item_len + 1) + self.item_len + 2 + self.item_len

    def max_steps(self) -> int:
        return self.steps_for(self.max_size)

    def sample(self, key: Array, batch_size: int) -> Batch:
        k_n, k_q, k_bits = jax.random.split(key, 3)
        B, T, Kmax, I, W = batch_size, self.max_steps(), self.max_size, self.item_len, self.width
        s = I + 1
        n = sample_sizes(k_n, B, self.min_size, self.max_size)  # [B]
        items = jax.random.bernoulli(k_bits, 0.5, (Kmax, I, B, W)).astype(jnp.float32)  # [K, I, B, W]
        q = jax.random.randint(k_q, (B,), jnp.zeros((B,), jnp.int32), n - 1, dtype=jnp.int32)  # [0, n-2]
        # first occurrence of the query item (duplicates are astronomically rare, but keep it exact)
        q_item = jnp.take_along_axis(items, q[None, None, :, None], axis=0)  # [1, I, B, W]
        same = jnp.all(items == q_item, axis=(1, 3)) & (jnp.arange(Kmax)[:, None] <= q[None, :])  # [K, B]
        q = jnp.argmax(same, axis=0).astype(jnp.int32)  # [B]
        flat = items.reshape(Kmax * I, B, W)

        t = time_index(T, B)  # [T, B]
        N, Q = n[None, :], q[None, :]
        in_items = t < N * s
        pos, item = t % s, t // s
        item_delim = in_items & (pos == 0)
        item_vec = in_items & (pos > 0)
        q0 = N * s
        query_delim = (t == q0) | (t == q0 + I + 1)
        query_vec = (t > q0) & (t <= q0 + I)
        a0 = q0 + I + 2
        answer = (t >= a0) & (t < a0 + I)
        src = jnp.where(item_vec, item * I + pos - 1, jnp.where(query_vec, Q * I + (t - q0 - 1), (Q + 1) * I + (t - a0)))
        vecs = jnp.take_along_axis(flat, jnp.clip(src, 0, Kmax * I - 1)[..., None], axis=0)  # [T, B, W]
        f32 = lambda m: m.astype(jnp.float32)[..., None]  # noqa: E731
        inputs = jnp.concatenate([vecs * f32(item_vec | query_vec), f32(item_delim), f32(query_delim)], axis=-1)
        targets = vecs * f32(answer)
        return Batch(inputs, targets, answer.astype(jnp.float32), self.steps_for(n).astype(jnp.int32), n,
                     n.astype(jnp.float32))

    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """From one example's inputs [T, X]: the targets [T, Y] and score mask [T]."""
        T, W, I = inputs.shape[0], self.width, self.item_len
        starts = np.flatnonzero(inputs[:, W] == 1)
        q_open, q_close = np.flatnonzero(inputs[:, W + 1] == 1)[:2]
        items = [inputs[p + 1 : p + 1 + I, :W] for p in starts]
        query = inputs[q_open + 1 : q_close, :W]
        k = next(i for i, it in enumerate(items) if np.array_equal(it, query))
        targets = np.zeros((T, W), np.float32)
        mask = np.zeros(T, np.float32)
        targets[q_close + 1 : q_close + 1 + I] = items[k + 1]
        mask[q_close + 1 : q_close + 1 + I] = 1
        assert steps == q_close + 1 + I, (steps, q_close + 1 + I)
        return targets, mask
