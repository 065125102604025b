"""Where one training step's time goes, op by op:  python -m lab.profile_step [--task copy] [--batch-size 256]

Traces a few dispatches of the same jitted training step that ``lab.bench`` times (``jax.profiler``),
reads the trace's XLA ops back and prints, per optimizer step: total time of each op (grouped by
kind, the op name without its numeric suffix, e.g. every ``ynn_fusion.N``), how many such ops ran
and how many distinct ones the program holds. Numbers are per optimizer step, averaged over the
traced dispatches; a trace slows the step down a little, so read the shares, not the totals.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from lab import models
from lab.config import TrainConfig, task_defaults
from lab.rundir import build_model, build_task
from lab.trainer import make_program

# host-side events of the runtime and of Python, and control-flow ops whose time is that of the
# ops inside them (counting both would count twice)
_HOST = re.compile(r"^(\$|ThunkExecutor|SlinkyThreadPool|end:|TfrtCpu|PjRt|Execute|jit_|while|conditional|call)")


def op_times(trace_dir: Path) -> dict[str, tuple[float, int]]:
    """{op name: (total microseconds, count)} over every complete event of the newest trace."""
    files = sorted(trace_dir.glob("**/*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
    events = json.loads(gzip.open(files[-1]).read())["traceEvents"]
    out: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("ph") == "X" and "dur" in e and not _HOST.match(e.get("name", "")):
            out[e["name"]][0] += float(e["dur"])
            out[e["name"]][1] += 1
    return {k: (v[0], int(v[1])) for k, v in out.items()}


def group(times: dict[str, tuple[float, int]]) -> list[tuple[str, float, int, int]]:
    """(kind, total us, ops run, distinct ops), dearest first; a kind is the name without ``.N``."""
    g: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0, 0])
    for name, (us, n) in times.items():
        kind = re.sub(r"\.\d+$", "", name)
        g[kind][0] += us
        g[kind][1] += n
        g[kind][2] += 1
    return sorted(((k, v[0], int(v[1]), int(v[2])) for k, v in g.items()), key=lambda r: -r[1])


def profile(task: str, model: str, batch_size: int, dispatch: int = 10, repeats: int = 2) -> dict:
    cfg = TrainConfig(**{**task_defaults(task), "task": task, "model": model, "batch_size": batch_size,
                         "devices": 1, "steps_per_dispatch": dispatch, "log_every": dispatch})
    t = build_task(cfg, training=True)
    graphdef, params = models.split(build_model(cfg, t))
    prog = make_program(cfg, t, graphdef, jax.random.key(0))
    carry = prog.initial_carry(params)
    *carry, stats = prog.train_chunk(*carry, jnp.int32(0), prog.data_key, dispatch)  # compile
    jax.block_until_ready(stats)
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for r in range(repeats):
            *carry, stats = prog.train_chunk(*carry, jnp.int32((r + 1) * dispatch), prog.data_key, dispatch)
            jax.block_until_ready(stats)
        jax.profiler.stop_trace()
        times = op_times(Path(d))
    steps = repeats * dispatch
    rows = [{"kind": k, "ms_per_step": us / 1000 / steps, "ops_per_step": n / steps, "distinct": distinct}
            for k, us, n, distinct in group(times)]
    return {"task": task, "model": model, "batch_size": batch_size, "seq_steps": t.max_steps(),
            "ms_per_step": sum(r["ms_per_step"] for r in rows), "ops_per_step": sum(r["ops_per_step"] for r in rows),
            "kinds": rows}


def main(argv: list[str] | None = None) -> None:
    from lab.cli import Parser

    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="copy")
    p.add_argument("--model", default="ntm")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default=None, help="also write the whole table as JSON here")
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.top < 1:
        p.error("--batch-size and --top must be >= 1")
    from lab.cli import use_every_core

    use_every_core()  # as train.py: one CPU device per core unless the user chose
    res = profile(a.task, a.model, a.batch_size)
    print(f"{a.model} on {a.task}, batch {a.batch_size}, {res['seq_steps']} time steps: "
          f"{res['ms_per_step']:.1f} ms of XLA ops per optimizer step in {res['ops_per_step']:.0f} op runs")
    print(f"{'ms/step':>9} {'share':>6} {'runs/step':>9} {'distinct':>8}  kind")
    for r in res["kinds"][: a.top]:
        print(f"{r['ms_per_step']:9.2f} {100 * r['ms_per_step'] / res['ms_per_step']:5.1f}% {r['ops_per_step']:9.0f} "
              f"{r['distinct']:8d}  {r['kind']}")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
