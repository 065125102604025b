"""Training-throughput benchmark: examples/s and ms per optimizer step, written to bench.json.

    python -m lab.bench [--batch-sizes 1 16 64] [--task copy] [--model ntm] [--out bench.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from lab import models
from lab.config import TrainConfig, task_defaults
from lab.trainer import build_model, build_task, make_program


def device_name() -> str:
    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {len(jax.devices())} device(s), {_cpu_count()} cores)"
    return f"{d.platform} ({d.device_kind}) x{len(jax.devices())}"


def _cpu_count() -> int:
    import os
    return len(os.sched_getaffinity(0))


def bench_one(task: str, model: str, batch_size: int, dispatch: int = 10, repeats: int = 3) -> dict:
    cfg = TrainConfig(**{**task_defaults(task), "task": task, "model": model, "batch_size": batch_size, "devices": 1,
                         "steps_per_dispatch": dispatch, "log_every": dispatch})
    t = build_task(cfg)
    graphdef, params = models.split(build_model(cfg, t))
    prog = make_program(cfg, t, graphdef, jax.random.key(0))
    params = prog.replicate(params)
    opt_state = prog.replicate(prog.tx.init(params))
    bad = prog.replicate(jnp.zeros((), jnp.int32))
    t0 = time.perf_counter()
    params, opt_state, bad, stats = prog.train_chunk(params, opt_state, bad, jnp.int32(0), dispatch)
    jax.block_until_ready(stats)
    compile_s = time.perf_counter() - t0
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        params, opt_state, bad, stats = prog.train_chunk(params, opt_state, bad, jnp.int32((r + 1) * dispatch), dispatch)
        jax.block_until_ready(stats)
        times.append((time.perf_counter() - t0) / dispatch)
    ms = 1000 * min(times)
    return {"model": model, "task": task, "batch_size": batch_size, "examples_per_s": batch_size / (ms / 1000),
            "ms_per_step": ms, "compile_s": compile_s, "seq_steps": t.max_steps(), "device": device_name(),
            "jax": jax.__version__}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--task", default="copy")
    p.add_argument("--models", nargs="+", default=["ntm"])
    p.add_argument("--out", default="bench.json")
    a = p.parse_args(argv)
    rows = []
    for m in a.models:
        for b in a.batch_sizes:
            row = bench_one(a.task, m, b)
            rows.append(row)
            print(f"{row['model']:5s} {row['task']:10s} batch {b:5d}: {row['examples_per_s']:9.1f} examples/s "
                  f"{row['ms_per_step']:8.2f} ms/step  (compile {row['compile_s']:.1f} s) on {row['device']}", flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
