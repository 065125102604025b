"""Where a search model goes wrong:  python -m lab.diagnose RUN_DIR [--size 64] [--bits 4 6 8]

For a **modsquare** run (hint=value; ``modsquare_values``): the error at each bit length of n (``--bits``)
on the same kind of loop over four kinds of values: the real ones (i*i mod n; held-out n, and every n), uniform on
[0, n) (``values=random``: the real task's value widths), random-wide and random-runs (see
tasks/modsquare.py). Whether a model that fails on real values fails because of their order
(random-runs), of their widths (random) or not at all on random values of those lengths.

For an **argmax** run:

On a fixed batch of uniform lists of one length (the run's own task options otherwise, with
none of its training distribution: ``load_run``'s task), prints and returns:
- the error overall, on lists with an exact tie at the top, and by the margin between the two
  largest values in grid levels (1/levels; 0 = tie), with the number of lists in each bin;
- the error on exact ties by the position of the first maximum, in quarters of the list (an early
  maximum is held for the rest of the list: errors that fall with its position point at a kept
  best that erodes, flat errors at an imprecise comparison), and by the jump that reached the first
  maximum (grid levels above the best before it, or "first" when it opens the list): a best stored
  after a large jump is compared to its equal less precisely than one reached in small steps;
- one-level gaps by whether the larger value comes first (a later value one level below must not
  replace it), later (it must), or between two runner-ups (``gap_breakdown``);
- of the wrong answers: how many name a label that is not in the list, and how many name a value
  later in the list than the true maximum (a kept best that drifted down lets a later, lower value win);
- for an NTM, its write head on the steps where the running maximum improves against the other
  shown steps (the largest write weight; ``lab.compare.write_on_improvement``), the row the
  improvement writes go to most often (the "register") and the mean write weight that row receives
  on the other steps (1 / rows would be a uniform smear);
- with ``--swap-at T`` (an NTM): the causal test of that register (``register_swap``). Midway through
  each list, before step T, the register row is swapped with another list's; if the model keeps its best
  there, its answer follows the loop run from the other list's running best, not from its own.

For a **modsquare_serial** NTM (``tape_swap``; ``--size`` in bits of n, default 12; ``--swap-at T``: after T
candidates): the same causal test of its tape, the memory rows that hold the stored best's bits and its label.
With ``--picture PNG``: its heads on one n instead (``tape_picture``).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from lab import evaluation
from lab.cli import use_every_core
from lab.compare import gated_writes, register_writes, write_on_improvement
from lab.rundir import load_run
from tasks.argmax import Argmax
from tasks.base import bits_to_int, last_step
from tasks.modsquare import ModSquare
from tasks.modsquare_serial import ModSquareSerial

MARGIN_BINS = ((0, 0), (1, 1), (2, 4), (5, None))  # margins in grid levels, inclusive
JUMP_BINS = (("first", -1, -1), ("<=8", 0, 8), ("9-32", 9, 32), (">=33", 33, 1 << 30))  # grid levels, inclusive


def _bin(wrong: np.ndarray, sel: np.ndarray) -> dict[str, Any]:
    """One row of a breakdown: how many lists ``sel`` picks, how many of them are wrong, the error rate."""
    return {"lists": int(sel.sum()), "wrong": int((wrong & sel).sum()),
            "error": float(wrong[sel].mean()) if sel.any() else float("nan")}


def gap_breakdown(values: np.ndarray, wrong: np.ndarray, levels: int) -> dict[str, list[dict[str, Any]]]:
    """values [B, L] (< 0: not in the list), wrong [B] bool, on a grid of ``levels``:

    - ``one_level_by_order``: lists whose top two levels are one apart, by where the runner-up level
      stands: only after the maximum ("larger first": a later value one level below must not replace
      the best), only before it ("larger later": it must replace the runner-up), or on both sides;
    - ``ties_by_jump``: lists with an exact tie at the top, by the jump in levels from the best before
      the first maximum to it ("first": the maximum opens the list); bins in levels, whatever the grid.
    """
    lv = np.where(values >= 0, np.rint(values * levels), -1).astype(np.int64)  # [B, L] grid levels
    cols = np.arange(lv.shape[1])[None, :]
    best = lv.argmax(1)  # earliest maximum
    top = lv.max(1)
    runner = np.where(lv == top[:, None], -1, lv).max(1)  # the largest level below the top
    tie = (lv == top[:, None]).sum(1) > 1
    one = ~tie & (runner == top - 1)
    before = ((lv == runner[:, None]) & (cols < best[:, None])).any(1)
    after = ((lv == runner[:, None]) & (cols > best[:, None])).any(1)
    by_order = [{"order": name, **_bin(wrong, one & sel)}
                for name, sel in (("larger first", after & ~before), ("larger later", before & ~after),
                                  ("both sides", before & after))]
    prev = np.where(cols < best[:, None], lv, -1).max(1)  # -1: nothing before the maximum
    jump = np.where(prev >= 0, top - prev, -1)
    by_jump = [{"jump": name, **_bin(wrong, tie & (jump >= lo) & (jump <= hi))} for name, lo, hi in JUMP_BINS]
    return {"one_level_by_order": by_order, "ties_by_jump": by_jump}


def diagnose(workdir: str, size: int = 64, batch_size: int = 1024, seed: int = evaluation.EVAL_SEED,
             run: tuple | None = None) -> dict[str, Any]:
    """``seed``: the key of the fixed batch (another seed: a validation batch apart from the reported one);
    ``run``: ``load_run(workdir)``'s result when the caller already has it."""
    cfg, task, model, step = run or load_run(workdir)
    if not isinstance(task, Argmax):
        raise ValueError(f"lab.diagnose reads argmax runs; {workdir} trained on {cfg.task}")
    task = task.with_sizes(size, size)
    ev = evaluation.Evaluator.of(model)
    batch, logits, aux, wrong = evaluation.wrong_on(ev, task, batch_size, seed)
    pred = np.asarray(bits_to_int(last_step(logits, batch.mask) > 0))
    values, labels = np.asarray(batch.aux[:, 0]), np.asarray(batch.aux[:, 1]).astype(np.int64)
    levels = task.levels or 256  # continuous values: bins of 1/256
    margin = np.rint(-np.asarray(batch.difficulty) * levels).astype(np.int64)
    best = values.argmax(1)  # earliest maximum, as the task's answer
    pos = np.array([int(np.flatnonzero(l == p)[0]) if (l == p).any() else -1 for l, p in zip(labels, pred)])
    out: dict[str, Any] = {"run": str(workdir), "checkpoint_step": step, "size": size, "examples": batch_size,
                           "seed": seed,
                           "error": float(wrong.mean()), "tie_share": float((margin == 0).mean()), "by_margin": []}
    for lo, hi in MARGIN_BINS:
        sel = (margin >= lo) & (margin <= hi if hi is not None else True)
        out["by_margin"].append({"levels": f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi else f">={lo}"),
                                 **_bin(wrong, sel)})
    # exact ties by where the first maximum stands: an early one must be held over a long rest of the
    # list (a register that erodes fails there), a late one only briefly (a coarse comparison fails anywhere)
    out["ties_by_first_max"] = []
    tie = margin == 0
    for q in range(4):
        lo, hi = q * size // 4, (q + 1) * size // 4
        sel = tie & (best >= lo) & (best < hi)
        out["ties_by_first_max"].append({"positions": f"{lo}-{hi - 1}", **_bin(wrong, sel)})
    out.update(gap_breakdown(values, wrong, levels))
    out["wrong"] = int(wrong.sum())
    out["wrong_not_in_list"] = int((wrong & (pos < 0)).sum())
    out["wrong_later_than_max"] = int((wrong & (pos > best)).sum())
    if "write_weights" in aux:
        w = gated_writes(aux)  # [T, B, heads, N]
        improved, shown = (np.asarray(x) for x in task.improvements(batch))
        out["write_on_improvement"] = write_on_improvement(w, improved, shown)
        T = improved.shape[0]
        focus = w[:T].max(axis=2)  # [T, B, N]: the largest weight over write heads
        register = int(register_writes(w, improved).argmax())
        other = shown & ~improved
        out["register_row"] = register
        out["register_weight_on_other_steps"] = float(focus[other][:, register].mean())
        out["uniform_weight"] = 1.0 / w.shape[-1]
    return out


# (values, split): the real values on held-out n, and on every n (for a model trained on random values only,
# every real sequence is new: 8 n of 6 bits and 14 of 8 bits are held out, 32 and 128 exist), then random ones
MODSQUARE_VALUES = (("modsquare", "holdout"), ("modsquare", "all"), ("random", "all"), ("random-wide", "all"),
                    ("random-runs", "all"))


def modsquare_values(workdir: str, bits: tuple[int, ...] = (4, 6, 8), batch_size: int = 1024,
                     seed: int = evaluation.EVAL_SEED, run: tuple | None = None) -> dict[str, Any]:
    """A modsquare run's error (exact match of k, last step) by bit length of n and kind of values."""
    cfg, task, model, step = run or load_run(workdir)
    if not isinstance(task, ModSquare) or task.hint != "value":
        raise ValueError(f"lab.diagnose's value kinds need a modsquare run with hint=value; {workdir} is "
                         f"{cfg.task}" + (f" with hint={task.hint}" if isinstance(task, ModSquare) else ""))
    ev = evaluation.Evaluator.of(model)
    out: dict[str, Any] = {"run": str(workdir), "checkpoint_step": step, "examples": batch_size, "seed": seed,
                           "error": {}}
    for values, split in MODSQUARE_VALUES:
        row = {}
        for b in bits:
            t = dataclasses.replace(task, values=values, split=split, step_scale=1.0, min_size=b,
                                    max_size=b)
            batch = evaluation.fixed_batch(t, batch_size, seed)
            logits, _ = ev.forward(batch)
            row[str(b)] = float(np.asarray(evaluation.task_metrics(t)(logits, batch)["error"]).mean())
        out["error"][f"{values} ({'held-out n' if split == 'holdout' else 'any n'})"] = row
    return out


def register_swap(workdir: str, size: int = 16, at: int | None = None, batch_size: int = 1024,
                  seed: int = evaluation.EVAL_SEED, run: tuple | None = None) -> dict[str, Any]:
    """Overwrite an argmax NTM's stored best mid-list and see whether its answer follows.

    On a fixed batch of lists of ``size``, the model is stepped one step at a time (``ntm.core.step``, as
    ``ntm.unroll`` does). Before step ``at`` (default size // 2: values 0..at-1 seen), the memory row that
    the write heads use on improving steps (the register) is replaced by the same row of another list of
    the batch (list b takes list b - 1's). If that row holds the running best, the answer becomes the
    loop's answer started from the other list's running best over its first ``at`` values and continued
    over this list's remaining values ("swap-predicted"). Reported over the lists where that differs
    from the list's own answer: how often the model answers the swap-predicted label, and how often it
    keeps its unswapped answer; and the same with the row written least on improving steps swapped
    instead (a control)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from lab import models
    from ntm import core

    cfg, task, model, step = run or load_run(workdir)
    if not isinstance(task, Argmax) or not isinstance(model, models.NTM):
        raise ValueError(f"register swap needs an argmax NTM run; {workdir} is {cfg.model} on {cfg.task}")
    task = task.with_sizes(size, size)
    at = size // 2 if at is None else at
    if not 1 <= at < size:
        raise ValueError(f"--swap-at must be in 1..{size - 1} (a step inside the list), got {at}")
    batch = evaluation.fixed_batch(task, batch_size, seed)
    inputs = jnp.asarray(batch.inputs)  # [T, B, X]
    if len(set(np.asarray(batch.steps).tolist())) != 1 or int(batch.steps[0]) != inputs.shape[0]:
        raise ValueError("register swap needs every list to run the same number of steps")
    logits, aux = evaluation.Evaluator.of(model).forward(batch)
    w = gated_writes(aux)  # [T, B, heads, N]
    improved, _ = (np.asarray(x) for x in task.improvements(batch))
    per_row = register_writes(w, improved)
    register, control = int(per_row.argmax()), int(per_row.argmin())

    params, ncfg = model.cell.pure_params(), model.cfg
    step_fn = jax.jit(jax.vmap(lambda st, x: core.step(params, st, x, ncfg)))
    B = inputs.shape[1]
    other = np.roll(np.arange(B), 1)

    def run_steps(row: int | None) -> np.ndarray:
        state = model.cell.initialize_carry((B, inputs.shape[-1]), nnx.Rngs(0))
        ys = []
        for t in range(inputs.shape[0]):
            if t == at and row is not None:
                state = state._replace(memory=state.memory.at[:, row].set(state.memory[other, row]))
            state, y = step_fn(state, inputs[t])
            ys.append(y)
        return task.decode_answers(batch, jnp.stack(ys))

    own = task.decode_answers(batch, logits)
    stepped = run_steps(None)
    values, labels = np.asarray(batch.aux[:, 0]), np.asarray(batch.aux[:, 1]).astype(np.int64)
    best_l = swapped_loop(values, labels, at, other, start=-np.inf)
    loop = task.candidates(batch).first_best()
    moved = best_l != loop  # lists where the swap changes the loop's answer
    out: dict[str, Any] = {"run": str(workdir), "checkpoint_step": step, "size": size, "swap_at": at,
                           "examples": batch_size, "seed": seed, "register_row": register, "control_row": control,
                           "stepped_equals_forward": float(np.mean(stepped == own)),
                           "lists_where_the_swap_matters": int(moved.sum())}
    out.update(_swap_outcomes({"register": register, "control": control}, run_steps, moved, best_l, own))
    return out


def _swap_outcomes(parts: dict[str, Any], answers: Any, moved: np.ndarray, predicted: np.ndarray,
                   own: np.ndarray) -> dict[str, dict[str, float]]:
    """For each swapped part (its rows): on the examples where the swap changes the loop's answer, the share whose
    answer follows the swap-predicted one and the share that keeps the model's unswapped answer."""
    out = {}
    for name, rows in parts.items():
        ans = answers(rows)
        out[name] = {"follows_swap": float(np.mean(ans[moved] == predicted[moved])),
                     "keeps_own_answer": float(np.mean(ans[moved] == own[moved]))}
    return out


def swapped_loop(values: np.ndarray, labels: np.ndarray, at: int, other: np.ndarray, start: float = 0.0) -> np.ndarray:
    """[B] the loop's answer (strict improvement, from label 0 at value ``start``: 0 for modsquare's k = 0,
    -inf for argmax) when example b's running best after its first ``at`` candidates is replaced by example
    other[b]'s, and b's own candidates from the (at + 1)-th on follow (values, labels [B, M]; -inf values are
    candidates not shown)."""
    B = values.shape[0]
    best_v, best_l = np.full(B, start, np.float64), np.zeros(B, np.int64)
    for c in range(values.shape[1]):
        if c == at:  # the swap: the other example's running best after its first ``at`` candidates
            best_v, best_l = best_v[other], best_l[other]
        take = values[:, c] > best_v
        best_v, best_l = np.where(take, values[:, c], best_v), np.where(take, labels[:, c], best_l)
    return best_l


def load_serial_ntm(workdir: str, run: tuple | None, what: str) -> tuple:
    """(cfg, task on every n, model, step) of a modsquare_serial NTM run; a one-line error for any other run."""
    from lab import models

    cfg, task, model, step = run or load_run(workdir)
    if not isinstance(task, ModSquareSerial) or not isinstance(model, models.NTM):
        raise ValueError(f"{what} needs a modsquare_serial NTM run; {workdir} is {cfg.model} on {cfg.task}")
    return cfg, dataclasses.replace(task, split="all"), model, step


def tape_swap(workdir: str, size: int = 12, at: int | None = None, batch_size: int = 256,
              seed: int = evaluation.EVAL_SEED, run: tuple | None = None) -> dict[str, Any]:
    """Overwrite a bit-serial modsquare NTM's stored best mid-loop and see whether its answer follows.

    On a fixed batch of n of ``size`` bits (every n), the tape is the ``size`` memory rows the write heads
    use most on the tape machine's write steps (``ModSquareSerial.write_targets``): one row per bit of the
    stored best value and its label. After the first ``at`` candidates' blocks (default: half the shortest
    loop of the batch), those rows are replaced by the same rows of another example (b takes b - 1's), the
    read vectors are recomputed from the swapped memory (the controller sees the reads of the step before),
    and the rest of the loop runs on (``ntm.unroll`` from that state). If the tape holds the running best,
    the answer becomes the loop's answer started from the other example's best over its first ``at``
    candidates and continued over this example's own later candidates ("swap-predicted"). Reported over
    the examples where that differs from the loop's own answer: how often the model answers the
    swap-predicted k and how often it keeps its unswapped answer; and the same with the rows outside the
    tape swapped instead (a control; they are the rows its write heads use least)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ntm import core

    cfg, task, model, step = load_serial_ntm(workdir, run, "tape swap")
    if size > model.cfg.memory_rows:
        raise ValueError(f"--size {size}: the tape needs {size} memory rows and the NTM has {model.cfg.memory_rows}")
    task = task.with_sizes(size, size)
    batch = evaluation.fixed_batch(task, batch_size, seed)
    cand = task.candidates(batch)
    values, labels = cand.value[:, 1:], cand.answer[:, 1:]  # without k = 0 (value 0: swapped_loop's start)
    shortest = int(np.isfinite(values).sum(1).min())
    at = shortest // 2 if at is None else at
    if shortest < 2:
        raise ValueError(f"n of {size} bits: loops of {shortest} candidate leave no candidate to swap before")
    if not 1 <= at < shortest:
        raise ValueError(f"--swap-at must be in 1..{shortest - 1} (after that many candidates, inside every loop "
                         f"of the batch), got {at}")
    logits, fwd = evaluation.Evaluator.of(model).forward(batch)
    writes, _ = task.write_targets(batch)
    per_row = register_writes(gated_writes(fwd), np.asarray(writes))  # [N]
    order = np.argsort(-per_row, kind="stable")
    tape, control = np.sort(order[:size]), np.sort(order[size:])
    own = task.decode_answers(batch, logits)

    params, ncfg = model.cell.pure_params(), model.cfg
    T0 = at * (2 * size + 2)
    inputs = jnp.asarray(batch.inputs)
    B = inputs.shape[1]
    other = np.roll(np.arange(B), 1)
    first = jax.jit(jax.vmap(lambda st, x: core.unroll(params, ncfg, x, state=st)[2], in_axes=(0, 1)))
    rest = jax.jit(jax.vmap(lambda st, x, n: core.unroll(params, ncfg, x, n, state=st)[0], in_axes=(0, 1, 0)))
    state = first(model.cell.initialize_carry((B, inputs.shape[-1]), nnx.Rngs(0)), inputs[:T0])
    steps_left = jnp.asarray(batch.steps) - T0

    def answers(rows: np.ndarray | None) -> np.ndarray:
        st = state
        if rows is not None:
            memory = st.memory.at[:, rows].set(st.memory[other][:, rows])
            st = st._replace(memory=memory, reads=jnp.einsum("bhn,bnm->bhm", st.read_weights, memory))
        ys = jnp.concatenate([jnp.zeros((T0,) + logits.shape[1:], logits.dtype),
                              jnp.moveaxis(rest(st, inputs[T0:], steps_left), 0, 1)])
        return task.decode_answers(batch, ys)

    best_l = swapped_loop(values, labels, at, other)
    moved = best_l != task.loop_answers(batch)
    if not moved.any():
        raise ValueError(f"a swap after {at} candidates changes no answer of the batch (the first candidates' "
                         "values i*i are the same for every n); choose a later --swap-at")
    out: dict[str, Any] = {"run": str(workdir), "checkpoint_step": step, "bits": size, "swap_after": at,
                           "examples": batch_size, "seed": seed, "tape_rows": tape.tolist(),
                           "tape_share_of_write_steps": float(per_row[tape].sum() / max(per_row.sum(), 1)),
                           "error": float(np.mean(own != task.loop_answers(batch))),
                           "stepped_equals_forward": float(np.mean(answers(None) == own)),
                           "examples_where_the_swap_matters": int(moved.sum())}
    out.update(_swap_outcomes({"tape": tape, "control": control}, answers, moved, best_l, own))
    return out


def tape_picture(workdir: str, size: int, path: str, seed: int = evaluation.EVAL_SEED,
                 run: tuple | None = None) -> dict[str, Any]:
    """The head picture (lab.figures.head_picture) of a bit-serial modsquare NTM on one n of ``size`` bits
    (``evaluation.example_trace``: a batch of one, key ``seed``, every n), cut to four windows of its steps
    and joined: the first two candidates' blocks, the block of the last candidate that improves on the best
    (the one whose bits and label the answer reads back), the last block, and the answer steps. The write
    weighting is drawn times the write gate (what is actually written). Returns the steps drawn."""
    from lab import figures
    from tasks.modsquare_serial import END_COMPARE

    cfg, task, model, step = load_serial_ntm(workdir, run, "tape picture")
    tr = evaluation.example_trace(model, task, size, seed)
    block = 2 * size + 2
    T = len(tr["mask"])
    loop_blocks = (T - size) // block
    won = np.flatnonzero((tr["inputs"][:, END_COMPARE] > 0.5) & (tr["targets"][:, 0] > 0.5)) // block
    last_win = int(won[-1]) if len(won) else 0
    blocks = sorted({0, 1, last_win, loop_blocks - 1} & set(range(loop_blocks)))
    steps = np.concatenate([np.arange(b * block, (b + 1) * block) for b in blocks] + [np.arange(T - size, T)])
    sub = {k: v[steps] for k, v in tr.items()}
    title = (f"{cfg.model} on n of {size} bits: the blocks of candidates {', '.join(str(b + 1) for b in blocks)} "
             f"of {loop_blocks} (the last improving one: {last_win + 1}), then the {size} answer steps, joined "
             "(x: steps drawn); the write weighting times the write gate")
    figures.head_picture(sub, path, title=title)
    right = bool(((tr["outputs"][:, 0] > 0.5) == (tr["targets"][:, 0] > 0.5))[tr["mask"] > 0].all())
    return {"run": str(workdir), "checkpoint_step": step, "bits": size, "picture": str(path), "blocks": loop_blocks,
            "blocks_drawn": [b + 1 for b in blocks], "steps_drawn": steps.tolist(), "answer_right": right}


def main(argv: list[str] | None = None) -> int:
    from lab.cli import Parser

    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("workdir")
    p.add_argument("--size", type=int, default=None,
                   help="argmax: list length (default 64); modsquare_serial: bits of n (default 12)")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 6, 8], help="modsquare: bit lengths of n")
    p.add_argument("--batch-size", type=int, default=None, help="examples (default 1024; modsquare_serial 256)")
    p.add_argument("--seed", type=int, default=evaluation.EVAL_SEED,
                   help="key of the fixed batch (default: the evaluation's; another one for a validation batch)")
    p.add_argument("--swap-at", type=int, default=None, metavar="T",
                   help="argmax NTM: swap the register row between lists before step T (register_swap); "
                        "modsquare_serial NTM: swap the tape rows between examples after T candidates (tape_swap)")
    p.add_argument("--picture", default=None, metavar="PNG",
                   help="modsquare_serial NTM: draw its heads on one n of --size bits instead (tape_picture)")
    a = p.parse_args(argv)
    for name in ("size", "batch_size"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.picture is not None:
        from pathlib import Path

        pic = Path(a.picture)
        if pic.suffix != ".png" or pic.is_dir() or not pic.parent.is_dir():
            raise ValueError(f"--picture {a.picture}: needs a .png file name in an existing directory")
    use_every_core()  # one CPU device per core unless the user chose (before JAX starts)
    run = load_run(a.workdir)
    size = (lambda default: default if a.size is None else a.size)
    examples = (lambda default: default if a.batch_size is None else a.batch_size)
    if a.picture is not None:
        out = tape_picture(a.workdir, size(12), a.picture, a.seed, run)
    elif isinstance(run[1], ModSquareSerial):  # the causal test of its tape; --size is in bits (default 12)
        out = tape_swap(a.workdir, size(12), a.swap_at, examples(256), a.seed, run)
    elif a.swap_at is not None:
        out = register_swap(a.workdir, size(64), a.swap_at, examples(1024), a.seed, run)
    elif isinstance(run[1], ModSquare):  # the report of each task's loop: modsquare's value kinds, argmax's ties
        out = modsquare_values(a.workdir, tuple(a.bits), examples(1024), a.seed, run)
    else:
        out = diagnose(a.workdir, size(64), examples(1024), a.seed, run)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    from lab.cli import run_cli

    sys.exit(run_cli(main))
