"""Priority sort (Graves 2014, sec. 4.5): see vectors with scalar priorities, then output the
highest-priority ones sorted by descending priority.

Input channels: `width` data bits, 1 priority, 1 delimiter. With N = num_inputs and
M = num_outputs (T = N + 1 + M steps, the same for every example): steps 0..N-1 show a random
vector with its priority (uniform in [-1, 1)) on the priority channel, step N the delimiter alone,
steps N+1..N+M are blank inputs on which the model must output the M highest-priority vectors in
descending priority order (ties, which have probability ~0, keep input order). Only those M steps
are scored.
Size is fixed at N (min_size = max_size = num_inputs); `with_sizes(lo, hi)` sets num_inputs = hi
and clips num_outputs to it. Difficulty = -(smallest gap between adjacent sorted priorities among
the top min(M+1, N)), in [-2, 0]: closer priorities are harder to order, so larger = harder
(0 when there is a single input).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Batch, BitTask, check_range

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PrioritySort(BitTask):
    name: ClassVar[str] = "priority_sort"
    eval_sizes: ClassVar[tuple[int, ...]] = (20,)
    num_inputs: int = 20
    num_outputs: int = 16
    width: int = 8
    # derived from num_inputs (size is fixed); not constructor arguments
    min_size: int = dataclasses.field(init=False, default=20)
    max_size: int = dataclasses.field(init=False, default=20)

    def __post_init__(self) -> None:
        check_range("priority_sort num_inputs", self.num_inputs, self.num_inputs)
        check_range("priority_sort num_outputs (<= num_inputs)", self.num_outputs, self.num_inputs)
        check_range("priority_sort width", self.width, self.width)
        object.__setattr__(self, "min_size", self.num_inputs)
        object.__setattr__(self, "max_size", self.num_inputs)

    def with_sizes(self, min_size: int, max_size: int) -> "PrioritySort":
        check_range("priority_sort size", min_size, max_size)
        return dataclasses.replace(self, num_inputs=max_size, num_outputs=min(self.num_outputs, max_size))

    @property
    def input_size(self) -> int:
        return self.width + 2

    @property
    def output_size(self) -> int:
        return self.width

    def max_steps(self) -> int:
        return self.num_inputs + 1 + self.num_outputs

    def sample(self, key: Array, batch_size: int) -> Batch:
        k_bits, k_pri = jax.random.split(key)
        B, N, M, W = batch_size, self.num_inputs, self.num_outputs, self.width
        bits = jax.random.bernoulli(k_bits, 0.5, (N, B, W)).astype(jnp.float32)  # [N, B, W]
        prio = jax.random.uniform(k_pri, (N, B), jnp.float32, -1.0, 1.0)  # [N, B]
        order = jnp.argsort(-prio, axis=0, stable=True)  # [N, B] descending priority
        sorted_bits = jnp.take_along_axis(bits, order[..., None], axis=0)
        sorted_prio = jnp.take_along_axis(prio, order, axis=0)
        inputs = jnp.concatenate([
            jnp.concatenate([bits, prio[..., None], jnp.zeros((N, B, 1), jnp.float32)], axis=-1),
            jnp.concatenate([jnp.zeros((1, B, W + 1), jnp.float32), jnp.ones((1, B, 1), jnp.float32)], axis=-1),
            jnp.zeros((M, B, W + 2), jnp.float32),
        ], axis=0)  # [T, B, W+2]
        targets = jnp.concatenate([jnp.zeros((N + 1, B, W), jnp.float32), sorted_bits[:M]], axis=0)
        mask = jnp.concatenate([jnp.zeros((N + 1, B), jnp.float32), jnp.ones((M, B), jnp.float32)], axis=0)
        k = min(M + 1, N)
        if k >= 2:
            difficulty = -(sorted_prio[: k - 1] - sorted_prio[1:k]).min(axis=0)
        else:
            difficulty = jnp.zeros((B,), jnp.float32)
        return Batch(inputs, targets, mask, jnp.full((B,), N + 1 + M, jnp.int32), jnp.full((B,), N, jnp.int32),
                     difficulty)

    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """From one example's inputs [T, X]: the targets [T, Y] and score mask [T]."""
        T, W, M = inputs.shape[0], self.width, self.num_outputs
        n = int(np.flatnonzero(inputs[:, W + 1] == 1)[0])
        vecs, prio = inputs[:n, :W], inputs[:n, W]
        order = np.argsort(-prio, kind="stable")[:M]
        targets = np.zeros((T, W), np.float32)
        mask = np.zeros(T, np.float32)
        targets[n + 1 : n + 1 + M] = vecs[order]
        mask[n + 1 : n + 1 + M] = 1
        assert steps == n + 1 + M, (steps, n + 1 + M)
        return targets, mask
