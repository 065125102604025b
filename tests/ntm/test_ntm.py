"""The NTM core and NNX cell: equivalences (scan vs loop, batched vs one-by-one, jit vs eager,
cell vs core), masking past each example's steps, configurations and errors."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ntm
from ntm import core

X, Y, T = 5, 3, 9
CONFIGS = {
    "lstm": ntm.NTMConfig(X, Y, memory_rows=16, memory_width=6, controller_size=12),
    "ff-2r2w-s2": ntm.NTMConfig(X, Y, memory_rows=16, memory_width=6, controller="feedforward", controller_size=12,
                                num_read_heads=2, num_write_heads=2, shift_range=2),
    "learned": ntm.NTMConfig(X, Y, memory_rows=10, memory_width=4, controller_size=8, memory_init="learned"),
    "relu-3r1w": ntm.NTMConfig(X, Y, memory_rows=10, memory_width=4, controller="feedforward", activation="relu",
                               controller_size=8, num_read_heads=3),
}


def _setup(cfg, seed=0):
    params = ntm.init_params(jax.random.key(seed), cfg)
    xs = jax.random.normal(jax.random.key(seed + 1), (T, cfg.input_size))
    return params, xs


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_shapes_and_weightings_are_distributions(name):
    cfg = CONFIGS[name]
    params, xs = _setup(cfg)
    ys, trace, final = ntm.unroll(params, cfg, xs)
    R, W, N, M = cfg.num_read_heads, cfg.num_write_heads, cfg.memory_rows, cfg.memory_width
    chex.assert_shape(ys, (T, Y))
    chex.assert_shape(trace.read_weights, (T, R, N))
    chex.assert_shape(trace.write_weights, (T, W, N))
    chex.assert_shape(final.memory, (N, M))
    chex.assert_tree_all_finite((ys, trace, final))
    for w in (trace.read_weights, trace.write_weights):
        assert (w >= 0).all()
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert (jnp.abs(ys) <= cfg.clip_value).all()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scan_equals_python_loop_of_step(name):
    cfg = CONFIGS[name]
    params, xs = _setup(cfg)
    ys, trace, final = ntm.unroll(params, cfg, xs)
    state = ntm.initial_state(params, cfg)
    for t in range(T):
        state, y = ntm.step(params, state, xs[t], cfg)
        np.testing.assert_allclose(ys[t], y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(trace.read_weights[t], state.read_weights, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(final, state, rtol=1e-5, atol=1e-6)


def test_steps_past_num_steps_freeze_state_and_output_zero():
    cfg = CONFIGS["lstm"]
    params, xs = _setup(cfg)
    ys, trace, final = ntm.unroll(params, cfg, xs, num_steps=4)
    ys4, trace4, final4 = ntm.unroll(params, cfg, xs[:4])
    np.testing.assert_allclose(ys[:4], ys4, rtol=1e-6)
    assert (ys[4:] == 0).all()
    chex.assert_trees_all_close(final, final4, rtol=1e-6)
    np.testing.assert_allclose(trace.read_weights[4:], jnp.broadcast_to(trace4.read_weights[-1], (T - 4, 1, 16)))


def test_batched_equals_one_by_one_with_different_step_counts():
    cfg = CONFIGS["ff-2r2w-s2"]
    params = ntm.init_params(jax.random.key(0), cfg)
    xs = jax.random.normal(jax.random.key(1), (4, T, X))  # [B, T, X]
    steps = jnp.array([1, 4, T, 6])
    batched = jax.vmap(lambda x, n: ntm.unroll(params, cfg, x, n)[0])(xs, steps)
    for b in range(4):
        one = ntm.unroll(params, cfg, xs[b][: int(steps[b])])[0]
        np.testing.assert_allclose(batched[b, : int(steps[b])], one, rtol=1e-5, atol=1e-6)
        assert (batched[b, int(steps[b]):] == 0).all()


def test_jit_equals_eager():
    cfg = CONFIGS["lstm"]
    params, xs = _setup(cfg)
    eager = ntm.unroll(params, cfg, xs, 7)
    jitted = jax.jit(ntm.unroll, static_argnums=1)(params, cfg, xs, 7)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)


def test_gradients_finite_and_nonzero_for_every_parameter_group():
    cfg = CONFIGS["learned"]
    params, xs = _setup(cfg)
    grads = jax.grad(lambda p: jnp.sum(ntm.unroll(p, cfg, xs)[0] ** 2))(params)
    chex.assert_tree_all_finite(grads)
    for group in ("controller", "heads", "output", "init"):
        assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads[group])), group


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_nnx_cell_equals_core(name):
    cfg = CONFIGS[name]
    cell = ntm.NTMCell(cfg, rngs=nnx.Rngs(params=3))
    params = cell.pure_params()
    xs = jax.random.normal(jax.random.key(1), (2, T, X))  # [B, T, X]
    carry = cell.initialize_carry((2, X))
    outs = []
    for t in range(T):
        carry, y = cell(carry, xs[:, t])
        outs.append(y)
    expected = jax.vmap(lambda x: ntm.unroll(params, cfg, x)[0])(xs)
    np.testing.assert_allclose(jnp.stack(outs, 1), expected, rtol=1e-5, atol=1e-6)
    # and through Flax's own RNN layer
    np.testing.assert_allclose(nnx.RNN(cell)(xs), expected, rtol=1e-5, atol=1e-6)


def test_nnx_cell_params_are_trainable_with_nnx_split():
    cfg = CONFIGS["lstm"]
    cell = ntm.NTMCell(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(cell, nnx.Param)
    assert sum(x.size for x in jax.tree.leaves(state)) == ntm.num_params(cell.pure_params())
    xs = jnp.ones((T, 1, X))

    def loss(state):
        c = nnx.merge(graphdef, state)
        return nnx.RNN(c, time_major=True)(xs).sum()

    grads = jax.grad(loss)(state)
    chex.assert_tree_all_finite(grads)


def test_random_memory_init_needs_key_and_differs_per_key():
    cfg = ntm.NTMConfig(X, Y, memory_rows=8, memory_width=4, controller_size=8, memory_init="random")
    params = ntm.init_params(jax.random.key(0), cfg)
    with pytest.raises(ValueError, match="key"):
        ntm.initial_state(params, cfg)
    a = ntm.initial_state(params, cfg, jax.random.key(1)).memory
    b = ntm.initial_state(params, cfg, jax.random.key(2)).memory
    assert not np.allclose(a, b)


def test_constant_memory_init_value():
    cfg = CONFIGS["lstm"]
    state = ntm.initial_state(ntm.init_params(jax.random.key(0), cfg), cfg)
    np.testing.assert_array_equal(state.memory, np.full((16, 6), 1e-6, np.float32))


@pytest.mark.parametrize("kw", [dict(controller="gru"), dict(memory_init="zeros"), dict(memory_rows=0),
                                dict(shift_range=-1), dict(activation="sigmoid")])
def test_bad_config_raises(kw):
    with pytest.raises(ValueError):
        ntm.NTMConfig(X, Y, **kw)


def test_head_param_split_sizes():
    cfg = CONFIGS["ff-2r2w-s2"]
    flat = jnp.arange(cfg.head_params_size, dtype=jnp.float32)
    r, w, e, a = core.split_head_params(cfg, flat)
    chex.assert_shape(r.key, (2, 6))
    chex.assert_shape(w.shift, (2, 5))
    chex.assert_shape((e, a), (2, 6))


def test_identity_add_writes_raw_values_beyond_tanh_range():
    cfg = ntm.NTMConfig(X, Y, memory_rows=4, memory_width=3, controller="feedforward", controller_size=4,
                        add_activation="identity", shift_range=0)
    params = ntm.init_params(jax.random.key(0), cfg)
    M, P = cfg.memory_width, cfg.read_head_size
    flat = jnp.zeros(cfg.head_params_size).at[P + P + M:].set(jnp.array([5.0, -7.0, 0.25]))
    _, _, _, add = core.split_head_params(cfg, flat)
    np.testing.assert_array_equal(add, [[5.0, -7.0, 0.25]])
    default = core.split_head_params(dataclasses.replace(cfg, add_activation="tanh"), flat)[3]
    np.testing.assert_allclose(default, jnp.tanh(add), rtol=1e-6)
    ys, _, _ = ntm.unroll(params, cfg, jnp.ones((3, X)))  # runs end to end
    chex.assert_tree_all_finite(ys)


def test_initial_reads_from_memory_read_the_initial_memory():
    cfg = ntm.NTMConfig(X, Y, memory_rows=5, memory_width=3, controller_size=4, memory_init="learned",
                        num_read_heads=2, initial_reads="memory")
    params = ntm.init_params(jax.random.key(0), cfg)
    assert "reads" not in params["init"]
    params["init"]["memory"] = jax.random.normal(jax.random.key(1), (5, 3))
    state = ntm.initial_state(params, cfg)
    expected = jax.nn.softmax(params["init"]["read_logits"], -1) @ params["init"]["memory"]  # [R, M]
    np.testing.assert_allclose(state.reads, expected, rtol=1e-6)
    learned = dataclasses.replace(cfg, initial_reads="learned")
    assert "reads" in ntm.init_params(jax.random.key(0), learned)["init"]


@pytest.mark.parametrize("kw", [dict(add_activation="relu"), dict(initial_reads="zeros")])
def test_bad_new_options_raise(kw):
    with pytest.raises(ValueError):
        ntm.NTMConfig(X, Y, **kw)


def test_write_gate_scales_erase_and_add_and_closed_leaves_memory_alone():
    cfg = ntm.NTMConfig(X, Y, memory_rows=6, memory_width=4, controller_size=8, write_gate=True)
    ungated = dataclasses.replace(cfg, write_gate=False)
    assert cfg.write_head_size == ungated.write_head_size + 1
    flat = jax.random.normal(jax.random.key(0), (cfg.head_params_size,))
    _, _, e, a = core.split_head_params(cfg, flat)
    _, _, e0, a0 = core.split_head_params(ungated, flat[:-1])  # the gate's logit is the write head's last entry
    g = jax.nn.sigmoid(flat[-1])
    np.testing.assert_allclose(e, e0 * g, rtol=1e-6)
    np.testing.assert_allclose(a, a0 * g, rtol=1e-6)
    # a gain multiplies the gate's logit, in the write and in the gates the trace reports alike
    steep = dataclasses.replace(cfg, write_gate_gain=4.0)
    _, _, e4, _ = core.split_head_params(steep, flat)
    np.testing.assert_allclose(e4, e0 * jax.nn.sigmoid(4.0 * flat[-1]), rtol=1e-6)
    np.testing.assert_allclose(core.write_gates(steep, flat), jax.nn.sigmoid(4.0 * flat[-1:]), rtol=1e-6)
    with pytest.raises(ValueError, match="write_gate_gain"):
        dataclasses.replace(cfg, write_gate_gain=0.0)
    # a closed gate (logit -60 from the bias, clipped to -clip_value = -20: g = 2e-9): the memory stays put
    params = ntm.init_params(jax.random.key(1), cfg)
    params["heads"]["w"] = params["heads"]["w"].at[:, -1].set(0.0)
    params["heads"]["b"] = params["heads"]["b"].at[-1].set(-60.0)
    xs = jax.random.normal(jax.random.key(2), (5, X))
    _, _, final = ntm.unroll(params, cfg, xs)
    np.testing.assert_allclose(final.memory, ntm.initial_state(params, cfg).memory, rtol=0, atol=1e-8)
    params["heads"]["b"] = params["heads"]["b"].at[-1].set(60.0)  # open: the ungated NTM's memory
    p0 = dict(params, heads={"w": params["heads"]["w"][:, :-1], "b": params["heads"]["b"][:-1]})
    np.testing.assert_allclose(ntm.unroll(params, cfg, xs)[2].memory, ntm.unroll(p0, ungated, xs)[2].memory,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lstm"])  # the cut acts on the whole state pytree: one configuration is enough
def test_detach_at_cuts_the_gradient_into_earlier_steps_only(name):
    """unroll(detach_at=m): the same outputs; the loss's gradient is the prefix's own plus that of the
    suffix run from the prefix's final state held constant; inputs before m get none from outputs after m."""
    cfg = CONFIGS[name]
    params, xs = _setup(cfg)
    m = 4
    ys_plain, _, _ = jax.jit(lambda p: ntm.unroll(p, cfg, xs))(params)
    ys_cut, _, _ = jax.jit(lambda p: ntm.unroll(p, cfg, xs, detach_at=m))(params)
    np.testing.assert_array_equal(np.asarray(ys_plain), np.asarray(ys_cut))

    w = jax.random.normal(jax.random.key(5), ys_plain.shape)
    loss_cut = lambda p: jnp.sum(w * ntm.unroll(p, cfg, xs, detach_at=m)[0])  # noqa: E731

    def loss_split(p):
        ys_a, _, s = ntm.unroll(p, cfg, xs[:m])
        ys_b, _, _ = ntm.unroll(p, cfg, xs[m:], state=jax.lax.stop_gradient(s))
        return jnp.sum(w[:m] * ys_a) + jnp.sum(w[m:] * ys_b)

    chex.assert_trees_all_close(jax.jit(jax.grad(loss_cut))(params), jax.jit(jax.grad(loss_split))(params),
                                rtol=1e-4, atol=1e-6)
    gx = jax.jit(jax.grad(lambda x: jnp.sum(w[m:] * ntm.unroll(params, cfg, x, detach_at=m)[0][m:])))(xs)
    assert np.all(np.asarray(gx[:m]) == 0) and np.any(np.asarray(gx[m:]) != 0)
    gx_plain = jax.jit(jax.grad(lambda x: jnp.sum(w[m:] * ntm.unroll(params, cfg, x)[0][m:])))(xs)
    assert np.any(np.asarray(gx_plain[:m]) != 0)  # without the cut the earlier inputs do get gradient
    # detach_at = 0 detaches nothing: the learned initial state keeps its gradient
    loss_at = lambda p, d: jnp.sum(w * ntm.unroll(p, cfg, xs, detach_at=d)[0])  # noqa: E731
    grad_at = jax.jit(jax.grad(loss_at), static_argnums=1)
    chex.assert_trees_all_close(grad_at(params, 0), grad_at(params, None), rtol=1e-6, atol=1e-8)
