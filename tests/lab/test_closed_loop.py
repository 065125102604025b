"""Thinking steps and the query oracle of polymax: the schedule, the feedback the task gives, the closed loop the
recurrent models run (against a step-by-step loop written out by hand), and the classical optimisers."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntm
from lab import optimisers
from lab.models import ModelConfig, make_model
from tasks import ClosedLoop, feedback_of, make_task
from tasks.polymax import cheb_eval, maximise

SMALL = ModelConfig(memory_rows=8, memory_width=4, controller_size=8, hidden_size=8)


def test_thinking_steps_follow_the_schedule_and_show_every_coefficient():
    for scale in (0.25, 1.0, 4.0):
        task = make_task("polymax", think=2.0, step_scale=scale).with_sizes(2, 6)
        b = task.sample(jax.random.key(0), 64)
        d = np.asarray(b.size)
        want = (d + 1) + np.ceil(np.round(scale * 2.0 * (d + 1), 9)).astype(int) + 2
        np.testing.assert_array_equal(np.asarray(b.steps), want)
        present = np.asarray(b.inputs[..., 1])  # [T, B]
        np.testing.assert_array_equal(present.sum(0), d + 1)  # all coefficients, even at 0.25x
        for i in range(3):  # the reference (roots of P') agrees with the sampler
            targets, mask = task.reference(np.asarray(b.inputs[:, i]), int(b.steps[i]))
            np.testing.assert_allclose(targets[:, 0], np.asarray(b.targets[:, i, 0]), atol=1e-5)


def test_extra_steps_are_a_training_option_and_vary_each_examples_steps():
    with pytest.raises(ValueError, match="training"):
        make_task("polymax", extra_steps=3)
    base = make_task("polymax", think=1.0)
    train = make_task("polymax", think=1.0, training={"extra_steps": 3})
    b0, b1 = base.sample(jax.random.key(1), 256), train.sample(jax.random.key(1), 256)
    np.testing.assert_array_equal(np.asarray(b0.aux), np.asarray(b1.aux))  # the same instances
    extra = np.asarray(b1.steps - b0.steps)
    assert set(extra.tolist()) == {0, 1, 2, 3} and train.max_steps() == base.max_steps() + 3


def test_oracle_feedback_is_the_polynomial_at_the_last_output():
    task = make_task("polymax", think=1.0, oracle="slope").with_sizes(3, 5)
    assert isinstance(task, ClosedLoop) and feedback_of(task) is not None
    assert feedback_of(make_task("polymax", think=1.0)) is None and feedback_of(make_task("argmax")) is None
    b = task.sample(jax.random.key(2), 4)
    q = 2 + task.index_bits
    for i in range(4):
        x = b.inputs[:, i]
        d = int(b.size[i])
        assert float(x[d, q]) == 0 and float(x[d + 1, q]) == 1  # queries start after the last coefficient
        for logit in (-30.0, -0.7, 0.0, 2.0, 30.0):
            out = task.feedback(x[d + 1], jnp.array([logit]), x)
            xp = jax.nn.sigmoid(logit)
            p, dp = cheb_eval(b.aux[i:i + 1], jnp.array([[xp]]))
            np.testing.assert_allclose(np.asarray(out[q + 1:]), [xp, p[0, 0], np.arcsinh(dp[0, 0])], rtol=2e-3,
                                       atol=2e-3)
        np.testing.assert_array_equal(np.asarray(task.feedback(x[0], jnp.array([1.0]), x)), np.asarray(x[0]))
    value = dataclasses.replace(task, oracle="value")
    assert float(value.feedback(b.inputs[4, 0], jnp.array([0.3]), b.inputs[:, 0])[q + 3]) == 0.0
    with pytest.raises(ValueError, match="thinking steps"):
        make_task("polymax", oracle="value")
    with pytest.raises(ValueError, match="oracle"):
        make_task("polymax", think=1.0, oracle="newton")


def _hand_loop(task, params, cfg, inputs, steps):
    """The closed loop written out with ntm.core.step: step t runs on feedback(inputs[t], y[t-1])."""
    state = ntm.core.initial_state(params, cfg)
    y = jnp.zeros((cfg.output_size,))
    out = []
    for t in range(inputs.shape[0]):
        if t < steps:
            state, y = ntm.core.step(params, state, task.feedback(inputs[t], y, inputs), cfg)
            out.append(y)
        else:
            out.append(jnp.zeros_like(y))
    return jnp.stack(out)


@pytest.mark.parametrize("name", ["ntm", "lstm"])
def test_closed_loop_models_batched_equal_one_by_one_and_jit_equal_eager(name):
    task = make_task("polymax", think=1.0, oracle="slope").with_sizes(2, 4)
    b = task.sample(jax.random.key(3), 5)
    model = make_model(name, task.input_size, 1, SMALL, task.max_steps(), 0, feedback=feedback_of(task))
    open_ = make_model(name, task.input_size, 1, SMALL, task.max_steps(), 0)
    logits = model(b.inputs, b.steps)[0]
    one = jnp.concatenate([model(b.inputs[:, i:i + 1], b.steps[i:i + 1])[0] for i in range(5)], 1)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(one), atol=1e-5)
    from flax import nnx
    jitted = nnx.jit(lambda m, x, s: m(x, s)[0])(model, b.inputs, b.steps)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(jitted), atol=1e-5)
    # the feedback changes what the model does after the coefficients, never before
    diff = np.abs(np.asarray(logits - open_(b.inputs, b.steps)[0]))[..., 0]  # [T, B]
    d = np.asarray(b.size)
    for i in range(5):
        assert diff[: d[i] + 1, i].max() == 0 and diff[d[i] + 1:int(b.steps[i]), i].max() > 0
    if name == "ntm":
        for i in range(1):
            want = _hand_loop(task, model.cell.pure_params(), model.cfg, b.inputs[:, i], int(b.steps[i]))
            np.testing.assert_allclose(np.asarray(logits[:, i]), np.asarray(want), atol=1e-5)


def test_gradients_flow_through_the_environment():
    """The loss at the last step sends gradient to the earlier proposals through P(x) (a differentiable oracle)."""
    task = make_task("polymax", think=1.0, oracle="value").with_sizes(3, 3)
    b = task.sample(jax.random.key(4), 2)
    fb = feedback_of(task)
    x = b.inputs[:, 0]
    g = jax.grad(lambda y: fb(x[5], y, x)[2 + task.index_bits + 2])(jnp.array([0.4]))
    p_slope = cheb_eval(b.aux[:1], jax.nn.sigmoid(jnp.array([[0.4]])))[1][0, 0]
    np.testing.assert_allclose(float(g[0]), float(p_slope * jax.nn.sigmoid(0.4) * (1 - jax.nn.sigmoid(0.4))),
                               rtol=1e-3)


def test_classical_optimisers_query_their_budget_and_find_the_maximum():
    task = make_task("polymax").with_sizes(4, 4)
    c = task.sample(jax.random.key(5), 256).aux
    for name, f in optimisers.STRATEGIES.items():
        x, xs = f(c, 12)
        assert xs.shape == (256, 12) and bool(((xs >= 0) & (xs <= 1)).all()), name
        p = cheb_eval(c, xs)[0]
        np.testing.assert_allclose(np.asarray(cheb_eval(c, x[:, None])[0][:, 0]), np.asarray(p.max(1)), rtol=1e-6)
    # more queries never hurt the grid, and a fine grid is near the maximum
    r = [np.median(optimisers.regret(c, optimisers.grid(c, q)[0])) for q in (3, 9, 65)]
    assert r[0] >= r[1] >= r[2] and r[2] < 1e-3
    # golden-section is exact on a unimodal P: a downward parabola peaked at 0.3 (Chebyshev form)
    x0 = 0.3
    # -(x - x0)^2 in u = 2x - 1: x = (u + 1) / 2; (x - x0)^2 = u^2/4 + u (1/2 - x0) + (1/2 - x0)^2; u^2 = (T2 + 1)/2
    cq = jnp.array([[-(1 / 8 + (0.5 - x0) ** 2), -(0.5 - x0), -1 / 8]])
    assert abs(float(optimisers.golden(cq, 30)[0][0]) - x0) < 1e-4
    assert abs(float(maximise(cq)[0][0]) - x0) < 1e-4


def test_a_tiny_oracle_run_learns_and_is_compared_at_equal_queries(tmp_path, capsys):
    """Training runs the closed loop end to end (the model is rebuilt with the task's feedback from its run
    directory), the regret falls, and python -m lab.optimisers puts it beside every classical strategy."""
    import json

    from lab.config import TrainConfig
    from lab.trainer import train

    cfg = TrainConfig(task="polymax", model="ntm", steps=200, log_every=100, batch_size=32, lr=1e-2, min_size=2,
                      max_size=3, eval_batch_size=256, checkpoint_every=100,
                      task_options={"think": 1.0, "oracle": "slope", "step_offset": 0, "index_bits": 4},
                      model_config=ModelConfig(memory_rows=8, memory_width=4, controller_size=16))
    train(cfg, tmp_path / "run", progress=False)
    evals = [r["eval/regret"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if "eval/regret" in r]
    assert evals[-1] < 0.7 * evals[0]
    rows = optimisers.compare(str(tmp_path / "run"), (2, 5), (1.0, 2.0), batch_size=32)
    assert {r["strategy"] for r in rows} == {"model", *optimisers.STRATEGIES}
    assert {(r["degree"], r["scale"], r["queries"]) for r in rows} == {(2, 1.0, 3), (2, 2.0, 6), (5, 1.0, 6), (5, 2.0, 12)}
    png = tmp_path / "queries.png"
    assert optimisers.main([str(tmp_path / "run"), "--sizes", "3", "--batch-size", "32", "--figure", str(png),
                            "--figure-degree", "3"]) == 0
    assert png.stat().st_size > 0
    assert optimisers.main([str(tmp_path / "run"), "--sizes", "0"]) == 2
    assert optimisers.main([str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


def test_the_anytime_loss_scores_every_output_after_the_coefficients():
    """trace_loss (step supervision of an optimiser: its running answer is its latest proposal) is the mean gap of
    the outputs on steps d .. steps - 1, zero when every one of them is x*, and needs thinking steps."""
    from lab.config import TrainConfig
    from lab.rundir import build_task

    task = make_task("polymax", think=1.0, oracle="slope").with_sizes(2, 5)
    b = task.sample(jax.random.key(6), 6)
    logits = jax.random.normal(jax.random.key(7), b.targets.shape)
    got = np.asarray(task.trace_loss(logits, b))
    for i in range(6):
        d, n = int(b.size[i]), int(b.steps[i])
        xs = jax.nn.sigmoid(logits[d:n, i, 0])
        p = cheb_eval(b.aux[i:i + 1], xs[None])[0][0]
        best = float(maximise(b.aux[i:i + 1])[1][0])
        np.testing.assert_allclose(got[i], float(jnp.mean((best - p) ** 2)), rtol=1e-4, atol=1e-6)
    # anytime="best": each step scored by the best output so far (a running max of P over the same outputs)
    keep = dataclasses.replace(task, anytime="best")
    got_best = np.asarray(keep.trace_loss(logits, b))
    for i in range(6):
        d, n = int(b.size[i]), int(b.steps[i])
        p = np.asarray(cheb_eval(b.aux[i:i + 1], jax.nn.sigmoid(logits[d:n, i, 0])[None])[0][0])
        best = float(maximise(b.aux[i:i + 1])[1][0])
        np.testing.assert_allclose(got_best[i], np.mean((best - np.maximum.accumulate(p)) ** 2), rtol=1e-4, atol=1e-6)
    assert (got_best <= got + 1e-7).all() and np.isfinite(got_best).all()
    with pytest.raises(ValueError, match="anytime"):
        make_task("polymax", think=1.0, anytime="last")
    x_star = (b.targets[..., 0] * b.mask).sum(0)
    perfect = jnp.broadcast_to(jnp.log(x_star / (1 - x_star + 1e-12) + 1e-12)[None, :, None], b.targets.shape)
    assert float(jnp.abs(task.trace_loss(perfect, b)).max()) < 1e-6
    with pytest.raises(ValueError, match="running answer"):
        build_task(TrainConfig(task="polymax", trace_loss=1.0))
    assert build_task(TrainConfig(task="polymax", task_options={"think": 1.0}, trace_loss=1.0)).think == 1.0


def test_without_an_index_no_input_unit_is_tied_to_a_degree():
    """index_bits=0: coefficient t is the t-th present step; every degree has the same input units, the reference
    and the oracle still work, and a negative count is refused."""
    task = make_task("polymax", think=1.0, oracle="value", index_bits=0).with_sizes(2, 12)
    assert task.input_size == 2 + 4
    b = task.sample(jax.random.key(8), 6)
    for i in range(3):
        targets, _ = task.reference(np.asarray(b.inputs[:, i]), int(b.steps[i]))
        np.testing.assert_allclose(targets[:, 0], np.asarray(b.targets[:, i, 0]), atol=1e-5)
        d = int(b.size[i])
        out = task.feedback(b.inputs[d + 1, i], jnp.array([0.0]), b.inputs[:, i])
        np.testing.assert_allclose(float(out[4]), float(cheb_eval(b.aux[i:i + 1], jnp.array([[0.5]]))[0][0, 0]),
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="index_bits"):
        make_task("polymax", index_bits=-1)
