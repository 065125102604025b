"""ModSquare, bit-serial: the seed's loop with every number's width a number of steps, not of input units.

    k = 0
    for i = 1 to floor(n^0.7):
        if i*i mod n > k*k mod n: k = i
    return k

The loop and its instances are tasks/modsquare.py's (hint="value": the candidates' values are shown, n is not,
since the values determine k); only the representation differs. There each bit position of n, i and i*i mod n
has its own input unit, so the weights of bits above the training widths are never trained. Here every number
arrives one bit per step on the same input unit, and a model's answer leaves one bit per step on one output
unit: a model that runs the loop at 8 bits can run it at 16 with the same weights, given the steps.

Shapes: T time steps, B batch, X = 7 input channels, Y = 1 output channel.

Instance: n of s bits (size s, uniform in [min_size, max_size]; n uniform in its octave; the split and hold-out
of ModSquare), candidates i = 1..L with L = loop_bound(n) = floor(n^0.7), candidate i's value v_i = i*i mod n.

Width: every number of an example is written with w = s bits (the bit length of n, hence of every value and
every index i < n), least significant bit first.

Schedule: for each candidate i = 1..L a block of 2w + 2 steps,
  compare pass  w steps   bit j = 0, 1, ..., w-1 of v_i on channel 0; channel 2 ("compare") is 1;
  end compare   1 step    channel 3 is 1;
  write pass    w steps   bit j = w-1, ..., 1, 0 of v_i on channel 0 and of i on channel 1 (most significant
                          first); channel 4 ("write") is 1;
  end write     1 step    channel 5 is 1;
then the answer: w steps with channel 6 ("answer") at 1, on which the output is bit j = 0..w-1 of k (scored,
mask 1; the loss is sigmoid cross-entropy summed over them; an example is right when every bit is).
    steps = ceil(step_scale * L) * (2w + 2) + w
With step_scale < 1 only the first ceil(step_scale * L) candidates are shown (the answer is still the whole
loop's k); with step_scale > 1 the blocks past L are blank steps (the loop's k must be held through them).

Why two passes, the second reversed. Least significant bit first, "v_i > best" is a two-state machine over the
bits: a differing bit sets the decision, an equal bit keeps it, so the last differing bit (the most significant)
decides, and the decision is known at the end of the compare pass, whatever w. The write pass shows the bits
again so that a model that has decided can store them (and i), one bit per memory row; a head that moves one row
per bit walks forward through the compare pass and back through the write pass, so every block starts at the
same row and no jump by a width-dependent distance is needed. Nothing in the inputs depends on w except the
number of steps.

Training distribution (``training_options``; evaluation never sees them):
  values="random": candidate i's value uniform on [0, n) instead of i*i mod n (the same loop over values that
    do not identify n); "random-wide": uniform on [0, 2^w), so that every bit of the width is exercised (regret
    and difficulty are then divided by 2^w instead of n); "modsquare" (default) the real values.
  labels="random": the write pass shows a random w-bit label for each candidate in place of i, and the answer is
    the best candidate's label: a model cannot count candidates to find k, so it must store what it is shown.
  pad=P: each example's width is w = s + U{0..P} (high zero bits), so that short loops also meet wide numbers
    and the answer's high bits are exercised.
  max_candidates=C (0: no cap): the loop runs over the first min(L, C) candidates, and k is that loop's answer.
    Long loops cost steps; the keep-the-best rule is the same over 12 candidates as over 2,353.
  loop_length=C (0: off; needs random values): each loop has U{1..C} candidates whatever n, so that long loops
    come with narrow numbers (n then sets only the width).

Step supervision (``trace_loss``, weighted by TrainConfig.trace_loss): the output on each end-compare step is
trained toward whether that candidate improves on the best so far (strictly, from k = 0's value 0): the outcome
of each comparison of the loop. ``targets`` carries those flags on the end-compare steps, where the mask is 0,
so that metrics and the main loss never see them.

Batch.aux is [B, 3 + 2M] int32: n, w, the number of candidates shown, the candidates' values (-1 past the loop),
then their labels (i, or random labels). Difficulty = -(v1 - v2) / n as in ModSquare (random values: also divided by n).

Metrics (each [B]): exact_match, error = 1 - exact_match (main), bits_per_seq, regret = (v1 - value(k)) / n
(value(k): the value of the first candidate labelled k; an answer that labels no candidate counts as k = 0,
value 0; random labels can repeat, so under labels="random" regret is approximate), out_of_range (an answer
that labels no candidate), loss.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import (BIG_LOGIT, Batch, Candidates, SizeRange, _sigmoid_ce, bitwise_loss, bitwise_metrics,
                        check_range, running_best_improves, time_index)
from tasks.modsquare import (MAX_DEVICE_BITS, _sizes_with_allowed_n, _thresholds, heuristic_k, loop_bound,
                             memoriser_of, sample_n)

Array = jax.Array

X_SIZE = 7
VALUE, INDEX, COMPARE, END_COMPARE, WRITE, END_WRITE, ANSWER = range(X_SIZE)  # input channels


def _bit(x: Array, j: Array) -> Array:
    """Bit j of non-negative int32 x (same shapes) as float32."""
    return ((x >> jnp.clip(j, 0, 30)) & 1).astype(jnp.float32)


def _values_labels(aux: Array) -> tuple[Array, Array]:
    """Batch.aux -> (values, labels), each [B, M]."""
    M = (aux.shape[1] - 3) // 2
    return aux[:, 3: 3 + M], aux[:, 3 + M:]


def _block_position(T: int, w: Array) -> tuple[Array, Array, Array]:
    """(t, c, r) [T, B] for widths w [B]: the step, the candidate whose block (2w + 2 steps) it falls in, and
    its offset there."""
    t = time_index(T, w.shape[0])
    block = (2 * w + 2)[None, :]
    return t, t // block, t % block


def serial_steps(candidates: int, width: int, scale: float = 1.0) -> int:
    """Steps of one example: ceil(scale * candidates) blocks of 2 * width + 2 steps, then width answer steps."""
    return math.ceil(round(scale * candidates, 9)) * (2 * width + 2) + width


@dataclasses.dataclass(frozen=True)
class ModSquareSerial(SizeRange):
    name: ClassVar[str] = "modsquare_serial"
    main_metric: ClassVar[str] = "error"
    has_split: ClassVar[bool] = True
    compiled_program: ClassVar[str | None] = None
    splits: ClassVar[tuple[str, ...]] = ("train", "holdout", "all")
    value_kinds: ClassVar[tuple[str, ...]] = ("modsquare", "random", "random-wide")
    training_options: ClassVar[frozenset[str]] = frozenset({"values", "labels", "pad", "max_candidates", "loop_length"})
    min_size: int = 4
    max_size: int = 8
    split: str = "train"
    holdout_fraction: float = 0.1
    holdout_seed: int = 0
    step_scale: float = 1.0
    values: str = "modsquare"
    labels: str = "index"
    pad: int = 0
    max_candidates: int = 0
    loop_length: int = 0

    def __post_init__(self) -> None:
        check_range("modsquare_serial bits of n", self.min_size, self.max_size, minimum=2)
        if self.max_size > MAX_DEVICE_BITS:
            raise ValueError(f"modsquare_serial: n has at most {MAX_DEVICE_BITS} bits, got max_size={self.max_size}")
        if self.split not in self.splits:
            raise ValueError(f"modsquare_serial: split must be one of {self.splits}, got {self.split!r}")
        if self.values not in self.value_kinds:
            raise ValueError(f"modsquare_serial: values must be one of {self.value_kinds}, got {self.values!r}")
        if self.labels not in ("index", "random"):
            raise ValueError(f"modsquare_serial: labels must be 'index' or 'random', got {self.labels!r}")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"modsquare_serial: holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not (math.isfinite(self.step_scale) and self.step_scale > 0):
            raise ValueError(f"modsquare_serial: step_scale must be a positive finite number, got {self.step_scale}")
        if self.pad < 0 or self.max_size + self.pad > 30:
            raise ValueError(f"modsquare_serial: pad must be in [0, {30 - self.max_size}], got {self.pad}")
        if self.max_candidates < 0:
            raise ValueError(f"modsquare_serial: max_candidates must be >= 0 (0: no cap), got {self.max_candidates}")
        if self.loop_length < 0 or (self.loop_length and (self.values == "modsquare" or self.max_candidates)):
            raise ValueError(f"modsquare_serial: loop_length must be >= 0, needs random values and no max_candidates, "
                             f"got loop_length={self.loop_length}")
        if not self.valid_sizes():
            raise ValueError(f"modsquare_serial: no n of {self.min_size}..{self.max_size} bits in split "
                             f"{self.split!r} (holdout_fraction={self.holdout_fraction}, "
                             f"holdout_seed={self.holdout_seed})")

    # ---- shapes and sizes ----

    input_size: ClassVar[int] = X_SIZE
    output_size: ClassVar[int] = 1

    def valid_sizes(self) -> tuple[int, ...]:
        return _sizes_with_allowed_n(self.min_size, self.max_size, self.split, self.holdout_fraction,
                                     self.holdout_seed)

    def evaluation_sizes(self) -> tuple[int, ...]:
        return self.extrapolation_sizes(self.max_size)

    def extrapolation_sizes(self, hi: int) -> tuple[int, ...]:
        """The trained width, 1.5x and 2x (8 -> 8, 12, 16), as far as MAX_DEVICE_BITS."""
        return tuple(sorted({min(s, MAX_DEVICE_BITS) for s in (hi, hi + hi // 2, 2 * hi)}))

    def _max_candidates(self) -> int:
        if self.loop_length:
            return self.loop_length
        m = loop_bound(2**self.max_size - 1)
        return min(m, self.max_candidates) if self.max_candidates else m

    def max_steps(self) -> int:
        return serial_steps(self._max_candidates(), self.max_size + self.pad, self.step_scale)

    # ---- sampling ----

    def sample(self, key: Array, batch_size: int) -> Batch:
        B, T, M = batch_size, self.max_steps(), self._max_candidates()
        n, size = sample_n(self, key, B)  # [B]
        th = jnp.asarray(_thresholds(2**self.max_size - 1))
        bound = jnp.searchsorted(th, n, side="right").astype(jnp.int32)  # [B] loop_bound(n)
        loop = jnp.minimum(bound, M)  # [B] candidates of the loop (capped in training)
        if self.loop_length:
            loop = jax.random.randint(jax.random.fold_in(key, 7), (B,), 1, M + 1, dtype=jnp.int32)
        w = size + jax.random.randint(jax.random.fold_in(key, 5), (B,), 0, self.pad + 1, dtype=jnp.int32)  # [B]
        i = jnp.arange(1, M + 1, dtype=jnp.int32)  # [M]
        valid = i[None, :] <= loop[:, None]  # [B, M]
        scale = jnp.left_shift(1, w) if self.values == "random-wide" else n  # [B] the values' range
        if self.values != "modsquare":
            drawn = jax.random.randint(jax.random.fold_in(key, 1), (B, M), 0, scale[:, None], dtype=jnp.int32)
        else:
            drawn = (i * i)[None, :] % n[:, None]
        value = jnp.where(valid, drawn, -1)  # [B, M]
        label = jnp.broadcast_to(i[None, :], (B, M))
        if self.labels == "random":
            label = jax.random.randint(jax.random.fold_in(key, 6), (B, M), 0, jnp.left_shift(1, w)[:, None],
                                       dtype=jnp.int32)
        v1 = value.max(1)
        first = jnp.argmax(value, axis=1)
        k = jnp.where(v1 > 0, jnp.take_along_axis(label, first[:, None], axis=1)[:, 0], 0)  # [B] the loop's answer
        others = jnp.where(jnp.arange(M)[None, :] == first[:, None], -1, value)
        v2 = jnp.maximum(others.max(1), 0)
        difficulty = (v2 - v1).astype(jnp.float32) / scale.astype(jnp.float32)
        improves = running_best_improves(value.T, valid.T, 0).T  # [B, M]

        blocks = jnp.ceil(jnp.round(self.step_scale * loop.astype(jnp.float32), 4)).astype(jnp.int32)  # [B]
        shown = jnp.minimum(blocks, loop)  # blocks past the loop are blank
        loop_steps = blocks * (2 * w + 2)
        steps = loop_steps + w  # [B]

        t, c, r = _block_position(T, w)  # [T, B] step, candidate (0-based), offset in its block
        on = c < shown[None, :]  # [T, B] inside a shown candidate's block
        cc = jnp.clip(c, 0, M - 1)
        v = jnp.take_along_axis(value.T, cc, axis=0)  # [T, B]
        flag = {COMPARE: on & (r < w[None, :]), END_COMPARE: on & (r == w[None, :]),
                WRITE: on & (r > w[None, :]) & (r <= 2 * w[None, :]), END_WRITE: on & (r == 2 * w[None, :] + 1),
                ANSWER: (t >= loop_steps[None, :]) & (t < steps[None, :])}
        j_write = 2 * w[None, :] - r  # [T, B] bit shown on a write step (w-1 down to 0)
        bit_v = jnp.where(flag[COMPARE], _bit(v, r), 0.0) + jnp.where(flag[WRITE], _bit(v, j_write), 0.0)
        bit_i = jnp.where(flag[WRITE], _bit(jnp.take_along_axis(label.T, cc, axis=0), j_write), 0.0)
        channels = [bit_v, bit_i] + [flag[ch].astype(jnp.float32) for ch in range(COMPARE, X_SIZE)]
        inputs = jnp.stack(channels, axis=-1)  # [T, B, X]

        answer_bit = _bit(jnp.broadcast_to(k[None, :], (T, B)), t - loop_steps[None, :])
        improved = jnp.take_along_axis(improves.T, cc, axis=0)  # [T, B]
        targets = jnp.where(flag[ANSWER], answer_bit, 0.0) + jnp.where(flag[END_COMPARE] & improved, 1.0, 0.0)
        aux = jnp.concatenate([n[:, None], w[:, None], shown[:, None], value, label], axis=1).astype(jnp.int32)
        return Batch(inputs, targets[..., None], flag[ANSWER].astype(jnp.float32), steps, size, difficulty,
                     aux=aux)

    # ---- scoring ----

    def loss(self, logits: Array, batch: Batch) -> Array:
        """Sigmoid cross-entropy summed over the answer bits -> [B] (nats)."""
        return bitwise_loss(logits, batch)

    def trace_loss(self, logits: Array, batch: Batch) -> Array:
        """Step supervision -> [B]: the cross-entropy of the output on each end-compare step against whether
        that candidate improves on the best so far, averaged over the example's shown candidates."""
        at = batch.inputs[..., END_COMPARE]  # [T, B]
        ce = _sigmoid_ce(logits[..., 0], batch.targets[..., 0]) * at
        return ce.sum(0) / jnp.maximum(at.sum(0), 1.0)

    def check_trace_loss(self) -> None:
        """Every shown comparison has its outcome, whatever the step scale: nothing to refuse."""

    def _answers(self, logits: Array, mask: Array) -> Array:
        """[T, B, 1] logits -> [B] int32: bit j of the answer is the output on the j-th scored step."""
        j = jnp.cumsum(mask, axis=0).astype(jnp.int32) - 1  # [T, B]
        bits = ((logits[..., 0] > 0) & (mask > 0)).astype(jnp.int32)
        return (bits << jnp.clip(j, 0, 30)).sum(0)

    def metrics(self, logits: Array, batch: Batch) -> dict[str, Array]:
        m = bitwise_metrics(logits, batch)
        m["error"] = 1.0 - m["exact_match"]
        vals, labels = _values_labels(batch.aux)  # [B, M] each
        pred = self._answers(logits, batch.mask)
        best = self._answers(batch.targets * 40.0 - 20.0, batch.mask)
        match = (labels == pred[:, None]) & (vals >= 0)  # [B, M]
        feasible = (pred == 0) | match.any(1)

        def value(k: Array) -> Array:  # the value of the first candidate labelled k (0 for k = 0 or none)
            hit = (labels == k[:, None]) & (vals >= 0)
            at = jnp.take_along_axis(vals, jnp.argmax(hit, axis=1)[:, None], axis=1)[:, 0]
            return jnp.where(hit.any(1), at, 0)

        m["regret"] = (value(best) - value(jnp.where(feasible, pred, 0))).astype(jnp.float32) / self._range(batch.aux)
        m["out_of_range"] = (~feasible).astype(jnp.float32)  # no candidate has that label
        return m

    def _range(self, aux: Array) -> Array:
        """[B] float32 what regret and difficulty are divided by: n, or 2^w for values="random-wide"."""
        return (jnp.left_shift(1, aux[:, 1]) if self.values == "random-wide" else aux[:, 0]).astype(jnp.float32)

    # ---- the search-task protocol (tasks.base.SearchTask) ----

    def candidates(self, batch: Batch) -> Candidates:
        """k = 0 (value 0) and i = 1..L; values as the blocks show them (-inf past the shown ones)."""
        aux = np.asarray(batch.aux).astype(np.int64)
        shown = aux[:, 2]
        vals, labels = (np.asarray(a).astype(np.int64) for a in _values_labels(aux))
        B, M = vals.shape
        i = np.arange(1, M + 1)[None, :]
        valid = vals >= 0
        best = np.where(valid, vals, 0).max(1)
        answer = np.concatenate([np.zeros((B, 1), np.int64), labels], 1)
        value = np.concatenate([np.zeros((B, 1)), np.where(valid & (i <= shown[:, None]), vals, -np.inf)], 1)
        top = np.asarray(self._range(jnp.asarray(aux)), np.float64)[:, None]
        regret = np.concatenate([best[:, None] / top, np.where(valid, (best[:, None] - vals) / top, np.nan)], 1)
        return Candidates(answer, value, regret, self.decode_answers(batch, batch.targets * 40.0 - 20.0))

    def encode_answers(self, batch: Batch, answers: np.ndarray) -> Array:
        """[B] integer answers -> logits [T, B, 1] whose scored steps spell them (and -BIG_LOGIT elsewhere)."""
        mask = jnp.asarray(batch.mask)
        j = jnp.clip(jnp.cumsum(mask, axis=0).astype(jnp.int32) - 1, 0, 30)
        bits = (jnp.asarray(answers, jnp.int32)[None, :] >> j) & 1
        return jnp.where((mask > 0) & (bits > 0), BIG_LOGIT, -BIG_LOGIT)[..., None].astype(jnp.float32)

    def decode_answers(self, batch: Batch, logits: Array) -> np.ndarray:
        return np.asarray(self._answers(jnp.asarray(logits), jnp.asarray(batch.mask))).astype(np.int64)

    def loop_answers(self, batch: Batch) -> np.ndarray:
        return self.candidates(batch).first_best()

    def heuristic_answers(self, batch: Batch) -> np.ndarray:
        return heuristic_k(batch)

    def memoriser(self) -> Callable[[Batch], np.ndarray]:
        return memoriser_of(self)

    def improvements(self, batch: Batch) -> tuple[Array, Array]:
        """(improved, shown) [T, B]: the end-compare steps, and those of candidates that beat the best so far."""
        shown = batch.inputs[..., END_COMPARE] > 0.5
        return shown & (batch.targets[..., 0] > 0.5), shown

    def head_targets(self, batch: Batch) -> tuple[Array, Array, Array, Array]:
        """(read_row, read_on, write_row, write_on) [T, B]: where the tape machine of the module docstring keeps
        its head (row j holds bit j of the stored best value and of its k). The write head is on the row of the
        bit each step shows (compare, write and answer steps; the last bit's row on an end-compare step, row 0
        on an end-write step). The read head leads by one step, as the NTM's controller sees the reads of the
        step before: on the row of the next compare step's bit, and on an answer step on that step's bit (the
        output is computed from the same step's reads)."""
        T, B = batch.mask.shape
        w, shown = batch.aux[:, 1], batch.aux[:, 2]
        t, c, r = _block_position(T, w)
        loop_steps = batch.steps - w  # [B] (step_scale > 1: the blank blocks count)
        on_block = c < shown[None, :]
        row = jnp.where(r < w[None, :], r, jnp.where(r == w[None, :], w[None, :] - 1, 2 * w[None, :] - r))
        row = jnp.where(r == 2 * w[None, :] + 1, 0, row)
        answer = batch.mask > 0
        row = jnp.where(answer, t - loop_steps[None, :], row)  # [T, B]
        write_on = on_block | answer
        nxt = jnp.concatenate([batch.inputs[1:, :, COMPARE], jnp.zeros((1, B), batch.inputs.dtype)]) > 0
        read_row = jnp.where(answer, row, jnp.concatenate([row[1:], row[-1:]]))
        return read_row, nxt | answer, jnp.clip(row, 0), write_on

    def tape_rows(self) -> int:
        """One row per bit of the widest number: max_size + pad."""
        return self.max_size + self.pad

    def write_targets(self, batch: Batch) -> tuple[Array, Array]:
        """(writes, on) [T, B]: the tape machine writes on the write-pass steps of the candidates that beat the best
        so far, and on no other step of the example."""
        t, c, _ = _block_position(batch.mask.shape[0], batch.aux[:, 1])
        won = (batch.inputs[..., END_COMPARE] > 0) & (batch.targets[..., 0] > 0.5)  # [T, B] a winning compare ends
        last_won = jax.lax.cummax(jnp.where(won, c, -1), axis=0)  # [T, B] the latest winning candidate so far
        return (batch.inputs[..., WRITE] > 0) & (last_won == c), t < batch.steps[None, :]

    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """From one example's inputs [T, X]: the targets [T, 1] and mask [T], by reading the numbers back from
        their bits and running the loop in Python (needs step_scale >= 1: every candidate shown)."""
        if self.step_scale < 1:
            raise ValueError("modsquare_serial reference: needs step_scale >= 1 (every candidate shown)")
        x = np.asarray(inputs).round().astype(np.int64)[:steps]
        T = inputs.shape[0]
        ends = np.flatnonzero(x[:, END_COMPARE])
        answer_at = np.flatnonzero(x[:, ANSWER])
        w = len(answer_at)
        if w == 0 or len(ends) == 0 or ends[0] != w or answer_at[-1] != steps - 1:
            raise ValueError("modsquare_serial reference: not a bit-serial example")
        targets, mask = np.zeros((T, 1), np.float32), np.zeros(T, np.float32)
        k, best = 0, 0
        for c, e in enumerate(ends):
            v = sum(int(b) << j for j, b in enumerate(x[e - w: e, VALUE]))
            write = x[e + 1: e + 1 + w]
            if not (write[:, WRITE].all() and x[e - w: e, COMPARE].all()):
                raise ValueError("modsquare_serial reference: a block out of shape")
            if sum(int(b) << j for j, b in enumerate(write[::-1, VALUE])) != v:
                raise ValueError("modsquare_serial reference: the write pass shows another value")
            i = sum(int(b) << j for j, b in enumerate(write[::-1, INDEX]))
            if v > best:
                k, best = i, v
                targets[e, 0] = 1.0
        for j, s in enumerate(answer_at):
            targets[s, 0] = (k >> j) & 1
            mask[s] = 1.0
        return targets, mask
