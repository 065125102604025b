"""The ground-truth zoo: solvers whose mechanism is known by construction (the loop, a compiled NTM, best-of-K,
a lookup table, a closed-form heuristic, a trained MLP), each answering through the task's own output format.
What a member does with a task is the task's (tasks.base.SearchTask); this module only combines it."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from lab import evaluation
from lab.detect.loopfit import simulate, value_range
from lab.experiments import Experiment
from tasks import Batch, SearchTask, Task

Solver = Callable[[Task, Batch], jax.Array]  # -> logits [T, B, Y]


# ---- the zoo: solvers whose mechanism is known, answering through the task's own output format ----
# (what a task searches over, and how answers become logits, is the task's: tasks.base.SearchTask)


def search_task(task: Task) -> SearchTask:
    """The task, checked to be a search task (one that says what its candidates are)."""
    if not isinstance(task, SearchTask):
        raise ValueError(f"detect: {task.name} is not a search task (tasks.base.SearchTask: candidates, a loop, "
                         "a heuristic); detection needs one (argmax, modsquare, polymax)")
    return task


@dataclasses.dataclass
class Member:
    name: str
    mechanism: str  # "search" | "imprecise search" | "partial search" | "memoriser" | "heuristic" | "feedforward"
    solve: Solver
    held_out: bool = False  # not looked at while the rule's thresholds were chosen

    @property
    def searches(self) -> bool:
        return self.mechanism == "search"


def _answer(task: SearchTask, batch: Batch, c: Any, chosen: np.ndarray) -> jax.Array:
    """Logits answering each example's ``chosen`` candidate index [B]."""
    return task.encode_answers(batch, np.take_along_axis(c.answer, chosen[:, None], 1)[:, 0])


def loop_solver(task: SearchTask, batch: Batch) -> jax.Array:
    """The search: the best candidate the example's steps show (polymax: the exact maximiser of the
    polynomial as shown), ties to the earliest, as the loop's strict '>'."""
    return task.encode_answers(batch, task.loop_answers(batch))


def best_of_k_solver(k: int, seed: int = 0) -> Solver:
    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        rng = np.random.default_rng(seed)
        shown = np.isfinite(c.value)
        counts = shown.sum(1)
        # K uniform draws among each example's shown candidates (with replacement)
        ranks = (rng.random((len(counts), k)) * counts[:, None]).astype(np.int64)  # [B, K]
        order = np.argsort(~shown, axis=1, kind="stable")  # shown candidates first, in order
        picks = np.take_along_axis(order, ranks, 1)  # [B, K] candidate indices
        vals = np.take_along_axis(c.value, picks, 1)
        best = np.take_along_axis(picks, np.argmax(vals, 1)[:, None], 1)[:, 0]
        return _answer(task, batch, c, best)

    return solve


def imprecise_loop_solver(sigma: float, leak: float, seed: int = 0) -> Solver:
    """The loop with comparator noise ``sigma`` and register leak ``leak`` (lab.detect.loopfit.simulate): one run
    per example."""
    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        chosen = simulate(c.value, sigma, leak, np.random.default_rng(seed), 1)[0]
        return _answer(task, batch, c, chosen)

    return solve


def subset_loop_solver(share: float, seed: int = 0) -> Solver:
    """The exact loop over a random subset of the shown candidates (each looked at with probability ``share``;
    none looked at: the first shown): a partial search whose number of draws grows with the size."""
    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        rng = np.random.default_rng(seed)
        chosen = simulate(c.value, 0.0, 0.0, rng, 1, visit=rng.random((1, *c.value.shape)) < share)[0]
        return _answer(task, batch, c, chosen)

    return solve


def quantised_loop_solver(levels: int) -> Solver:
    """The loop with a coarse comparator: it compares values rounded down to ``levels`` steps of the example's
    shown range, so a later value in the stored best's step never replaces it (deterministic imprecision)."""

    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        shown = np.isfinite(c.value)
        lo = np.where(shown, c.value, np.inf).min(1, keepdims=True)
        step = np.minimum(np.floor((c.value - lo) / value_range(c.value)[:, None] * levels), levels - 1)
        chosen = np.argmax(np.where(shown, step, -np.inf), 1)  # the first candidate of the top step
        return _answer(task, batch, c, chosen)

    return solve


def tournament_solver(sigma: float, seed: int = 0) -> Solver:
    """A knockout tournament with a noisy comparison: the shown candidates are paired in order, the one whose
    value plus N(0, (sigma x range)^2) is larger goes on (ties and odd ones out: the earlier), until one is
    left. A search that is not a sequential loop: log2(L) rounds of comparisons instead of L steps."""

    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        rng = np.random.default_rng(seed)
        shown = np.isfinite(c.value)
        span = value_range(c.value)[:, None]
        order = np.argsort(~shown, axis=1, kind="stable")  # shown candidates first, in order
        idx = np.where(np.take_along_axis(shown, order, 1), order, -1)  # [B, M]; -1: empty slot
        while idx.shape[1] > 1:
            if idx.shape[1] % 2:
                idx = np.concatenate([idx, np.full((len(idx), 1), -1)], 1)
            a, b = idx[:, 0::2], idx[:, 1::2]
            va = np.where(a >= 0, np.take_along_axis(c.value, np.maximum(a, 0), 1), -np.inf)
            vb = np.where(b >= 0, np.take_along_axis(c.value, np.maximum(b, 0), 1), -np.inf)
            noise = sigma * span * rng.standard_normal((2, *a.shape))
            b_wins = (b >= 0) & ((a < 0) | (vb + noise[1] > va + noise[0]))
            idx = np.where(b_wins, b, a)
        return _answer(task, batch, c, idx[:, 0])

    return solve


def noisy_read_loop_solver(sigma: float, seed: int = 0) -> Solver:
    """The exact loop over values read once each with noise N(0, (sigma x range)^2), the noisy read kept in the
    register: the noise is fixed per candidate (a perception error), not drawn afresh at each comparison as in
    the noisy loop."""

    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        rng = np.random.default_rng(seed)
        read = c.value + sigma * value_range(c.value)[:, None] * rng.standard_normal(c.value.shape)
        read = np.where(np.isfinite(c.value), read, -np.inf)
        return _answer(task, batch, c, simulate(read, 0.0, 0.0, rng, 1)[0])

    return solve


def reset_loop_solver(p: float, seed: int = 0) -> Solver:
    """The exact loop whose register is wiped with probability ``p`` at each step that shows a candidate: that
    candidate is then stored whatever its value (a register that is lost now and then, where the leaky loop's
    drifts)."""

    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        return _answer(task, batch, c, simulate(c.value, 0.0, 0.0, np.random.default_rng(seed), 1, reset=p)[0])

    return solve


def vote_solver(sigma: float, seed: int = 0) -> Solver:
    """All-pairs voting: every shown candidate is compared with every other (the pair's difference plus
    N(0, (sigma x range)^2), one draw per pair), and the one that wins most comparisons is the answer (ties: the
    earliest). A search done at once in parallel, as one layer of attention could, rather than by a loop or a
    tournament."""

    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        rng = np.random.default_rng(seed)
        shown = np.isfinite(c.value)
        v = np.where(shown, c.value, 0.0)
        noise = np.triu(rng.standard_normal((*v.shape, v.shape[1])), 1)  # one draw per pair: i beats j iff j loses
        diff = v[:, :, None] - v[:, None, :] + sigma * value_range(c.value)[:, None, None] * (
            noise - noise.transpose(0, 2, 1))
        wins = ((diff > 0) & shown[:, None, :] & ~np.eye(v.shape[1], dtype=bool)).sum(2)
        return _answer(task, batch, c, np.argmax(np.where(shown, wins, -1), 1))

    return solve


def window_solver(width: int) -> Solver:
    """Exact over the first ``width`` shown candidates and blind to the rest: a fixed-width feedforward solver
    (what a perfect MLP over the training length computes) that is accurate in range and does not loop."""

    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        c = task.candidates(batch)
        seen = np.cumsum(np.isfinite(c.value), axis=1) <= width
        value = np.where(seen, c.value, -np.inf)
        return _answer(task, batch, c, np.argmax(value, 1))

    return solve


def heuristic_solver(task: SearchTask, batch: Batch) -> jax.Array:
    """The task's closed form that does not search (SearchTask.heuristic_answers)."""
    return task.encode_answers(batch, task.heuristic_answers(batch))


def lookup_solver(lookup: Callable[[Batch], np.ndarray]) -> Solver:
    """A memoriser: the task's table of its training instances (SearchTask.memoriser)."""
    return lambda task, batch: task.encode_answers(batch, lookup(batch))


def compiled_solver(program: str) -> Solver:
    """A compiled NTM of compiler/ (``program``: its name in compiler/programs.py; today modsquare's loop):
    n on every step, steps - 1 NTM steps (the task gives loop_bound(n) + 2 at 1x; the compiled loop needs
    loop_bound(n) + 1), answer rounded. The compiled program does not know the loop bound (the step count is
    its bound), so with more steps than 1x it goes on comparing candidates past floor(n^0.7): its
    "overthinking" is real, unlike the `loop`'s."""
    from compiler import programs
    from compiler.compile import compile_program
    from compiler.run import decode as decode_real, run_constant_input
    from tasks.modsquare import batch_n

    compiled = compile_program(getattr(programs, program))

    def solve(task: SearchTask, batch: Batch) -> jax.Array:
        n = np.asarray(batch_n(batch)).astype(np.int64)
        steps = np.maximum(np.asarray(batch.steps) - 1, 1)
        y = run_constant_input(compiled, n[:, None].astype(np.float32), steps)
        return task.encode_answers(batch, np.clip(decode_real(y), 0, 2**task.output_size - 1))

    return solve


def model_solver(model: Any) -> Solver:
    ev = evaluation.Evaluator.of(model)
    return lambda task, batch: ev.forward(batch)[0]


NOISY_SIGMAS = (0.003, 0.01, 0.03)  # comparator noise of the noisy-loop members (units of each list's range)
LEAKY_LEAKS = (0.001, 0.003, 0.01)  # register leak per step of the leaky-loop members (held out)
SUBSET_SHARES = (0.5, 0.75, 0.9)  # share of candidates the subset-loop members look at (held out)
QUANTISED_LEVELS = (8, 32, 128)  # comparator steps per range of the quantised-loop members (held out, second round)
TOURNAMENT_SIGMAS = (0.003, 0.01, 0.03)  # comparator noise of the tournament members (held out, second round)
READ_SIGMAS = (0.003, 0.01, 0.03)  # read noise of the noisy-read-loop members (held out, third round)
RESET_PS = (0.003, 0.01, 0.03)  # per-step chance the register is wiped, reset-loop members (held out, third round)
VOTE_SIGMAS = (0.003, 0.01, 0.03)  # comparator noise of the all-pairs vote members (held out, third round)


def zoo(exp: Experiment, mlp_model: Any | None = None, ks: tuple[int, ...] = (2, 8, 32),
        held_out_ks: tuple[int, ...] = (4, 16)) -> list[Member]:
    """The ground-truth members for an experiment's task. Held out (not looked at while RULE's thresholds were
    chosen): best-of-K at other K and another random stream, and mechanisms the thresholds never saw: the leaky
    loop (imprecise search), the loop over a random subset (partial search; the share law of clause 4 was added
    after its first result, docs/detection.md), the fixed-width exact solver (accurate in range, no loop), and,
    added once the rule was fixed ("held out 2"), the quantised loop and the noisy tournament (imprecise search);
    and, added when clause 3 took the comparator with a resolution ("held out 3"), the loop over noisy reads, the
    loop whose register is wiped now and then, and all-pairs voting (imprecise search)."""
    train = _split_task(exp, "train", *exp.train_sizes)
    members = [Member("loop", "search", loop_solver)]
    if train.compiled_program:
        members.append(Member("compiled NTM", "search", compiled_solver(train.compiled_program)))
    # imprecise loops only where the candidates are the answers (argmax, modsquare): polymax's answer is a real x,
    # whose candidate grid is no loop's (and where the loop fit, which would judge them, is not defined)
    loops = train.candidates(evaluation.fixed_batch(train, 8, 0)).answer.dtype.kind in "iu"
    members += [Member(f"noisy loop {s:g}", "imprecise search", imprecise_loop_solver(s, 0.0))
                for s in NOISY_SIGMAS if loops]
    members += [Member(f"best-of-{k}", "partial search", best_of_k_solver(k)) for k in ks]
    members += [Member(f"best-of-{k} (held out)", "partial search", best_of_k_solver(k, seed=1), held_out=True)
                for k in held_out_ks]
    members += [Member(f"leaky loop {lk:g} (held out)", "imprecise search", imprecise_loop_solver(0.0, lk, seed=1),
                       held_out=True) for lk in LEAKY_LEAKS if loops]
    members += [Member(f"subset loop {p:g} (held out)", "partial search", subset_loop_solver(p, seed=1),
                       held_out=True) for p in SUBSET_SHARES]
    members += [Member(f"quantised loop {lv} (held out 2)", "imprecise search", quantised_loop_solver(lv),
                       held_out=True) for lv in QUANTISED_LEVELS if loops]
    members += [Member(f"tournament {sg:g} (held out 2)", "imprecise search", tournament_solver(sg, seed=2),
                       held_out=True) for sg in TOURNAMENT_SIGMAS if loops]
    members += [Member(f"noisy-read loop {sg:g} (held out 3)", "imprecise search", noisy_read_loop_solver(sg, seed=3),
                       held_out=True) for sg in READ_SIGMAS if loops]
    members += [Member(f"reset loop {p:g} (held out 3)", "imprecise search", reset_loop_solver(p, seed=3),
                       held_out=True) for p in RESET_PS if loops]
    members += [Member(f"vote {sg:g} (held out 3)", "imprecise search", vote_solver(sg, seed=3), held_out=True)
                for sg in VOTE_SIGMAS if loops]
    width = _candidates_shown(train.with_sizes(exp.train_sizes[1], exp.train_sizes[1]))
    widest = _candidates_shown(search_task(exp.eval_task(max(exp.eval_sizes))))
    if widest > width:  # the number of candidates grows with the size: a fixed window is blind beyond training
        members.append(Member(f"window {width} (held out)", "feedforward", window_solver(width), held_out=True))
    lookup = train.memoriser()
    if lookup is not None:
        members.append(Member("lookup", "memoriser", lookup_solver(lookup)))
    members.append(Member("heuristic", "heuristic", heuristic_solver))
    if mlp_model is not None:
        members.append(Member("trained MLP", "feedforward", model_solver(mlp_model)))
    return members


def _candidates_shown(task: SearchTask) -> int:
    """The most candidates an example of the task shows (on a small fixed batch)."""
    return int(np.isfinite(task.candidates(evaluation.fixed_batch(task, 64, 0)).value).sum(1).max())


def _split_task(exp: Experiment, split: str, lo: int, hi: int) -> SearchTask:
    """The experiment's task on one split of its instances (tasks with a held-out split), sizes lo..hi."""
    from tasks import make_task

    task = search_task(make_task(exp.task, **exp.task_options))
    if task.has_split:
        task = dataclasses.replace(task, split=split)
    return task.with_sizes(lo, hi)


def _has_split(exp: Experiment) -> bool:
    from tasks import make_task

    return search_task(make_task(exp.task, **exp.task_options)).has_split
