"""The fused CPU memory kernel (the default on CPU) (ntm/fused_cpu.py, ntm/csrc/memory_step.cc) against the
pure-JAX step: forward values, gradients (against jax.grad of the pure-JAX step and against finite
differences), inside ``core.unroll`` (scan + checkpoint + vmap + jit), jit vs eager, and the
fallbacks. Skipped when the kernel cannot be built here (no g++, say)."""
from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntm
from ntm import addressing, core, fused_cpu
from ntm.addressing import HeadParams

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason=str(fused_cpu.unavailable_reason()))

# (M, N, R, W, S): Graves' copy set-up, a small one, one head each with N not a multiple of the
# vector width and a wider shift (the kernel's one-head path, its scalar tail and general K),
# several heads with a wider shift, no shift.
SHAPES = {
    "copy-m20-n128": (20, 128, 1, 1, 1),
    "small-m16-n32": (16, 32, 1, 1, 1),
    "1r1w-n37-s2": (7, 37, 1, 1, 2),
    "2r3w-s2": (16, 32, 2, 3, 2),
    "3r2w-s0": (6, 10, 3, 2, 0),
}


def _reference(memory_t, write_w_prev, read_w_prev, write_hp, erase, add, read_hp):
    """What ntm.core._step_t does between the head parameters and the reads (pure JAX)."""
    address = jax.vmap(addressing._address_t, in_axes=(None, 0, 0))
    write_w = address(memory_t, write_w_prev, write_hp)
    memory_t = addressing._write_t(memory_t, write_w, erase, add)
    read_w = address(memory_t, read_w_prev, read_hp)
    return memory_t, write_w, read_w, addressing._read_t(memory_t, read_w)


def _inputs(key, M, N, R, W, S):
    """Random kernel inputs as the controller would produce them (constrained head parameters)."""
    k = jax.random.split(key, 7)
    memory_t = jax.random.normal(k[0], (M, N)) * 0.5
    write_w_prev = jax.nn.softmax(3 * jax.random.normal(k[1], (W, N)), axis=-1)
    read_w_prev = jax.nn.softmax(3 * jax.random.normal(k[2], (R, N)), axis=-1)
    write_hp = HeadParams.from_raw(2 * jax.random.normal(k[3], (W, M + 2 * S + 4)), M, S)
    read_hp = HeadParams.from_raw(2 * jax.random.normal(k[4], (R, M + 2 * S + 4)), M, S)
    erase = jax.nn.sigmoid(jax.random.normal(k[5], (W, M)))
    add = jnp.tanh(jax.random.normal(k[6], (W, M)))
    return memory_t, write_w_prev, read_w_prev, write_hp, erase, add, read_hp


def _loss(fn):
    """A scalar that depends on every output nonlinearly, with different weights per output."""
    def loss(*args):
        outs = fn(*args)
        return sum(jnp.sum(jnp.sin((i + 1.3) * o)) for i, o in enumerate(outs))
    return loss


def _rel_err(a, b):
    """max |a - b| relative to max |a|. The losses here have O(1) gradients; a gradient below 1e-2
    (e.g. the shift's with S = 0, which is zero up to float32 rounding) is compared as if it were 1e-2."""
    return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(a)), 1e-2))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_forward_matches_pure_jax(name):
    args = _inputs(jax.random.key(0), *SHAPES[name])
    want = jax.jit(_reference)(*args)
    got = jax.jit(fused_cpu.memory_step)(*args)
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == jnp.float32
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_gradients_match_pure_jax(name):
    args = _inputs(jax.random.key(1), *SHAPES[name])
    argnums = tuple(range(len(args)))
    want = jax.tree.leaves(jax.jit(jax.grad(_loss(_reference), argnums))(*args))
    got = jax.tree.leaves(jax.jit(jax.grad(_loss(fused_cpu.memory_step), argnums))(*args))
    assert len(got) == len(want) == 15  # memory, 2 weightings, 5 + 5 head fields, erase, add
    S = SHAPES[name][4]
    for i, (w, g) in enumerate(zip(want, got)):
        assert g.shape == w.shape
        if S == 0 and i in (6, 13):
            # The shift distribution's gradient with S = 0 (leaves 6, 13: write and read shift) is
            # exactly zero (scaling ws leaves the sharpening softmax unchanged): both sides are the
            # rounding noise of a sum of N O(1) terms that cancel, ~1e-6 here and different in
            # every summation order, so check that both are that small instead of comparing them.
            assert float(jnp.max(jnp.abs(w))) < 1e-5 and float(jnp.max(jnp.abs(g))) < 1e-5
        else:
            assert _rel_err(w, g) < 1e-4


def test_gradients_match_finite_differences():
    M, N, R, W, S = SHAPES["small-m16-n32"]
    args = _inputs(jax.random.key(2), M, N, R, W, S)
    flat, tree = jax.tree.flatten(args)
    loss = _loss(fused_cpu.memory_step)
    f = lambda leaves: loss(*jax.tree.unflatten(tree, leaves))  # noqa: E731
    f = jax.jit(f)
    grads = jax.jit(jax.grad(f))(flat)
    # leaf order: memory, write/read prev weightings, write head (key beta gate shift gamma), erase,
    # add, read head (key beta gate shift gamma) -- see tree; one coordinate of each
    eps = 1e-2
    for i, leaf in enumerate(flat):
        idx = tuple(0 if d == 1 else min(1, d - 1) for d in leaf.shape)
        bump = jnp.zeros_like(leaf).at[idx].set(eps)
        plus = [x + bump if j == i else x for j, x in enumerate(flat)]
        minus = [x - bump if j == i else x for j, x in enumerate(flat)]
        fd = (float(f(plus)) - float(f(minus))) / (2 * eps)
        assert abs(fd - float(grads[i][idx])) < 2e-2 * max(1.0, abs(fd)), (i, fd, float(grads[i][idx]))
    # and one random direction through all inputs at once
    dirs = [jax.random.normal(jax.random.key(10 + j), x.shape) for j, x in enumerate(flat)]
    fd = (float(f([x + eps * d for x, d in zip(flat, dirs)])) - float(f([x - eps * d for x, d in zip(flat, dirs)]))) / (2 * eps)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(grads, dirs))
    assert abs(fd - analytic) < 2e-2 * max(1.0, abs(fd))


def test_vmap_and_jit_match_eager_one_by_one():
    M, N, R, W, S = 6, 10, 2, 2, 1
    batch = jax.vmap(lambda k: _inputs(k, M, N, R, W, S))(jax.random.split(jax.random.key(3), 4))
    got = jax.jit(jax.vmap(fused_cpu.memory_step))(*batch)
    for b in range(4):
        one = fused_cpu.memory_step(*jax.tree.map(lambda a: a[b], batch))  # eager, unbatched
        for x, y in zip(one, got):
            np.testing.assert_allclose(y[b], x, atol=1e-6, rtol=1e-6)
    want = jax.jit(jax.vmap(_reference))(*batch)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
    # the backward kernel eagerly (custom_vjp's rule run op by op) and under jit
    gj = jax.jit(jax.grad(_loss(jax.vmap(fused_cpu.memory_step))))(*batch)
    ge = jax.grad(_loss(jax.vmap(fused_cpu.memory_step)))(*batch)
    np.testing.assert_allclose(gj, ge, atol=1e-6, rtol=1e-5)


def test_unroll_and_its_gradient_are_the_same_with_the_kernel_on(controller="lstm", R=2, W=1, S=1):
    """scan + checkpoint(dots_saveable) + vmap over a padded batch + jit, values and parameter gradients."""
    cfg = ntm.NTMConfig(5, 3, memory_rows=24, memory_width=8, controller=controller, controller_size=16,
                        num_read_heads=R, num_write_heads=W, shift_range=S, memory_init="random", fused_memory="off")
    fused = dataclasses.replace(cfg, fused_memory="on")
    params = ntm.init_params(jax.random.key(4), cfg)
    xs = jax.random.normal(jax.random.key(5), (3, 7, 5))  # [B, T, X]
    steps = jnp.array([7, 4, 1])
    keys = jax.random.split(jax.random.key(6), 3)

    def loss(p, c):
        def one(x, n, k):
            ys, trace, final = ntm.unroll(p, c, x, n, key=k)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(trace.read_weights ** 2) + jnp.sum(final.memory ** 2)
        return jnp.sum(jax.vmap(one)(xs, steps, keys))

    run = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    (v0, g0), (v1, g1) = run(params, cfg), run(params, fused)
    assert abs(float(v1) - float(v0)) < 1e-4 * max(1.0, abs(float(v0)))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        assert _rel_err(a, b) < 1e-4
    # the fused program really calls the kernels, and the forward kernel once per step: the backward
    # pass reads the saved outputs instead of running it again (unroll's checkpoint policy)
    text = str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, fused))
    assert "ntm_memory_step_fwd" in text and "ntm_memory_step_bwd" in text
    hlo = jax.jit(jax.grad(loss), static_argnums=1).lower(params, fused).as_text()
    assert hlo.count("@ntm_memory_step_fwd(") == 1 and hlo.count("@ntm_memory_step_bwd(") == 1


def test_auto_is_the_default_and_takes_the_kernel_on_cpu():
    """The default config ("auto") runs the fused kernel here, and computes what "off" computes."""
    cfg = ntm.NTMConfig(4, 2, memory_rows=16, memory_width=6, controller_size=8)
    assert cfg.fused_memory == "auto"
    params = ntm.init_params(jax.random.key(7), cfg)
    state = ntm.initial_state(params, cfg)
    x = jax.random.normal(jax.random.key(8), (4,))
    assert "ntm_memory_step_fwd" in str(jax.make_jaxpr(ntm.step, static_argnums=3)(params, state, x, cfg))
    off = dataclasses.replace(cfg, fused_memory="off")
    assert "ntm_memory_step_fwd" not in str(jax.make_jaxpr(ntm.step, static_argnums=3)(params, state, x, off))
    for a, b in zip(jax.tree.leaves(ntm.step(params, state, x, off)), jax.tree.leaves(ntm.step(params, state, x, cfg))):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)


def test_fused_memory_mode_is_checked():
    with pytest.raises(ValueError, match="fused_memory must be one of"):
        ntm.NTMConfig(4, 2, fused_memory=True)


def test_unsupported_config_falls_back_to_pure_jax_warning_only_when_asked():
    cfg = ntm.NTMConfig(4, 2, memory_rows=8, memory_width=4, controller_size=8, num_read_heads=0, fused_memory="off")
    params = ntm.init_params(jax.random.key(9), cfg)
    xs = jax.random.normal(jax.random.key(10), (3, 4))
    want, _, _ = ntm.unroll(params, cfg, xs)
    core._FUSED_WARNED.clear()
    with pytest.warns(RuntimeWarning, match="does not support R=0"):
        got, _, _ = ntm.unroll(params, dataclasses.replace(cfg, fused_memory="on"), xs)
    np.testing.assert_array_equal(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto": silent
        got, _, _ = ntm.unroll(params, dataclasses.replace(cfg, fused_memory="auto"), xs)
    np.testing.assert_array_equal(got, want)


def _fresh_build(monkeypatch, tmp_path, compiler: str) -> None:
    monkeypatch.setenv("CXX", compiler)
    monkeypatch.setattr(fused_cpu, "_BUILD_DIR", tmp_path)
    monkeypatch.setattr(fused_cpu, "_state", {"tried": False, "lib": None, "error": None, "build_failed": False})
    core._FUSED_WARNED.clear()


def _unroll_warnings(mode: str) -> list[str]:
    cfg = ntm.NTMConfig(4, 2, memory_rows=8, memory_width=4, controller_size=8, fused_memory=mode)
    params = ntm.init_params(jax.random.key(11), cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys, _, _ = ntm.unroll(params, cfg, jnp.ones((2, 4)))
    assert ys.shape == (2, 2)
    return [str(w.message) for w in caught]


def test_no_compiler_is_a_silent_fallback_under_auto_and_a_warning_under_on(monkeypatch, tmp_path):
    _fresh_build(monkeypatch, tmp_path, "no-such-compiler-xyz")
    try:
        assert not fused_cpu.available() and not fused_cpu.build_failed()
        assert "no-such-compiler-xyz" in fused_cpu.unavailable_reason()
        assert _unroll_warnings("auto") == []
        assert any("unavailable" in w for w in _unroll_warnings("on"))
        with pytest.raises(RuntimeError, match="unavailable"):
            fused_cpu.memory_step(*_inputs(jax.random.key(0), 4, 8, 1, 1, 1))
    finally:
        core._FUSED_WARNED.clear()


def test_a_failed_build_is_one_warning_even_under_auto(monkeypatch, tmp_path):
    _fresh_build(monkeypatch, tmp_path, "false")  # a "compiler" that exits 1
    try:
        assert not fused_cpu.available() and fused_cpu.build_failed()
        first, again = _unroll_warnings("auto"), _unroll_warnings("auto")
        assert len(first) == 1 and "failed to build" in first[0] and "pure-JAX" in first[0]
        assert again == []
    finally:
        core._FUSED_WARNED.clear()


def test_the_build_goes_to_a_private_cache_and_a_tampered_library_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fused_cpu._cache_dir() == tmp_path / ".cache" / "ntm-search" / "fused"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fused_cpu._cache_dir() == tmp_path / "xdg" / "ntm-search" / "fused"
    build = tmp_path / "xdg" / "ntm-search" / "fused"
    monkeypatch.setattr(fused_cpu, "_BUILD_DIR", build)
    fake = tmp_path / "fake-cxx"  # a "compiler" that writes a new library to its -o argument: no real build
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\necho "built $(date +%s%N)" > "$2"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    lib = fused_cpu._build()
    assert lib.parent == build and (build.stat().st_mode & 0o777) == 0o700
    assert lib.with_suffix(".sha256").read_text().strip() == fused_cpu._digest(lib)
    mtime = lib.stat().st_mtime_ns
    assert fused_cpu._build() == lib and lib.stat().st_mtime_ns == mtime  # a verified build is reused
    lib.write_bytes(b"not a library")
    assert fused_cpu._build() == lib and fused_cpu._digest(lib) == lib.with_suffix(".sha256").read_text().strip()
    assert lib.read_bytes() != b"not a library"


def test_float64_falls_back_to_pure_jax_warning_under_on():
    """Under x64 with float64 parameters (the compiled NTM's case) the float32 kernel is not used."""
    with jax.enable_x64(True):
        cfg = ntm.NTMConfig(4, 2, memory_rows=8, memory_width=4, controller_size=8)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), ntm.init_params(jax.random.key(12), cfg))
        xs = jax.random.normal(jax.random.key(13), (3, 4), jnp.float64)
        state = jax.tree.map(lambda a: a.astype(jnp.float64), ntm.initial_state(params, cfg))
        core._FUSED_WARNED.clear()
        with pytest.warns(RuntimeWarning, match="float64"):
            got, _, _ = ntm.unroll(params, dataclasses.replace(cfg, fused_memory="on"), xs, state=state)
        want, _, _ = ntm.unroll(params, dataclasses.replace(cfg, fused_memory="off"), xs, state=state)
        assert got.dtype == jnp.float64
        np.testing.assert_array_equal(got, want)
    core._FUSED_WARNED.clear()


def test_write_gate_through_the_fused_path_matches_pure_jax():
    """The gate scales erase and add before the memory step, so the kernel needs nothing new."""
    cfg = ntm.NTMConfig(3, 2, memory_rows=12, memory_width=5, controller_size=8, write_gate=True, fused_memory="off")
    params = ntm.init_params(jax.random.key(14), cfg)
    xs = jax.random.normal(jax.random.key(15), (4, 3))

    def loss(p, c):
        ys, _, final = ntm.unroll(p, c, xs)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.memory ** 2)

    fused = dataclasses.replace(cfg, fused_memory="on")
    np.testing.assert_allclose(loss(params, fused), loss(params, cfg), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.grad(loss)(params, cfg)), jax.tree.leaves(jax.grad(loss)(params, fused))):
        assert _rel_err(a, b) < 1e-4
