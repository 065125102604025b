"""ModSquare: the search loop of the research question, learned from examples.

    k = 0
    for i = 1 to floor(n^0.7):
        if i*i mod n > k*k mod n: k = i
    return k

k is the first candidate i in 1..floor(n^0.7) with the largest i*i mod n (ties keep the earliest;
k stays 0 only when every candidate has value 0, i.e. n = 1). `loop_bound(n)` (floor(n^0.7) in
exact integer arithmetic) and `solve(n)` (the loop, vectorised with NumPy) are the module's pure
Python reference, importable on their own.

Shapes: T time steps, B batch, X input width, Y output width.

Instance: size s = number of bits of n, uniform in [min_size, max_size] (>= 2), then n uniform
among the allowed integers of that bit length [2^(s-1), 2^s) (log-uniform by octave), by exact
rejection sampling. Hold-out: n is held out when mix32(n + holdout_seed * 0x9E3779B9 mod 2^32)
< holdout_fraction * 2^32, with mix32 Wellons' "lowbias32" integer hash (`held_out` below, the
same on device). split="train" never samples a held-out n, split="holdout" samples only held-out
n, split="all" samples every n (use it for sizes beyond training). Bit lengths that have no
allowed n (small octaves under split="holdout") are left out of the size distribution.

Input channels, with C = bit length of loop_bound(2^bits - 1) (9 for bits = 12):
  0..bits-1            n in binary, least significant first, on every step t < steps (zeros
                       with show_n=False: then only the candidates and their values are shown);
  then, if hint != "none", on steps t < min(loop_bound(n), steps), for candidate i = t + 1:
  next C channels      i in binary (hint "index" or "value");
  next bits channels   i*i mod n in binary (hint "value" only).
  X = bits (hint "none"), bits + C ("index"), 2 * bits + C ("value").
Output channels (Y = C): k in binary, least significant first, one sigmoid per bit (loss: sigmoid
cross-entropy summed over bits).

Step schedule: steps = ceil(step_scale * loop_bound(n)) + step_offset (default offset 2). Only the
last step, steps - 1, is scored (mask 1 there); there is no "answer now" signal, so a model should
keep its current best k on its output. With step_scale < 1 the hints stop after `steps`
candidates but the answer is still k for the whole loop (n is shown, so it stays determined).
Every batch is padded to max_steps() = ceil(step_scale * loop_bound(2^max_size - 1)) + step_offset;
steps past an example's `steps` have zero inputs, targets and mask.

Difficulty = -(v1 - v2) / n, in [-1, 0], where v1 = k*k mod n is the best value and v2 the best
value of any other candidate, k = 0 (value 0) included. A small margin means the winner differs
from the runner-up in only the low bits of two numbers seen possibly far apart in the loop, the
case where an approximate comparison picks the wrong candidate; v2 = v1 (a tie, so that only the
"earliest wins" rule decides) is the hardest, 0.

values="random" (with hint="value"): candidate i's value is uniform on [0, n) instead of i*i mod n,
and k is the loop's answer over those values: the same keep-the-best, over a sequence that does not
identify n (a curriculum stage that cannot be memorised). values="random-wide": uniform on
[0, 2^e) with e uniform on 2..bits per example, independently of n, so that every value width meets
every loop length (with "random", short loops, i.e. small n, never set the high value bits);
difficulty and regret are then divided by 2^bits instead of n. values="random-runs": random-wide
values rearranged into ascending runs: each candidate after the first starts a new run with
probability p, p log-uniform on [1/64, 1] per example, and each run is sorted ascending. i*i mod n
climbs through runs of improvements before it wraps (about half of a 6-bit n's candidates improve
on the best so far, where random values improve 3-4 times per loop); these runs span that range,
from random-like (p = 1) to one climb (p small), still without anything that identifies n.
values="random-mixed": each example's values are drawn as values="random" (on [0, n)) or as
"random-wide", with probability 1/2 each (regret and difficulty divided by 2^bits): the real task's
widths and every other width in one training distribution.

values is a training-distribution option (``training_options``): set it through make_task's
``training`` (TrainConfig.train_distribution); every evaluation sees the real values.

Step supervision (``trace_loss``, weighted by TrainConfig.trace_loss; any hint): the loss against the
loop's *running* k (the best candidate so far, 0 before the first positive value) at every step,
averaged over the example's steps: process supervision of each comparison (read from Batch.aux, so
hidden values are supervised too). Metrics never include it.

Batch.aux is [B, 1 + M] int32: n, then the value of each candidate 1..M (-1 past loop_bound(n));
scoring needs them when show_n=False hides n or the values are random.

Metrics (each [B]; the predicted k is read from thresholded bits at the last step): exact_match,
error = 1 - exact_match (main metric), bits_per_seq (answer bits wrong), regret = (v1 - value(k)) / n
with value(k) = k*k mod n for a feasible k and 0 for an out-of-range k (so regret is in [0, 1)),
out_of_range (predicted k > loop_bound(n)), loss.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import (Batch, BitAnswers, Candidates, SizeRange, bits_np, bits_to_int, bitwise_loss, bitwise_metrics,
                        check_range, check_schedule, int_to_bits, last_step, running_answer_loss,
                        running_best_improves, scaled_steps, steps_table, time_index)

Array = jax.Array

MAX_DEVICE_BITS = 22  # the largest candidate, loop_bound(2^22 - 1) = 43237, squares within int32
_MASK32 = 0xFFFFFFFF
_GOLDEN32 = 0x9E3779B9


# ---- pure-Python reference ----


def iroot(x: int, k: int) -> int:
    """floor(x ** (1/k)) for integers x >= 0, k >= 1, by integer Newton iteration (no floats)."""
    if x < 0 or k < 1:
        raise ValueError(f"iroot needs x >= 0 and k >= 1, got x={x}, k={k}")
    if x < 2 or k == 1:
        return x
    r = 1 << -(-x.bit_length() // k)  # 2^ceil(bits/k) > x^(1/k): Newton decreases to the floor from above
    while True:
        s = ((k - 1) * r + x // r ** (k - 1)) // k
        if s >= r:
            return r
        r = s


def loop_bound(n: int) -> int:
    """floor(n^0.7) exactly: the largest i with i**10 <= n**7."""
    n = int(n)
    if n < 0:
        raise ValueError(f"loop_bound needs n >= 0, got {n}")
    return iroot(n**7, 10)


def solve(n: int) -> int:
    """The loop's answer k for n >= 1 (n < 2^40, so that i*i stays within int64); 2^30 takes ~0.1 s."""
    n = int(n)
    if not 1 <= n < 2**40:
        raise ValueError(f"solve supports 1 <= n < 2^40, got {n}")
    m = loop_bound(n)
    best_k, best_v = 0, 0
    chunk = 1 << 20
    for start in range(1, m + 1, chunk):
        i = np.arange(start, min(start + chunk, m + 1), dtype=np.int64)
        v = (i * i) % n
        j = int(np.argmax(v))  # first maximum in the chunk
        if int(v[j]) > best_v:  # strictly better than every earlier chunk: the earliest maximum wins
            best_k, best_v = int(i[j]), int(v[j])
    return best_k


def mix32(x):
    """Wellons' lowbias32 hash, a bijection on 32-bit integers (Python int or NumPy uint64 array)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def holdout_threshold(fraction: float) -> int:
    return min(int(round(fraction * 2**32)), _MASK32)


def held_out(n, fraction: float, seed: int):
    """Whether n (Python int or NumPy integer array) is in the held-out set."""
    x = np.asarray(n, np.uint64) if isinstance(n, np.ndarray) else int(n)
    return mix32(x + (seed * _GOLDEN32 & _MASK32)) < holdout_threshold(fraction)


@functools.lru_cache(maxsize=None)
def _thresholds(max_n: int) -> np.ndarray:
    """[M] int32 with M = loop_bound(max_n): entry i-1 is the smallest n with loop_bound(n) >= i,
    i.e. the least n with n**7 >= i**10, so that loop_bound(n) = #{entries <= n} for n <= max_n."""
    out = []
    for i in range(1, loop_bound(max_n) + 1):
        r = iroot(i**10, 7)
        out.append(r if r**7 == i**10 else r + 1)
    return np.array(out, np.int32)


@functools.lru_cache(maxsize=None)
def _sizes_with_allowed_n(lo: int, hi: int, split: str, fraction: float, seed: int) -> tuple[int, ...]:
    if split == "all":
        return tuple(range(lo, hi + 1))
    sizes = []
    for s in range(lo, hi + 1):
        h = held_out(np.arange(2 ** (s - 1), 2**s, dtype=np.uint64), fraction, seed)
        if (h if split == "holdout" else ~h).any():
            sizes.append(s)
    return tuple(sizes)


# ---- the task ----


def _held_out_device(n: Array, fraction: float, seed: int) -> Array:
    x = n.astype(jnp.uint32) + jnp.uint32(seed * _GOLDEN32 & _MASK32)  # wraps mod 2^32
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    x = x ^ (x >> 16)
    return x < jnp.uint32(holdout_threshold(fraction))


def _ascending_runs(key: Array, values: Array, valid: Array) -> Array:
    """values [B, M] cut into runs (each position after the first starts a run with probability p, p
    log-uniform on [1/64, 1] per row), each run sorted ascending; only the valid positions [B, M] (a
    prefix of each row: the loop's candidates) take part, so a run that reaches past the loop's end is
    sorted over the loop's values alone."""
    B, M = values.shape
    k_p, k_cut = jax.random.split(key)
    p = jnp.exp(jax.random.uniform(k_p, (B, 1), minval=jnp.log(1 / 64), maxval=0.0))  # [B, 1]
    starts = (jax.random.uniform(k_cut, (B, M)) < p).at[:, 0].set(False)
    run = jnp.where(valid, jnp.cumsum(starts, axis=1), M)  # [B, M] run index, non-decreasing; M past the loop
    order = jax.vmap(lambda v, r: jnp.lexsort((v, r)))(values, run)  # by run, then value
    return jnp.take_along_axis(values, order, axis=1)


def batch_n(batch: Batch) -> Array:
    """[B] n of a sampled batch (``aux[:, 0]``; the inputs may hide it)."""
    return batch.aux[:, 0].astype(jnp.int32)


def sample_n(task, key: Array, batch_size: int) -> tuple[Array, Array]:
    """[B] int32 n and its bit length, exactly uniform over the allowed n (``task``'s split, hold-out and
    ``valid_sizes``) of a uniform valid bit length."""
    k_size, k_n = jax.random.split(key)
    sizes = jnp.asarray(task.valid_sizes(), jnp.int32)
    size = sizes[jax.random.randint(k_size, (batch_size,), 0, sizes.shape[0])]  # [B]
    low = jnp.left_shift(jnp.int32(1), size - 1)  # [B] 2^(s-1)

    def draw(k: Array) -> Array:
        return jax.random.randint(k, (batch_size,), low, 2 * low, dtype=jnp.int32)

    if task.split == "all":
        return draw(k_n), size
    want = task.split == "holdout"

    def body(state):
        k, n, done = state
        k, sub = jax.random.split(k)
        cand = draw(sub)
        take = ~done & (_held_out_device(cand, task.holdout_fraction, task.holdout_seed) == want)
        return k, jnp.where(take, cand, n), done | take

    init = (k_n, low, jnp.zeros((batch_size,), bool))
    _, n, _ = jax.lax.while_loop(lambda s: ~jnp.all(s[2]), body, init)
    return n, size


def heuristic_k(batch: Batch) -> np.ndarray:
    """The largest i with i*i < n (capped at the loop bound): often a large i*i mod n, found without a loop."""
    n = np.asarray(batch_n(batch)).astype(np.int64)
    return np.array([min(math.isqrt(int(x) - 1), loop_bound(int(x))) for x in n])


def memoriser_of(task) -> Callable[[Batch], np.ndarray]:
    """A table of every instance of ``task`` (its split and size range) and its answer; any other n gets the
    answer of the nearest stored n."""
    ns = np.arange(max(2 ** (task.min_size - 1), 2), 2**task.max_size)
    if task.split != "all":
        out = np.asarray(held_out(ns, task.holdout_fraction, task.holdout_seed), bool)
        ns = ns[out] if task.split == "holdout" else ns[~out]
    table_k = np.array([solve(int(x)) for x in ns])

    def lookup(batch: Batch) -> np.ndarray:
        n = np.asarray(batch_n(batch)).astype(np.int64)
        j = np.clip(np.searchsorted(ns, n), 1, len(ns) - 1)
        return table_k[np.where(np.abs(ns[j - 1] - n) <= np.abs(ns[j] - n), j - 1, j)]

    return lookup


@dataclasses.dataclass(frozen=True)
class ModSquare(SizeRange, BitAnswers):
    name: ClassVar[str] = "modsquare"
    main_metric: ClassVar[str] = "error"
    has_split: ClassVar[bool] = True
    compiled_program: ClassVar[str | None] = "MODSQUARE"
    hints: ClassVar[tuple[str, ...]] = ("value", "index", "none")
    splits: ClassVar[tuple[str, ...]] = ("train", "holdout", "all")
    value_kinds: ClassVar[tuple[str, ...]] = ("modsquare", "random", "random-wide", "random-runs", "random-mixed")
    training_options: ClassVar[frozenset[str]] = frozenset({"values"})
    min_size: int = 4
    max_size: int = 8
    bits: int = 12
    hint: str = "value"
    split: str = "train"
    holdout_fraction: float = 0.1
    show_n: bool = True  # False: n's channels stay zero (with hint="value" only keep-the-best is left to do)
    values: str = "modsquare"  # "random": candidate i's value uniform in [0, n) ("random-wide": [0, 2^(2..bits)),
    # "random-runs": random-wide values sorted into ascending runs of random length; "random-mixed": half
    # the examples "random", half "random-wide")
    holdout_seed: int = 0
    step_scale: float = 1.0
    step_offset: int = 2

    def __post_init__(self) -> None:
        check_range("modsquare bits of n", self.min_size, self.max_size, minimum=2)
        if not 2 <= self.bits <= MAX_DEVICE_BITS:
            raise ValueError(f"modsquare: bits must be in [2, {MAX_DEVICE_BITS}], got {self.bits}")
        if self.max_size > self.bits:
            raise ValueError(f"modsquare: n of {self.max_size} bits does not fit the input width bits={self.bits}")
        if self.hint not in self.hints:
            raise ValueError(f"modsquare: hint must be one of {self.hints}, got {self.hint!r}")
        if self.split not in self.splits:
            raise ValueError(f"modsquare: split must be one of {self.splits}, got {self.split!r}")
        if self.values not in self.value_kinds:
            raise ValueError(f"modsquare: values must be one of {self.value_kinds}, got {self.values!r}")
        if self.values != "modsquare" and self.hint != "value":
            raise ValueError(f"modsquare: values={self.values!r} needs hint='value' (the values must be shown)")
        if not self.show_n and self.hint != "value":
            raise ValueError("modsquare: show_n=False needs hint='value' (without n or the values nothing determines k)")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"modsquare: holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        check_schedule("modsquare", self.step_scale, self.step_offset)
        if not self.valid_sizes():
            raise ValueError(f"modsquare: no n of {self.min_size}..{self.max_size} bits in split {self.split!r} "
                             f"(holdout_fraction={self.holdout_fraction}, holdout_seed={self.holdout_seed})")

    @property
    def _wide(self) -> bool:
        """Values of any width up to 2^bits, whatever n (random-wide, random-runs; random-mixed for half the examples)."""
        return self.values in ("random-wide", "random-runs", "random-mixed")

    def _value_range(self, n: Array) -> Array:
        """[B] what regret and difficulty are divided by: n (the values lie in [0, n)), or 2^bits for
        values="random-wide" or "random-runs"."""
        return jnp.full_like(n, 2**self.bits) if self._wide else n

    def valid_sizes(self) -> tuple[int, ...]:
        """Bit lengths in the size range that have at least one n in this split."""
        return _sizes_with_allowed_n(self.min_size, self.max_size, self.split, self.holdout_fraction,
                                     self.holdout_seed)

    @property
    def candidate_bits(self) -> int:
        return loop_bound(2**self.bits - 1).bit_length()

    @property
    def input_size(self) -> int:
        extra = {"none": 0, "index": self.candidate_bits, "value": self.candidate_bits + self.bits}
        return self.bits + extra[self.hint]

    @property
    def output_size(self) -> int:
        return self.candidate_bits

    def max_steps(self) -> int:
        return scaled_steps(loop_bound(2**self.max_size - 1), self.step_scale, self.step_offset)

    # ---- the search-task protocol (tasks.base.SearchTask): candidates are k = 0, 1, ..., floor(n^0.7) ----

    def candidates(self, batch: Batch) -> Candidates:
        """Candidate 0 (k = 0, value 0: the loop's start, always available) and i = 1..floor(n^0.7): value
        i*i mod n where the example's steps show it, regret (best - value) / n."""
        n = np.asarray(batch_n(batch)).astype(np.int64)  # [B]
        steps = np.asarray(batch.steps)
        bound = np.array([loop_bound(int(x)) for x in n])
        i = np.arange(1, int(bound.max()) + 1)[None, :]  # [1, M]
        valid = i <= bound[:, None]
        value_all = (i * i) % n[:, None]
        # what the steps show: candidates i <= steps with a hint (as `sample` builds the inputs), else the
        # iterations a loop of steps - step_offset rounds can run
        shown = valid & (i <= steps[:, None] - (self.step_offset if self.hint == "none" else 0))
        best = np.where(valid, value_all, -1).max(1)
        answer = np.concatenate([np.zeros((len(n), 1), np.int64), np.broadcast_to(i, valid.shape)], 1)
        value = np.concatenate([np.zeros((len(n), 1)), np.where(shown, value_all, -np.inf)], 1)
        regret = np.concatenate([best[:, None] / n[:, None],
                                 np.where(valid, (best[:, None] - value_all) / n[:, None], np.nan)], 1)
        ref = bits_np((np.asarray(batch.targets) * np.asarray(batch.mask)[..., None]).sum(0))  # k, as sampled
        return Candidates(answer, value, regret, ref)

    def heuristic_answers(self, batch: Batch) -> np.ndarray:
        return heuristic_k(batch)

    def memoriser(self) -> Callable[[Batch], np.ndarray]:
        return memoriser_of(self)

    def extrapolation_sizes(self, hi: int) -> tuple[int, ...]:
        """Up to two more bits of n, as far as the input width (``bits``) allows."""
        return tuple(sorted({min(s, self.bits) for s in (hi, hi + 1, hi + 2)}))

    def _sample_n(self, key: Array, batch_size: int) -> tuple[Array, Array]:
        return sample_n(self, key, batch_size)

    def sample(self, key: Array, batch_size: int) -> Batch:
        B, T = batch_size, self.max_steps()
        n, size = self._sample_n(key, B)  # [B]
        th = jnp.asarray(_thresholds(2**self.max_size - 1))  # [M]
        M = th.shape[0]
        bound = jnp.searchsorted(th, n, side="right").astype(jnp.int32)  # [B] loop_bound(n)
        cand = jnp.arange(1, M + 1, dtype=jnp.int32)  # [M]
        valid = cand[None, :] <= bound[:, None]  # [B, M]
        if self.values != "modsquare":  # the same loop over a random function of i (own key: n's draws stay)
            if self._wide:  # [0, 2^e), e uniform on 2..bits per example
                top = 2 ** jax.random.randint(jax.random.fold_in(key, 2), (B,), 2, self.bits + 1, dtype=jnp.int32)
                if self.values == "random-mixed":  # half of them on [0, n) instead
                    top = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, 4), 0.5, (B,)), top, n)
            else:
                top = n
            drawn = jax.random.randint(jax.random.fold_in(key, 1), (B, M), 0, top[:, None], dtype=jnp.int32)
            if self.values == "random-runs":
                drawn = _ascending_runs(jax.random.fold_in(key, 3), drawn, valid)
        else:
            drawn = (cand * cand)[None, :] % n[:, None]
        value = jnp.where(valid, drawn, -1)  # [B, M]; -1: not a candidate
        v1 = value.max(1)  # [B]
        first = jnp.argmax(value, axis=1)  # [B] earliest maximum
        k = jnp.where(v1 > 0, first + 1, 0).astype(jnp.int32)  # [B]
        others = jnp.where(jnp.arange(M)[None, :] == first[:, None], -1, value)
        v2 = jnp.maximum(others.max(1), 0)  # k = 0 has value 0
        difficulty = (v2 - v1).astype(jnp.float32) / self._value_range(n).astype(jnp.float32)  # no -0.0
        steps = jnp.asarray(steps_table(M, self.step_scale, self.step_offset))[bound]  # [B]

        t = time_index(T, B)  # [T, B]
        alive = t < steps[None, :]  # [T, B]
        channels = [int_to_bits(n, self.bits)[None] * (alive & self.show_n)[..., None]]  # [T, B, bits]
        if self.hint != "none":
            hinted = alive & (t < bound[None, :])  # [T, B]
            i = (t + 1) * hinted  # [T, B] candidate i = t + 1, 0 when not shown
            channels.append(int_to_bits(i, self.candidate_bits))
            if self.hint == "value":  # value of candidate t + 1 (i*i mod n unless values="random")
                shown_value = jnp.take_along_axis(value.T, jnp.clip(t, 0, M - 1), axis=0) * hinted  # [T, B]
                channels.append(int_to_bits(shown_value, self.bits))
        inputs = jnp.concatenate(channels, axis=-1)  # [T, B, X]
        last = t == steps[None, :] - 1  # [T, B]
        targets = int_to_bits(k, self.candidate_bits)[None] * last[..., None]  # [T, B, Y]
        aux = jnp.concatenate([n[:, None], value], axis=1).astype(jnp.int32)  # [B, 1 + M]: n, then the values
        return Batch(inputs, targets, last.astype(jnp.float32), steps, size, difficulty, aux=aux)

    def loss(self, logits: Array, batch: Batch) -> Array:
        """Sigmoid cross-entropy summed over the answer bits at the last step -> [B] (nats)."""
        return bitwise_loss(logits, batch)

    def trace_loss(self, logits: Array, batch: Batch) -> Array:
        """Step supervision -> [B]: the same loss against the loop's running k, averaged over every step
        (tasks.base.SupervisedLoop; the values come from Batch.aux, so hidden values are supervised too)."""
        T, B = batch.mask.shape
        t = time_index(T, B)
        values = batch.aux[:, 1:].T[:T]  # [M, B]: candidate t + 1's value, -1 past loop_bound(n)
        values = jnp.pad(values, ((0, T - values.shape[0]), (0, 0)), constant_values=-1)  # [T, B]
        shown = (values >= 0) & (t < batch.steps[None, :])  # the steps the loop visits (any hint)
        improved = running_best_improves(values, shown, 0)
        return running_answer_loss(logits, batch, improved, int_to_bits(t + 1, self.candidate_bits))


    def metrics(self, logits: Array, batch: Batch) -> dict[str, Array]:
        m = bitwise_metrics(logits, batch)
        m["error"] = 1.0 - m["exact_match"]
        n = batch_n(batch)  # [B]
        bound = jnp.searchsorted(jnp.asarray(_thresholds(2**self.bits - 1)), n, side="right")  # [B]
        pred = bits_to_int(last_step(logits, batch.mask) > 0)  # [B]
        best = bits_to_int(last_step(batch.targets, batch.mask) > 0.5)  # [B]
        feasible = pred <= bound
        pred_in = jnp.where(feasible, pred, 0)  # an out-of-range answer counts as k = 0 (value 0)
        vals = batch.aux[:, 1:]  # [B, M]: candidate values (i*i mod n or random), -1 past the bound

        def value(k: Array) -> Array:  # k = 0 (and an out-of-range k, mapped to 0) has value 0
            at = jnp.take_along_axis(vals, jnp.clip(k - 1, 0, vals.shape[1] - 1)[:, None], axis=1)[:, 0]
            return jnp.where(k > 0, at, 0)

        regret = (value(best) - value(pred_in)).astype(jnp.float32) / self._value_range(n).astype(jnp.float32)
        m["regret"] = regret
        m["out_of_range"] = (~feasible).astype(jnp.float32)
        return m

    def improvements(self, batch: Batch) -> tuple[Array, Array]:
        """(improved, shown), each [T, B] bool, for hint="value" (raises otherwise): the steps that show a
        candidate, and those whose value i*i mod n beats every earlier one and k = 0's value 0 (where the
        loop's k changes)."""
        if self.hint != "value":
            raise ValueError("modsquare: improvements need hint='value' (the values are not shown otherwise)")
        C = self.candidate_bits
        shown = bits_to_int(batch.inputs[..., self.bits: self.bits + C] > 0.5) > 0  # candidate i >= 1 shown
        return running_best_improves(bits_to_int(batch.inputs[..., self.bits + C:] > 0.5), shown, 0), shown

    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """From one example's inputs [T, X]: the targets [T, Y] and score mask [T], via `solve`."""
        T, C = inputs.shape[0], self.candidate_bits
        if not self.show_n or self.values != "modsquare":
            raise ValueError("modsquare reference: needs n on the inputs (show_n=True) and values='modsquare'")
        n = sum(int(b) << j for j, b in enumerate(inputs[0, : self.bits].round().astype(np.int64)))
        if steps != scaled_steps(loop_bound(n), self.step_scale, self.step_offset):
            raise ValueError(f"modsquare reference: {steps} steps for n={n}")
        k = solve(n)
        targets = np.zeros((T, C), np.float32)
        mask = np.zeros(T, np.float32)
        targets[steps - 1] = [(k >> b) & 1 for b in range(C)]
        mask[steps - 1] = 1
        return targets, mask
