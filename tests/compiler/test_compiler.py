"""The register-machine compiler: compiled NTM == interpreter == task reference, exactly.

Runs in ~30 s on 2 CPU cores: modsquare for every n in 2..3000 (one batch), a few large n in
float64, list argmax, and seeded random programs against the interpreter.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntm
from compiler import fragility, lang, size
from compiler.compile import CompileError, compile_program
from compiler.lang import Input, Program, Reg
from compiler.programs import ARGMAX, MODSQUARE, modsquare_steps
from compiler.run import decode, exact, final_outputs, run_constant_input
from tasks.modsquare import loop_bound, solve


def test_interpreter_matches_the_task_reference():
    for n in list(range(2, 300)) + [1009, 4096, 65521]:
        assert lang.interpret(MODSQUARE, [[n]] * modsquare_steps(n))[-1] == solve(n), n


def test_compiled_modsquare_equals_reference_for_every_n_up_to_3000():
    c = compile_program(MODSQUARE)
    ns = np.arange(2, 3001)
    steps = np.array([modsquare_steps(n) for n in ns])
    y, state = run_constant_input(c, ns[:, None], steps, return_state=True)
    assert exact(y).all()  # integers, not merely close to them
    k = np.array([solve(n) for n in ns])
    np.testing.assert_array_equal(decode(y), k)
    # the loop state lives in memory row 0, scaled by 2^-32: i = L + 1, s = i^2 mod n, k, best = k^2 mod n
    np.testing.assert_array_equal(state.memory[:, 0, :4] * 2.0**32, np.stack([steps, steps**2 % ns, k, k**2 % ns], 1))
    assert (state.memory[:, :, 4:] == np.array([[1, 0], [0, 1]])).all()  # tags untouched
    # weightings are exactly one-hot; the read head and unconditional write head 0 sit on row 0
    assert set(np.unique(state.read_weights)) | set(np.unique(state.write_weights)) == {0.0, 1.0}
    assert (state.read_weights[:, 0] == np.array([1, 0])).all() and (state.write_weights[:, 0] == np.array([1, 0])).all()


def test_heads_follow_the_branches_step_by_step():
    """Write head 3 (k := i if s > best) lands on row 0 exactly on the steps where k changes."""
    c = compile_program(MODSQUARE)
    n = 97
    T = modsquare_steps(n)
    ys, trace, _ = jax.jit(lambda x: ntm.unroll(c.params, c.cfg, x))(jnp.full((T, 1), float(n)))
    regs = lang.interpret_registers(MODSQUARE, [[n]] * T)
    np.testing.assert_array_equal(ys[:, 0], [r["k"] for r in regs])
    k_prev = np.array([0] + [r["k"] for r in regs[:-1]])
    changed = np.array([r["k"] for r in regs]) != k_prev
    ww = np.asarray(trace.write_weights)  # [T, W, N]
    np.testing.assert_array_equal(ww[:, 3, 0] == 1.0, changed)
    x = np.array([((r["i"] - 1) ** 2 % n) + 2 * (r["i"] - 1) + 1 for r in regs])  # s + 2i + 1 before reduction
    np.testing.assert_array_equal(ww[:, 2, 0] == 1.0, x >= n)  # head 2: subtract n once
    np.testing.assert_array_equal(ww[:, 1, 0] == 1.0, x >= 2 * n)  # head 1: and a second time
    assert (ww[:, 0, 0] == 1.0).all() and (np.asarray(trace.read_weights)[:, 0, 0] == 1.0).all()


def test_compiled_modsquare_float64_large_n():
    rng = np.random.default_rng(0)
    ns = np.concatenate([rng.integers(2**19, 2**20, 3), [2**20 - 3]])  # ~16k steps each
    with jax.enable_x64(True):
        c = compile_program(MODSQUARE, dtype=jnp.float64)
        y = run_constant_input(c, ns[:, None], np.array([modsquare_steps(n) for n in ns]), batch=4, chunk=4096)
    assert y.dtype == np.float64 and exact(y).all()
    np.testing.assert_array_equal(decode(y), [solve(n) for n in ns])


def test_parameter_count_is_independent_of_n():
    c = compile_program(MODSQUARE)  # compile_program never sees n: one parameter set for every n
    assert ntm.num_params(c.params) == 1839
    rows = size.size_table(range(4, 31, 2))
    assert len({r["ntm_params"] for r in rows}) == 1
    assert [r["ntm_steps"] for r in rows] == [loop_bound(2**b) + 1 for b in range(4, 31, 2)]
    assert all(r["unrolled_params"] == r["ntm_steps"] * rows[0]["step_params"] for r in rows)


def test_compiled_argmax_equals_numpy():
    c = compile_program(ARGMAX)
    rng = np.random.default_rng(1)
    B, T = 64, 12
    vals = rng.integers(-50, 50, (B, T))
    vals[:8] = rng.integers(0, 3, (8, T))  # many ties: the first maximum must win
    steps = rng.integers(1, T + 1, B)
    y = final_outputs(c.params, c.cfg, jnp.asarray(vals[..., None], jnp.float32), jnp.asarray(steps))
    expected = [int(np.argmax(v[:s])) for v, s in zip(vals, steps)]
    np.testing.assert_array_equal(decode(y), expected)
    assert exact(y).all()


# ---- random programs against the interpreter ----


def _random_program(rng: np.random.Generator) -> Program:
    regs = [f"r{j}" for j in range(rng.integers(1, 4))]
    inputs = [f"x{j}" for j in range(rng.integers(1, 3))]

    def affine():
        e = lang.lift(int(rng.integers(-3, 4)))
        for _ in range(rng.integers(1, 3)):
            leaf = Reg(str(rng.choice(regs))) if rng.random() < 0.6 else Input(str(rng.choice(inputs)))
            e = e + int(rng.choice([-2, -1, 1, 2])) * leaf
        return e

    def cond(depth):
        r = rng.random()
        if depth == 0 or r < 0.5:
            return lang.Compare(str(rng.choice(lang.COMPARISONS)), affine(), affine())
        if r < 0.65:
            return lang.not_(cond(depth - 1))
        return (lang.and_ if r < 0.85 else lang.or_)(cond(depth - 1), cond(depth - 1))

    def expr(depth):
        r = rng.random()
        if depth == 0 or r < 0.3:
            return affine()
        if r < 0.7:
            return lang.select(cond(1), expr(depth - 1), expr(depth - 1))
        if r < 0.85:
            return lang.mod(affine(), affine(), int(rng.integers(1, 4)))
        return expr(depth - 1) - expr(depth - 1)

    assigned = rng.permutation(regs)[: rng.integers(1, len(regs) + 1)]
    return Program(tuple(inputs), tuple((r, int(rng.integers(-5, 6))) for r in regs),
                   tuple((str(r), expr(2)) for r in assigned), str(rng.choice(regs)))


@pytest.mark.parametrize("seed", range(8))
def test_random_program_compiled_equals_interpreter(seed):
    rng = np.random.default_rng(seed)
    program = _random_program(rng)
    B, T = 16, 6
    xs = rng.integers(-10, 11, (B, T, len(program.inputs)))
    traces = [lang.interpret_registers(program, x) for x in xs]
    ok = np.array([max(abs(v) for regs in tr for v in regs.values()) < 2**22 for tr in traces])  # float32-exact range
    assert ok.sum() >= B // 2
    expected = np.array([[regs[program.output] for regs in tr] for tr in traces])
    c = compile_program(program)
    ys = jax.jit(jax.vmap(lambda x: ntm.unroll(c.params, c.cfg, x)[0][:, 0]))(jnp.asarray(xs, jnp.float32))  # [B, T]
    np.testing.assert_array_equal(np.asarray(ys)[ok], expected[ok], err_msg=lang.show(program.body[0][1]))


def test_comparing_a_value_of_the_same_iteration_is_a_compile_error():
    s = Reg("s")
    bad = Program(("n",), (("s", 0),), (("s", lang.select(lang.gt(lang.mod(s + 1, Input("n"), 2), 0), 1, 0)),), "s")
    with pytest.raises(CompileError, match="affine"):
        compile_program(bad)
    assert lang.interpret(bad, [[3]] * 3) == [1, 1, 1]  # the interpreter runs it regardless


def test_perturb_relative_keeps_zeros_and_zero_sigma_is_identity():
    params = compile_program(MODSQUARE).params
    same = fragility.perturb(params, 0.0, jax.random.key(0))
    assert all((a == b).all() for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same)))
    noisy = fragility.perturb(params, 1e-3, jax.random.key(0))
    w, v = np.asarray(params["heads"]["w"]), np.asarray(noisy["heads"]["w"])
    assert ((w == 0) == (v == 0)).all() and not (w == v).all()
    nz = w != 0
    assert np.abs(v[nz] / w[nz] - 1).max() < 1e-2
    added = fragility.perturb(params, 1e-3, jax.random.key(0), mode="additive")
    assert (np.asarray(added["heads"]["w"]) != 0).all()


def test_finetune_runs_and_lr_zero_keeps_the_compiled_answers_exactly():
    from compiler import finetune

    c = compile_program(MODSQUARE)
    ns = np.array([2, 7, 20, 63, 97, 128])
    before = finetune.accuracy(c, c.params, ns)
    assert before == {"accuracy": 1.0, "exact_integer": 1.0, "finite": 1.0}
    # at the compiled weights the loss and every gradient entry are exactly 0
    p, log = finetune.finetune(c, c.params, 1e-3, steps=2, batch=4, train_max_n=64)
    assert [r["loss"] for r in log] == [0.0, 0.0] and all(r["grad_nonzero"] == 0 for r in log)
    # from perturbed weights gradients are nonzero, but lr = 0 leaves every weight bit-identical
    noisy = fragility.perturb(c.params, 1e-5, jax.random.key(0), "relative")
    p, log = finetune.finetune(c, noisy, 0.0, steps=2, batch=4, train_max_n=64)
    assert all(r["grad_finite"] and r["grad_nonzero"] > 0 for r in log)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(noisy)))
    assert finetune.accuracy(c, p, ns) == finetune.accuracy(c, noisy, ns)


def test_show_heads_png(tmp_path):
    from compiler import show

    show.heads_png(30, str(tmp_path / "heads.png"))
    assert (tmp_path / "heads.png").stat().st_size > 10_000


def test_compiled_ntm_asks_for_exact_float32_matmuls():
    """GPUs run float32 matmuls in TF32 unless asked: the compiled NTM's config asks for "highest", and its
    every step lowers with that precision; a default NTM's does not."""
    c = compile_program(MODSQUARE)
    assert c.cfg.matmul_precision == "highest"
    xs, steps = jnp.ones((2, 3, c.cfg.input_size)), jnp.array([3, 2])
    hlo = jax.jit(final_outputs, static_argnums=1).lower(c.params, c.cfg, xs, steps).as_text()
    assert "precision = [HIGHEST, HIGHEST]" in hlo and "DEFAULT" not in hlo
    plain = dataclasses.replace(c.cfg, matmul_precision=None)
    assert "HIGHEST" not in jax.jit(final_outputs, static_argnums=1).lower(c.params, plain, xs, steps).as_text()
    with pytest.raises(ValueError, match="matmul_precision"):
        dataclasses.replace(c.cfg, matmul_precision="exact")
