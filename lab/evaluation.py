"""Evaluate trained runs: metrics at the training sizes and beyond, written as JSON + Markdown.

Everything is rebuilt from the run directory (config.json + newest checkpoint); evaluation
batches come from fixed keys, so two evaluations of the same checkpoint agree exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from lab import models
from lab.config import TrainConfig
from lab.parallel import evaluation_forward
from lab.rundir import load_run, read_metrics
from tasks import Batch, Task

EVAL_SEED = 12345  # evaluation batches never share keys with training (which folds in the run seed)


def default_sizes(cfg: TrainConfig, task: Task) -> list[int]:
    """The sizes the task's evaluation table reports (Task.evaluation_sizes: copy's follow Graves 2014 Fig. 4)."""
    return list(task.evaluation_sizes())


@dataclasses.dataclass
class Evaluator:
    """A model's pure params plus a jitted forward pass (one compile per distinct batch shape), each batch
    split over the devices as in training (lab.parallel.evaluation_forward)."""

    graphdef: Any
    params: Any

    def __post_init__(self) -> None:
        self._forward = evaluation_forward(self.graphdef)

    @staticmethod
    def of(model: nnx.Module) -> "Evaluator":
        return Evaluator(*models.split(model))

    def forward(self, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        return self._forward(self.params, batch.inputs, batch.steps)

    def metrics(self, task: Task, batch: Batch) -> dict[str, np.ndarray]:
        logits, _ = self.forward(batch)
        return {k: np.asarray(v) for k, v in task_metrics(task)(logits, batch).items()}


def fixed_batch(task: Task, batch_size: int, seed: int = EVAL_SEED) -> Batch:
    return _sampler(task)(jax.random.key(seed), batch_size)


@functools.lru_cache(maxsize=128)
def _sampler(task: Task) -> Callable[..., Batch]:
    """One jitted sampler per task (tasks are frozen dataclasses, equal when their options are): a new
    ``jax.jit`` wrapper per call would compile the sampler again for every batch."""
    return jax.jit(task.sample, static_argnums=1)


@functools.lru_cache(maxsize=128)
def task_metrics(task: Task) -> Callable[..., dict[str, jax.Array]]:
    """The task's per-example metrics, jitted once per task: run eagerly they dispatch (and compile) every
    small operation on its own, once per new shape."""
    return jax.jit(task.metrics)


def wrong_on(ev: "Evaluator", task: Task, batch_size: int, seed: int) -> tuple[Batch, Any, Any, np.ndarray]:
    """The fixed batch of ``seed``, the model's logits and aux on it, and which examples it gets wrong
    ([B] bool: the task's error metric > 0)."""
    batch = fixed_batch(task, batch_size, seed)
    logits, aux = ev.forward(batch)
    return batch, logits, aux, np.asarray(task_metrics(task)(logits, batch)["error"]) > 0


def summarise(per_example: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over the batch, plus the standard error of each mean."""
    out: dict[str, float] = {}
    for k, v in per_example.items():
        v = np.asarray(v, np.float64)
        out[k] = float(v.mean())
        out[f"{k}_sem"] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return out


def evaluate_on(ev: Evaluator, make: Callable[[], Task], batch_size: int, **keys: Any) -> dict[str, Any]:
    """One table row: ``keys`` plus the batch means of ``make()``'s metrics on a fixed batch, or
    ``skipped`` with the reason when the task or model cannot take it (e.g. an MLP whose input width
    cannot hold longer sequences)."""
    row: dict[str, Any] = dict(keys)
    try:
        t = make()
        row.update(summarise(ev.metrics(t, fixed_batch(t, batch_size))))
    except ValueError as e:
        row["skipped"] = str(e)
    return row


def evaluate_sizes(ev: Evaluator, task: Task, sizes: list[int], batch_size: int) -> list[dict[str, Any]]:
    """One row per size: every example of the batch has exactly that size."""
    return [evaluate_on(ev, lambda s=size: task.with_sizes(s, s), batch_size, size=size, examples=batch_size)
            for size in sizes]


def evaluate_run(workdir: str | Path, sizes: list[int] | None = None, batch_size: int = 256,
                 step: int | None = None) -> dict[str, Any]:
    """Evaluate a run directory at its training sizes and beyond; returns the report dict."""
    return _evaluate_loaded(workdir, *load_run(workdir, step), sizes, batch_size)


def _evaluate_loaded(workdir: str | Path, cfg: TrainConfig, task: Task, model: nnx.Module, ckpt_step: int,
                     sizes: list[int] | None, batch_size: int) -> dict[str, Any]:
    sizes = sizes or default_sizes(cfg, task)
    ev = Evaluator.of(model)
    return {
        "workdir": str(workdir),
        "task": cfg.task,
        "model": cfg.model,
        "seed": cfg.seed,
        "checkpoint_step": ckpt_step,
        "examples_seen": ckpt_step * cfg.batch_size,
        "params": models.count_params(model),
        "train_sizes": [task.min_size, task.max_size],
        "main_metric": task.main_metric,
        "rows": evaluate_sizes(ev, task, sizes, batch_size),
    }


def report_run(workdir: str | Path, sizes: list[int] | None = None, batch_size: int = 256, step: int | None = None,
               example_size: int | None = None) -> dict[str, Any]:
    """What ``eval.py RUN`` writes into the run directory: eval.json, eval.md, learning_curve.png and
    example.png (one example of ``example_size``, default the largest training size)."""
    from lab import figures

    workdir = Path(workdir)
    cfg, task, model, ckpt_step = load_run(workdir, step)
    report = _evaluate_loaded(workdir, cfg, task, model, ckpt_step, sizes, batch_size)
    write_report(report, workdir)
    figures.learning_curves([(workdir.name, read_metrics(workdir))], workdir / "learning_curve.png",
                            ylabel=report["main_metric"])
    size = example_size or task.max_size
    figures.head_picture(example_trace(model, task, size), workdir / "example.png",
                         title=f"{cfg.task} / {cfg.model}, size {size}")
    return report


def report_combined(reports: list[dict[str, Any]], out: str | Path) -> None:
    """Several runs' reports side by side: eval.json, eval.md, metric_vs_size.png, learning_curves.png."""
    from lab import figures

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(reports, indent=2) + "\n")
    (out / "eval.md").write_text("\n".join(markdown_table(r) for r in reports))
    figures.metric_vs_size(reports, out / "metric_vs_size.png")
    figures.learning_curves([(f"{r['model']} s{r['seed']}", read_metrics(r["workdir"])) for r in reports],
                            out / "learning_curves.png", ylabel=reports[0]["main_metric"])


def example_trace(model: nnx.Module, task: Task, size: int, seed: int = EVAL_SEED) -> dict[str, np.ndarray]:
    """One example of the given size: inputs, targets, outputs (probabilities) and, for the NTM,
    read/write weightings (and write gates, where it has them) per step, each cut to the example's own
    steps. Shapes [T, ...]."""
    t = task.with_sizes(size, size)
    batch = fixed_batch(t, 1, seed)
    logits, aux = Evaluator.of(model).forward(batch)
    n = int(batch.steps[0])
    out = {
        "inputs": np.asarray(batch.inputs[:n, 0]),
        "targets": np.asarray(batch.targets[:n, 0]),
        "mask": np.asarray(batch.mask[:n, 0]),
        "outputs": np.asarray(jax.nn.sigmoid(logits[:n, 0])),
    }
    for k in ("read_weights", "write_weights", "write_gates"):
        if k in aux:
            out[k] = np.asarray(aux[k][:n, 0])  # [T, heads, N] ([T, heads] for the gates)
    return out


def markdown_table(report: dict[str, Any]) -> str:
    """Markdown table of one run's report: size, main metric (+- s.e.), exact match."""
    main = report["main_metric"]
    lo, hi = report["train_sizes"]
    lines = [
        f"**{report['task']} / {report['model']}** (seed {report['seed']}, {report['params']:,} params, "
        f"checkpoint step {report['checkpoint_step']}, {report['examples_seen']:,} examples seen; "
        f"trained on sizes {lo}-{hi})",
        "",
        f"| size | {main} | exact match | examples |",
        "|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        mark = "" if lo <= r["size"] <= hi else " (beyond training)"
        if "skipped" in r:
            lines.append(f"| {r['size']}{mark} | n/a: {r['skipped']} | | |")
        else:
            lines.append(f"| {r['size']}{mark} | {r[main]:.3g} +- {r[main + '_sem']:.2g} | "
                         f"{r.get('exact_match', float('nan')):.3f} | {r['examples']} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], outdir: str | Path, name: str = "eval") -> tuple[Path, Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    js, md = outdir / f"{name}.json", outdir / f"{name}.md"
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(markdown_table(report))
    return js, md


__all__ = ["Evaluator", "evaluate_run", "report_run", "report_combined", "evaluate_sizes", "example_trace", "write_report", "markdown_table",
           "fixed_batch", "default_sizes"]
