"""Training-throughput benchmark against this machine's roofline:  make bench  (CPU),  make bench-gpu  (one GPU)

    python -m lab.bench [--preset cpu|gpu] [--batch-sizes 1 16 64] [--tasks copy argmax] [--models ntm lstm mlp]
                        [--devices 0] [--fused-memory auto|on|off|both] [--reference DIR|none] [--out bench.json]

Every row runs what ``train.py`` runs by default (one CPU device per core, the batch split over as many as
divide it, the fused memory kernel where it applies, automatic micro-batches, the task's size buckets), each
in a fresh process (the cpu preset) so that its resident high-water mark is its own. The PyTorch reference
(loudinthecloud/pytorch-ntm, lab/reference.py) is timed right after the NTM copy row of each of its batch
sizes when it is set up in ``.bench-reference/``. Rows go to ``--out`` (JSON) and a Markdown table beside it.

Each row: examples/s and ms per optimizer step (10 steps per dispatch, best of 3, compile excluded and
reported apart; a task with size buckets: each bucket timed, weighted as training draws them),
the FLOPs one step executes (counted from its jaxpr: dot_general exactly, 1 per output element of
elementwise arithmetic; scans multiplied by their length, so the rematerialised forward of the
backward pass is included), and the fraction of the machine's measured matmul FLOP/s the step
reaches. The machine's peaks are measured first: a 2048^2 float32 matmul, and a 256 MB streaming
multiply-add for memory bandwidth. ``--fused-memory both`` times each NTM row without the fused C++
memory kernel (ntm/fused_cpu.py) and then with the default, back to back.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lab import models
from lab.config import TrainConfig, task_defaults
from lab.models import ModelConfig
from lab.parallel import batch_mesh
from lab.rundir import build_model, build_task
from lab.trainer import bucket_weights, make_program


def device_name() -> str:
    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {len(jax.devices())} device(s), {_cpu_count()} cores)"
    return f"{d.platform} ({d.device_kind}) x{len(jax.devices())}"


def _cpu_count() -> int:
    from lab.cli import usable_cores
    return usable_cores()


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
              microbatches: int = 0, size_buckets: int | None = None) -> dict:
    """One row, with the trainer's own defaults unless told otherwise: ``devices`` 0 splits the batch over as
    many devices as divide it, ``fused_memory`` is ntm.NTMConfig.fused_memory ("auto": the fused CPU kernel
    where it applies), ``microbatches`` 0 lets the trainer choose (TrainConfig.microbatches)."""
    defaults = task_defaults(task)
    if size_buckets is not None:
        defaults["size_buckets"] = size_buckets
    mc = dataclasses.replace(defaults.pop("model_config", ModelConfig()), fused_memory=fused_memory)
    cfg = TrainConfig(**{**defaults, "task": task, "model": model, "batch_size": batch_size, "devices": devices,
                         "steps_per_dispatch": dispatch, "log_every": dispatch, "microbatches": microbatches,
                         "model_config": mc})
    t = build_task(cfg, training=True)
    graphdef, params = models.split(build_model(cfg, t))
    prog = make_program(cfg, t, graphdef, jax.random.key(0))
    params, opt_state, bad = prog.initial_carry(params)
    # FLOPs of the pure-JAX program even when timing the fused kernel (whose custom call the counter
    # cannot see), so both rows divide the same work by their time.
    pure = dataclasses.replace(cfg, model_config=dataclasses.replace(mc, fused_memory="off"))
    pure_prog = make_program(pure, t, models.split(build_model(pure, t))[0], jax.random.key(0), prog.mesh)
    # Each size bucket (TrainConfig.size_buckets: the task's default) is its own program; a step's cost is
    # their mean weighted as training draws them (lab.trainer.bucket_schedule).
    weights = bucket_weights(prog.buckets)
    ms = mm = other = compile_s = 0.0
    mem_bytes, fused = 0, False
    for b, w in enumerate(weights):
        t0 = time.perf_counter()
        compiled = prog.train_chunk.lower(params, opt_state, bad, jnp.int32(0), prog.data_key, dispatch, b).compile()
        compile_s += time.perf_counter() - t0
        mem = compiled.memory_analysis()
        mem_bytes = max(mem_bytes, int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                       + mem.temp_size_in_bytes - mem.alias_size_in_bytes))
        fused = fused or (model == "ntm" and "ntm_memory_step_fwd" in compiled.as_text())
        params, opt_state, bad, stats = compiled(params, opt_state, bad, jnp.int32(0), prog.data_key)
        jax.block_until_ready(stats)
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            params, opt_state, bad, stats = compiled(params, opt_state, bad, jnp.int32((r + 1) * dispatch), prog.data_key)
            jax.block_until_ready(stats)
            times.append((time.perf_counter() - t0) / dispatch)
        ms += w * 1000 * min(times)
        jaxpr = jax.make_jaxpr(pure_prog.train_chunk, static_argnums=(5, 6))(params, opt_state, bad, jnp.int32(0),
                                                                         pure_prog.data_key, 1, b)
        bm, bo = count_flops(jaxpr)
        mm, other = mm + w * bm, other + w * bo
    n_params = models.count_params(nnx.merge(graphdef, params))
    row = {"model": model, "task": task, "batch_size": batch_size, "examples_per_s": batch_size / (ms / 1000),
           "ms_per_step": ms, "compile_s": compile_s, "seq_steps": t.max_steps(), "size_buckets": len(weights),
           "params": n_params,
           "matmul_flops_per_step": mm, "flops_per_step": mm + other,
           # at least: read params and Adam's two moments, write all three back (float32)
           "min_bytes_per_step": 6 * 4 * n_params, "device": device_name(), "jax": jax.__version__,
           "data_parallel_devices": prog.mesh.size, "microbatches": prog.microbatches, "fused_memory": fused,
           # XLA's buffers for one dispatch on one device: arguments + outputs + temporaries, less the donated
           "xla_bytes_per_device": mem_bytes,  # the largest bucket's
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


PRESETS: dict[str, dict[str, Any]] = {
    # make bench: the CPU table of the README, the PyTorch reference beside it when it is set up
    "cpu": {"batch_sizes": [1, 16, 64, 256, 1024], "tasks": ["copy", "argmax"], "models": ["ntm", "lstm", "mlp"],
            "out": "bench.json", "size_buckets": None, "isolate": True},
    # make bench-gpu: one GPU, batch 1-4096, one size bucket (fewer compilations: under 5 minutes)
    "gpu": {"batch_sizes": [1, 4, 16, 64, 256, 1024, 4096], "tasks": ["copy"], "models": ["ntm", "lstm", "mlp"],
            "out": "docs/results/bench-gpu.json", "size_buckets": 1, "isolate": False},
}
REFERENCE_DIR = ".bench-reference"  # <dir>/venv (torch 2.13.0 CPU) and <dir>/pytorch-ntm: see lab/reference.py


def reference_rows(ref_dir: Path, batch_sizes: list[int]) -> list[dict]:
    """loudinthecloud/pytorch-ntm's copy task timed by lab/reference.py with the reference's own python."""
    cmd = [str(ref_dir / "venv" / "bin" / "python"), str(Path(__file__).with_name("reference.py")),
           "--repo", str(ref_dir / "pytorch-ntm"), "--batch-sizes", *map(str, batch_sizes)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode:
        raise ValueError(f"reference benchmark failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def _isolated_row(kw: dict[str, Any]) -> dict:
    """``bench_one(**kw)`` in a fresh process, so that its resident high-water mark is that row's alone."""
    res = subprocess.run([sys.executable, "-m", "lab.bench", "--row", json.dumps(kw)], capture_output=True, text=True)
    if res.returncode:
        raise ValueError(f"benchmark row {kw['model']} {kw['task']} batch {kw['batch_size']} failed: "
                         f"{(res.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], reference: dict[int, dict], peaks: dict[str, float]) -> str:
    lines = [f"Measured on {rows[0]['device'] if rows else device_name()}, JAX {jax.__version__}: "
             f"{peaks['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s float32 matmul, "
             f"{peaks['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s streaming (same run).", "",
             "| model | task | batch | devices x micro-batches | fused | examples/s | ms/step | % matmul peak "
             "| compile s | XLA MB/device | max RSS MB | x PyTorch ref |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = reference.get(r["batch_size"]) if (r["model"], r["task"]) == ("ntm", "copy") else None
        ratio = f"{r['examples_per_s'] / ref['sequences_per_s']:.1f}x" if ref else ""
        lines.append(f"| {r['model']} | {r['task']} | {r['batch_size']} | {r['data_parallel_devices']} x "
                     f"{r['microbatches']} | {'yes' if r['fused_memory'] else 'no'} | {r['examples_per_s']:,.0f} | "
                     f"{r['ms_per_step']:.2f} | {100 * r.get('frac_of_matmul_peak', 0):.1f} | {r['compile_s']:.1f} | "
                     f"{r['xla_bytes_per_device'] / 1e6:,.0f} | "
                     f"{format(r['max_rss_bytes'] / 1e6, ',.0f') if r.get('isolated', True) else '-'} | {ratio} |")
    if reference:
        first = next(iter(reference.values()))
        lines += ["", "PyTorch reference (loudinthecloud/pytorch-ntm " + first["commit"][:7] + ", torch "
                  + first["torch"] + ", 1 thread, its copy defaults): "
                  + ", ".join(f"{v['sequences_per_s']:,.1f} sequences/s at batch {b}" for b, v in reference.items())
                  + "; timed in the same run, right after the NTM copy row of the same batch."]
    return "\n".join(lines) + "\n"


def _parser():
    from lab.cli import Parser

    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="the defaults of the options below")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    p.add_argument("--tasks", nargs="+", default=None)
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--devices", type=int, default=0,
                   help="data-parallel over this many devices (0: as many as divide each batch, as train.py)")
    p.add_argument("--fused-memory", choices=("auto", "on", "off", "both"), default="auto",
                   help="ntm.NTMConfig.fused_memory of the NTM rows; both: each NTM row with off, then auto")
    p.add_argument("--microbatches", type=int, default=0, help="TrainConfig.microbatches (0: auto, as train.py)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference", default=None, metavar="DIR",
                   help=f"time the PyTorch reference (lab/reference.py) from DIR/venv and DIR/pytorch-ntm beside "
                        f"the NTM copy rows (default: {REFERENCE_DIR} when it exists; 'none': never)")
    p.add_argument("--reference-batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--out", default=None, help="JSON rows here, a Markdown table beside it (.md)")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: one isolated row
    return p


def _print_row(row: dict) -> None:
    print(f"{row['model']:5s} {row['task']:8s} batch {row['batch_size']:5d} ({row['data_parallel_devices']} dev x "
          f"{row['microbatches']} mb, fused {'yes' if row['fused_memory'] else 'no '}): {row['examples_per_s']:9.1f} "
          f"examples/s {row['ms_per_step']:8.2f} ms/step {100 * row['frac_of_matmul_peak']:5.1f}% of matmul peak "
          f"(compile {row['compile_s']:.1f} s, XLA {row['xla_bytes_per_device'] / 1e6:.0f} MB/device, "
          f"max RSS {row['max_rss_bytes'] / 1e6:.0f} MB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    from lab.cli import use_every_core

    use_every_core()  # as train.py: one CPU device per core unless the user chose (before JAX starts)
    if a.row:
        print(json.dumps(bench_one(**json.loads(a.row))))
        return 0
    pre = PRESETS[a.preset]
    sizes, tasks, ms = a.batch_sizes or pre["batch_sizes"], a.tasks or pre["tasks"], a.models or pre["models"]
    out = Path(a.out or pre["out"])
    if min(sizes) < 1 or a.devices < 0 or a.microbatches < 0 or a.repeats < 1:
        raise ValueError("--batch-sizes and --repeats must be >= 1, --devices and --microbatches >= 0")
    from tasks import REGISTRY

    if set(tasks) - set(REGISTRY) or set(ms) - set(models.MODELS):
        raise ValueError(f"--tasks from {sorted(REGISTRY)}, --models from {sorted(models.MODELS)}")
    for b in sizes:  # the trainer's own check of --devices against each batch (one-line ValueError)
        batch_mesh(b, a.devices)
    ref_dir = Path(a.reference or REFERENCE_DIR) if a.reference != "none" else None
    if ref_dir is not None and not (ref_dir / "venv" / "bin" / "python").exists():
        if a.reference:
            raise ValueError(f"--reference {ref_dir}: no {ref_dir}/venv/bin/python (set-up: lab/reference.py)")
        ref_dir = None
    peaks = machine_peaks()
    print(f"machine: {peaks['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s float32 matmul, "
          f"{peaks['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s streaming, on {device_name()}", flush=True)
    rows, reference = [], {}
    for task in tasks:
        for m in ms:
            modes = {"both": ["off", "auto"]}.get(a.fused_memory, [a.fused_memory]) if m == "ntm" else ["auto"]
            for b in sizes:
                for f in modes:
                    kw = {"task": task, "model": m, "batch_size": b, "devices": a.devices, "fused_memory": f,
                          "microbatches": a.microbatches, "repeats": a.repeats, "size_buckets": pre["size_buckets"]}
                    row = _isolated_row(kw) if pre["isolate"] else bench_one(**kw)
                    row["isolated"] = pre["isolate"]  # max_rss_bytes is this row's own only when isolated
                    row.update(peaks)
                    if peaks:  # fractions against this run's peaks (the isolated row did not measure them)
                        row["frac_of_matmul_peak"] = row["flops_per_step"] / (row["ms_per_step"] / 1e3) / (
                            peaks["matmul_flops_per_s"] * (1 if jax.devices()[0].platform == "cpu" else row["data_parallel_devices"]))
                    rows.append(row)
                    _print_row(row)
                if (task, m) == ("copy", "ntm") and ref_dir is not None and b in a.reference_batch_sizes:
                    for r in reference_rows(ref_dir, [b]):
                        reference[b] = r
                        print(f"pytorch-ntm copy batch {b:5d}: {r['sequences_per_s']:9.1f} sequences/s "
                              f"(ours {rows[-1]['examples_per_s'] / r['sequences_per_s']:.1f}x)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "reference": list(reference.values()), "peaks": peaks}, indent=2))
    out.with_suffix(".md").write_text(markdown(rows, reference, peaks))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    from lab.cli import run_cli

    sys.exit(run_cli(main))
