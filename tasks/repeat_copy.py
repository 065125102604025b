"""Repeat copy (Graves 2014, sec. 4.2): see a sequence and a repeat count, then output the
sequence that many times followed by an end marker.

Input channels: `width` data bits, 1 delimiter, 1 repeat count. Example of length L with R
repeats (T = L*R + L + 2 steps): steps 0..L-1 show the vectors; step L shows the delimiter = 1
and, on the repeat-count channel, R normalised as (R - mean) / std, where mean and std are those
of the uniform integer distribution on [min_repeats, max_repeats] (mean = (a + b) / 2,
std = sqrt(((b - a + 1)^2 - 1) / 12); std = 1 when a == b, so the channel is then 0); the
remaining steps have blank inputs.
Output channels: `width` data bits + 1 end marker. Steps L+1..L+L*R output the sequence R times
(step t outputs vector (t - L - 1) mod L), step L+L*R+1 outputs only the end marker = 1. Those
L*R + 1 steps are scored.
Size = L in [min_size, max_size], R in [min_repeats, max_repeats], both uniform;
difficulty = L*R (number of vectors to reproduce).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Batch, BitTask, check_range, sample_sizes, time_index

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class RepeatCopy(BitTask):
    name: ClassVar[str] = "repeat_copy"
    eval_sizes: ClassVar[tuple[int, ...]] = (5, 10, 15, 20)
    min_size: int = 1
    max_size: int = 10
    min_repeats: int = 1
    max_repeats: int = 10
    width: int = 8

    def __post_init__(self) -> None:
        check_range("repeat_copy length", self.min_size, self.max_size)
        check_range("repeat_copy repeats", self.min_repeats, self.max_repeats)
        check_range("repeat_copy width", self.width, self.width)

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width + 1

    def max_steps(self) -> int:
        return self.max_size * self.max_repeats + self.max_size + 2

    def repeat_stats(self) -> tuple[float, float]:
        """Mean and std (1 if degenerate) of the uniform integer repeat distribution."""
        a, b = self.min_repeats, self.max_repeats
        std = math.sqrt(((b - a + 1) ** 2 - 1) / 12.0)
        return (a + b) / 2.0, (std if std > 0 else 1.0)

    def sample(self, key: Array, batch_size: int) -> Batch:
        k_len, k_rep, k_bits = jax.random.split(key, 3)
        B, T, Lmax = batch_size, self.max_steps(), self.max_size
        length = sample_sizes(k_len, B, self.min_size, self.max_size)  # [B]
        reps = sample_sizes(k_rep, B, self.min_repeats, self.max_repeats)  # [B]
        bits = jax.random.bernoulli(k_bits, 0.5, (Lmax, B, self.width)).astype(jnp.float32)  # [L, B, W]
        mean, std = self.repeat_stats()
        t = time_index(T, B)  # [T, B]
        L, R = length[None, :], reps[None, :]
        shown = (t < L).astype(jnp.float32)[..., None]
        src = jnp.take_along_axis(bits, jnp.clip(t, 0, Lmax - 1)[..., None], axis=0)  # [T, B, W]
        delim = (t == L).astype(jnp.float32)
        count = delim * ((reps.astype(jnp.float32) - mean) / std)[None, :]
        inputs = jnp.concatenate([src * shown, delim[..., None], count[..., None]], axis=-1)  # [T, B, W+2]
        last = L + L * R  # last data output step
        data_on = ((t > L) & (t <= last)).astype(jnp.float32)[..., None]
        out_idx = jnp.clip(jnp.remainder(t - L - 1, L), 0, Lmax - 1)
        out_src = jnp.take_along_axis(bits, out_idx[..., None], axis=0)  # [T, B, W]
        marker = (t == last + 1).astype(jnp.float32)[..., None]
        targets = jnp.concatenate([out_src * data_on, marker], axis=-1)  # [T, B, W+1]
        mask = ((t > L) & (t <= last + 1)).astype(jnp.float32)
        steps = length * reps + length + 2
        return Batch(inputs, targets, mask, steps, length, (length * reps).astype(jnp.float32))

    def decode_repeats(self, value: float) -> int:
        mean, std = self.repeat_stats()
        return int(round(float(value) * std + mean))

    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """From one example's inputs [T, X]: the targets [T, Y] and score mask [T]."""
        T, W = inputs.shape[0], self.width
        delim_at = int(np.flatnonzero(inputs[:, W] == 1)[0])
        seq = inputs[:delim_at, :W]
        reps = self.decode_repeats(inputs[delim_at, W + 1])
        targets = np.zeros((T, W + 1), np.float32)
        mask = np.zeros(T, np.float32)
        start = delim_at + 1
        for r in range(reps):
            targets[start + r * delim_at : start + (r + 1) * delim_at, :W] = seq
        end = start + reps * delim_at  # the end-marker step
        targets[end, W] = 1
        mask[start : end + 1] = 1
        assert steps == end + 1, (steps, end + 1)
        return targets, mask
