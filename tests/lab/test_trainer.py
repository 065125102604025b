"""Training end to end on tiny configurations: it learns, it does not recompile, checkpoints
round-trip, resume equals an uninterrupted run, non-finite steps stop the run cleanly, and bad
command lines give exit code 2 without touching existing runs."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train as train_cli
from lab import evaluation, models
from lab.cli import run_cli
from lab.config import TrainConfig
from lab.models import ModelConfig
from lab.rundir import build_model, build_task, load_run
from lab.trainer import TrainingError, head_entropy, head_hint, make_program, train, write_hint

TINY = TrainConfig(
    steps=300, log_every=50, batch_size=16, lr=1e-2, min_size=1, max_size=4, eval_batch_size=64,
    checkpoint_every=100, model_config=ModelConfig(memory_rows=16, memory_width=8, controller_size=32),
)


def _metrics(workdir):
    return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs") / "copy"
    summary = train(TINY, workdir, progress=False)
    return workdir, summary


def test_tiny_copy_run_learns(tiny_run):
    workdir, summary = tiny_run
    rows = _metrics(workdir)
    assert rows[0]["step"] == 0 and rows[-1]["step"] == TINY.steps
    assert rows[-1]["eval/loss"] < 0.5 * rows[0]["eval/loss"]
    assert rows[-1]["eval/bits_per_seq"] < 0.5 * rows[0]["eval/bits_per_seq"]
    for r in rows[1:]:
        assert {"step", "examples_seen", "train/loss", "eval/bits_per_seq", "eval/exact_match"} <= set(r)
        assert r["examples_seen"] == r["step"] * TINY.batch_size
    assert json.loads((workdir / "config.json").read_text()) == json.loads(TINY.to_json())


def test_checkpoint_restores_the_trained_model(tiny_run):
    workdir, summary = tiny_run
    cfg, task, model, step = load_run(workdir)
    assert cfg == TINY and step == TINY.steps
    key = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 1))[1]
    batch = task.sample(key, cfg.eval_batch_size)
    logits, _ = model(batch.inputs, batch.steps)
    bits = float(task.metrics(logits, batch)["bits_per_seq"].mean())
    assert bits == pytest.approx(summary["eval/bits_per_seq"], abs=1e-5)


def test_second_dispatch_does_not_recompile():
    task = build_task(TINY)
    graphdef, params = models.split(build_model(TINY, task))
    prog = make_program(TINY, task, graphdef, jax.random.key(0))
    params, opt, bad = prog.initial_carry(params)
    for start in (0, 10, 20):
        params, opt, bad, _ = prog.train_chunk(params, opt, bad, jnp.int32(start), prog.data_key, 10)
    assert prog.train_chunk._cache_size() == 1


def test_resume_equals_uninterrupted(tmp_path):
    cfg = dataclasses.replace(TINY, steps=100, log_every=20, checkpoint_every=40)
    train(cfg, tmp_path / "a", progress=False)
    train(dataclasses.replace(cfg, steps=40), tmp_path / "b", progress=False)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("train/loss", "eval/loss"):
            if k in ra:
                assert ra[k] == pytest.approx(rb[k], rel=1e-4), (ra["step"], k)


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, monkeypatch):
    from tasks.copy import Copy

    clean = Copy.loss
    # poison about a quarter of the batches (those whose first example has length 4)
    monkeypatch.setattr(Copy, "loss", lambda self, logits, b: jnp.where(b.size[0] == 4, jnp.nan, clean(self, logits, b)))
    cfg = dataclasses.replace(TINY, steps=100, log_every=20, max_nonfinite=50)
    summary = train(cfg, tmp_path / "some-nan", progress=False)
    rows = _metrics(tmp_path / "some-nan")
    assert 5 < rows[-1]["train/nonfinite_steps"] < 60
    assert np.isfinite(summary["eval/loss"]) and rows[-1]["eval/loss"] < rows[0]["eval/loss"]


def test_nonfinite_in_a_row_stop_the_run_keeping_finite_checkpoint(tmp_path, monkeypatch):
    from tasks.copy import Copy

    clean = Copy.loss
    cfg = dataclasses.replace(TINY, steps=40, log_every=10, checkpoint_every=10)
    train(cfg, tmp_path / "nan", progress=False)
    monkeypatch.setattr(Copy, "loss", lambda self, logits, b: clean(self, logits, b) * jnp.nan)
    with pytest.raises(TrainingError, match="non-finite"):
        train(dataclasses.replace(cfg, steps=200, max_nonfinite=5), tmp_path / "nan", resume=True, progress=False)
    rows = _metrics(tmp_path / "nan")
    assert rows[-1]["train/nonfinite_steps"] >= 5
    _, _, model, step = load_run(tmp_path / "nan")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(models.split(model)[1]))


def _cli(argv, capsys):
    try:
        code = run_cli(train_cli.main, argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--task", "nope"], "invalid choice"),
    (["--model", "transformer9"], "invalid choice"),
    (["--min-size", "0"], "copy length"),
    (["--min-size", "5", "--max-size", "2"], "copy length"),
    (["--batch-size", "0"], "batch_size"),
    (["--lr", "-1"], "lr"),
    (["--controller", "gru"], "controller"),
    (["--steps", "x"], "invalid int"),
    (["--head-entropy", "-0.1"], "head_entropy"),
    (["--task", "argmax", "--task-option", "nope=1"], "has no option ['nope']"),
    (["--task", "argmax", "--task-option", "levels"], "expected KEY=VALUE"),
    (["--task", "argmax", "--task-option", "labels=shuffled"], "labels must be"),
    (["--experiment", "argmax-quick", "--task-option", "levels=4"], "with a preset use --set"),
    (["--experiment", "argmax-quick", "--train-option", "near_ties=0.5"], "train_distribution.KEY=VALUE"),
    (["--task", "argmax", "--task-option", "near_ties=0.5"], "--train-option"),
    (["--task", "argmax", "--train-option", "levels=16"], "not options of its training distribution"),
    (["--task", "copy", "--trace-loss", "1"], "running answer"),
    (["--task", "argmax", "--trace-loss", "-1"], "trace_loss"),
    (["--model", "lstm", "--head-entropy", "0.1"], "head_entropy"),
    (["--progressive-loss", "1.5"], "progressive_loss"),
    (["--batch-size", "12", "--microbatches", "5"], "microbatches"),
    (["--model", "mlp", "--progressive-loss", "0.5"], "progressive_loss"),
    (["--fused-memory", "fast"], "invalid choice"),
])
def test_bad_command_lines_exit_2_with_one_line(argv, message, capsys, tmp_path):
    code, err = _cli(argv + ["--workdir", str(tmp_path / "w"), "--steps", "1"] if "--steps" not in argv else argv, capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_existing_run_is_not_clobbered(tmp_path, capsys):
    work = tmp_path / "run"
    work.mkdir()
    (work / "config.json").write_text("{}")
    (work / "precious").write_text("keep me")
    code, err = _cli(["--workdir", str(work), "--steps", "1"], capsys)
    assert code == 2 and "--resume" in err
    assert (work / "precious").read_text() == "keep me"
    code, err = _cli(["--workdir", str(work), "--steps", "1", "--resume"], capsys)
    assert code == 2 and (work / "precious").exists()


def test_overwrite_moves_the_old_run_aside(tmp_path, capsys):
    work = tmp_path / "run"
    work.mkdir()
    (work / "precious").write_text("keep me")
    code, _ = _cli(["--workdir", str(work), "--steps", "2", "--log-every", "2", "--steps-per-dispatch", "1",
                    "--memory-rows", "8", "--controller-size", "8", "--no-progress", "--overwrite"], capsys)
    assert code == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and (moved[0] / "precious").read_text() == "keep me"
    assert (work / "config.json").exists()


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_masks_past_its_steps_and_ignores_padding(name):
    """Same interface for every model: logits [T, B, Y], zero past each example's steps, and an
    example's outputs do not depend on which other examples share its batch."""
    task = build_task(dataclasses.replace(TINY, model=name))
    model = build_model(dataclasses.replace(TINY, model=name), task)
    batch = task.sample(jax.random.key(0), 6)
    logits, _ = model(batch.inputs, batch.steps)
    T = task.max_steps()
    assert logits.shape == (T, 6, task.output_size)
    past = jnp.arange(T)[:, None] >= batch.steps[None, :]
    assert bool(jnp.all(jnp.where(past[..., None], logits, 0.0) == 0.0))
    one, _ = model(batch.inputs[:, :1], batch.steps[:1])
    np.testing.assert_allclose(one[:, 0], logits[:, 0], rtol=1e-5, atol=1e-5)


def test_sharded_run_equals_single_device_run(tmp_path):
    """Data parallelism over 8 (simulated) devices computes the same training curve as one device."""
    assert len(jax.devices()) == 8
    cfg = dataclasses.replace(TINY, steps=40, log_every=10, checkpoint_every=40)
    one = train(dataclasses.replace(cfg, devices=1), tmp_path / "one", progress=False)
    eight = train(dataclasses.replace(cfg, devices=8), tmp_path / "eight", progress=False)
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "eight")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a[1:], b[1:]):
        np.testing.assert_allclose(ra["train/loss"], rb["train/loss"], rtol=2e-4)
        np.testing.assert_allclose(ra["eval/loss"], rb["eval/loss"], rtol=2e-4)
    assert one["step"] == eight["step"] == 40


def test_batch_that_does_not_split_over_devices_is_a_clear_error(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["--task", "copy", "--batch-size", "12", "--devices", "8", "--workdir", str(workdir), "--steps", "10"]
    assert run_cli(train_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not split over 8 devices" in err
    assert not workdir.exists()
    assert run_cli(train_cli.main, ["--devices", "9", "--workdir", str(workdir)]) == 2
    assert "only 8 device" in capsys.readouterr().err


def test_tensorboard_events_hold_the_logged_scalars(tiny_run):
    """With tensorboardX installed (the dev and tensorboard extras), every logged scalar is in <run>/tb."""
    import struct

    pytest.importorskip("tensorboardX")
    from tensorboardX.proto.event_pb2 import Event

    workdir, _ = tiny_run
    (path,) = (workdir / "tb").glob("events.out.tfevents.*")
    data, i, events = path.read_bytes(), 0, []
    while i < len(data):  # TFRecord framing: length, its CRC, the record, its CRC
        (n,) = struct.unpack("<Q", data[i:i + 8])
        events.append(Event.FromString(data[i + 12:i + 12 + n]))
        i += 16 + n
    logged: dict[int, dict[str, float]] = {}
    for ev in events:
        for v in ev.summary.value:
            logged.setdefault(ev.step, {})[v.tag] = v.simple_value
    rows = _metrics(workdir)
    assert sorted(logged) == [r["step"] for r in rows]
    for row in rows:
        assert set(logged[row["step"]]) == set(row) - {"step"}
        for k, x in logged[row["step"]].items():
            assert x == pytest.approx(row[k], rel=1e-6, abs=1e-6)


def test_wandb_is_off_by_default_and_a_clear_error_when_missing(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    code = run_cli(train_cli.main, ["--workdir", str(tmp_path / "w"), "--steps", "1", "--wandb", "proj"])
    assert code == 2 and "pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    """A training process killed with SIGKILL mid-run (possibly mid-checkpoint-write) and resumed
    with --resume logs the same metrics as a run that never stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time as _time

    flags = ["--task", "copy", "--max-size", "4", "--memory-rows", "16", "--memory-width", "8",
             "--controller-size", "16", "--batch-size", "8", "--steps", "300", "--log-every", "10",
             "--checkpoint-every", "10", "--no-progress"]
    cmd = [sys.executable, "train.py", *flags]
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run(cmd + ["--workdir", str(tmp_path / "ref")], cwd=cwd, check=True, capture_output=True)
    victim = subprocess.Popen(cmd + ["--workdir", str(tmp_path / "killed")], cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    for _ in range(3000):  # poll (not a timing threshold): wait until a few checkpoints exist
        done = [d for d in ckpts.iterdir() if d.name.isdigit()] if ckpts.is_dir() else []
        if len(done) >= 2 or victim.poll() is not None:
            break
        _time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed; give it more steps"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    subprocess.run(cmd + ["--workdir", str(tmp_path / "killed"), "--resume"], cwd=cwd, check=True, capture_output=True)
    a, b = _metrics(tmp_path / "ref"), _metrics(tmp_path / "killed")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("train/loss", "eval/loss", "eval/bits_per_seq"):
            if k in ra:
                np.testing.assert_allclose(ra[k], rb[k], rtol=1e-6, err_msg=f"{k} at step {ra['step']}")


def test_size_buckets_compile_once_each_and_cover_the_range(tmp_path, caplog):
    """A run over 3 size buckets compiles train_chunk once per bucket it uses, never per step, and
    each bucket pads only to its own largest size."""
    import logging

    cfg = dataclasses.replace(TINY, steps=120, log_every=20, steps_per_dispatch=10, checkpoint_every=1000,
                              min_size=1, max_size=8, size_buckets=3)
    task = build_task(cfg)
    from lab.trainer import bucket_schedule, size_buckets

    buckets = size_buckets(task, 3)
    assert [(b.min_size, b.max_size) for b in buckets] == [(1, 3), (4, 6), (7, 8)]
    assert [b.max_steps() for b in buckets] == [2 * 3 + 1, 2 * 6 + 1, 2 * 8 + 1]  # L inputs, delimiter, L outputs
    used = {bucket_schedule(cfg, buckets, s) for s in range(0, cfg.steps, cfg.steps_per_dispatch)}
    assert len(used) == 3  # this seed's schedule visits every bucket (deterministic, not luck at test time)
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax"):
            train(cfg, tmp_path / "run", progress=False)
    finally:
        jax.config.update("jax_log_compiles", False)
    compiles = [r for r in caplog.records if r.getMessage().startswith("Compiling jit(train_chunk)")]
    assert len(compiles) == len(used), [r.getMessage()[:120] for r in compiles]
    rows = _metrics(tmp_path / "run")
    assert rows[-1]["step"] == cfg.steps and all(np.isfinite(r["eval/loss"]) for r in rows)


def test_bucket_schedule_follows_bucket_widths():
    cfg = dataclasses.replace(TINY, min_size=1, max_size=20, size_buckets=2)
    from lab.trainer import bucket_schedule, size_buckets

    buckets = size_buckets(build_task(cfg), 2)
    draws = np.array([bucket_schedule(cfg, buckets, s) for s in range(0, 20_000, 10)])
    assert abs(draws.mean() - 0.5) < 0.05
    uneven = size_buckets(build_task(dataclasses.replace(cfg, max_size=4)), 3)  # sizes 1-2, 3, 4
    draws = np.array([bucket_schedule(cfg, uneven, s) for s in range(0, 20_000, 10)])
    assert np.bincount(draws, minlength=3) / draws.size == pytest.approx([0.5, 0.25, 0.25], abs=0.04)


def test_impossible_size_buckets_exit_2(tmp_path, capsys):
    rc = run_cli(train_cli.main, ["--task", "copy", "--min-size", "1", "--max-size", "4", "--size-buckets", "5",
                                  "--steps", "10", "--workdir", str(tmp_path / "r"), "--no-progress"])
    assert rc == 2 and "size_buckets" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resume_with_size_buckets_after_a_partial_chunk_equals_uninterrupted(tmp_path):
    """Buckets are drawn per dispatch slot and dispatches never cross a slot's edge, so a run stopped
    mid-slot (steps=45 with 10 per dispatch) and extended trains on the same buckets and data."""
    cfg = dataclasses.replace(TINY, steps=100, log_every=20, checkpoint_every=40, min_size=1, max_size=6,
                              size_buckets=2)
    train(cfg, tmp_path / "a", progress=False)
    train(dataclasses.replace(cfg, steps=45), tmp_path / "b", progress=False)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    a = {r["step"]: r for r in _metrics(tmp_path / "a")}
    b = {r["step"]: r for r in _metrics(tmp_path / "b")}
    assert 45 in b and 45 not in a
    for step in (60, 80, 100):
        for k in ("train/loss", "eval/loss"):
            assert a[step][k] == pytest.approx(b[step][k], rel=1e-4), (step, k)


def test_resume_with_size_buckets_refuses_another_dispatch_length(tmp_path):
    cfg = dataclasses.replace(TINY, steps=20, log_every=20, checkpoint_every=20, size_buckets=2)
    train(cfg, tmp_path / "r", progress=False)
    from lab.rundir import RunDirError

    with pytest.raises(RunDirError, match="steps_per_dispatch"):
        train(dataclasses.replace(cfg, steps=40, steps_per_dispatch=20), tmp_path / "r", resume=True, progress=False)


def test_init_from_starts_at_the_other_runs_parameters(tiny_run, tmp_path):
    """A curriculum stage: the new run's step-0 evaluation is the old run's final one (same eval batch)."""
    workdir, summary = tiny_run
    cfg = dataclasses.replace(TINY, steps=50, init_from=str(workdir))
    train(cfg, tmp_path / "stage2", progress=False)
    first = _metrics(tmp_path / "stage2")[0]
    assert first["step"] == 0
    assert first["eval/bits_per_seq"] == pytest.approx(summary["eval/bits_per_seq"], abs=1e-5)
    assert json.loads((tmp_path / "stage2" / "config.json").read_text())["init_from"] == str(workdir)


def test_init_from_a_missing_or_mismatched_run_exits_2_and_creates_nothing(tiny_run, tmp_path, capsys):
    workdir, _ = tiny_run
    for init, extra, message in [(tmp_path / "nowhere", [], "not a run directory"),
                                 (workdir, ["--memory-rows", "8"], "other parameter shapes")]:
        work = tmp_path / "w"
        code, err = _cli(["--workdir", str(work), "--steps", "1", "--min-size", "1", "--max-size", "4",
                          "--memory-width", "8", "--controller-size", "32", "--memory-rows", "16", *extra,
                          "--init-from", str(init)], capsys)
        assert code == 2 and message in err and "Traceback" not in err
        assert not work.exists()
    code, err = _cli(["--workdir", str(tmp_path / "w"), "--steps", "1", "--resume", "--init-from", str(tmp_path / "x")],
                     capsys)  # --resume with nothing to resume: the same
    assert code == 2 and "no run to resume" in err and not (tmp_path / "w").exists()


def test_head_entropy_is_the_mean_entropy_over_active_steps():
    T, B, N = 4, 2, 8
    one_hot = jnp.zeros((T, B, 1, N)).at[..., 3].set(1.0)
    uniform = jnp.full((T, B, 1, N), 1.0 / N)
    aux = {"read_weights": one_hot, "write_weights": uniform}  # per step: (0 + ln N) / 2 heads
    steps = jnp.array([4, 1])
    assert float(head_entropy(aux, steps)) == pytest.approx(np.log(N) / 2, rel=1e-6)
    # steps past an example's end do not count, whatever the weightings hold there
    late = {k: v.at[2:, 0].set(0.5).at[1:, 1].set(0.5) for k, v in aux.items()}
    assert float(head_entropy(late, jnp.array([2, 1]))) == pytest.approx(np.log(N) / 2, rel=1e-6)

def test_head_hint_is_the_cross_entropy_at_the_hinted_rows():
    T, B, N = 4, 2, 8
    one_hot = jnp.zeros((T, B, 1, N)).at[..., 3].set(1.0)
    uniform = jnp.full((T, B, 1, N), 1.0 / N)
    rows, on = jnp.full((T, B), 3), jnp.ones((T, B), bool)
    assert float(head_hint({"read_weights": one_hot, "write_weights": one_hot}, (rows, on, rows, on))) == 0.0
    # read exact, write uniform on half the steps it counts: mean over the 8 + 4 counted (step, example) pairs
    half = on.at[2:].set(False)
    got = head_hint({"read_weights": one_hot, "write_weights": uniform}, (rows, on, rows, half))
    assert float(got) == pytest.approx(4 * np.log(N) / 12, rel=1e-6)


def test_write_hint_is_the_gate_cross_entropy():
    writes = jnp.array([[True], [False], [False]])
    on = jnp.array([[True], [True], [False]])
    gates = jnp.array([[0.5], [0.25], [0.9]])[..., None]  # [T, B, W]
    got = write_hint({"write_gates": gates}, (writes, on))
    assert float(got) == pytest.approx((np.log(2) + np.log(4 / 3)) / 2, rel=1e-6)
    # without a gate, the write weighting's peak stands for it: the same numbers from weightings with those peaks
    weights = jnp.stack([gates[..., 0], (1 - gates[..., 0]) / 3, (1 - gates[..., 0]) / 3, (1 - gates[..., 0]) / 3], -1)
    got = write_hint({"write_weights": weights[:, :, None]}, (writes, on), gated=False)  # [T, B, W, N]
    assert float(got) == pytest.approx((np.log(2) + np.log(4 / 3)) / 2, rel=1e-6)


def test_hints_need_a_tape_the_ntm_has():
    base = TrainConfig(task="modsquare_serial", model="ntm", min_size=3, max_size=10, head_hint=1.0,
                       model_config=ModelConfig(memory_rows=8))
    with pytest.raises(ValueError, match="10 memory rows"):
        build_task(base)
    build_task(dataclasses.replace(base, max_size=8))
    with pytest.raises(ValueError, match="model ntm"):
        TrainConfig(task="argmax", model="lstm", write_hint=1.0)
    # argmax's loop writes on known steps but walks no tape: the write hint is taken, the head hint refused; a task
    # without either is refused both
    gated = ModelConfig(memory_rows=8, write_gate=True)
    build_task(TrainConfig(task="argmax", model="ntm", write_hint=1.0, model_config=gated))
    with pytest.raises(ValueError, match="head_hint: task argmax has no tape"):
        build_task(TrainConfig(task="argmax", model="ntm", head_hint=1.0, model_config=gated))
    with pytest.raises(ValueError, match="write_hint: task copy has no algorithm"):
        build_task(TrainConfig(task="copy", model="ntm", write_hint=1.0, model_config=gated))


def test_head_hint_walks_the_heads_of_the_serial_loop(tmp_path):
    """A short modsquare_serial run with the hint puts the heads on the tape machine's rows far more than one
    without it (which leaves them near uniform)."""
    base = TrainConfig(task="modsquare_serial", model="ntm", min_size=3, max_size=5, steps=60, log_every=20,
                       checkpoint_every=60, batch_size=16, lr=1e-2, train_distribution={"max_candidates": 3},
                       model_config=ModelConfig(memory_rows=8, memory_width=2, controller_size=16))
    mass = {}
    for w in (0.0, 1.0):
        train(dataclasses.replace(base, head_hint=w), tmp_path / str(w), progress=False)
        _, task, model, _ = load_run(tmp_path / str(w))
        batch = build_task(base, training=True).sample(jax.random.key(7), 32)
        aux = model(batch.inputs, batch.steps)[1]
        mass[w] = float(head_hint(aux, task.head_targets(batch)))
    assert mass[1.0] < 0.5 * mass[0.0], mass
    # lab.diagnose's tape swap on the hinted run: the unroll cut at the swap equals the forward pass unswapped, and
    # the swap changes the loop's answer on some examples; a candidate outside every loop exits 2
    from lab import diagnose
    from lab.cli import run_cli
    from tasks.modsquare_serial import ANSWER, COMPARE

    sw = diagnose.tape_swap(str(tmp_path / "1.0"), size=5, at=5, batch_size=32)
    assert sw["stepped_equals_forward"] == 1.0 and 0 < sw["examples_where_the_swap_matters"] <= 32
    assert sorted(sw["tape_rows"] + list(set(range(8)) - set(sw["tape_rows"]))) == list(range(8))
    assert run_cli(diagnose.main, [str(tmp_path / "1.0"), "--size", "5", "--swap-at", "99"]) == 2
    # the picture's windows: whole blocks (each starts on a compare step, 12 steps at 5 bits), then the answer
    pic = diagnose.tape_picture(str(tmp_path / "1.0"), 5, str(tmp_path / "heads.png"))
    ex = evaluation.example_trace(model, dataclasses.replace(task, split="all"), 5)["inputs"]
    drawn = np.array(pic["steps_drawn"])
    starts = drawn[:-5].reshape(-1, 12)[:, 0]
    assert (ex[starts, COMPARE] == 1).all() and (np.diff(drawn[:-5].reshape(-1, 12), axis=1) == 1).all()
    np.testing.assert_array_equal(drawn[-5:], np.flatnonzero(ex[:, ANSWER] == 1))
    assert (tmp_path / "heads.png").stat().st_size > 0
    for bad in (str(tmp_path), str(tmp_path / "no" / "x.png"), str(tmp_path / "x.jpg")):
        assert run_cli(diagnose.main, [str(tmp_path / "1.0"), "--picture", bad]) == 2


def test_head_entropy_penalty_sharpens_the_heads(tmp_path):
    """Same tiny copy run with and without the penalty: the penalised heads end up sharper."""
    cfg = dataclasses.replace(TINY, steps=50, checkpoint_every=50)
    ent = {}
    for lam in (0.0, 0.5):
        train(dataclasses.replace(cfg, head_entropy=lam), tmp_path / str(lam), progress=False)
        _, task, model, _ = load_run(tmp_path / str(lam))
        batch = task.sample(jax.random.key(7), 64)
        ent[lam] = float(head_entropy(model(batch.inputs, batch.steps)[1], batch.steps))
    assert ent[0.5] < 0.5 * ent[0.0]


def test_task_options_from_the_command_line(tmp_path):
    from lab.cli import config_from_args, train_parser

    a = train_parser().parse_args(["--task", "argmax", "--task-option", "labels=random", "--task-option", "levels=256",
                                   "--train-option", "min_spread=0.0625", "--trace-loss", "0.5"])
    cfg = config_from_args(a)
    assert cfg.task_options == {"labels": "random", "levels": 256}
    assert (cfg.train_distribution, cfg.trace_loss) == ({"min_spread": 0.0625}, 0.5)
    task = build_task(cfg, training=True)
    assert (task.labels, task.levels, task.min_spread) == ("random", 256, 0.0625)
    assert build_task(cfg).min_spread == 1.0  # evaluation: the task's own uniform lists
    code = run_cli(train_cli.main, ["--task", "argmax", "--task-option", "nope=1", "--workdir", str(tmp_path / "w")])
    assert code == 2 and not (tmp_path / "w").exists()


def test_resume_a_run_written_before_a_model_field_existed(tmp_path):
    """A config.json without a ModelConfig field added later (write_gate) resumes: missing nested fields
    take their defaults."""
    cfg = dataclasses.replace(TINY, steps=20, log_every=10, checkpoint_every=10)
    train(dataclasses.replace(cfg, steps=10), tmp_path / "old", progress=False)
    path = tmp_path / "old" / "config.json"
    old = json.loads(path.read_text())
    del old["model_config"]["write_gate"]
    path.write_text(json.dumps(old))
    train(cfg, tmp_path / "old", resume=True, progress=False)
    assert _metrics(tmp_path / "old")[-1]["step"] == 20


def test_resume_a_run_written_when_training_signals_were_task_options(tmp_path):
    """A config.json with step supervision and the training distribution among its task options (as runs were
    written before they became training configuration) resumes as the same run, and the resumed run's batches
    and loss are those of an uninterrupted one."""
    cfg = TrainConfig(task="argmax", steps=20, log_every=10, checkpoint_every=10, batch_size=8, min_size=2, max_size=4,
                      eval_batch_size=16, task_options={"index_bits": 4, "levels": 16},
                      train_distribution={"near_ties": 0.5}, trace_loss=1.0, model_config=TINY.model_config)
    train(cfg, tmp_path / "whole", progress=False)
    train(dataclasses.replace(cfg, steps=10), tmp_path / "old", progress=False)
    path = tmp_path / "old" / "config.json"
    old = json.loads(path.read_text())
    old["task_options"].update(near_ties=0.5, trace_loss=1.0)
    del old["train_distribution"], old["trace_loss"]
    path.write_text(json.dumps(old))
    train(cfg, tmp_path / "old", resume=True, progress=False)
    losses = lambda run: [r.get("train/loss") for r in _metrics(run)]  # noqa: E731
    assert losses(tmp_path / "old") == losses(tmp_path / "whole")


def test_write_gate_flag_reaches_the_ntm():
    from lab.cli import config_from_args, train_parser

    cfg = config_from_args(train_parser().parse_args(["--task", "argmax", "--write-gate"]))
    assert cfg.model_config.write_gate
    model = build_model(cfg, build_task(cfg))
    assert model.cfg.write_gate and model.cfg.write_head_size == model.cfg.read_head_size + 2 * model.cfg.memory_width + 1
    assert not config_from_args(train_parser().parse_args(["--task", "argmax"])).model_config.write_gate


@pytest.mark.parametrize("name", ["ntm", "lstm"])
def test_recurrent_models_detach_each_example_at_its_own_step(name):
    """detach_at [B]: same logits; example b's later outputs send no gradient to its inputs before detach_at[b]."""
    from lab.models import ModelConfig, make_model

    T, B, X = 7, 3, 4
    model = make_model(name, X, 2, ModelConfig(memory_rows=8, memory_width=4, controller_size=8, hidden_size=8), T, 0)
    xs = jax.random.normal(jax.random.key(1), (T, B, X))
    steps = jnp.array([7, 5, 6])
    cut = jnp.array([2, 1, 4])
    np.testing.assert_array_equal(np.asarray(model(xs, steps)[0]), np.asarray(model(xs, steps, detach_at=cut)[0]))
    late = (jnp.arange(T)[:, None] >= cut[None, :])[..., None]  # [T, B, 1]: outputs from each cut on
    g = jax.grad(lambda x: jnp.sum(jnp.where(late, model(x, steps, detach_at=cut)[0], 0.0)))(xs)
    for b in range(B):
        assert np.all(np.asarray(g[: int(cut[b]), b]) == 0)
        assert np.any(np.asarray(g[int(cut[b]):, b]) != 0)


def test_progressive_detach_steps_cover_each_examples_range():
    from lab.trainer import progressive_detach_steps

    steps = jnp.array([1, 2, 5, 17])
    draws = np.stack([np.asarray(progressive_detach_steps(jax.random.key(i), steps)) for i in range(400)])
    for b, n in enumerate([1, 2, 5, 17]):
        assert draws[:, b].min() == 0 and draws[:, b].max() == n - 1


def test_progressive_loss_keeps_the_loss_value_and_changes_the_gradient():
    """The progressive pass computes the same outputs, so the loss value is the plain one; its gradient is not."""
    from lab.models import split as split_model

    cfg = dataclasses.replace(TINY, task="argmax", min_size=2, max_size=6, task_options={})
    task = build_task(cfg)
    model = build_model(cfg, task)
    graphdef, params = split_model(model)
    out = {}
    for a in (0.0, 0.5):
        prog = make_program(dataclasses.replace(cfg, progressive_loss=a), task, graphdef, jax.random.key(3))
        carry = prog.initial_carry(jax.tree.map(jnp.copy, params))
        *_, stats = prog.train_chunk(*carry, jnp.int32(0), prog.data_key, 1)
        out[a] = stats
    assert float(out[0.5]["loss"][0]) == pytest.approx(float(out[0.0]["loss"][0]), rel=1e-5)
    assert abs(float(out[0.5]["grad_norm"][0]) - float(out[0.0]["grad_norm"][0])) > 1e-6


def test_microbatches_give_the_same_step_as_the_whole_batch():
    """Gradient accumulation over 4 micro-batches: the same loss and the same parameters after a step (the loss is a
    mean over examples, so the mean of equal micro-batch means is the batch mean), to float32 rounding."""
    from lab.models import split as split_model

    cfg = dataclasses.replace(TINY, batch_size=16, progressive_loss=0.0)
    task = build_task(cfg)
    graphdef, params = split_model(build_model(cfg, task))
    out = {}
    for k in (1, 4):
        prog = make_program(dataclasses.replace(cfg, microbatches=k), task, graphdef, jax.random.key(3))
        p, o, bad, stats = prog.train_chunk(*prog.initial_carry(jax.tree.map(jnp.copy, params)), jnp.int32(0), prog.data_key, 2)
        out[k] = (p, stats)
    np.testing.assert_allclose(np.asarray(out[4][1]["loss"]), np.asarray(out[1][1]["loss"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out[4][1]["grad_norm"]), np.asarray(out[1][1]["grad_norm"]), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(out[4][0]), jax.tree.leaves(out[1][0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)  # Adam: ~lr x rounding / sqrt(v)
