"""PolyMax: see a polynomial's coefficients one per step, then say where on [0, 1] it is largest.

Shapes: T time steps, B batch, X input width, Y output width, D maximum degree.

Instance: degree d uniform in [min_size, max_size] (size = d), and
    P(x) = sum_{j=0..d} c_j T_j(2x - 1),   c_j ~ N(0, 1) / sqrt(d + 1) i.i.d.,
with T_j the Chebyshev polynomials of the first kind, so that Var P(x) <= 1 everywhere on [0, 1]
(values O(1) at every degree) and higher degrees bring more, not larger, wiggles. The answer is
x* = argmax_{x in [0, 1]} P(x) (unique with probability 1). It is an endpoint for about 43% of
the instances at the default degrees 2..6 (58% at degree 2, 31% at 6, 21% at 12), and P has a
single local maximum for 16% of them (58% at degree 2, under 1% from degree 6).

Input channels (X = 2 + index_bits, 4 more with a query oracle):
  0       c_t (step t <= d shows coefficient t);
  1       1 on the steps that show a coefficient ("present");
  2..     t in binary, `index_bits` bits, least significant first (index_bits = 4: degree <= 15;
          0: no index, so that no input unit is tied to a degree: coefficient t is the t-th present step).
Output channel (Y = 1): x = sigmoid(logit) at the last step.

Step schedule: steps = ceil(step_scale * (d + 1)) + step_offset (default offset 2). Coefficients
are shown on steps t < min(d + 1, steps); later steps have zero inputs. Only the last step,
steps - 1, is scored (mask 1 there); there is no "answer now" signal. With step_scale < 1 an
example may see only its first `steps` coefficients and is still scored on the whole polynomial
(the instance does not depend on the schedule). Every batch is padded to max_steps(); steps past an
example's `steps` have zero inputs, targets and mask.

Thinking steps (``think`` = c > 0): after the d + 1 coefficient steps come K = ceil(step_scale * c *
(d + 1)) steps with no new input, then the step_offset steps, so
    steps = (d + 1) + ceil(step_scale * c * (d + 1)) + step_offset.
The step multiplier then scales the thinking steps only: every coefficient is always shown, and a
test-time multiplier of 0.25x-4x gives the model a quarter to four times the K it was trained with.
``extra_steps`` = E (a training option) adds U{0..E} blank steps per example, so that a model learns to
hold its answer past the steps it is scored at.

A query oracle (``oracle`` = "value" or "slope", with think = c > 0: the thinking steps become queries):
four more input channels, [query, x, P(x), asinh P'(x)] (the last 0 for "value"). The query flag is 1
on every step after the coefficients; on those steps the task's ``feedback`` (tasks.base.ClosedLoop)
fills the other three with the model's previous output x = sigmoid(logit) and the polynomial there, so
an example makes steps - (d + 1) queries (its outputs on steps d .. steps - 2) and answers at the last
step. Nothing tracks the best query for the model: its answer is its own last output.

Targets: x* at the last step (targets[steps - 1, b, 0]). The coefficients travel in
`Batch.aux` ([B, D + 1], zero past d) because the loss and metrics need P even where the inputs
were cut short.

On device x* is found without root finding: P' on a grid of GRID + 1 points, bisection (BISECT
halvings, to float32 resolution) in every grid cell where P' goes from > 0 to <= 0, and the two
endpoints; the best of these is x*. This misses only a local maximum whose neighbouring minimum
lies in the same grid cell of width 1/GRID, which is then a bump of height O(GRID^-3). The NumPy
reference (`maximise_reference`) takes the real roots of P' (np.polynomial) plus the endpoints.

Loss, chosen by `objective` (a field named `loss` would hide the method):
  "gap"         (max P - P(x))^2: needs no maximiser at training time, zero at x*;
  "supervised"  (x - x*)^2.

Difficulty = |x1 - x2| / (P(x1) - P(x2) + 0.01), in [0, 100], where x1 = x* and x2 is the best
other local maximum on [0, 1] (interior maxima and the endpoints where P decreases into the
interval); 0 when P has a single local maximum. Near P(x1) = P(x2) a small change of the
coefficients moves x* by |x1 - x2|, so this ratio is how steep the coefficients -> x* map is there:
close values far apart in x are hard for an interpolator. The 0.01 is the exact-match tolerance on
regret below which picking x2 would count as a match anyway.

Metrics (each [B]): regret = max P - P(x) (main metric; clipped at 0 against float32 rounding),
x_error = |x - x*|, exact_match = 1 where regret < 0.01 (1% of the O(1) value scale),
error = 1 - exact_match, loss.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial import chebyshev as npcheb

from tasks.base import (Batch, Candidates, SizeRange, check_range, check_schedule, int_to_bits, last_step,
                        sample_sizes, scaled_steps, time_index)

Array = jax.Array

GRID = 1024
BISECT = 24
MATCH_REGRET = 1e-2
DIFFICULTY_EPS = 1e-2


# ---- NumPy reference (float64, roots of P') ----


def _critical_points(c: np.ndarray, imag_tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Roots of P' in [0, 1] whose imaginary part is below imag_tol (real parts), and P as a callable."""
    p = npcheb.Chebyshev(np.asarray(c, np.float64), domain=[0, 1])
    roots = p.deriv().roots()
    real = roots[np.abs(roots.imag) < imag_tol].real
    return real[(real >= 0) & (real <= 1)], p


def maximise_reference(c: np.ndarray) -> tuple[float, float]:
    """(x*, max P) on [0, 1] for Chebyshev coefficients c (in x' = 2x - 1): the best critical point
    or endpoint. Nearly real root pairs (a flat shoulder) are kept too: any point of [0, 1] is feasible,
    so extra candidates can only make the maximum more accurate."""
    crit, p = _critical_points(c, imag_tol=1e-3)
    xs = np.concatenate([crit, [0.0, 1.0]])
    vs = p(xs)
    i = int(np.argmax(vs))
    return float(xs[i]), float(vs[i])


def local_maxima_reference(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions and values of the local maxima of P on [0, 1]: interior critical points with P'' < 0,
    0 if P'(0) < 0, 1 if P'(1) > 0."""
    crit, p = _critical_points(c)
    dp, ddp = p.deriv(), p.deriv(2)
    xs = list(crit[ddp(crit) < 0]) + ([0.0] if dp(0.0) < 0 else []) + ([1.0] if dp(1.0) > 0 else [])
    xs = np.array(sorted(xs))
    return xs, p(xs)


def difficulty_reference(c: np.ndarray) -> float:
    xs, vs = local_maxima_reference(c)
    if len(xs) < 2:
        return 0.0
    order = np.argsort(-vs)
    (x1, x2), (v1, v2) = xs[order[:2]], vs[order[:2]]
    return float(abs(x1 - x2) / (v1 - v2 + DIFFICULTY_EPS))


# ---- device ----


@functools.lru_cache(maxsize=None)
def _grid_basis(D: int) -> tuple[np.ndarray, np.ndarray]:
    """T_j(2x - 1) and d/dx T_j(2x - 1) on x = g / GRID, each [D + 1, GRID + 1] float32."""
    x = np.linspace(0.0, 1.0, GRID + 1)
    eye = np.eye(D + 1)
    T = np.stack([npcheb.chebval(2 * x - 1, eye[j]) for j in range(D + 1)])
    dT = np.stack([2 * npcheb.chebval(2 * x - 1, npcheb.chebder(eye[j])) for j in range(D + 1)])
    return T.astype(np.float32), dT.astype(np.float32)


def cheb_eval(c: Array, x: Array) -> tuple[Array, Array]:
    """P(x) and P'(x): coefficients c [B, D+1], points x [B, K] in [0, 1] -> ([B, K], [B, K]).

    T_{j+1} = 2u T_j - T_{j-1}; dT_j/du = j U_{j-1}, U_{j+1} = 2u U_j - U_{j-1}; u = 2x - 1."""
    D = c.shape[1] - 1
    u = 2 * x - 1
    t_prev, t_cur = jnp.ones_like(u), u  # T_0, T_1
    u_prev, u_cur = jnp.zeros_like(u), jnp.ones_like(u)  # U_{-1}, U_0
    p = c[:, :1] * t_prev
    dp = jnp.zeros_like(u)
    for j in range(1, D + 1):
        p = p + c[:, j : j + 1] * t_cur
        dp = dp + c[:, j : j + 1] * (j * u_cur)
        t_prev, t_cur = t_cur, 2 * u * t_cur - t_prev
        u_prev, u_cur = u_cur, 2 * u * u_cur - u_prev
    return p, 2 * dp


def maximise(c: Array) -> tuple[Array, Array, Array]:
    """x*, max P and the difficulty for coefficients c [B, D+1] -> three [B] float32 arrays."""
    B, D = c.shape[0], c.shape[1] - 1
    T, dT = (jnp.asarray(a) for a in _grid_basis(D))
    values = c @ T  # [B, G+1]
    slope = c @ dT  # [B, G+1]
    rising_falling = (slope[:, :-1] > 0) & (slope[:, 1:] <= 0)  # [B, G]: a local maximum in the cell
    K = D + 1  # > the number of interior maxima, at most floor(D / 2)
    hit, cell = jax.lax.top_k(rising_falling.astype(jnp.float32), K)  # [B, K]
    is_max = hit > 0
    lo = cell.astype(jnp.float32) / GRID
    hi = (cell + 1).astype(jnp.float32) / GRID

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        up = cheb_eval(c, mid)[1] > 0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, BISECT, halve, (lo, hi))
    x_in = (lo + hi) / 2  # [B, K]
    v_in = cheb_eval(c, x_in)[0]
    ends = jnp.broadcast_to(jnp.array([0.0, 1.0], jnp.float32)[None, :], (B, 2))
    cand_x = jnp.concatenate([x_in, ends], axis=1)  # [B, K+2]
    cand_v = jnp.concatenate([jnp.where(is_max, v_in, -jnp.inf), values[:, :1], values[:, -1:]], axis=1)
    local = jnp.concatenate([is_max, slope[:, :1] < 0, slope[:, -1:] > 0], axis=1)  # [B, K+2]
    best = jnp.argmax(cand_v, axis=1)  # [B]
    x1 = jnp.take_along_axis(cand_x, best[:, None], axis=1)[:, 0]
    v1 = jnp.take_along_axis(cand_v, best[:, None], axis=1)[:, 0]
    rest = local & (jnp.arange(K + 2)[None, :] != best[:, None])  # [B, K+2]
    rest_v = jnp.where(rest, cand_v, -jnp.inf)
    second = jnp.argmax(rest_v, axis=1)
    x2 = jnp.take_along_axis(cand_x, second[:, None], axis=1)[:, 0]
    v2 = jnp.take_along_axis(cand_v, second[:, None], axis=1)[:, 0]
    has_second = rest.any(1)
    ratio = jnp.abs(x1 - x2) / (jnp.where(has_second, v1 - v2, 0.0) + DIFFICULTY_EPS)
    return x1, v1, jnp.where(has_second, ratio, 0.0)


@dataclasses.dataclass(frozen=True)
class PolyMax(SizeRange):
    name: ClassVar[str] = "polymax"
    main_metric: ClassVar[str] = "regret"
    has_split: ClassVar[bool] = False
    compiled_program: ClassVar[str | None] = None
    candidate_grid: ClassVar[int] = 257  # candidates: x on a uniform grid of [0, 1]
    objectives: ClassVar[tuple[str, ...]] = ("gap", "supervised")
    oracles: ClassVar[tuple[str, ...]] = ("none", "value", "slope")
    min_size: int = 2
    max_size: int = 6
    index_bits: int = 4
    objective: str = "gap"
    step_scale: float = 1.0
    step_offset: int = 2
    think: float = 0.0  # thinking steps per coefficient (c); 0: none, step_scale scales the whole schedule
    oracle: str = "none"  # "value" / "slope": the thinking steps query P (and P') at the model's last output
    extra_steps: int = 0  # training only: each example gets U{0..extra_steps} more blank steps
    anytime: str = "each"  # trace_loss on each step: "each" output's objective, or that of the "best" output so far
    anytimes: ClassVar[tuple[str, ...]] = ("each", "best")
    training_options: ClassVar[frozenset[str]] = frozenset({"extra_steps"})

    def __post_init__(self) -> None:
        check_range("polymax degree", self.min_size, self.max_size)
        if self.index_bits < 0 or self.extra_steps < 0 or not self.think >= 0:  # make_task checked the types
            raise ValueError(f"polymax: index_bits, extra_steps and think must be >= 0, got {self.index_bits}, "
                             f"{self.extra_steps}, {self.think}")
        if self.index_bits and self.max_size >= 2**self.index_bits:
            raise ValueError(f"polymax: degree {self.max_size} has coefficient indices up to {self.max_size}, "
                             f"which do not fit in index_bits={self.index_bits}; raise index_bits")
        if self.objective not in self.objectives:
            raise ValueError(f"polymax: objective must be one of {self.objectives}, got {self.objective!r}")
        check_schedule("polymax", self.step_scale, self.step_offset)
        if self.oracle not in self.oracles:
            raise ValueError(f"polymax: oracle must be one of {self.oracles}, got {self.oracle!r}")
        if self.anytime not in self.anytimes:
            raise ValueError(f"polymax: anytime must be one of {self.anytimes}, got {self.anytime!r}")
        if self.anytime == "best" and self.objective != "gap":
            raise ValueError("polymax: anytime='best' scores the best output's gap; it needs objective 'gap'")
        if self.oracle != "none" and not self.think:
            raise ValueError("polymax: a query oracle needs thinking steps to query on (think > 0)")

    @property
    def input_size(self) -> int:
        return 2 + self.index_bits + (4 if self.closed_loop else 0)

    @property
    def closed_loop(self) -> bool:
        return self.oracle != "none"

    def feedback(self, x: Array, y_prev: Array, inputs: Array) -> Array:
        """tasks.base.ClosedLoop for one example: on a query step (flag 1), the previous output's x and P(x)
        (and asinh P'(x) with the slope oracle) in the three channels after the flag. The polynomial is read
        from the example's own coefficient steps (coefficient t on step t), so any degree works. P is evaluated in
        the closed form T_j = cos(j theta) rather than by ``cheb_eval``, whose recurrence would unroll one Python
        iteration per step of the example inside every step of the model's scan."""
        q = 2 + self.index_bits
        c = inputs[:, 0] * inputs[:, 1]  # [T]: coefficient t on step t, zero on the other steps
        xp = jax.nn.sigmoid(y_prev[0])
        u = jnp.clip(2 * xp - 1, -1 + 1e-6, 1 - 1e-6)  # the endpoints' derivative stays finite
        theta = jnp.arccos(u)
        j = jnp.arange(c.shape[0], dtype=x.dtype)
        p = (c * jnp.cos(j * theta)).sum()  # T_j(u) = cos(j theta)
        dp = 2 * (c * j * jnp.sin(j * theta)).sum() / jnp.sin(theta)  # d/dx T_j(2x - 1) = 2 j U_{j-1}(u)
        slope = jnp.arcsinh(dp) if self.oracle == "slope" else jnp.zeros_like(dp)
        return x.at[q + 1:q + 4].set(x[q] * jnp.stack([xp, p, slope]))

    @property
    def output_size(self) -> int:
        return 1

    def schedule(self, coefficients: int) -> int:
        """Steps of an example with this many coefficients (d + 1), before any extra training steps."""
        if self.think:
            return coefficients + scaled_steps(coefficients, self.step_scale * self.think, self.step_offset)
        return scaled_steps(coefficients, self.step_scale, self.step_offset)

    def max_steps(self) -> int:
        return self.schedule(self.max_size + 1) + self.extra_steps

    # ---- the search-task protocol (tasks.base.SearchTask): candidates are x on a grid of [0, 1] ----

    @staticmethod
    def shown_coefficients(batch: Batch) -> np.ndarray:
        """[B, D+1] the polynomial as the example's steps show it: coefficients on steps t < steps, zero after."""
        c = np.asarray(batch.aux, np.float64)
        return np.where(np.arange(c.shape[1])[None, :] < np.asarray(batch.steps)[:, None], c, 0.0)

    def candidates(self, batch: Batch) -> Candidates:
        """x on the grid, P(x) as shown (the value), max P - P(x) under the whole polynomial (the regret)."""
        c = np.asarray(batch.aux, np.float64)  # [B, D+1]
        x = np.broadcast_to(np.linspace(0, 1, self.candidate_grid)[None], (c.shape[0], self.candidate_grid))
        p_full = np.asarray(cheb_eval(jnp.asarray(c, jnp.float32), jnp.asarray(x, jnp.float32))[0], np.float64)
        p_shown = np.asarray(cheb_eval(jnp.asarray(self.shown_coefficients(batch), jnp.float32),
                                       jnp.asarray(x, jnp.float32))[0], np.float64)
        x_star = (np.asarray(batch.targets)[..., 0] * np.asarray(batch.mask)).sum(0)
        p_star = np.asarray(cheb_eval(jnp.asarray(c, jnp.float32), jnp.asarray(x_star[:, None], jnp.float32))[0])[:, 0]
        regret = np.maximum(np.maximum(p_star, p_full.max(1))[:, None] - p_full, 0.0)
        return Candidates(x, p_shown, regret, x_star)

    def encode_answers(self, batch: Batch, answers: np.ndarray) -> Array:
        """[B] x in [0, 1] -> logits [T, B, 1] whose sigmoid is x (in float32)."""
        T, B, Y = batch.targets.shape
        x = np.clip(np.asarray(answers, np.float64), 1e-12, 1 - 1e-12)
        row = np.log(x / (1 - x))[:, None]  # [B, 1]
        return jnp.broadcast_to(jnp.asarray(row, jnp.float32)[None], (T, B, Y))

    def decode_answers(self, batch: Batch, logits: Array) -> np.ndarray:
        last = (np.asarray(logits) * np.asarray(batch.mask)[..., None]).sum(0)  # [B, 1]
        return 1 / (1 + np.exp(-last[:, 0]))

    def loop_answers(self, batch: Batch) -> np.ndarray:
        """The exact maximiser of the polynomial as shown (the search over x, done by bisection on P')."""
        return np.asarray(maximise(jnp.asarray(self.shown_coefficients(batch), jnp.float32))[0])

    def heuristic_answers(self, batch: Batch) -> np.ndarray:
        """The best of x in {0, 1/4, 1/2, 3/4, 1}: five fixed probes, no search."""
        pts = np.linspace(0, 1, 5)
        c = self.shown_coefficients(batch)
        p = np.asarray(cheb_eval(jnp.asarray(c, jnp.float32),
                                 jnp.broadcast_to(jnp.asarray(pts, jnp.float32), (len(c), 5)))[0])
        return pts[np.argmax(p, 1)]

    def memoriser(self) -> None:
        return None  # real-valued coefficients: no table of instances

    def extrapolation_sizes(self, hi: int) -> tuple[int, ...]:
        return (hi, 2 * hi, 4 * hi)

    def improvements(self, batch: Batch) -> tuple[Array, Array]:
        raise ValueError("polymax: the inputs show coefficients, not candidates; there is no running best")

    def sample(self, key: Array, batch_size: int) -> Batch:
        k_deg, k_c = jax.random.split(key)
        B, T, D = batch_size, self.max_steps(), self.max_size
        degree = sample_sizes(k_deg, B, self.min_size, self.max_size)  # [B]
        z = jax.random.normal(k_c, (B, D + 1), jnp.float32)
        used = jnp.arange(D + 1)[None, :] <= degree[:, None]  # [B, D+1]
        inv_root = jnp.asarray(1 / np.sqrt(np.arange(1, D + 2)), jnp.float32)[degree]  # [B] 1/sqrt(d+1)
        c = jnp.where(used, z * inv_root[:, None], 0.0)  # [B, D+1]
        x_star, _, difficulty = maximise(c)
        table = np.array([self.schedule(b) for b in range(D + 2)], np.int32)
        steps = jnp.asarray(table)[degree + 1]  # [B]
        if self.extra_steps:
            k_extra = jax.random.fold_in(key, 0x6578)  # its own stream: the instance does not depend on it
            steps = steps + jax.random.randint(k_extra, (B,), 0, self.extra_steps + 1, dtype=jnp.int32)

        t = time_index(T, B)  # [T, B]
        shown = (t <= degree[None, :]) & (t < steps[None, :])  # [T, B]
        coef = jnp.take_along_axis(c.T, jnp.clip(t, 0, D), axis=0) * shown  # [T, B]
        index = int_to_bits(t, self.index_bits) * shown[..., None]  # [T, B, index_bits]
        parts = [coef[..., None], shown[..., None].astype(jnp.float32), index]
        if self.closed_loop:  # the query flag after the coefficients; feedback fills the other three
            query = (t > degree[None, :]) & (t < steps[None, :])
            parts += [query[..., None].astype(jnp.float32), jnp.zeros((T, B, 3), jnp.float32)]
        inputs = jnp.concatenate(parts, axis=-1)
        last = t == steps[None, :] - 1  # [T, B]
        targets = (x_star[None, :] * last)[..., None]  # [T, B, 1]
        return Batch(inputs, targets, last.astype(jnp.float32), steps, degree, difficulty, aux=c)

    def _answer(self, logits: Array, batch: Batch) -> tuple[Array, Array, Array, Array]:
        """x, x*, P(x), max P, each [B]."""
        x = jax.nn.sigmoid(last_step(logits, batch.mask)[:, 0])
        x_star = last_step(batch.targets, batch.mask)[:, 0]
        both = jnp.stack([x, x_star], axis=1)  # [B, 2]
        p = cheb_eval(batch.aux, both)[0]
        return x, x_star, p[:, 0], p[:, 1]

    def loss(self, logits: Array, batch: Batch) -> Array:
        x, x_star, p, p_star = self._answer(logits, batch)
        if self.objective == "gap":
            return (p_star - p) ** 2
        return (x - x_star) ** 2

    def metrics(self, logits: Array, batch: Batch) -> dict[str, Array]:
        x, x_star, p, p_star = self._answer(logits, batch)
        regret = jnp.maximum(p_star - p, 0.0)
        match = (regret < MATCH_REGRET).astype(jnp.float32)
        return {"regret": regret, "x_error": jnp.abs(x - x_star), "exact_match": match, "error": 1.0 - match,
                "loss": self.loss(logits, batch)}

    # ---- step supervision (tasks.base.SupervisedLoop): an anytime loss on every output after the coefficients ----

    def trace_loss(self, logits: Array, batch: Batch) -> Array:
        """[B]: the objective (gap: (max P - P(x_t))^2; supervised: (x_t - x*)^2) of the output x_t of every step
        from the last coefficient's on (with an oracle, every query and the answer), averaged over those steps: a
        loss that asks for a good point at any time, where the task's own loss scores the last step only. With
        anytime="best" step t is scored by the best output so far (the largest P(x_s), s <= t, from the last
        coefficient's step on): a query that explores costs nothing once a good one is found, as in a search that
        keeps its best; the task's own loss still asks for the best at the last step."""
        T = logits.shape[0]
        x = jax.nn.sigmoid(logits[..., 0]).T  # [B, T]
        x_star = last_step(batch.targets, batch.mask)[:, 0]  # [B]
        t = jnp.arange(T)[None, :]
        scored = t >= batch.size[:, None]  # from the last coefficient's step on
        if self.objective == "gap":
            p = cheb_eval(batch.aux, jnp.concatenate([x, x_star[:, None]], 1))[0]  # [B, T + 1]
            got = p[:, :-1]
            if self.anytime == "best":  # the best output so far among the scored steps
                got = jnp.where(scored, jax.lax.cummax(jnp.where(scored, got, -jnp.inf), axis=1), got)
            err = (p[:, -1:] - got) ** 2
        else:
            err = (x - x_star[:, None]) ** 2
        on = (scored & (t < batch.steps[:, None])).astype(err.dtype)  # [B, T]
        return (err * on).sum(1) / jnp.maximum(on.sum(1), 1.0)

    def check_trace_loss(self) -> None:
        if not self.think:
            raise ValueError("polymax: trace_loss scores the running answer on the steps after the coefficients; "
                             "it needs thinking steps (think > 0)")

    def reference(self, inputs: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """From one example's inputs [T, X]: the targets [T, Y] and score mask [T], x* from the roots of P'.

        Needs every coefficient to be visible, which holds whenever step_scale >= 1; raises ValueError
        when the presentation may have been cut short (every step shows one and step_scale < 1)."""
        T = inputs.shape[0]
        present = inputs[:, 1] == 1
        shown = int(present.sum())
        if not present[:shown].all() or shown < 2:
            raise ValueError("polymax reference: need coefficients 0..d (d >= 1) on consecutive steps from 0")
        if shown == steps and self.step_scale < 1:
            raise ValueError("polymax reference: every step shows a coefficient, the polynomial may be truncated")
        weights = 2 ** np.arange(self.index_bits)
        index = inputs[:, 2:2 + self.index_bits]
        if self.index_bits and [int(round(float(index[t] @ weights))) for t in range(shown)] != list(range(shown)):
            raise ValueError("polymax reference: coefficient indices are not 0..d")
        if not 0 <= steps - self.schedule(shown) <= self.extra_steps:
            raise ValueError(f"polymax reference: {steps} steps for degree {shown - 1}")
        x_star, _ = maximise_reference(inputs[:shown, 0])
        targets = np.zeros((T, 1), np.float32)
        mask = np.zeros(T, np.float32)
        targets[steps - 1, 0] = x_star
        mask[steps - 1] = 1
        return targets, mask
