"""Argmax: see a list of real numbers one per step, then give the position of the largest.

Shapes: T time steps, B batch, X input width, Y output width.

Instance: a list of L values, L uniform in [min_size, max_size] (size = L), values i.i.d. uniform
in [0, 1) (float32); the answer is the position of the largest (ties, probability about
L^2 * 2^-24, go to the earliest position).

Input channels (X = 2 + index_bits):
  0       the value at position t (step t < L shows position t);
  1       1 on the steps that show a value ("present"), so that value 0 at position 0 is visible;
  2..     position t in binary, `index_bits` bits, least significant first.
Output channels (Y = index_bits): the answer's position in binary, least significant first, read as
one sigmoid per bit (loss: sigmoid cross-entropy summed over bits).

Step schedule: an example gets steps = ceil(step_scale * L) + step_offset (default offset 1: one
step after the last value). Positions are shown on steps t < min(L, steps); the remaining steps
have zero inputs. There is no "answer now" signal: only the output at the last step, steps - 1, is
scored (mask 1 there, 0 elsewhere), so a model should keep its current best answer on its output.
When step_scale < 1 an example may get fewer steps than values: it is shown only the first
`steps` values but is still scored against the argmax of the whole list (the instance and answer
do not depend on the schedule), so accuracy there measures what can be done with partial input.
Steps past an example's `steps` have zero inputs, targets and mask; every batch is padded to
max_steps() = ceil(step_scale * max_size) + step_offset.

Options that make extrapolation a test of the search rather than of the encoding:
  labels="position" (default): each value is tagged with its position, as above.
  labels="random": each value is tagged with a random label instead, distinct within the list
    (label_i = (a*i + b) mod 2^index_bits with a random odd a and random b), and the answer is the
    label of the largest.
    With positions, lists of at most 16 never set bits 4-7 of the answer, so a model trained on them
    cannot output position 40 whatever it has learnt; random labels exercise every bit in training.
  levels=0 (default): values uniform in [0, 1). levels=K > 0: values uniform on the grid
    {0, 1/K, ..., (K-1)/K}: two different values differ by at least 1/K, so no answer needs
    unbounded precision; equal values (ties) go to the earliest, as the loop's strict ">" does.
  extra_steps=E: each example gets U{0..E} additional blank steps at the end, so that training
    shows the model that it must hold its answer (what a test-time step multiplier > 1 asks).
  min_spread=S < 1 (a training distribution; default 1: every list uniform): each list's values
    are drawn uniformly from the top fraction w of the range, [1 - w, 1) (on the grid: its top
    max(1, ceil(w K)) levels), with w log-uniform on [S, 1] per list. A short list then has the
    near ties (and, on a grid, the exact ties) of a long uniform one: the top gaps of L values
    spread over w look like those of about L / w uniform values, so a model trained on lengths
    up to 16 sees the comparisons a list of 64 or more asks for.
  early_max=p (a training distribution; default 0): with probability p a list's maximum is swapped
    to position 0, so that the loop holds its first k for the whole list while later values (with
    min_spread, often equal or one level below) test it: the long holds of long lists, at lengths
    up to 16.
  near_ties=p (a training distribution; grid values only; default 0): with probability p a list's
    largest value is copied to a random position i, and the same level or one level below or above
    (each 1/3; at the grid's top level "above" is clipped to a tie) to a random later position j > i,
    other values kept: the list's top two are then equal (about 60% of lists of 2-16 on a wide grid:
    the old top often stays; more on long or squeezed lists) or one level apart.
    The comparisons a list of 64 gets wrong (a new value equal to, or one level off, a best reached
    by a large jump) are rare in short lists (min_spread makes ties common, but between values that
    climbed in small steps).
extra_steps, min_spread, early_max and near_ties shape the training distribution only
(``training_options``): they are set through make_task's ``training`` (TrainConfig.train_distribution),
and every evaluation sees uniform lists with steps = L + 1.

Step supervision (``trace_loss``, weighted by TrainConfig.trace_loss): the loss against the loop's
*running* answer (the label of the largest value so far) at every step, averaged over the example's
steps: process supervision of each comparison, where the plain loss scores only the final answer.
Metrics never include it.

Write hint (``write_targets``, weighted by TrainConfig.write_hint, for an NTM): the loop writes its register
(best, k) exactly on the steps that improve the running best; the hint trains how strongly the NTM writes (its
write gate, else its write weighting's peak) toward those steps: writing there, not on any other step of the
example. A training signal only.

Difficulty = -(margin between the largest and the second-largest value), in (-1, 0]: the closer
the runner-up, the more precisely a model must compare the two to pick the right position
(the same convention as priority sort's smallest gap). List length is reported as `size`.

Metrics (each [B]): exact_match (all answer bits right), error = 1 - exact_match (main metric),
bits_per_seq (answer bits wrong), regret = largest value - the value under the predicted label (a label
not in the list counts as value 0, so regret is in [0, 1)), loss. The batch's `aux` [B, 2, max_size]
holds each list's values and labels (the regret needs them when step_scale < 1 hides part of the list).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import (Batch, BitAnswers, Candidates, SizeRange, bits_to_int, bitwise_loss, bitwise_metrics,
                        check_range, check_schedule, int_to_bits, last_step, running_answer_loss,
                        running_best_improves, sample_sizes, scaled_steps, steps_table, time_index)

Array = jax.Array


def argmax_reference(values: np.ndarray) -> int:
    """Position of the largest value, the earliest on ties (plain Python, no NumPy argmax)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


@dataclasses.dataclass(frozen=True)
class Argmax(SizeRange, BitAnswers):
    name: ClassVar[str] = "argmax"
    main_metric: ClassVar[str] = "error"
    has_split: ClassVar[bool] = False
    compiled_program: ClassVar[str | None] = None
    training_options: ClassVar[frozenset[str]] = frozenset({"extra_steps", "min_spread", "early_max", "near_ties"})
    min_size: int = 2
    max_size: int = 16
    index_bits: int = 8
    step_scale: float = 1.0
    step_offset: int = 1
    labels: str = "position"  # "position" | "random"
    levels: int = 0  # 0: continuous values; K: distinct values on a grid of K levels
    extra_steps: int = 0  # each example gets U{0..extra_steps} more blank steps
    min_spread: float = 1.0  # < 1: each list's values from the top w of the range, w log-uniform on [min_spread, 1]
    early_max: float = 0.0  # probability that a list's maximum is swapped to position 0 (long holds)
    near_ties: float = 0.0  # probability that a list gets a tie or one-level gap at its top, at random positions

    def __post_init__(self) -> None:
        check_range("argmax list length", self.min_size, self.max_size, minimum=2)
        check_range("argmax index_bits", self.index_bits, self.index_bits)
        if self.max_size > 2**self.index_bits:
            raise ValueError(f"argmax: lists of up to {self.max_size} values need positions up to "
                             f"{self.max_size - 1}, which do not fit in index_bits={self.index_bits} "
                             f"(at most {2**self.index_bits} values); raise index_bits")
        check_schedule("argmax", self.step_scale, self.step_offset)
        if self.labels not in ("position", "random"):
            raise ValueError(f"argmax: labels must be 'position' or 'random', got {self.labels!r}")
        if self.levels < 0 or self.extra_steps < 0:
            raise ValueError("argmax: levels and extra_steps must be >= 0")
        if not 0 < self.min_spread <= 1:
            raise ValueError(f"argmax: min_spread must be in (0, 1], got {self.min_spread}")
        if not 0 <= self.early_max <= 1:
            raise ValueError(f"argmax: early_max must be in [0, 1], got {self.early_max}")
        if not 0 <= self.near_ties <= 1:
            raise ValueError(f"argmax: near_ties must be in [0, 1], got {self.near_ties}")
        if self.near_ties and not self.levels:
            raise ValueError("argmax: near_ties needs grid values (levels > 0): a one-level gap is 1/levels")

    @property
    def input_size(self) -> int:
        return 2 + self.index_bits

    @property
    def output_size(self) -> int:
        return self.index_bits

    def max_steps(self) -> int:
        return scaled_steps(self.max_size, self.step_scale, self.step_offset) + self.extra_steps

    def sample(self, key: Array, batch_size: int) -> Batch:
        k_len, k_val, k_lab, k_extra = jax.random.split(key, 4)
        B, T, Lmax = batch_size, self.max_steps(), self.max_size
        length = sample_sizes(k_len, B, self.min_size, self.max_size)  # [B]
        if self.levels:  # grid values; ties go to the earliest, as in the loop's strict ">"
            values = (jax.random.randint(k_val, (Lmax, B), 0, self.levels) / self.levels).astype(jnp.float32)
        else:
            values = jax.random.uniform(k_val, (Lmax, B), jnp.float32)  # [L, B]
        if self.min_spread < 1:  # squeeze each list into the top w of the range (its own key: the default draws stay)
            k_w, k_u = jax.random.split(jax.random.fold_in(k_val, 1))
            w = jnp.exp(jax.random.uniform(k_w, (1, B), minval=math.log(self.min_spread), maxval=0.0))  # [1, B]
            u = jax.random.uniform(k_u, (Lmax, B))
            if self.levels:
                top = jnp.maximum(1, jnp.ceil(w * self.levels))  # levels K - top .. K - 1
                values = ((self.levels - 1 - jnp.floor(u * top)) / self.levels).astype(jnp.float32)
            else:
                values = (1.0 - w * (1.0 - u)).astype(jnp.float32)  # [1 - w, 1)
        if self.labels == "random":
            # a random affine permutation of 0..2^bits-1 (odd multiplier): distinct labels, no sort
            # (an argsort of 2^bits keys per example made XLA:CPU compile the training step for minutes)
            k_a, k_b = jax.random.split(k_lab)
            a = 2 * jax.random.randint(k_a, (1, B), 0, 2 ** (self.index_bits - 1)) + 1  # [1, B] odd
            b = jax.random.randint(k_b, (1, B), 0, 2**self.index_bits)
            labels = (a * jnp.arange(Lmax)[:, None] + b) % (2**self.index_bits)  # [L, B]
        else:
            labels = jnp.broadcast_to(jnp.arange(Lmax, dtype=jnp.int32)[:, None], (Lmax, B))
        labels = labels.astype(jnp.int32)
        in_list = jnp.arange(Lmax, dtype=jnp.int32)[:, None] < length[None, :]  # [L, B]
        if self.near_ties:  # the top value at i, it or a neighbouring level at j > i (its own key)
            k_on, k_i, k_j, k_d = jax.random.split(jax.random.fold_in(k_val, 3), 4)
            on = jax.random.bernoulli(k_on, self.near_ties, (B,))
            i = jnp.floor(jax.random.uniform(k_i, (B,)) * (length - 1)).astype(jnp.int32)  # [0, L-2]
            j = i + 1 + jnp.floor(jax.random.uniform(k_j, (B,)) * (length - 1 - i)).astype(jnp.int32)  # (i, L-1]
            top = jnp.rint(jnp.where(in_list, values, -1.0).max(0) * self.levels)  # [B], the top level
            other = jnp.clip(top + jax.random.randint(k_d, (B,), -1, 2), 0, self.levels - 1)  # a level off, or equal
            top, other = top / self.levels, other / self.levels  # as the grid's own values
            cols = jnp.arange(B)
            values = values.at[i, cols].set(jnp.where(on, top, values[i, cols]))
            values = values.at[j, cols].set(jnp.where(on, other, values[j, cols])).astype(jnp.float32)
        masked = jnp.where(in_list, values, -jnp.inf)
        best = jnp.argmax(masked, axis=0).astype(jnp.int32)  # [B], earliest on ties
        if self.early_max:  # swap the maximum to position 0 (its own key: the default draws stay)
            swap = jax.random.bernoulli(jax.random.fold_in(k_val, 2), self.early_max, (B,))
            cols = jnp.arange(B)
            first, top = values[0], values[best, cols]
            values = values.at[best, cols].set(jnp.where(swap, first, top)).at[0].set(jnp.where(swap, top, first))
            masked = jnp.where(in_list, values, -jnp.inf)
            best = jnp.where(swap, 0, best)
        answer = jnp.take_along_axis(labels, best[None], axis=0)[0]  # [B]
        top2, _ = jax.lax.top_k(masked.T, 2)  # [B, 2]
        difficulty = -(top2[:, 0] - top2[:, 1])
        steps = jnp.asarray(steps_table(Lmax, self.step_scale, self.step_offset))[length]  # [B]
        if self.extra_steps:
            steps = steps + jax.random.randint(k_extra, (B,), 0, self.extra_steps + 1, dtype=jnp.int32)

        t = time_index(T, B)  # [T, B]
        shown = (t < length[None, :]) & (t < steps[None, :])  # [T, B]
        value = jnp.take_along_axis(values, jnp.clip(t, 0, Lmax - 1), axis=0) * shown  # [T, B]
        label = jnp.take_along_axis(labels, jnp.clip(t, 0, Lmax - 1), axis=0)  # [T, B]
        position = int_to_bits(label, self.index_bits) * shown[..., None]  # [T, B, index_bits]
        inputs = jnp.concatenate([value[..., None], shown[..., None].astype(jnp.float32), position], axis=-1)
        last = t == steps[None, :] - 1  # [T, B]
        targets = int_to_bits(answer, self.index_bits)[None] * last[..., None]  # [T, B, Y]
        aux = jnp.stack([jnp.where(in_list, values, -1.0).T, labels.T.astype(jnp.float32)], axis=1)  # [B, 2, L]
        return Batch(inputs, targets, last.astype(jnp.float32), steps, length, difficulty, aux=aux)

    def loss(self, logits: Array, batch: Batch) -> Array:
        """Sigmoid cross-entropy summed over the answer bits at the last step -> [B] (nats)."""
        return bitwise_loss(logits, batch)

    def trace_loss(self, logits: Array, batch: Batch) -> Array:
        """Step supervision -> [B]: the same loss against the loop's running answer (the label of the largest
        value so far), averaged over every step (tasks.base.SupervisedLoop)."""
        return running_answer_loss(logits, batch, self.improvements(batch)[0], batch.inputs[..., 2:])


    def metrics(self, logits: Array, batch: Batch) -> dict[str, Array]:
        m = bitwise_metrics(logits, batch)
        m["error"] = 1.0 - m["exact_match"]
        values, labels = batch.aux[:, 0], batch.aux[:, 1].astype(jnp.int32)  # [B, L]; value -1: not in the list
        pred = bits_to_int(last_step(logits, batch.mask) > 0)  # [B]
        hit = (labels == pred[:, None]) & (values >= 0)
        m["regret"] = values.max(1) - jnp.where(hit, values, 0.0).max(1)
        return m

    def improvements(self, batch: Batch) -> tuple[Array, Array]:
        """(improved, shown), each [T, B] bool: the steps that show a value, and those whose value beats
        every earlier one (strictly, as the loop's ">"; the first value counts): where the loop's k changes."""
        shown = batch.inputs[..., 1] > 0.5
        return running_best_improves(batch.inputs[..., 0], shown, -jnp.inf), shown

    def write_targets(self, batch: Batch) -> tuple[Array, Array]:
        """(writes, on) [T, B] (tasks.base.WriteHints): the loop stores (best, k) on the steps whose value beats every
        earlier one, and on no other step of the example (blank steps included)."""
        improved, _ = self.improvements(batch)
        return improved, time_index(*improved.shape) < batch.steps[None, :]

    # ---- the search-task protocol (tasks.base.SearchTask): candidates are the list's labels ----

    def candidates(self, batch: Batch) -> Candidates:
        """Each list's labels, their values where the example's steps show them, and their regret."""
        aux = np.asarray(batch.aux, np.float64)
        values, labels = aux[:, 0], aux[:, 1].astype(np.int64)  # [B, L]
        in_list = values >= 0
        steps = np.asarray(batch.steps)
        shown = in_list & (np.arange(values.shape[1])[None, :] < steps[:, None])
        best = np.where(in_list, values, -np.inf).max(1)
        ref = labels[np.arange(len(best)), np.argmax(np.where(in_list, values, -np.inf), 1)]
        return Candidates(labels, np.where(shown, values, -np.inf), np.where(in_list, best[:, None] - values, np.nan),
                          ref)

    def heuristic_answers(self, batch: Batch) -> np.ndarray:
        """The first shown value >= 1 - 1/L (else the last shown): a threshold, not a comparison."""
        c = self.candidates(batch)
        shown = np.isfinite(c.value)
        L = shown.sum(1)
        above = shown & (c.value >= (1 - 1 / np.maximum(L, 1))[:, None])
        idx = np.where(above.any(1), np.argmax(above, 1), np.maximum(L - 1, 0))
        return np.take_along_axis(c.answer, idx[:, None], 1)[:, 0]

    def memoriser(self) -> None:
        return None  # real-valued lists: no table of instances

    def extrapolation_sizes(self, hi: int) -> tuple[int, ...]:
        return (hi, 2 * hi, 4 * hi)

    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """From one example's inputs [T, X]: the targets [T, Y] and score mask [T].

        Needs the whole list to be visible, which holds whenever step_scale >= 1; raises ValueError
        when the presentation may have been cut short (every step shows a value and step_scale < 1)."""
        T, nb = inputs.shape[0], self.index_bits
        present = inputs[:, 1] == 1
        shown = int(present.sum())
        if not present[:shown].all():
            raise ValueError("argmax reference: values must be shown on consecutive steps from 0")
        if shown == steps and self.step_scale < 1:
            raise ValueError("argmax reference: every step shows a value, the list may be truncated")
        weights = 2 ** np.arange(nb)
        positions = [int(round(float(inputs[t, 2:] @ weights))) for t in range(shown)]
        if self.labels == "position" and positions != list(range(shown)):
            raise ValueError(f"argmax reference: positions {positions} are not 0..{shown - 1}")
        if len(set(positions)) != shown:
            raise ValueError(f"argmax reference: labels {positions} are not distinct")
        if not 0 <= steps - scaled_steps(shown, self.step_scale, self.step_offset) <= self.extra_steps:
            raise ValueError(f"argmax reference: {steps} steps for a list of {shown}")
        answer = positions[argmax_reference(list(inputs[:shown, 0]))]
        targets = np.zeros((T, nb), np.float32)
        mask = np.zeros(T, np.float32)
        targets[steps - 1] = [(answer >> b) & 1 for b in range(nb)]
        mask[steps - 1] = 1
        return targets, mask
