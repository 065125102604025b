"""The task interface shared by the classic NTM tasks and the search tasks.

A task is a frozen dataclass: its fields are the size range and options; ``sample`` draws a
batch on device from a PRNG key (jit-able, static shapes: every batch is padded to
``max_steps()``, which depends only on the configured maximum size, so changing sizes within the
range never recompiles). Each example carries its own number of recurrent steps; models run to
the batch's padded length and freeze past each example's steps.

Shapes: T time steps, B batch, X input width, Y output width.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Batch(NamedTuple):
    inputs: Array  # [T, B, X] float32
    targets: Array  # [T, B, Y] float32
    mask: Array  # [T, B] float32: 1 where the step is scored
    steps: Array  # [B] int32: recurrent steps this example gets
    size: Array  # [B] int32: problem size (sequence length, list length, ...)
    difficulty: Array  # [B] float32: larger = harder (task-defined)


class Task(Protocol):
    name: ClassVar[str]
    main_metric: ClassVar[str]  # lower is better, e.g. "bits_per_seq"

    @property
    def input_size(self) -> int: ...
    @property
    def output_size(self) -> int: ...
    def max_steps(self) -> int: ...
    def sample(self, key: Array, batch_size: int) -> Batch: ...
    def loss(self, logits: Array, batch: Batch) -> Array: ...
    def metrics(self, logits: Array, batch: Batch) -> dict[str, Array]: ...
    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]: ...
    def with_sizes(self, min_size: int, max_size: int) -> "Task": ...


def check_range(name: str, lo: int, hi: int, minimum: int = 1) -> None:
    if lo < minimum or hi < lo:
        raise ValueError(f"{name}: need {minimum} <= min <= max, got min={lo}, max={hi}")


def sample_sizes(key: Array, batch_size: int, lo: int, hi: int) -> Array:
    """Uniform integer sizes in [lo, hi] -> [B] int32."""
    return jax.random.randint(key, (batch_size,), lo, hi + 1, dtype=jnp.int32)


def time_index(T: int, batch_size: int) -> Array:
    return jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[:, None], (T, batch_size))  # [T, B]


def bitwise_loss(logits: Array, batch: Batch) -> Array:
    """Per-example sigmoid cross-entropy summed over scored steps and bits -> [B] (nats)."""
    ce = _sigmoid_ce(logits, batch.targets).sum(-1)  # [T, B]
    return (ce * batch.mask).sum(0)


def _sigmoid_ce(logits: Array, targets: Array) -> Array:
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def bitwise_metrics(logits: Array, batch: Batch) -> dict[str, Array]:
    """Bit errors of thresholded outputs per sequence and exact-sequence match, each [B]."""
    predicted = (logits > 0).astype(jnp.float32)
    errors = (jnp.abs(predicted - batch.targets).sum(-1) * batch.mask).sum(0)  # [B]
    return {
        "bits_per_seq": errors,
        "exact_match": (errors == 0).astype(jnp.float32),
        "loss": bitwise_loss(logits, batch),
    }


@dataclasses.dataclass(frozen=True)
class BitTask:
    """Common parts of the classic tasks: bitwise loss and metrics, size range replacement."""

    main_metric: ClassVar[str] = "bits_per_seq"
    min_size: int = 1
    max_size: int = 20

    def loss(self, logits: Array, batch: Batch) -> Array:
        return bitwise_loss(logits, batch)

    def metrics(self, logits: Array, batch: Batch) -> dict[str, Array]:
        return bitwise_metrics(logits, batch)

    def with_sizes(self, min_size: int, max_size: int) -> Any:
        return dataclasses.replace(self, min_size=min_size, max_size=max_size)
