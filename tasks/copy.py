"""Copy (Graves 2014, sec. 4.1): see a sequence of random bit vectors, then reproduce it.

Input channels: `width` data bits + 1 delimiter. Example of length L (T = 2L + 1 steps):
steps 0..L-1 show the vectors, step L the delimiter alone, steps L+1..2L are blank inputs on
which the model must output vector t - L - 1. Only those L steps are scored.
Size = L, drawn uniformly from [min_size, max_size]; difficulty = L.
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
class Copy(BitTask):
    name: ClassVar[str] = "copy"
    eval_sizes: ClassVar[tuple[int, ...]] = (10, 20, 40, 80, 120)  # Graves 2014 Fig. 4: trained on 1-20, tested up to 120
    min_size: int = 1
    max_size: int = 20
    width: int = 8

    def __post_init__(self) -> None:
        check_range("copy length", self.min_size, self.max_size)

    @property
    def input_size(self) -> int:
        return self.width + 1

    @property
    def output_size(self) -> int:
        return self.width

    def max_steps(self) -> int:
        return 2 * self.max_size + 1

    def sample(self, key: Array, batch_size: int) -> Batch:
        k_len, k_bits = jax.random.split(key)
        B, T, Lmax = batch_size, self.max_steps(), self.max_size
        length = sample_sizes(k_len, B, self.min_size, self.max_size)  # [B]
        bits = jax.random.bernoulli(k_bits, 0.5, (Lmax, B, self.width)).astype(jnp.float32)  # [L, B, W]
        t = time_index(T, B)  # [T, B]
        L = length[None, :]
        shown = (t < L)[..., None]
        src = jnp.take_along_axis(bits, jnp.clip(t, 0, Lmax - 1)[..., None], axis=0)  # [T, B, W]
        delim = (t == L).astype(jnp.float32)[..., None]
        inputs = jnp.concatenate([src * shown, delim], axis=-1)  # [T, B, W+1]
        scored = (t > L) & (t <= 2 * L)
        out_src = jnp.take_along_axis(bits, jnp.clip(t - L - 1, 0, Lmax - 1)[..., None], axis=0)
        targets = out_src * scored[..., None]  # [T, B, W]
        return Batch(inputs, targets, scored.astype(jnp.float32), 2 * length + 1, length, length.astype(jnp.float32))

    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """From one example's inputs [T, X]: the targets [T, Y] and score mask [T]."""
        T = inputs.shape[0]
        delim_at = int(np.flatnonzero(inputs[:, self.width] == 1)[0])
        seq = inputs[:delim_at, : self.width]
        targets = np.zeros((T, self.width), np.float32)
        mask = np.zeros(T, np.float32)
        targets[delim_at + 1 : 2 * delim_at + 1] = seq
        mask[delim_at + 1 : 2 * delim_at + 1] = 1
        assert steps == 2 * delim_at + 1
        return targets, mask
