"""The multi-host path of train.py (``jax.distributed.initialize``): two processes on this machine, one CPU
device each, coordinator on 127.0.0.1 and JAX's CPU collectives (gloo), train the same curve as one process
with two devices and the same global batch; only process 0 writes the run's files, and the checkpoint the
two write together restores to the one process's parameters."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from lab import models
from lab.rundir import load_run

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--task", "copy", "--model", "ntm", "--batch-size", "4", "--steps", "20", "--log-every", "10",
         "--steps-per-dispatch", "10", "--checkpoint-every", "10", "--memory-rows", "16",
         "--controller-size", "16", "--no-progress"]
TIMEOUT_S = 300  # a hung collective fails the test instead of blocking it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    """The parent's environment without its device count (conftest: 8) or any distributed settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"XLA_FLAGS", "JAX_NUM_CPU_DEVICES", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                        "JAX_PROCESS_ID", "NTM_DISTRIBUTED"}}
    return {**env, "JAX_PLATFORMS": "cpu", **extra}


def _run(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{log.name} exited {p.returncode}:\n{log.read_text()[-3000:]}"


def _start(workdir: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "train.py", *FLAGS, "--workdir", str(workdir)], cwd=ROOT,
                                env=env, stdout=f, stderr=subprocess.STDOUT)


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # ~40 s: python -m pytest -m slow tests/test_multihost.py (README, "Many devices")
def test_two_processes_train_the_curve_of_one_with_two_devices(tmp_path):
    coordinator = f"127.0.0.1:{_free_port()}"
    multi = tmp_path / "multi"
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    _run([_start(multi, logs[i], _env(JAX_NUM_CPU_DEVICES="1", JAX_COORDINATOR_ADDRESS=coordinator,
                                      JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))) for i in range(2)], logs)
    single, log = tmp_path / "single", tmp_path / "single.log"
    _run([_start(single, log, _env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))], [log])

    a, b = _metrics(single), _metrics(multi)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 10, 20]  # process 1 wrote no lines
    for k in ("train/loss", "eval/main"):
        got = [r[k] for r in b if k in r]
        np.testing.assert_allclose(got, [r[k] for r in a if k in r], rtol=1e-5, err_msg=k)

    assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) == ["10", "20"]
    (_, _, m_multi, step), (_, _, m_single, _) = load_run(multi), load_run(single)
    assert step == 20
    for x, y in zip(jax.tree.leaves(models.split(m_multi)[1]), jax.tree.leaves(models.split(m_single)[1])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
