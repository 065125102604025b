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
import math
from typing import Any, Callable, ClassVar, NamedTuple, Protocol, runtime_checkable

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
    # Optional per-example data that scoring needs but the inputs may not show (e.g. the polynomial of
    # PolyMax when a step scale < 1 truncates its presentation): batch-major [B, ...], None for most tasks.
    aux: Array | None = None


class Task(Protocol):
    name: ClassVar[str]
    main_metric: ClassVar[str]  # lower is better, e.g. "bits_per_seq"
    # fields that shape only the training distribution (harder lists, random values, blank steps): set through
    # make_task's ``training`` (TrainConfig.train_distribution), never among the task's own options, so
    # that every evaluation scores the task's own distribution
    training_options: ClassVar[frozenset[str]]

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
    def valid_sizes(self) -> tuple[int, ...]: ...  # the sizes in range that have instances
    def evaluation_sizes(self) -> tuple[int, ...]: ...  # the sizes evaluation tables report (range and beyond)


@dataclasses.dataclass
class Candidates:
    """What a searcher chooses among, per example b and candidate m: the answer code (modsquare's i,
    argmax's label, polymax's x), its value as the example's steps show it (higher is better; -inf: not a
    candidate or not shown), its regret under the whole instance (the task's regret of answering it; nan:
    not a candidate), and the reference answer (the task's target)."""

    answer: np.ndarray  # [B, M]
    value: np.ndarray  # [B, M] float64
    regret: np.ndarray  # [B, M] float64
    reference: np.ndarray  # [B]

    def first_best(self) -> np.ndarray:
        """[B] the answer of the first best shown candidate (ties to the earliest, as the loop's strict '>')."""
        return np.take_along_axis(self.answer, np.argmax(self.value, axis=1)[:, None], 1)[:, 0]


@runtime_checkable
class SearchTask(Task, Protocol):
    """A task whose answer is the best of candidates that a loop can visit: what detection (lab/detect/),
    diagnosis and comparison ask of it, so that they never ask for a task's name. Answers are [B] arrays in
    the task's own code (an int for bit outputs, x in [0, 1] for polymax); logits are [T, B, Y]."""

    has_split: ClassVar[bool]  # instances split into training and held-out ones (``split`` option)
    compiled_program: ClassVar[str | None]  # the compiler/programs.py program that does this loop, if any

    def candidates(self, batch: Batch) -> Candidates: ...
    def encode_answers(self, batch: Batch, answers: np.ndarray) -> Array: ...  # logits decoding to them
    def decode_answers(self, batch: Batch, logits: Array) -> np.ndarray: ...
    def loop_answers(self, batch: Batch) -> np.ndarray: ...  # the search over the candidates shown
    def heuristic_answers(self, batch: Batch) -> np.ndarray: ...  # a closed form that does not search
    def memoriser(self) -> Callable[[Batch], np.ndarray] | None: ...  # a lookup of this task's instances
    def improvements(self, batch: Batch) -> tuple[Array, Array]: ...  # (improved, shown) [T, B]: the loop's k changes
    def extrapolation_sizes(self, hi: int) -> tuple[int, ...]: ...  # sizes to test a model trained up to hi


@runtime_checkable
class SupervisedLoop(Protocol):
    """A task whose loop's running answer can be supervised at every step (step supervision: the trainer adds
    TrainConfig.trace_loss x ``trace_loss`` to the task's loss; metrics never include it)."""

    def trace_loss(self, logits: Array, batch: Batch) -> Array: ...  # [B] (``running_answer_loss``)
    def check_trace_loss(self) -> None: ...  # a ValueError where the running answer is not the scored one


@runtime_checkable
class WriteHints(Protocol):
    """A task whose algorithm stores to memory on known steps: the steps it writes on, for supervising how strongly
    an NTM writes on each step toward them (TrainConfig.write_hint, a hint in CLRS's sense: a training signal; nothing at test time
    sees it)."""

    def write_targets(self, batch: Batch) -> tuple[Array, Array]: ...  # (writes [T, B] bool, on [T, B] bool)


@runtime_checkable
class TapeHints(WriteHints, Protocol):
    """A task with a tape algorithm (a machine whose heads walk memory rows): also the rows its read and write heads
    are at on each step, for supervising an NTM's heads toward them (TrainConfig.head_hint)."""

    def head_targets(self, batch: Batch) -> tuple[Array, Array, Array, Array]: ...  # read row, on, write row, on [T, B]
    def tape_rows(self) -> int: ...  # the most memory rows the tape machine uses on this task's examples


@runtime_checkable
class ClosedLoop(Protocol):
    """A task that answers the model's actions (a query oracle): the recurrent models run step t on
    ``feedback(inputs[t], y[t-1], inputs)`` (one example: x_t [X], the previous output [Y] (zeros at t = 0),
    the example's whole inputs [T, X]) -> [X]. ``closed_loop`` is False where the options leave it open."""

    closed_loop: bool

    def feedback(self, x: Array, y_prev: Array, inputs: Array) -> Array: ...


def feedback_of(task: Task) -> Callable[[Array, Array, Array], Array] | None:
    """The task's feedback function where its loop is closed, else None (an open-loop task)."""
    return task.feedback if isinstance(task, ClosedLoop) and task.closed_loop else None


BIG_LOGIT = 20.0  # the logit magnitude an encoded answer bit gets (sigmoid(20) = 1 - 2e-9)


class SizeRange:
    """The size-range methods every task shares (a mixin: the task's dataclass holds min_size and max_size)."""

    eval_sizes: ClassVar[tuple[int, ...]] = ()  # the sizes evaluation tables report (empty: max, 2x, 4x)
    training_options: ClassVar[frozenset[str]] = frozenset()  # (Task.training_options; none by default)

    def with_sizes(self, min_size: int, max_size: int) -> Any:
        return dataclasses.replace(self, min_size=min_size, max_size=max_size)

    def valid_sizes(self) -> tuple[int, ...]:
        return tuple(range(self.min_size, self.max_size + 1))

    def evaluation_sizes(self) -> tuple[int, ...]:
        """The class's ``eval_sizes`` where it sets them, else the training maximum, 2x and 4x."""
        return self.eval_sizes or (self.max_size, 2 * self.max_size, 4 * self.max_size)


class BitAnswers:
    """SearchTask methods of a task whose answer is an integer output in binary and whose loop keeps the first
    best candidate it is shown (a mixin for argmax and modsquare), with the check that its running answer can
    be supervised (SupervisedLoop)."""

    def encode_answers(self, batch: Batch, answers: np.ndarray) -> Array:
        """[B] integer answers -> logits [T, B, Y] whose bits (logit > 0) at every step are those answers."""
        T, B, Y = batch.targets.shape
        row = (2 * np.asarray(int_to_bits(jnp.asarray(answers, jnp.int32), Y)) - 1) * BIG_LOGIT  # [B, Y]
        return jnp.broadcast_to(jnp.asarray(row, jnp.float32)[None], (T, B, Y))

    def decode_answers(self, batch: Batch, logits: Array) -> np.ndarray:
        """The integer answer of bit logits [T, B, Y] at each example's scored step -> [B]."""
        last = (np.asarray(logits) * np.asarray(batch.mask)[..., None]).sum(0)  # [B, Y]
        return np.asarray(bits_to_int(jnp.asarray(last > 0)))

    def loop_answers(self, batch: Batch) -> np.ndarray:
        return self.candidates(batch).first_best()

    def check_trace_loss(self) -> None:
        """Step supervision (``running_answer_loss``, SupervisedLoop) needs every value shown (step_scale >= 1):
        with fewer steps than values the running answer never reaches the scored one."""
        if self.step_scale < 1:
            raise ValueError(f"{self.name}: trace_loss needs step_scale >= 1 (with fewer steps than values the "
                             f"loop's running answer is not the scored answer), got step_scale={self.step_scale}")


def bits_np(bits: np.ndarray) -> np.ndarray:
    """[..., width] 0/1 (least significant first) -> [...] int64, on the host."""
    return (np.round(bits).astype(np.int64) << np.arange(bits.shape[-1])).sum(-1)


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
class BitTask(SizeRange):
    """Common parts of the classic tasks: bitwise loss and metrics, the size range."""

    main_metric: ClassVar[str] = "bits_per_seq"
    min_size: int = 1
    max_size: int = 20

    def loss(self, logits: Array, batch: Batch) -> Array:
        return bitwise_loss(logits, batch)

    def metrics(self, logits: Array, batch: Batch) -> dict[str, Array]:
        return bitwise_metrics(logits, batch)


# ---- helpers for the search tasks: per-example step schedules, binary codes, last-step answers ----


def check_schedule(name: str, scale: float, offset: int) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{name}: step_scale must be a positive finite number, got {scale}")
    if int(offset) != offset or offset < 0:
        raise ValueError(f"{name}: step_offset must be a non-negative integer, got {offset}")


def scaled_steps(base: int, scale: float, offset: int) -> int:
    """ceil(scale * base) + offset. The product is rounded to 9 decimals first so that float noise
    (0.1 * 30 = 3.0000000000000004) does not add a step."""
    return math.ceil(round(scale * base, 9)) + int(offset)


def steps_table(max_base: int, scale: float, offset: int) -> np.ndarray:
    """[max_base + 1] int32: entry b = scaled_steps(b, scale, offset); gather it on device so that the
    device and host schedules are the same numbers."""
    return np.array([scaled_steps(b, scale, offset) for b in range(max_base + 1)], np.int32)


def int_to_bits(x: Array, width: int) -> Array:
    """Non-negative integers [...] -> their `width` low bits [..., width] float32, least significant first."""
    shifts = jnp.arange(width, dtype=jnp.int32)
    return ((x[..., None] >> shifts.reshape((1,) * x.ndim + (width,))) & 1).astype(jnp.float32)


def bits_to_int(bits: Array) -> Array:
    """[..., width] booleans (least significant first) -> [...] int32."""
    width = bits.shape[-1]
    weights = (1 << jnp.arange(width, dtype=jnp.int32)).reshape((1,) * (bits.ndim - 1) + (width,))
    return (bits.astype(jnp.int32) * weights).sum(-1)


def running_best_improves(values: Array, shown: Array, start: float) -> Array:
    """[T, B] bool: the shown steps whose value is strictly above every earlier shown value and above
    ``start`` (the loop's initial best: -inf when the first value always counts, 0 for modsquare's k = 0).
    These are the steps where a keep-the-best loop changes its answer."""
    v = jnp.where(shown, values, start)
    before = jnp.maximum(jnp.concatenate([jnp.full_like(v[:1], start), jax.lax.cummax(v, axis=0)[:-1]]), start)
    return shown & (v > before)


def last_step(x: Array, mask: Array) -> Array:
    """The values at each example's single scored step: x [T, B, Y], one-hot mask [T, B] -> [B, Y]."""
    return jnp.where(mask[..., None] > 0, x, jnp.zeros_like(x)).sum(0)


def running_answer_loss(logits: Array, batch: Batch, improved: Array, answer_bits: Array) -> Array:
    """Process supervision for a keep-the-best loop -> [B]: the sigmoid cross-entropy (summed over bits)
    between the output at every step t < steps and the loop's *current* answer after step t, averaged
    over each example's steps.

    ``improved`` [T, B] bool marks the steps where the loop's answer changes (``running_best_improves``);
    ``answer_bits`` [T, B, Y] is the answer that step t would install (its label or candidate in
    binary). Before the first improvement the loop's answer is 0 (all bits 0); after the last shown
    value it stays put, so the blank steps at the end are supervised with the final answer."""
    T, B = improved.shape
    t = time_index(T, B)
    last = jax.lax.cummax(jnp.where(improved, t, -1), axis=0)  # [T, B]: the latest improving step so far
    current = jnp.take_along_axis(answer_bits, jnp.maximum(last, 0)[..., None], axis=0) * (last >= 0)[..., None]
    active = (t < batch.steps[None, :]).astype(logits.dtype)
    ce = _sigmoid_ce(logits, current).sum(-1) * active  # [T, B]
    return ce.sum(0) / jnp.maximum(batch.steps, 1).astype(logits.dtype)
