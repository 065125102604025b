"""Every registered task: shapes, padding, agreement with its NumPy reference, metrics, ranges."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import REGISTRY, AssociativeRecall, Copy, PrioritySort, RepeatCopy

# small configurations so that every test stays fast; a task missing here uses its defaults
SMALL = {
    "copy": dict(min_size=1, max_size=5),
    "repeat_copy": dict(min_size=1, max_size=4, min_repeats=1, max_repeats=3),
    "associative_recall": dict(min_size=2, max_size=4),
    "priority_sort": dict(num_inputs=6, num_outputs=4),
}
B = 16
KEYS = [0, 1, 2]
# tasks whose target is a real number computed in float32 on device (the reference is float64):
# compared to this absolute tolerance, and left out of the bitwise-metrics test (see test_search_tasks.py)
REAL_TARGET_ATOL = {"polymax": 1e-5}


def make(name):
    return REGISTRY[name](**SMALL.get(name, {}))


_cache = {}


def sample(task, seed, batch_size=B):
    fn = _cache.setdefault(task, jax.jit(task.sample, static_argnums=1))
    return jax.tree.map(np.asarray, fn(jax.random.key(seed), batch_size))


names = pytest.mark.parametrize("name", sorted(REGISTRY))


@names
def test_shapes_and_dtypes(name):
    task = make(name)
    b = sample(task, 0)
    T = task.max_steps()
    assert b.inputs.shape == (T, B, task.input_size) and b.inputs.dtype == np.float32
    assert b.targets.shape == (T, B, task.output_size) and b.targets.dtype == np.float32
    assert b.mask.shape == (T, B) and b.mask.dtype == np.float32
    assert b.steps.shape == b.size.shape == b.difficulty.shape == (B,)
    assert b.steps.dtype == b.size.dtype == np.int32 and b.difficulty.dtype == np.float32
    assert (b.size >= task.min_size).all() and (b.size <= task.max_size).all()
    assert np.isfinite(b.difficulty).all()


@names
def test_padding(name):
    task = make(name)
    for seed in KEYS:
        b = sample(task, seed)
        assert (b.steps <= task.max_steps()).all() and (b.steps >= 1).all()
        past = np.arange(task.max_steps())[:, None] >= b.steps[None, :]  # [T, B]
        assert (b.mask[past] == 0).all()
        assert (b.inputs[past] == 0).all()
        assert (b.targets[past] == 0).all()
        assert set(np.unique(b.mask)) <= {0.0, 1.0} and (b.mask.sum(0) > 0).all()


@names
def test_matches_reference(name):
    task = make(name)
    for seed in KEYS:
        b = sample(task, seed)
        for i in range(B):
            targets, mask = task.reference(b.inputs[:, i], int(b.steps[i]))
            np.testing.assert_allclose(targets, b.targets[:, i], rtol=0, atol=REAL_TARGET_ATOL.get(name, 0),
                                       err_msg=f"{name} seed {seed} example {i}")
            np.testing.assert_array_equal(mask, b.mask[:, i], err_msg=f"{name} seed {seed} example {i}")


@names
def test_metrics_perfect_and_flipped(name):
    if name in REAL_TARGET_ATOL:
        pytest.skip("real-valued output, not bits")
    task = make(name)
    b = sample(task, 3)
    perfect = jnp.asarray(b.targets * 20 - 10)
    m = jax.tree.map(np.asarray, task.metrics(perfect, b))
    assert (m["bits_per_seq"] == 0).all() and (m["exact_match"] == 1).all()
    assert (m["loss"] < 1e-3 * b.mask.sum(0) * task.output_size).all()
    m = jax.tree.map(np.asarray, task.metrics(-perfect, b))
    np.testing.assert_array_equal(m["bits_per_seq"], b.mask.sum(0) * task.output_size)
    assert (m["exact_match"] == 0).all()
    assert np.asarray(task.loss(perfect, b)).shape == (B,)


@names
def test_different_keys_differ(name):
    task = make(name)
    a, b = sample(task, 0), sample(task, 1)
    assert not np.array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.inputs, sample(task, 0).inputs)


@names
def test_bad_ranges_raise(name):
    task = make(name)
    with pytest.raises(ValueError):
        task.with_sizes(0, 3)
    with pytest.raises(ValueError):
        task.with_sizes(4, 3)


@names
def test_with_sizes_keeps_working(name):
    task = make(name)
    lo = max(task.min_size, 2)
    t2 = task.with_sizes(lo, lo + 1)
    assert t2.max_size == lo + 1 and t2.max_steps() >= 1
    b = sample(t2, 0, 4)
    assert b.inputs.shape == (t2.max_steps(), 4, t2.input_size)


def test_bad_options_raise():
    with pytest.raises(ValueError):
        Copy(min_size=0)
    with pytest.raises(ValueError):
        RepeatCopy(min_repeats=0)
    with pytest.raises(ValueError):
        RepeatCopy(min_repeats=5, max_repeats=4)
    with pytest.raises(ValueError):
        AssociativeRecall(min_size=1)
    with pytest.raises(ValueError):
        AssociativeRecall(item_len=0)
    with pytest.raises(ValueError):
        PrioritySort(num_inputs=5, num_outputs=6)
    with pytest.raises(ValueError):
        PrioritySort(num_outputs=0)


def test_registry_and_defaults():
    assert {"copy", "repeat_copy", "associative_recall", "priority_sort"} <= set(REGISTRY)
    rc = RepeatCopy()
    assert (rc.input_size, rc.output_size, rc.max_steps()) == (10, 9, 10 * 10 + 10 + 2)
    ar = AssociativeRecall()
    assert (ar.input_size, ar.output_size, ar.max_steps()) == (8, 6, 6 * 4 + 5 + 3)
    ps = PrioritySort()
    assert (ps.input_size, ps.output_size, ps.max_steps()) == (10, 8, 37)
    assert ps.min_size == ps.max_size == 20
    ps2 = ps.with_sizes(1, 10)
    assert (ps2.num_inputs, ps2.num_outputs, ps2.min_size, ps2.max_size) == (10, 10, 10, 10)


@pytest.mark.parametrize("reps_range", [(1, 3), (4, 4), (2, 7)])
def test_repeat_copy_decodes_repeats(reps_range):
    task = RepeatCopy(min_size=1, max_size=3, min_repeats=reps_range[0], max_repeats=reps_range[1])
    b = sample(task, 5)
    a, c = reps_range
    mean, var = (a + c) / 2, ((c - a + 1) ** 2 - 1) / 12
    std = math.sqrt(var) if var > 0 else 1.0
    seen = set()
    for i in range(B):
        L = int(b.size[i])
        delim_at = int(np.flatnonzero(b.inputs[:, i, task.width])[0])
        assert delim_at == L
        reps = task.decode_repeats(b.inputs[L, i, task.width + 1])
        assert reps == round(b.inputs[L, i, task.width + 1] * std + mean)
        assert a <= reps <= c
        assert b.steps[i] == L * reps + L + 2 and b.difficulty[i] == L * reps
        end = L + L * reps + 1
        assert b.targets[end, i, task.width] == 1 and b.targets[:, i, task.width].sum() == 1
        # the repeat channel is nonzero only at the delimiter step
        others = np.delete(b.inputs[:, i, task.width + 1], L)
        assert (others == 0).all()
        seen.add(reps)
    if a == c:
        assert (b.inputs[:, :, task.width + 1] == 0).all()
    else:
        assert len(seen) > 1


def test_repeat_copy_normalisation_is_standardised():
    task = RepeatCopy()
    vals = (np.arange(1, 11) - task.repeat_stats()[0]) / task.repeat_stats()[1]
    assert abs(vals.mean()) < 1e-9 and abs(vals.std() - 1) < 1e-9


def test_priority_sort_targets_sorted_descending():
    task = PrioritySort(num_inputs=8, num_outputs=5)
    N, M, W = 8, 5, task.width
    for seed in KEYS:
        b = sample(task, seed)
        for i in range(B):
            prio = b.inputs[:N, i, W]
            assert (np.abs(prio) <= 1).all()
            ranked = sorted(range(N), key=lambda j: prio[j], reverse=True)
            out_prios = [prio[j] for j in ranked[:M]]
            assert all(x >= y for x, y in zip(out_prios, out_prios[1:]))
            for r, j in enumerate(ranked[:M]):
                np.testing.assert_array_equal(b.targets[N + 1 + r, i], b.inputs[j, i, :W])
            top = sorted(prio, reverse=True)[: M + 1]
            gap = min(x - y for x, y in zip(top, top[1:]))
            assert b.difficulty[i] == pytest.approx(-gap, abs=1e-6)


def test_associative_recall_answer_follows_query():
    task = AssociativeRecall(min_size=2, max_size=5)
    I, W = task.item_len, task.width
    b = sample(task, 7, 32)
    queried = set()
    for i in range(32):
        K = int(b.size[i])
        assert b.inputs[:, i, W].sum() == K and b.inputs[:, i, W + 1].sum() == 2
        q_open = K * (I + 1)
        query = b.inputs[q_open + 1 : q_open + 1 + I, i, :W]
        items = [b.inputs[k * (I + 1) + 1 : (k + 1) * (I + 1), i, :W] for k in range(K)]
        q = next(k for k in range(K) if np.array_equal(items[k], query))
        assert q < K - 1
        queried.add(q)
        np.testing.assert_array_equal(b.targets[q_open + I + 2 : q_open + 2 * I + 2, i], items[q + 1])
    assert len(queried) > 1


def test_associative_recall_duplicate_items_use_first_occurrence():
    # 1-bit, 1-vector items collide all the time: the answer must follow the query's first occurrence
    task = AssociativeRecall(min_size=3, max_size=5, item_len=1, width=1)
    for seed in KEYS:
        b = sample(task, seed)
        for i in range(B):
            targets, mask = task.reference(b.inputs[:, i], int(b.steps[i]))
            np.testing.assert_array_equal(targets, b.targets[:, i])
            np.testing.assert_array_equal(mask, b.mask[:, i])
