"""The bit-serial modsquare task: its instances are modsquare's, its widths are steps, and a machine with a
two-state comparator and a tape walked one row per step (never told the width) solves it at any width."""
import dataclasses

import jax
import numpy as np
import pytest

from tasks import ModSquareSerial, make_task
from tasks.modsquare import loop_bound, solve
from tasks.modsquare_serial import ANSWER, COMPARE, END_COMPARE, END_WRITE, INDEX, VALUE, WRITE, serial_steps

_cache = {}


def sample(task, seed, batch_size=32):
    fn = _cache.setdefault(task, jax.jit(task.sample, static_argnums=1))
    return jax.tree.map(np.asarray, fn(jax.random.key(seed), batch_size))


def tape_machine(x, rows=None, writes=None, tape=None):
    """The loop as a streaming machine over one example's inputs [T, X]: one comparison bit of state and a
    tape of (value bit, index bit) rows under a head that moves at most one row per step. It never counts
    bits, so it has no notion of the width. Returns its output bits on the answer steps; ``rows`` (a list)
    gets the row it uses on each step (None on the marker steps), ``writes`` whether it writes on each step;
    ``tape`` (a dict, row -> bits) is the tape it starts from and leaves its writes in."""
    tape = {} if tape is None else tape
    head, greater, out = 0, False, []
    for row in np.asarray(x).round().astype(int):
        if rows is not None:
            rows.append(head if row[COMPARE] or row[WRITE] or row[ANSWER] else None)
        if writes is not None:
            writes.append(bool(row[WRITE] and greater))
        if row[COMPARE]:
            stored = tape.get(head, (0, 0))[0]
            greater = row[VALUE] > stored or (greater and row[VALUE] == stored)
            head += 1
        elif row[END_COMPARE]:
            head -= 1
        elif row[WRITE]:
            if greater:
                tape[head] = (row[VALUE], row[INDEX])
            head -= 1
        elif row[END_WRITE]:
            head, greater = head + 1, False
        elif row[ANSWER]:
            out.append(tape.get(head, (0, 0))[1])
            head += 1
    return out


@pytest.mark.parametrize("size", [5, 9, 12])
def test_instances_are_modsquare_and_a_tape_machine_solves_every_width(size):
    task = ModSquareSerial(min_size=size, max_size=size, split="all")
    b = sample(task, size, 8)
    n, w = b.aux[:, 0], b.aux[:, 1]
    assert (w == size).all() and (b.size == size).all()
    assert (np.array([int(v).bit_length() for v in n]) == size).all()
    wide = sample(dataclasses.replace(task, values="random-wide"), size, 8)
    assert (wide.aux[:, 3:3 + wide.aux.shape[1] // 2 - 1] < 2**size).all() and (wide.aux[:, 3:3 + wide.aux.shape[1] // 2 - 1] >= 2 ** (size - 1)).any()
    for e in range(len(n)):
        L = loop_bound(int(n[e]))
        vals = b.aux[e, 3:3 + b.aux.shape[1] // 2 - 1]
        np.testing.assert_array_equal(vals[:L], (np.arange(1, L + 1) ** 2) % n[e])
        assert (vals[L:] == -1).all() and b.steps[e] == serial_steps(L, size)
        k = solve(int(n[e]))
        bits = tape_machine(b.inputs[: b.steps[e], e])
        assert sum(bit << j for j, bit in enumerate(bits)) == k
    np.testing.assert_array_equal(task.decode_answers(b, b.targets * 40 - 20), [solve(int(v)) for v in n])
    np.testing.assert_array_equal(task.loop_answers(b), [solve(int(v)) for v in n])


def test_training_distribution():
    with pytest.raises(ValueError, match="training"):
        make_task("modsquare_serial", pad=2)
    t = make_task("modsquare_serial", training={"values": "random", "pad": 3, "max_candidates": 5},
                  min_size=4, max_size=8)
    b = sample(t, 1, 64)
    n, w, vals = b.aux[:, 0], b.aux[:, 1], b.aux[:, 3:8]
    assert vals.shape[1] == 5 and ((w >= b.size) & (w <= b.size + 3)).all() and len(set(w - b.size)) > 1
    L = np.array([min(loop_bound(int(x)), 5) for x in n])
    assert ((vals >= 0).sum(1) == L).all() and (vals < n[:, None]).all()
    for e in range(len(n)):  # k is the capped loop's answer over the random values, spelt in w bits
        v = vals[e, : L[e]]
        k = int(np.argmax(v)) + 1 if v.max() > 0 else 0
        assert t.decode_answers(b, b.targets * 40 - 20)[e] == k
        assert sum(bit << j for j, bit in enumerate(tape_machine(b.inputs[: b.steps[e], e]))) == k
        assert b.mask[:, e].sum() == w[e]


def test_long_loops_and_random_labels():
    t = make_task("modsquare_serial", training={"values": "random", "labels": "random", "loop_length": 12},
                  min_size=3, max_size=4)
    b = sample(t, 3, 64)
    M = (b.aux.shape[1] - 3) // 2
    vals, labels, w = b.aux[:, 3:3 + M], b.aux[:, 3 + M:], b.aux[:, 1]
    L = (vals >= 0).sum(1)
    assert M == 12 and L.min() >= 1 and L.max() == 12 and (L > np.array([loop_bound(int(n)) for n in b.aux[:, 0]])).any()
    assert ((labels >= 0) & (labels < 2 ** w[:, None])).all()
    best = np.argmax(vals, axis=1)
    want = np.where(vals.max(1) > 0, labels[np.arange(64), best], 0)
    np.testing.assert_array_equal(t.decode_answers(b, b.targets * 40 - 20), want)
    np.testing.assert_array_equal(t.loop_answers(b), want)
    m = jax.tree.map(np.asarray, t.metrics(t.encode_answers(b, want), b))
    assert (m["error"] == 0).all() and (m["regret"] == 0).all()
    for bad in [dict(loop_length=5), dict(loop_length=5, values="random", max_candidates=3)]:
        with pytest.raises(ValueError):
            make_task("modsquare_serial", training=bad)


def test_head_targets_are_the_tape_machines_rows():
    task = make_task("modsquare_serial", training={"values": "random", "labels": "random", "pad": 2},
                     min_size=3, max_size=6)
    b = sample(task, 4, 8)
    read_row, read_on, write_row, write_on = (np.asarray(a) for a in task.head_targets(b))
    gate, gate_on = (np.asarray(a) for a in task.write_targets(b))
    assert gate.sum() > 0
    for e in range(8):
        rows, writes = [], []
        bits = tape_machine(b.inputs[: b.steps[e], e], rows, writes)
        np.testing.assert_array_equal(gate[: b.steps[e], e], writes)
        assert gate_on[: b.steps[e], e].all() and not gate_on[b.steps[e]:, e].any()
        used = [t for t, r in enumerate(rows) if r is not None]
        np.testing.assert_array_equal(write_row[used, e], [rows[t] for t in used])
        assert write_on[used, e].all() and not write_on[b.steps[e]:, e].any()
        compare = [t for t in used if b.inputs[t, e, COMPARE] > 0 and t > 0]  # t = 0 reads the initial state
        np.testing.assert_array_equal(read_row[np.array(compare) - 1, e], [rows[t] for t in compare])  # leads by one
        answer = [t for t in used if b.inputs[t, e, ANSWER] > 0]
        np.testing.assert_array_equal(read_row[answer, e], [rows[t] for t in answer])
        assert read_on[np.array(compare) - 1, e].all() and read_on[answer, e].all()
        assert sum(bit << j for j, bit in enumerate(bits)) == task.decode_answers(b, b.targets * 40 - 20)[e]


def test_step_scales_show_a_prefix_or_hold():
    base = ModSquareSerial(min_size=6, max_size=6, split="all")
    b1 = sample(base, 0)
    for scale in (0.5, 2.0):
        b = sample(dataclasses.replace(base, step_scale=scale), 0)
        L = np.array([loop_bound(int(x)) for x in b.aux[:, 0]])
        shown = np.ceil(scale * L).astype(int)
        assert (b.inputs[..., END_COMPARE].sum(0) == np.minimum(shown, L)).all()
        assert (b.steps == shown * 14 + 6).all()
        np.testing.assert_array_equal(base.decode_answers(b, b.targets * 40 - 20),
                                      base.decode_answers(b1, b1.targets * 40 - 20))  # the whole loop's k


def test_metrics_encode_and_trace_loss():
    task = ModSquareSerial(min_size=4, max_size=7)
    b = sample(task, 2)
    answers = task.heuristic_answers(b)
    logits = task.encode_answers(b, answers)
    np.testing.assert_array_equal(task.decode_answers(b, logits), answers)
    m = jax.tree.map(np.asarray, task.metrics(logits, b))
    k = task.loop_answers(b)
    np.testing.assert_array_equal(m["error"], (answers != k).astype(np.float32))
    n, vals = b.aux[:, 0], b.aux[:, 3:3 + b.aux.shape[1] // 2 - 1]
    value = np.where(answers > 0, vals[np.arange(len(n)), np.maximum(answers - 1, 0)], 0)
    best = vals.max(1)
    np.testing.assert_allclose(m["regret"], (best - value) / n, rtol=1e-6)
    perfect = b.targets * 40 - 20  # the comparison outcomes on the end-compare steps
    assert (np.asarray(task.trace_loss(perfect, b)) < 1e-6).all()
    flipped = np.where(b.inputs[..., END_COMPARE:END_COMPARE + 1] > 0, -perfect, perfect)
    assert (np.asarray(task.trace_loss(flipped, b)) > 19).all()
    assert (np.asarray(task.loss(flipped, b)) < 1e-3).all()  # the answer's loss never sees the flags
    improved, shown = (np.asarray(a) for a in task.improvements(b))
    assert (shown.sum(0) == (vals >= 0).sum(1)).all() and (improved <= shown).all() and improved.any()


def test_bad_options():
    for bad in [dict(max_size=23), dict(values="wide"), dict(split="x"), dict(step_scale=0.0),
                dict(pad=-1), dict(max_candidates=-1), dict(min_size=1)]:
        with pytest.raises(ValueError):
            ModSquareSerial(**bad)


def test_a_swapped_tape_gives_the_loop_restarted_from_the_other_best():
    """lab.diagnose.swapped_loop (what tape_swap predicts) against the tape machine whose tape is replaced by
    another example's at the start of candidate ``at``'s block."""
    from lab.diagnose import swapped_loop

    task = ModSquareSerial(min_size=7, max_size=7, split="all", values="random", labels="random")
    b = sample(task, 7, 16)
    x, w = np.asarray(b.inputs), 7
    at, other = 5, np.roll(np.arange(16), 1)
    T0 = at * (2 * w + 2)
    tapes = [{} for _ in range(16)]
    for e in range(16):
        tape_machine(x[:T0, e], tape=tapes[e])
    got = [sum(bit << j for j, bit in enumerate(tape_machine(x[T0: b.steps[e], e], tape=dict(tapes[other[e]]))))
           for e in range(16)]
    cand = task.candidates(b)
    want = swapped_loop(cand.value[:, 1:], cand.answer[:, 1:], at, other)
    np.testing.assert_array_equal(got, want)
    assert (want != task.loop_answers(b)).any()
