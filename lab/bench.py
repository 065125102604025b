"""Training-throughput benchmark against this machine's roofline, written to bench.json.

    python -m lab.bench [--batch-sizes 1 16 64] [--tasks copy argmax] [--models ntm lstm mlp] [--devices 1]
                        [--fused-memory off|on|both] [--out bench.json]

Each row: examples/s and ms per optimizer step (10 steps per dispatch, best of 3, compile excluded),
the FLOPs one step executes (counted from its jaxpr: dot_general exactly, 1 per output element of
elementwise arithmetic; scans multiplied by their length, so the rematerialised forward of the
backward pass is included), and the fraction of the machine's measured matmul FLOP/s the step
reaches. The machine's peaks are measured first: a 2048^2 float32 matmul, and a 256 MB streaming
multiply-add for memory bandwidth. ``--fused-memory on`` times the NTM with its fused C++ memory kernel
(ntm/fused_cpu.py); ``both`` times each NTM row without and then with it, back to back.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import resource
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lab import models
from lab.config import TrainConfig, task_defaults
from lab.models import ModelConfig
from lab.trainer import build_model, build_task, make_program


def device_name() -> str:
    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {len(jax.devices())} device(s), {_cpu_count()} cores)"
    return f"{d.platform} ({d.device_kind}) x{len(jax.devices())}"


def _cpu_count() -> int:
    import os
    return len(os.sched_getaffinity(0))


_ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "exp", "log", "log1p", "tanh", "logistic", "max", "min", "pow",
                "integer_pow", "sqrt", "rsqrt", "abs", "select_n", "exp2", "square", "sign", "erf", "cos", "sin",
                "reduce_sum", "reduce_max", "reduce_min", "cumsum", "add_any", "atan2", "clamp", "ge", "gt", "le",
                "lt", "eq", "ne", "and", "or", "not"}


def count_flops(jaxpr: Any) -> tuple[float, float]:
    """(matmul FLOPs, other FLOPs) executed by a (closed) jaxpr."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    mm = other = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = math.prod(lhs[d] for d in lc)
            mm += 2.0 * math.prod(eqn.outvars[0].aval.shape) * k
            continue
        subs = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(getattr(v, "jaxpr", None), "eqns")]
        subs += [b for v in eqn.params.values() if isinstance(v, (tuple, list)) for b in v
                 if hasattr(getattr(b, "jaxpr", None), "eqns")]
        if subs:
            counts = [count_flops(j) for j in subs]
            if name == "cond":  # one branch runs: count the dearest
                a, b = max(counts, key=sum)
            else:
                a, b = sum(c[0] for c in counts), sum(c[1] for c in counts)
            n = eqn.params.get("length", 1) if name == "scan" else 1
            if name == "shard_map":  # the body is one device's shard: every device of its manual axes runs it
                shape = eqn.params["mesh"].shape
                n = math.prod(shape[ax] for ax in eqn.params.get("newly_manual_axes") or shape)
            mm, other = mm + n * a, other + n * b
        elif name in _ELEMENTWISE:
            inputs = [math.prod(v.aval.shape) for v in eqn.invars if hasattr(v, "aval") and hasattr(v.aval, "shape")]
            other += float(max([math.prod(eqn.outvars[0].aval.shape)] + inputs))
    return mm, other


def _best_time(fn: Any, *args: Any, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def machine_peaks() -> dict[str, float]:
    """Measured float32 matmul FLOP/s and streaming memory bandwidth (bytes/s) of device 0."""
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    t = _best_time(jax.jit(lambda x: x @ x), a)
    x = jnp.ones((64 * 1024 * 1024,), jnp.float32)  # 256 MB
    tb = _best_time(jax.jit(lambda v: v * 1.0001 + 1.0), x)
    return {"matmul_flops_per_s": 2 * n**3 / t, "bandwidth_bytes_per_s": 2 * x.nbytes / tb}


def bench_one(task: str, model: str, batch_size: int, dispatch: int = 10, repeats: int = 3,
              peaks: dict[str, float] | None = None, devices: int = 0, fused_memory: str = "auto",
              microbatches: int = 0) -> dict:
    """One row, with the trainer's own defaults unless told otherwise: ``devices`` 0 splits the batch over as
    many devices as divide it, ``fused_memory`` is ntm.NTMConfig.fused_memory ("auto": the fused CPU kernel
    where it applies), ``microbatches`` 0 lets the trainer choose (TrainConfig.microbatches)."""
    defaults = task_defaults(task)
    mc = dataclasses.replace(defaults.pop("model_config", ModelConfig()), fused_memory=fused_memory)
    cfg = TrainConfig(**{**defaults, "task": task, "model": model, "batch_size": batch_size, "devices": devices,
                         "steps_per_dispatch": dispatch, "log_every": dispatch, "microbatches": microbatches,
                         "model_config": mc})
    t = build_task(cfg)
    graphdef, params = models.split(build_model(cfg, t))
    prog = make_program(cfg, t, graphdef, jax.random.key(0))
    params, opt_state, bad = prog.initial_carry(params)
    t0 = time.perf_counter()
    compiled = prog.train_chunk.lower(params, opt_state, bad, jnp.int32(0), dispatch).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    params, opt_state, bad, stats = compiled(params, opt_state, bad, jnp.int32(0))
    jax.block_until_ready(stats)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        params, opt_state, bad, stats = compiled(params, opt_state, bad, jnp.int32((r + 1) * dispatch))
        jax.block_until_ready(stats)
        times.append((time.perf_counter() - t0) / dispatch)
    ms = 1000 * min(times)
    # FLOPs of the pure-JAX program even when timing the fused kernel (whose custom call the counter
    # cannot see), so both rows divide the same work by their time.
    pure = dataclasses.replace(cfg, model_config=dataclasses.replace(mc, fused_memory="off"))
    pure_prog = make_program(pure, t, models.split(build_model(pure, t))[0], jax.random.key(0), prog.mesh)
    jaxpr = jax.make_jaxpr(pure_prog.train_chunk, static_argnums=(4,))(params, opt_state, bad, jnp.int32(0), 1)
    mm, other = count_flops(jaxpr)
    n_params = models.count_params(nnx.merge(graphdef, params))
    fused = model == "ntm" and "ntm_memory_step_fwd" in compiled.as_text()
    row = {"model": model, "task": task, "batch_size": batch_size, "examples_per_s": batch_size / (ms / 1000),
           "ms_per_step": ms, "compile_s": compile_s, "seq_steps": t.max_steps(), "params": n_params,
           "matmul_flops_per_step": mm, "flops_per_step": mm + other,
           # at least: read params and Adam's two moments, write all three back (float32)
           "min_bytes_per_step": 6 * 4 * n_params, "device": device_name(), "jax": jax.__version__,
           "data_parallel_devices": prog.mesh.size, "microbatches": prog.microbatches, "fused_memory": fused,
           # XLA's buffers for one dispatch on one device: arguments + outputs + temporaries, less the donated
           "xla_bytes_per_device": int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                                       - mem.alias_size_in_bytes),
           # the process's resident high-water mark (Linux: KiB); a row run alone (main's default) is that row's
           "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if peaks:
        s_ = ms / 1000
        # simulated CPU devices share the cores the peak was measured on; real accelerators add theirs
        scale = 1 if jax.devices()[0].platform == "cpu" else prog.mesh.size
        peaks = {k: v * scale for k, v in peaks.items()}
        row["achieved_flops_per_s"] = (mm + other) / s_
        row["frac_of_matmul_peak"] = (mm + other) / s_ / peaks["matmul_flops_per_s"]
        row["frac_of_bandwidth_bound"] = row["min_bytes_per_step"] / s_ / peaks["bandwidth_bytes_per_s"]
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--tasks", nargs="+", default=["copy"])
    p.add_argument("--models", nargs="+", default=["ntm"])
    p.add_argument("--devices", type=int, default=1,
                   help="data-parallel over this many devices (on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    p.add_argument("--fused-memory", choices=("off", "on", "both"), default="off",
                   help="NTM memory step in the fused C++ kernel (ntm/fused_cpu.py); both: each NTM row off, then on")
    p.add_argument("--microbatch-size", type=int, default=0,
                   help="gradient accumulation (TrainConfig.microbatches): batches larger than this are split into "
                        "micro-batches of this size; 0: never")
    p.add_argument("--out", default="bench.json")
    a = p.parse_args(argv)
    mbs = a.microbatch_size
    if mbs < 0 or (mbs and any(b > mbs and b % mbs for b in a.batch_sizes)):
        p.error(f"--microbatch-size {mbs}: must divide every larger batch size")
    bad = [b for b in a.batch_sizes if b % a.devices]
    if a.devices < 1 or bad:
        p.error(f"--devices {a.devices}: every batch size must split evenly over the devices (not {bad})")
    peaks = machine_peaks()
    print(f"machine: {peaks['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s float32 matmul, "
          f"{peaks['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s streaming, on {device_name()}", flush=True)
    rows = []
    for task in a.tasks:
        for m in a.models:
            fused = {"off": [False], "on": [True], "both": [False, True]}[a.fused_memory] if m == "ntm" else [False]
            for b in a.batch_sizes:
                for f in fused:
                    k = b // mbs if mbs and b > mbs else 1
                    row = bench_one(task, m, b, peaks=peaks, devices=a.devices, fused_memory=f, microbatches=k)
                    row.update({k: v for k, v in peaks.items()})
                    rows.append(row)
                    print(f"{row['model']:5s}{'+fused' if f else '      '} {row['task']:10s} batch {b:5d}"
                          f"{f' ({k} x {b // k})' if k > 1 else ''}: "
                          f"{row['examples_per_s']:9.1f} examples/s {row['ms_per_step']:8.2f} ms/step  "
                          f"{row['flops_per_step'] / 1e6:9.1f} MFLOP/step "
                          f"{100 * row['frac_of_matmul_peak']:5.1f}% of matmul peak  (compile {row['compile_s']:.1f} s)",
                          flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
