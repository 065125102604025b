"""The ground-truth zoo: solvers whose mechanism is known by construction (the loop, a compiled NTM, best-of-K,
a lookup table, a closed-form heuristic, a trained MLP), each answering through the task's own output format.
What a member does with a task is the task's (tasks.base.SearchTask); this module only combines it."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from lab import evaluation
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
    mechanism: str  # "search" | "partial search" | "memoriser" | "heuristic" | "feedforward"
    solve: Solver
    held_out: bool = False  # not looked at while the rule's thresholds were chosen

    @property
    def searches(self) -> bool:
        return self.mechanism == "search"


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
        return task.encode_answers(batch, np.take_along_axis(c.answer, best[:, None], 1)[:, 0])

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


def zoo(exp: Experiment, mlp_model: Any | None = None, ks: tuple[int, ...] = (2, 8, 32),
        held_out_ks: tuple[int, ...] = (4, 16)) -> list[Member]:
    """The ground-truth members for an experiment's task. ``held_out_ks``: best-of-K members added after
    RULE's thresholds were fixed on the others (K = 2, 8, 32), a check that the rule is not fitted to them."""
    train = _split_task(exp, "train", *exp.train_sizes)
    members = [Member("loop", "search", loop_solver)]
    if train.compiled_program:
        members.append(Member("compiled NTM", "search", compiled_solver(train.compiled_program)))
    members += [Member(f"best-of-{k}", "partial search", best_of_k_solver(k)) for k in ks]
    members += [Member(f"best-of-{k} (held out)", "partial search", best_of_k_solver(k, seed=1), held_out=True)
                for k in held_out_ks]
    lookup = train.memoriser()
    if lookup is not None:
        members.append(Member("lookup", "memoriser", lookup_solver(lookup)))
    members.append(Member("heuristic", "heuristic", heuristic_solver))
    if mlp_model is not None:
        members.append(Member("trained MLP", "feedforward", model_solver(mlp_model)))
    return members


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
