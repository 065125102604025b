"""The search tasks (argmax, modsquare, polymax): samplers against independent references, exact
integer definitions, hold-out disjointness, per-example step schedules under step scales and
larger sizes, and metrics."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import REGISTRY, Argmax, ModSquare, PolyMax, SupervisedLoop, make_task
from tasks.argmax import argmax_reference
from tasks.modsquare import _held_out_device, held_out, loop_bound, solve
from tasks.polymax import difficulty_reference, local_maxima_reference, maximise_reference

B = 64
_cache = {}


def sample(task, seed, batch_size=B):
    fn = _cache.setdefault(task, jax.jit(task.sample, static_argnums=1))
    return jax.tree.map(np.asarray, fn(jax.random.key(seed), batch_size))


def last(x, b):
    """[T, B, ...] -> the value at each example's last step [B, ...]."""
    return x[b.steps - 1, np.arange(len(b.steps))]


def from_bits(bits):
    return (np.asarray(bits).round().astype(np.int64) << np.arange(bits.shape[-1])).sum(-1)


def base_of(task, b):
    """The quantity the step schedule scales: list length, loop_bound(n), number of coefficients."""
    if isinstance(task, Argmax):
        return b.size
    if isinstance(task, ModSquare):
        return np.array([loop_bound(n) for n in from_bits(b.inputs[0, :, : task.bits])])
    return b.size + 1


def max_base(task):
    if isinstance(task, Argmax):
        return task.max_size
    if isinstance(task, ModSquare):
        return loop_bound(2**task.max_size - 1)
    return task.max_size + 1


SEARCH = {"argmax": Argmax(), "modsquare": ModSquare(), "polymax": PolyMax()}
search = pytest.mark.parametrize("name", sorted(SEARCH))


def test_registered_and_make_task():
    for name, cls in [("argmax", Argmax), ("modsquare", ModSquare), ("polymax", PolyMax)]:
        assert REGISTRY[name] is cls and isinstance(make_task(name), cls)
    assert (Argmax().input_size, Argmax().output_size, Argmax().max_steps()) == (10, 8, 17)
    # bits = 12: loop_bound(4095) = 337 needs 9 bits; n, i and i*i mod n are shown
    assert (ModSquare().input_size, ModSquare().output_size, ModSquare().max_steps()) == (12 + 9 + 12, 9, 48 + 2)
    assert ModSquare(hint="index").input_size == 21 and ModSquare(hint="none").input_size == 12
    assert (PolyMax().input_size, PolyMax().output_size, PolyMax().max_steps()) == (6, 1, 9)


def test_bad_options_raise():
    for bad in [lambda: Argmax(max_size=257), lambda: Argmax(index_bits=4).with_sizes(2, 17),
                lambda: Argmax(min_size=1), lambda: Argmax(step_scale=0), lambda: Argmax(step_offset=-1),
                lambda: Argmax(min_spread=0.0), lambda: Argmax(min_spread=1.5), lambda: Argmax(early_max=1.5),
                lambda: Argmax(levels=16, near_ties=-0.1), lambda: Argmax(near_ties=0.5),
                lambda: ModSquare(max_size=13), lambda: ModSquare(bits=23, max_size=8), lambda: ModSquare(hint="x"),
                lambda: ModSquare(split="test"), lambda: ModSquare(holdout_fraction=1.0),
                lambda: ModSquare(split="holdout", holdout_fraction=0.0),
                lambda: PolyMax(max_size=16), lambda: PolyMax(objective="mse"), lambda: PolyMax(step_scale=-1.0)]:
        with pytest.raises(ValueError):
            bad()
    Argmax(max_size=256)  # positions 0..255 fit 8 bits


@search
def test_jit_equals_eager(name):
    task = SEARCH[name]
    eager = jax.tree.map(np.asarray, task.sample(jax.random.key(11), B))
    jitted = sample(task, 11)
    for field, a, b in zip(eager._fields, eager, jitted):
        if a is None:
            assert b is None
        elif name == "polymax" and a.dtype == np.float32:  # normal draws and the search may differ by an ulp
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=field)
        else:
            np.testing.assert_array_equal(a, b, err_msg=field)


@search
@pytest.mark.parametrize("scale", [0.25, 4.0])
def test_step_schedule(name, scale):
    """steps = ceil(scale * base) + offset, padding past it, one scored step; the same key gives the
    same instance and answer at every scale."""
    task = dataclasses.replace(SEARCH[name], step_scale=scale)
    ref = sample(SEARCH[name], 4)
    b = sample(task, 4)
    T = task.max_steps()
    assert T == math.ceil(scale * max_base(task)) + task.step_offset
    assert b.inputs.shape == (T, B, task.input_size) and b.targets.shape == (T, B, task.output_size)
    base = base_of(task, b)
    np.testing.assert_array_equal(b.steps, np.ceil(scale * base).astype(int) + task.step_offset)
    assert (b.steps >= 1).all() and (b.steps <= T).all()
    t = np.arange(T)[:, None]
    np.testing.assert_array_equal(b.mask, (t == b.steps[None] - 1).astype(np.float32))
    past = t >= b.steps[None]
    assert (b.inputs[past] == 0).all() and (b.targets[past] == 0).all()
    np.testing.assert_array_equal(b.size, ref.size)
    np.testing.assert_allclose(last(b.targets, b), last(ref.targets, ref), rtol=1e-6)
    np.testing.assert_allclose(b.difficulty, ref.difficulty, rtol=1e-6)
    # on the steps both schedules have, the inputs are the same
    common = min(T, ref.inputs.shape[0])
    shown = (t < np.minimum(b.steps, ref.steps)[None])[:common]
    np.testing.assert_array_equal(b.inputs[:common] * shown[..., None], ref.inputs[:common] * shown[..., None])
    if scale < 1:
        assert (b.steps < base).any()  # some examples really are cut short


@search
def test_metrics_perfect_and_wrong(name):
    task = SEARCH[name]
    b = sample(task, 5)
    if name == "polymax":
        x = np.clip(b.targets, 1e-6, 1 - 1e-6)
        perfect = np.log(x) - np.log1p(-x)
        wrong = -perfect
    else:
        perfect = b.targets * 20 - 10
        wrong = -perfect
    m = jax.tree.map(np.asarray, task.metrics(jnp.asarray(perfect), jax.tree.map(jnp.asarray, b)))
    assert (m["exact_match"] == 1).all() and (m["error"] == 0).all()
    assert all(v.shape == (B,) for v in m.values()) and "loss" in m
    assert (m["loss"] < 1e-2).all()
    if "regret" in m:  # polymax: x = 1e-6 instead of an endpoint x* = 0 costs |P'(0)| * 1e-6
        assert (np.abs(m["regret"]) < 1e-3).all()
    w = jax.tree.map(np.asarray, task.metrics(jnp.asarray(wrong), jax.tree.map(jnp.asarray, b)))
    np.testing.assert_array_equal(w["error"], 1 - w["exact_match"])
    if name == "polymax":  # reflecting x about 1/2 is wrong unless P happens to be nearly as large there
        assert w["error"].mean() > 0.5 and (w["loss"] > m["loss"]).mean() > 0.5
    else:
        assert (w["error"] == 1).all() and (w["bits_per_seq"] == task.output_size).all()


# ---- argmax ----


@pytest.mark.parametrize("opts", [{}, {"labels": "random", "levels": 64, "extra_steps": 3},
                                  {"labels": "random", "levels": 256, "min_spread": 1 / 16}, {"min_spread": 0.1},
                                  {"labels": "random", "levels": 16, "early_max": 0.5},
                                  {"labels": "random", "levels": 32, "near_ties": 0.7, "min_spread": 0.25}])
def test_argmax_matches_reference(opts):
    task = Argmax(**opts)
    for seed in range(3):
        b = sample(task, seed)
        for i in range(B):
            L = int(b.size[i])
            targets, mask = task.reference(b.inputs[:, i], int(b.steps[i]))
            np.testing.assert_array_equal(targets, b.targets[:, i])
            np.testing.assert_array_equal(mask, b.mask[:, i])
            values = b.inputs[:L, i, 0]
            labels = from_bits(b.inputs[:L, i, 2:])
            assert from_bits(b.targets[b.steps[i] - 1, i]) == labels[argmax_reference(list(values))]
            assert 0 <= b.steps[i] - (L + task.step_offset) <= task.extra_steps
            if task.levels:
                assert np.allclose(values * task.levels, np.round(values * task.levels))
            assert len(set(labels.tolist())) == L
            top = np.sort(values)[::-1]
            assert b.difficulty[i] == pytest.approx(-(top[0] - top[1]), abs=1e-7)
            assert ((values >= 0) & (values < 1)).all() and (b.inputs[L:, i] == 0).all()
    if task.labels == "random":  # every answer bit is exercised, even though lists are short
        answers = np.concatenate([from_bits(last(sample(task, s).targets, sample(task, s))) for s in range(3)])
        assert (answers >= 128).any() and (answers < 128).any()


@pytest.mark.parametrize("levels", [0, 256])
def test_argmax_min_spread_squeezes_lists_to_the_top(levels):
    """Each list's values lie in the top w of the range, w log-uniform on [min_spread, 1]: about half
    the lists of 16 span less than a quarter of the range (none do when uniform), and near ties
    (the top two within 2/256) are as common as in uniform lists four times longer or more."""
    hard = Argmax(levels=levels, min_spread=1 / 16).with_sizes(16, 16)
    b = sample(hard, 0, 2048)
    values = b.inputs[:16, :, 0]
    span = values.max(0) - values.min(0)
    assert 0.4 < (span < 0.25).mean() < 0.7
    assert values.min() >= 0 and values.max() < 1
    u = sample(Argmax(levels=levels).with_sizes(16, 16), 0, 2048).inputs[:16, :, 0]
    assert (u.max(0) - u.min(0) < 0.25).mean() == 0
    near = lambda bt: (-bt.difficulty <= 2 / 256 + 1e-7).mean()
    assert near(b) > near(sample(Argmax(levels=levels).with_sizes(64, 64), 0, 2048))
    if levels:  # exact ties at the top happen, and go to the earliest as in the loop
        assert (b.difficulty == 0).mean() > 0.05


def test_argmax_early_max_moves_the_maximum_to_the_front():
    """With early_max=p about a fraction p of the lists have their maximum (the earliest, on ties) at
    position 0, against 1/L without; the multiset of values in each list is unchanged."""
    base = Argmax(levels=8, labels="random").with_sizes(16, 16)
    plain, front = sample(base, 0, 2048), sample(dataclasses.replace(base, early_max=0.5), 0, 2048)
    first_is_max = lambda b: (b.inputs[0, :, 0] == b.inputs[:16, :, 0].max(0)).mean()
    assert first_is_max(plain) < 0.3 and 0.5 < first_is_max(front) < 0.8  # ties at position 0 add to p
    np.testing.assert_array_equal(np.sort(plain.inputs[:16, :, 0], 0), np.sort(front.inputs[:16, :, 0], 0))
    answer_at_0 = from_bits(last(front.targets, front)) == from_bits(front.inputs[0, :, 2:])
    assert (answer_at_0 == (front.inputs[0, :, 0] == front.inputs[:16, :, 0].max(0))).all()


def test_argmax_near_ties_plant_a_tie_or_one_level_gap_at_the_top():
    """With near_ties=1 every list's two largest values are equal or one level apart (on the grid), at
    most two positions differ from the same draw without it, and one of them holds the old top level."""
    K = 64
    base = Argmax(levels=K, labels="random").with_sizes(2, 16)
    plain, near = sample(base, 0, 3000), sample(dataclasses.replace(base, near_ties=1.0), 0, 3000)
    gaps = []
    for b in range(3000):
        L = int(near.size[b])
        v, u = near.inputs[:L, b, 0] * K, plain.inputs[:L, b, 0] * K
        np.testing.assert_allclose(v, np.rint(v), atol=1e-4)
        v, u = np.rint(v).astype(int), np.rint(u).astype(int)
        diff = np.flatnonzero(v != u)
        assert len(diff) <= 2 and u.max() <= v.max() <= min(u.max() + 1, K - 1)
        gaps.append(v.max() - np.sort(v)[-2])
    gaps = np.array(gaps)
    assert set(gaps.tolist()) <= {0, 1} and 0.4 < (gaps == 0).mean() < 0.75  # ties also from the old top
    assert ((-plain.difficulty * K) <= 1 + 1e-4).mean() < 0.35  # without: far fewer at these lengths


def _running_best_changes(values):
    """Steps where the loop's k changes: a value strictly above every earlier one (and above start)."""
    out, best = [], None
    for v in values:
        out.append(best is None or v > best)
        best = v if best is None or v > best else best
    return out


@pytest.mark.parametrize("levels", [0, 16])
def test_argmax_improvements_follow_the_loop(levels):
    task = Argmax(levels=levels, extra_steps=2)
    b = sample(task, 3)
    improved, shown = (np.asarray(x) for x in task.improvements(b))
    for i in range(B):
        L = int(b.size[i])
        assert shown[:, i].tolist() == [t < L for t in range(len(shown))]
        assert improved[:L, i].tolist() == _running_best_changes(b.inputs[:L, i, 0].tolist())
        assert not improved[L:, i].any()
    # the write hint's targets: write on exactly those steps, shut on every other step of the example (the blank
    # steps after the list included), nothing counted past the example's steps
    writes, on = (np.asarray(x) for x in task.write_targets(b))
    np.testing.assert_array_equal(writes, improved)
    for i in range(B):
        assert on[:, i].tolist() == [t < int(b.steps[i]) for t in range(len(on))]


def test_modsquare_hidden_n_zeroes_only_ns_channels_and_keeps_the_scoring():
    shown = ModSquare(hint="value", bits=8).with_sizes(4, 8)
    hidden = dataclasses.replace(shown, show_n=False)
    a, b = sample(shown, 5), sample(hidden, 5)
    assert (b.inputs[..., :8] == 0).all() and (a.inputs[0, :, :8] != 0).any()
    np.testing.assert_array_equal(a.inputs[..., 8:], b.inputs[..., 8:])
    for f in ("targets", "mask", "steps", "difficulty", "aux"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(b.aux[:, 0], from_bits(a.inputs[0, :, :8]))
    logits = jnp.asarray(np.where(b.targets > 0.5, 5.0, -5.0))  # the right answer
    for t, x in ((shown, a), (hidden, b)):
        m = t.metrics(logits, jax.tree.map(jnp.asarray, x))
        assert (np.asarray(m["error"]) == 0).all() and (np.asarray(m["regret"]) == 0).all()
    with pytest.raises(ValueError):
        ModSquare(hint="index", show_n=False)
    with pytest.raises(ValueError):
        hidden.reference(b.inputs[:, 0], int(b.steps[0]))


@pytest.mark.parametrize("values", ["random", "random-wide", "random-runs"])
def test_modsquare_random_values_run_the_same_loop(values):
    """values="random": the answer is the loop's k over the values shown (uniform on [0, n); "random-wide":
    on [0, 2^bits), high bits set for small n too), and the regret is read from them."""
    task = ModSquare(hint="value", bits=8, values=values).with_sizes(4, 8)
    b = sample(task, 2)
    C = task.candidate_bits
    for j in range(B):
        n = from_bits(b.inputs[0, j, :8])
        m = loop_bound(n)
        vals = from_bits(b.inputs[:m, j, 8 + C:]).tolist()
        assert from_bits(b.inputs[:m, j, 8: 8 + C]).tolist() == list(range(1, m + 1))
        assert all(0 <= v < (n if values == "random" else 256) for v in vals)
        k, best = 0, 0
        for i, v in enumerate(vals, start=1):
            if v > best:
                k, best = i, v
        assert from_bits(b.targets[b.steps[j] - 1, j]) == k
    assert len({tuple(from_bits(b.inputs[:3, j, 8 + C:])) for j in range(B)}) > B // 2  # not i*i mod n
    small = from_bits(b.inputs[0, :, :8]) < 32  # 5-bit n or less: "random" never sets value bits 5-7
    assert (b.inputs[:, small, 8 + C + 5:].max() > 0) == (values != "random")
    if values != "random":  # value widths independent of n: some lists of large n hold only small values
        big = ~small
        widths = [int(from_bits(b.inputs[:, j, 8 + C:]).max()).bit_length() for j in np.flatnonzero(big)]
        assert min(widths) <= 4 and max(widths) >= 7
    wrong = jnp.asarray(np.where(b.targets > 0.5, -5.0, 5.0))
    m = task.metrics(wrong, jax.tree.map(jnp.asarray, b))
    assert (np.asarray(m["regret"]) >= 0).all() and (np.asarray(m["regret"]) < 1).all()
    with pytest.raises(ValueError):
        ModSquare(hint="index", values="random")


def test_modsquare_random_runs_are_ascending_runs_with_more_improvements():
    """values="random-runs": each list is a rearrangement of random-wide values into ascending runs; its
    loops improve on the best far more often than random-wide's, and the run lengths vary from list to list."""
    from tasks.modsquare import _ascending_runs

    vals = jax.random.randint(jax.random.key(0), (256, 40), 0, 1000)
    runs = np.asarray(_ascending_runs(jax.random.key(1), vals, jnp.ones((256, 40), bool)))
    np.testing.assert_array_equal(np.sort(runs, axis=1), np.sort(np.asarray(vals), axis=1))  # same multiset per row
    descents = (np.diff(runs, axis=1) < 0).sum(1)  # one per run boundary that is a real drop
    assert descents.min() <= 1 and descents.max() >= 15
    def improvements(rows):
        return np.mean([sum(v > max(r[:t], default=-1) for t, v in enumerate(r)) for r in rows])
    assert improvements(runs) > 1.5 * improvements(np.asarray(vals))
    # a loop shorter than the row: its values are its own, rearranged (not the smallest of a longer run)
    valid = jnp.arange(40)[None, :] < 5
    short = np.asarray(_ascending_runs(jax.random.key(1), vals, jnp.broadcast_to(valid, (256, 40))))
    np.testing.assert_array_equal(np.sort(short[:, :5], axis=1), np.sort(np.asarray(vals)[:, :5], axis=1))
    # sampled: each loop holds exactly random-wide's values for the same key (drawn over rows as long as
    # 8-bit n's loops, loops of 4-8-bit n), only reordered within the loop
    runs_task = ModSquare(hint="value", bits=8, values="random-runs").with_sizes(4, 8)
    wide_task = ModSquare(hint="value", bits=8, values="random-wide").with_sizes(4, 8)
    a, w = (np.asarray(t.sample(jax.random.key(3), 256).aux) for t in (runs_task, wide_task))
    np.testing.assert_array_equal(a[:, 0], w[:, 0])  # the same n
    np.testing.assert_array_equal(np.sort(a[:, 1:], axis=1), np.sort(w[:, 1:], axis=1))
    assert (a[:, 1:] != w[:, 1:]).any()


def test_modsquare_random_mixed_draws_half_on_0_n_and_half_wide():
    """values="random-mixed": per example, the values of values="random" ([0, n)) or of "random-wide" for the
    same key; both kinds occur, in about equal shares."""
    kinds = {v: np.asarray(ModSquare(hint="value", bits=8, values=v).with_sizes(4, 8).sample(jax.random.key(5), 512).aux)
             for v in ("random-mixed", "random-wide")}
    mixed, wide = kinds["random-mixed"], kinds["random-wide"]
    n = mixed[:, 0]
    same_as_wide = (mixed == wide).all(axis=1)
    below_n = np.array([(row[1:][row[1:] >= 0] < m).all() for row, m in zip(mixed, n)])
    assert (same_as_wide | below_n).all()
    assert 0.35 < same_as_wide.mean() < 0.65 and (below_n & ~same_as_wide).any()

def test_modsquare_improvements_follow_the_loop():
    task = ModSquare(hint="value", bits=8).with_sizes(4, 8)
    b = sample(task, 1)
    improved, shown = (np.asarray(x) for x in task.improvements(b))
    for j in range(B):
        n = from_bits(b.inputs[0, j, :8])
        m = loop_bound(n)
        vals = [i * i % n for i in range(1, m + 1)]
        assert shown[:, j].tolist() == [t < m for t in range(len(shown))]
        # k = 0 (value 0) is the loop's start: a candidate must beat it too
        assert improved[:m, j].tolist() == [v > max([0] + vals[:t]) for t, v in enumerate(vals)]
    with pytest.raises(ValueError):
        ModSquare(hint="index").improvements(b)


def test_argmax_long_lists_fit_index_bits():
    task = Argmax().with_sizes(64, 64)
    b = sample(task, 0, 16)
    assert task.max_steps() == 65 and (b.steps == 65).all()
    np.testing.assert_array_equal(from_bits(b.inputs[:64, :, 2:]), np.broadcast_to(np.arange(64)[:, None], (64, 16)))
    answers = from_bits(last(b.targets, b))
    np.testing.assert_array_equal(answers, np.argmax(b.inputs[:64, :, 0], axis=0))
    assert len(set(answers.tolist())) > 4
    with pytest.raises(ValueError):
        Argmax().with_sizes(2, 300)


# ---- modsquare: the pure-Python reference ----


def loop_transcription(n):
    """The loop of the research question, literally, with the bound from its definition."""
    bound = 0
    while (bound + 1) ** 10 <= n**7:
        bound += 1
    k = 0
    for i in range(1, bound + 1):
        if i * i % n > k * k % n:
            k = i
    return k


def test_solve_matches_literal_loop():
    assert [solve(n) for n in range(1, 2000)] == [loop_transcription(n) for n in range(1, 2000)]


def test_loop_bound_is_exact():
    def ok(n, m):
        return m**10 <= n**7 < (m + 1) ** 10

    rng = np.random.default_rng(0)
    near_powers = [j**10 + d for j in range(1, 9) for d in (-2, -1, 0, 1, 2)]  # j^10: bound exactly j^7
    ns = list(range(0, 3000)) + near_powers + [2**30 - 1, 2**30, 2**30 + 1] + rng.integers(1, 2**30, 300).tolist()
    for n in ns:
        if n >= 0:
            assert ok(n, loop_bound(n)), n
    assert loop_bound(2**30) == 2**21  # float: (2**30) ** 0.7 = 2097151.99999...
    assert loop_bound(1024) == 128 and loop_bound(1023) == 127


def test_solve_large_n():
    n = 2**30 - 1  # the research question's largest n (how fast: `python -c "from tasks.modsquare import solve; solve(2**30-1)"`)
    k = solve(n)
    m = loop_bound(n)
    assert 1 <= k <= m
    i = np.arange(1, m + 1, dtype=np.int64)
    v = i * i % n
    assert k * k % n == v.max() and (v[: k - 1] < v.max()).all()


# ---- modsquare: the task ----


def check_modsquare_batch(task, b):
    C = task.candidate_bits
    for i in range(b.inputs.shape[1]):
        n = int(from_bits(b.inputs[0, i, : task.bits]))
        assert n.bit_length() == b.size[i]
        targets, mask = task.reference(b.inputs[:, i], int(b.steps[i]))
        np.testing.assert_array_equal(targets, b.targets[:, i])
        np.testing.assert_array_equal(mask, b.mask[:, i])
        m, steps = loop_bound(n), int(b.steps[i])
        assert (from_bits(b.inputs[:steps, i, : task.bits]) == n).all()  # n on every step
        shown = min(m, steps)
        if task.hint != "none":
            idx = from_bits(b.inputs[:, i, task.bits : task.bits + C])
            np.testing.assert_array_equal(idx[:shown], np.arange(1, shown + 1))
            assert (idx[shown:] == 0).all()
        if task.hint == "value":
            val = from_bits(b.inputs[:, i, task.bits + C :])
            np.testing.assert_array_equal(val[:shown], np.arange(1, shown + 1) ** 2 % n)
            assert (val[shown:] == 0).all()
        values = [0] + [j * j % n for j in range(1, m + 1)]
        k = solve(n)
        runner_up = max(v for j, v in enumerate(values) if j != k)
        assert b.difficulty[i] == pytest.approx(-(values[k] - runner_up) / n, abs=1e-6)


@pytest.mark.parametrize("hint", ["value", "index", "none"])
def test_modsquare_matches_solve(hint):
    task = ModSquare(hint=hint)
    for seed in range(2):
        check_modsquare_batch(task, sample(task, seed))


def test_modsquare_beyond_training_sizes():
    task = dataclasses.replace(ModSquare().with_sizes(9, 12), split="all")
    b = sample(task, 3, 32)
    assert set(b.size.tolist()) == {9, 10, 11, 12} and task.max_steps() == loop_bound(4095) + 2
    check_modsquare_batch(task, b)


def test_holdout_hash_same_on_device():
    ns = np.arange(0, 1 << 16)
    for frac, seed in [(0.1, 0), (0.5, 7)]:
        dev = np.asarray(jax.jit(lambda n: _held_out_device(n, frac, seed))(jnp.asarray(ns, jnp.int32)))
        np.testing.assert_array_equal(dev, held_out(ns.astype(np.uint64), frac, seed))
        assert [held_out(int(n), frac, seed) for n in ns[:300]] == dev[:300].tolist()
        assert abs(dev.mean() - frac) < 0.01


def test_holdout_split_is_disjoint():
    kw = dict(min_size=4, max_size=10, holdout_fraction=0.1, holdout_seed=3)
    drawn = {}
    for split in ["train", "holdout"]:  # split="all" is covered by test_modsquare_beyond_training_sizes
        task = ModSquare(split=split, **kw)
        b = sample(task, 0, 256)
        n = from_bits(b.inputs[0, :, : task.bits])
        assert (n >> (b.size - 1) == 1).all()  # n has `size` bits
        drawn[split] = held_out(n.astype(np.uint64), 0.1, 3)
    assert not drawn["train"].any()
    assert drawn["holdout"].all()
    ns = np.arange(1 << 12, dtype=np.uint64)  # another seed holds out other numbers
    assert (held_out(ns, 0.1, 3) != held_out(ns, 0.1, 4)).mean() > 0.1


def test_modsquare_holdout_skips_empty_sizes():
    # with 2..4 bits there are only 7 numbers: sizes without a held-out n are never drawn
    held = [n for n in range(2, 16) if held_out(n, 0.1, 2)]
    task = ModSquare(min_size=2, max_size=4, split="holdout", holdout_fraction=0.1, holdout_seed=2)
    assert task.valid_sizes() == (2, 4) and {n.bit_length() for n in held} == {2, 4}
    with pytest.raises(ValueError):
        task.with_sizes(3, 3)


def test_modsquare_regret_and_out_of_range():
    task = ModSquare()
    b = sample(task, 6)
    n = from_bits(b.inputs[0, :, : task.bits])
    bound = np.array([loop_bound(x) for x in n])
    best = from_bits(last(b.targets, b))
    C = task.output_size

    def logits_for(k):
        bits = (k[:, None] >> np.arange(C)[None]) & 1
        out = np.zeros(b.targets.shape, np.float32)
        out[b.steps - 1, np.arange(B)] = bits * 20 - 10
        return jnp.asarray(out)

    bj = jax.tree.map(jnp.asarray, b)
    for k, feasible in [(np.zeros(B, np.int64), True), (np.maximum(best - 1, 0), True), (bound + 1, False)]:
        m = jax.tree.map(np.asarray, task.metrics(logits_for(k), bj))
        value = np.where(feasible, k * k % n, 0)
        np.testing.assert_allclose(m["regret"], (best * best % n - value) / n, rtol=1e-6)
        np.testing.assert_array_equal(m["out_of_range"], 0.0 if feasible else 1.0)
        np.testing.assert_array_equal(m["exact_match"], (k == best).astype(np.float32))
        assert (m["regret"] >= 0).all() and (m["regret"] < 1).all()


# ---- polymax ----


def random_coefficients(rng, d):
    return rng.normal(size=d + 1) / np.sqrt(d + 1)


def test_polymax_reference_against_dense_grid():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 200_001)
    for trial in range(150):
        c = random_coefficients(rng, 1 + trial % 12)
        p = np.polynomial.Chebyshev(c, domain=[0, 1])
        vals = p(x)
        x_star, v_star = maximise_reference(c)
        assert 0 <= x_star <= 1 and v_star == pytest.approx(p(x_star))
        assert v_star >= vals.max() - 1e-12  # nothing on the grid beats it
        assert v_star - vals.max() < 1e-7  # and the grid gets close to it (spacing 5e-6)
        # local maxima: each is at least as high as the grid points around it
        xs, vs = local_maxima_reference(c)
        assert v_star == pytest.approx(vs.max())
        for xm, vm in zip(xs, vs):
            near = np.abs(x - xm) < 1e-3
            assert vm >= vals[near].max() - 1e-12


def test_polymax_device_matches_reference():
    task = PolyMax(min_size=1, max_size=12)
    b = sample(task, 0, 256)
    x_dev = last(b.targets, b)[:, 0]
    for i in range(256):
        d = int(b.size[i])
        c = b.aux[i, : d + 1]
        assert (b.aux[i, d + 1 :] == 0).all()
        np.testing.assert_array_equal(b.inputs[: d + 1, i, 0], c)  # coefficient j on step j
        np.testing.assert_array_equal(from_bits(b.inputs[: d + 1, i, 2:]), np.arange(d + 1))
        x_ref, v_ref = maximise_reference(c)
        assert abs(x_dev[i] - x_ref) < 1e-5, (i, d)
        assert b.difficulty[i] == pytest.approx(difficulty_reference(c), rel=1e-3, abs=1e-3)
    assert (b.difficulty == 0).any() and (b.difficulty > 1).any()
    assert set(b.size.tolist()) == set(range(1, 13))
    # values stay O(1) at every degree
    x = np.linspace(0, 1, 101)
    peak = np.array([np.abs(np.polynomial.chebyshev.chebval(2 * x - 1, b.aux[i])).max() for i in range(256)])
    for d in (1, 6, 12):
        assert 0.3 < np.median(peak[b.size == d]) < 3
    assert peak.max() < 10


@pytest.mark.parametrize("objective", ["gap", "supervised"])
def test_polymax_loss_and_regret(objective):
    task = PolyMax(objective=objective)
    b = sample(PolyMax(), 2)  # the instance does not depend on the objective
    bj = jax.tree.map(jnp.asarray, b)
    x_star = last(b.targets, b)[:, 0]
    for x in [np.full(B, 0.3), np.full(B, 0.9)]:
        logits = np.zeros(b.targets.shape, np.float32)
        logits[b.steps - 1, np.arange(B), 0] = np.log(x / (1 - x))
        m = jax.tree.map(np.asarray, task.metrics(jnp.asarray(logits), bj))
        p = np.array([np.polynomial.chebyshev.chebval(2 * np.array([x[i], x_star[i]]) - 1, b.aux[i]) for i in range(B)])
        regret = p[:, 1] - p[:, 0]
        np.testing.assert_allclose(m["regret"], np.maximum(regret, 0), atol=1e-5)
        np.testing.assert_allclose(m["x_error"], np.abs(x - x_star), atol=1e-6)
        np.testing.assert_array_equal(m["exact_match"], (m["regret"] < 1e-2).astype(np.float32))
        expected = regret**2 if objective == "gap" else (x - x_star) ** 2
        np.testing.assert_allclose(m["loss"], expected, rtol=1e-4, atol=1e-6)
    # the gap loss is differentiable in the logits and points uphill on P
    grad = jax.grad(lambda z: task.loss(z, bj).sum())(jnp.asarray(logits))
    assert np.isfinite(np.asarray(grad)).all()


def _running_answers(values, answers, start):
    """The loop's answer after each step: the answer of the latest value above every earlier one (and
    above ``start``), or 0 before any."""
    out, best, k = [], start, 0
    for v, a in zip(values, answers):
        if v > best:
            best, k = v, a
        out.append(k)
    return out


def _softplus_ce(logits, targets):
    return np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))


@pytest.mark.parametrize("task", [Argmax(labels="random", levels=8, extra_steps=2),
                                  ModSquare(hint="value", bits=8).with_sizes(4, 8),
                                  ModSquare(hint="none", bits=8).with_sizes(4, 8),
                                  ModSquare(hint="value", bits=8, values="random-wide",
                                            step_scale=1.5).with_sizes(4, 6)],
                         ids=["argmax", "modsquare-value", "modsquare-none", "modsquare-random-wide-1.5x"])
def test_trace_loss_supervises_the_loops_running_answer(task):
    """Step supervision (``trace_loss``) is, per example, the mean over its steps of the bitwise cross-entropy
    against the loop's answer so far (computed here by a Python loop over the values and answers); the task's
    loss and metrics do not include it."""
    assert isinstance(task, SupervisedLoop)
    b = sample(task, 4)
    T, Bn, Y = b.targets.shape
    logits = np.random.default_rng(0).normal(0, 3, (T, Bn, Y)).astype(np.float32)
    got = np.asarray(task.trace_loss(jnp.asarray(logits), jax.tree.map(jnp.asarray, b)))
    changed = 0
    for j in range(Bn):
        steps = int(b.steps[j])
        if isinstance(task, Argmax):
            L = int(b.size[j])
            values, answers, start = b.inputs[:L, j, 0].tolist(), from_bits(b.inputs[:L, j, 2:]).tolist(), -np.inf
        else:
            m = loop_bound(int(b.aux[j, 0]))
            values, answers, start = b.aux[j, 1: m + 1].tolist(), list(range(1, m + 1)), 0
        run = _running_answers(values, answers, start)
        run += [run[-1]] * (steps - len(run))  # blank steps after the last value keep the answer
        changed += len(set(run)) > 1
        assert run[-1] == from_bits(b.targets[steps - 1, j])  # the running answer ends at the target
        target_bits = (np.array(run)[:, None] >> np.arange(Y)) & 1  # [steps, Y]
        want = _softplus_ce(logits[:steps, j].astype(np.float64), target_bits).sum(-1).mean()
        np.testing.assert_allclose(got[j], want, rtol=1e-4, atol=1e-4)
    assert changed > Bn // 2  # most examples change their answer on the way: not only the final one
    if isinstance(task, ModSquare) and task.values == "random-wide":  # some loops keep k = 0 for a while
        assert (b.aux[:, 1] == 0).any()
    task.check_trace_loss()
    with pytest.raises(ValueError, match="step_scale"):
        dataclasses.replace(task, step_scale=0.5).check_trace_loss()


def test_training_signals_are_training_configuration():
    """The training distribution is a separate option that evaluation never sees: make_task refuses its options
    among the task's own, the run's evaluation task (load_run) has none of them, and step supervision is a
    weight of the run; a config.json written when they were task options loads as the same run."""
    from lab.config import TrainConfig, migrate
    from lab.rundir import build_task

    with pytest.raises(ValueError, match="training distribution"):
        make_task("argmax", near_ties=0.5, levels=16)
    with pytest.raises(ValueError, match="not options of its training distribution"):
        make_task("argmax", training={"levels": 16})
    with pytest.raises(ValueError, match="extra_steps"):
        make_task("polymax", training={"near_ties": 0.5})
    with pytest.raises(ValueError, match="none"):
        make_task("copy", training={"near_ties": 0.5})
    cfg = TrainConfig(task="argmax", task_options={"levels": 16}, train_distribution={"near_ties": 0.5, "extra_steps": 2},
                      trace_loss=1.0)
    assert (build_task(cfg).near_ties, build_task(cfg).extra_steps) == (0.0, 0)
    assert (build_task(cfg, training=True).near_ties, build_task(cfg, training=True).extra_steps) == (0.5, 2)
    with pytest.raises(ValueError, match="running answer"):
        build_task(TrainConfig(task="polymax", trace_loss=1.0))
    with pytest.raises(ValueError, match="step_scale"):
        build_task(TrainConfig(task="argmax", task_options={"step_scale": 0.5}, trace_loss=1.0))
    with pytest.raises(ValueError, match="trace_loss"):
        TrainConfig(trace_loss=-1.0)
    old = {"task": "argmax", "task_options": {"levels": 16, "near_ties": 0.5, "extra_steps": 2, "trace_loss": 1.0}}
    assert TrainConfig.from_dict(old) == cfg
    assert migrate({"task": "copy", "task_options": {"width": 4}}) == {"task": "copy", "task_options": {"width": 4}}
