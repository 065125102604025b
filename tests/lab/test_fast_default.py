"""The fast path is the default: one CPU device per core in a fresh process, the fused kernel chosen by the
config, evaluation split over devices as in training, automatic micro-batches, and clear errors."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab import bench, models
from lab.cli import usable_cores
from lab.config import TrainConfig
from lab.evaluation import Evaluator, fixed_batch
from lab.models import ModelConfig
from lab.parallel import resolve_microbatches
from lab.rundir import build_model, build_task
from lab.trainer import make_program

ROOT = Path(__file__).resolve().parents[2]


def _fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    """Python in a new process (JAX not started), without the suite's simulated devices unless given."""
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=300)


def test_a_fresh_process_gets_one_device_per_core_unless_the_user_chose():
    code = "from lab.cli import use_every_core; use_every_core(); import jax; print(len(jax.devices()))"
    assert _fresh(code).stdout.split() == [str(usable_cores())]
    assert _fresh(code, XLA_FLAGS="--xla_force_host_platform_device_count=3").stdout.split() == ["3"]
    assert _fresh(code, JAX_NUM_CPU_DEVICES="1").stdout.split() == ["1"]


@pytest.mark.parametrize("argv, message", [
    (["--devices", "64"], "only"),  # more devices than cores
    (["--batch-size", "3", "--devices", "2"], "does not split over 2 devices"),
])
def test_device_and_kernel_flags_fail_in_one_line(argv, message, tmp_path):
    if "--devices" in argv and usable_cores() < 2 and "64" not in argv:
        pytest.skip("needs 2 cores")
    res = subprocess.run([sys.executable, "train.py", "--workdir", str(tmp_path / "w"), "--steps", "1", *argv],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


def test_auto_microbatches_keep_each_device_at_most_the_cap():
    def k(batch, model="ntm", devices=0):
        return resolve_microbatches(TrainConfig(task="copy", model=model, batch_size=batch, devices=devices))
    n = len(jax.devices())  # 8 simulated in the suite
    assert k(128 * n) == 1 and k(512 * n) == 4 and k(1024, devices=1) == 8 and k(96, devices=1) == 1
    assert k(4096, model="mlp") == 1
    assert k(257, devices=1) == 1 and k(262, devices=1) == 1  # no even split near the cap: the whole batch
    assert resolve_microbatches(TrainConfig(batch_size=64, microbatches=2)) == 2  # an explicit count stays


def test_auto_microbatches_train_the_same_step_as_the_whole_batch():
    cfg = TrainConfig(task="copy", model="lstm", batch_size=1024, devices=1, steps_per_dispatch=1,
                      model_config=ModelConfig(hidden_size=8), max_size=3)
    task = build_task(cfg)
    graphdef, params = models.split(build_model(cfg, task))
    out = []
    for mb in (0, 1):
        prog = make_program(dataclasses.replace(cfg, microbatches=mb), task, graphdef, jax.random.key(3))
        assert prog.microbatches == (8 if mb == 0 else 1)
        p, o, bad = prog.initial_carry(jax.tree.map(jnp.copy, params))  # train_chunk donates its carry
        p, *_ = prog.train_chunk(p, o, bad, jnp.int32(0), prog.data_key, 1)
        out.append(p)
    for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_evaluation_split_over_devices_equals_one_device():
    """The evaluator's forward runs under the training shard_map (8 devices here)."""
    cfg = TrainConfig(task="copy", model="ntm", max_size=4,
                      model_config=ModelConfig(memory_rows=8, memory_width=4, controller_size=8))
    task = build_task(cfg)
    ev = Evaluator.of(build_model(cfg, task))
    batch = fixed_batch(task, 16)
    assert len(ev.forward(batch)[0].sharding.device_set) == len(jax.devices()) == 8
    one = jax.jit(lambda p, x, s: __import__("flax").nnx.merge(ev.graphdef, p)(x, s))
    np.testing.assert_allclose(ev.forward(batch)[0], one(ev.params, batch.inputs, batch.steps)[0], rtol=1e-5, atol=1e-6)


def test_bench_row_runs_the_default_path_and_reports_memory():
    row = bench.bench_one("argmax", "ntm", 16, dispatch=2, repeats=1, size_buckets=2)
    from ntm import fused_cpu

    assert row["fused_memory"] == fused_cpu.available() and row["data_parallel_devices"] == 8 and row["microbatches"] == 1
    assert row["size_buckets"] == 2 and row["xla_bytes_per_device"] > 0 and row["max_rss_bytes"] > 0
    off = bench.bench_one("argmax", "ntm", 16, dispatch=2, repeats=1, size_buckets=1, fused_memory="off", devices=1)
    assert not off["fused_memory"] and off["data_parallel_devices"] == 1


def test_bench_command_writes_json_and_markdown_and_refuses_bad_flags(tmp_path):
    out = tmp_path / "b.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "lab.bench", *a], cwd=ROOT, capture_output=True,  # noqa: E731
                                    text=True, timeout=600, env=env)
    res = run("--batch-sizes", "2", "--tasks", "argmax", "--models", "mlp", "--repeats", "1", "--reference", "none",
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["mlp"] and "| mlp | argmax | 2 |" in out.with_suffix(".md").read_text()
    for bad in (["--devices", "3", "--batch-sizes", "4"], ["--reference", str(tmp_path / "nope")], ["--models", "gpt"]):
        res = run(*bad, "--out", str(tmp_path / "x.json"))
        assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_kernel_that_fails_to_build_is_one_warning_line_and_training_goes_on(tmp_path):
    res = subprocess.run([sys.executable, "train.py", "--workdir", str(tmp_path / "w"), "--steps", "2", "--log-every", "2",
                          "--steps-per-dispatch", "2", "--batch-size", "2", "--max-size", "3", "--memory-rows", "8",
                          "--controller-size", "8", "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "CXX": "false",
                              "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    warned = [line for line in res.stderr.splitlines() if "fused" in line]
    assert len(warned) == 1 and warned[0].startswith("warning:") and "failed to build" in warned[0]
    assert json.loads(res.stdout.strip().splitlines()[-1])["step"] == 2


def test_a_task_default_bucket_count_reaches_train_py_clamped_to_its_sizes(monkeypatch):
    from lab import config
    from lab.cli import config_from_args, train_parser

    monkeypatch.setitem(config.TASK_DEFAULTS, "copy", {**config.TASK_DEFAULTS["copy"], "size_buckets": 4})
    cfg = lambda *a: config_from_args(train_parser().parse_args(["--task", "copy", *a]))  # noqa: E731
    assert cfg().size_buckets == 4 and cfg("--max-size", "3").size_buckets == 3
    assert cfg("--size-buckets", "1").size_buckets == 1 and cfg("--task", "argmax").size_buckets == 1
