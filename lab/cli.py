"""Command-line parsing for train.py and eval.py: flags -> typed configs, errors -> exit code 2."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from typing import Any, Callable

from lab.config import OPTIMIZERS, TrainConfig, task_defaults
from lab.models import MODELS, ModelConfig
from ntm.core import FUSED_MODES

# flag -> ModelConfig field
MODEL_FLAGS = {
    "memory_rows": int, "memory_width": int, "controller": str, "controller_size": int, "activation": str,
    "read_heads": int, "write_heads": int, "shift_range": int, "memory_init": str, "hidden_size": int,
    "mlp_layers": int, "mlp_max_steps": int,
}
_MODEL_FIELD = {"read_heads": "num_read_heads", "write_heads": "num_write_heads"}


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (defaults: the task's paper configuration)")
    for flag, typ in MODEL_FLAGS.items():
        g.add_argument("--" + flag.replace("_", "-"), type=typ, default=None)
    g.add_argument("--write-gate", action="store_true", default=None,
                   help="NTM: a DNC-style write gate per write head (ntm.NTMConfig.write_gate)")
    g.add_argument("--fused-memory", choices=FUSED_MODES, default=None,
                   help="NTM: the fused C++ memory kernel (ntm.NTMConfig.fused_memory; default auto: on CPU "
                        "wherever it applies)")


def _preset_flags(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("experiments (train every model of a named preset; see lab/experiments.py)")
    e.add_argument("--experiment", default=None, help="preset name; runs go to <runs-root>/<experiment>/<model>-s<seed>")
    e.add_argument("--models", nargs="+", default=None, help="only these models of the preset")
    e.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds (default: the preset's)")
    e.add_argument("--with-parents", action="store_true",
                   help="with --experiment: first train every earlier stage its models start from")
    e.add_argument("--runs-root", default="runs")
    e.add_argument("--parents-root", default=None, metavar="DIR",
                   help="with --experiment: read the parent runs a stage starts from under DIR instead of --runs-root "
                        "(a variation of one stage, e.g. --set lr=1e-3 --runs-root runs/try --parents-root runs)")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="set any field of the preset (with --experiment/--recipe: lab/experiments.py Experiment, e.g. "
                        "lr=1e-3, train_distribution.near_ties=0.5, ntm.memory_rows=64) or of the run (lab/config.py "
                        "TrainConfig, e.g. model_config.controller_size=32); typed, repeatable")
    r = p.add_argument_group("recipes (a named result: chains of stages over seeds, then a report)")
    r.add_argument("--recipe", default=None,
                   help="train every stage of this recipe for each seed (--seeds, default the recipe's), then write "
                        "<runs-root>/<recipe>/report.md; see lab/experiments.py RECIPES")


def train_parser() -> argparse.ArgumentParser:
    from tasks import REGISTRY

    d = TrainConfig()
    p = Parser(
        prog="train.py", description="Train a model on a task; the run directory gets config.json, "
        "metrics.jsonl and Orbax checkpoints.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default=d.task, choices=sorted(REGISTRY))
    p.add_argument("--model", default=d.model, choices=sorted(MODELS))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workdir", default=None, help="run directory (default runs/<task>-<model>-s<seed>)")
    p.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}, or the task's (copy: 4)")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {d.steps}; with --experiment, the preset's)")
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr}, or the task's")
    p.add_argument("--lr-half-life", type=int, default=None, help="halve the learning rate every this many steps (0: constant)")
    p.add_argument("--clip-norm", type=float, default=d.clip_norm)
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a task option (repeatable), e.g. --task-option labels=random --task-option levels=256 "
                   "(VALUE is read as JSON when it parses, else as a string)")
    p.add_argument("--train-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the task's training distribution (repeatable; evaluation never sees it), e.g. "
                        "--train-option near_ties=0.5 (argmax: near_ties, min_spread, early_max, extra_steps; "
                        "modsquare: values)")
    p.add_argument("--trace-loss", type=float, default=d.trace_loss, metavar="W",
                   help="step supervision: add W times the loss against the loop's running answer at every step "
                        "(argmax, modsquare)")
    p.add_argument("--min-size", type=int, default=None, help="smallest problem size (task default if unset)")
    p.add_argument("--max-size", type=int, default=None, help="largest problem size (task default if unset)")
    p.add_argument("--size-buckets", type=int, default=None,
                   help="split the size range into this many buckets, each padded to its own largest size "
                   "(one compilation each; fewer padded steps on short problems; default 1, or the task's: copy 4)")
    _model_flags(p)
    p.add_argument("--target", type=float, default=None, help="stop once the eval main metric is below this")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    p.add_argument("--steps-per-dispatch", type=int, default=d.steps_per_dispatch)
    p.add_argument("--max-nonfinite", type=int, default=d.max_nonfinite)
    p.add_argument("--devices", type=int, default=d.devices, help="data-parallel over this many devices (0: all)")
    p.add_argument("--init-from", default=d.init_from, metavar="RUN_DIR",
                   help="start from the newest parameters of this run directory (same model shapes; fresh optimizer)")
    p.add_argument("--head-entropy", type=float, default=d.head_entropy,
                   help="NTM only: add this times the mean entropy of the head weightings to the loss (sharper heads)")
    p.add_argument("--head-hint", type=float, default=d.head_hint, metavar="W",
                   help="NTM only: add W times the cross-entropy of the head weightings against the rows the task's tape "
                        "algorithm uses (modsquare_serial) to the loss: a training hint")
    p.add_argument("--write-hint", type=float, default=d.write_hint, metavar="W",
                   help="NTM: add W times the cross-entropy of how strongly it writes (the write gate with --write-gate, "
                        "else the write weighting's peak) against the steps on which the task's algorithm writes "
                        "(argmax, modsquare_serial): a training hint")
    p.add_argument("--microbatches", type=int, default=d.microbatches, metavar="K",
                   help="gradient accumulation: split each batch into K equal micro-batches run one after another "
                        "(0: auto: on CPU, each device holds at most lab.parallel.MICROBATCH_PER_DEVICE examples)")
    p.add_argument("--progressive-loss", type=float, default=d.progressive_loss, metavar="ALPHA",
                   help="NTM/LSTM: mix in the progressive loss of Bansal et al. 2022 with this weight (a second pass "
                        "with each example's state detached before a random step)")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="move an existing run in --workdir aside and start anew")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--wandb", default=None, metavar="PROJECT",
                   help="also log to Weights & Biases under this project (needs `pip install wandb`; off by default)")
    _preset_flags(p)
    return p


def _key_values(flag: str, items: list[str]) -> dict[str, Any]:
    """KEY=VALUE items, each VALUE read as JSON when it parses, else as a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    defaults = task_defaults(a.task)
    mc: ModelConfig = defaults.pop("model_config", ModelConfig())
    overrides = {_MODEL_FIELD.get(k, k): getattr(a, k) for k in [*MODEL_FLAGS, "write_gate", "fused_memory"]
                 if getattr(a, k) is not None}
    mc = dataclasses.replace(mc, **overrides)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kw: dict[str, Any] = {k: v for k, v in vars(a).items() if k in fields and k != "model_config" and v is not None}
    kw.setdefault("steps", TrainConfig.steps)
    options = {**defaults.pop("task_options", {}), **_key_values("--task-option", a.task_option)}
    training = _key_values("--train-option", a.train_option)
    cfg = TrainConfig(**{**defaults, **kw, "task_options": options, "train_distribution": training, "model_config": mc})
    if a.size_buckets is None and cfg.size_buckets > 1:  # a task's default bucket count, never more than its sizes
        from lab.rundir import build_task

        task = build_task(cfg, training=True)
        cfg = dataclasses.replace(cfg, size_buckets=min(cfg.size_buckets, task.max_size - task.min_size + 1))
    return cfg


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (exit 2), not the usage block; -h has the usage."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_every_core() -> int | None:
    """Give XLA one CPU device per usable core, so that data parallelism (lab.trainer's ``shard_map``)
    keeps every core busy: call before anything starts JAX's backends. Left alone when the user chose
    (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, or ``JAX_NUM_CPU_DEVICES``) and when JAX
    is already running (a library call inside someone's program). Returns the count it set, else None.
    On GPU and TPU this only shapes the unused CPU platform."""
    import jax

    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or "JAX_NUM_CPU_DEVICES" in os.environ:
        return None
    n = usable_cores()
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # backends already initialised
        return None
    return n


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main``; expected failures become one line on stderr and exit code 2."""
    from lab.rundir import CheckpointError, RunDirError
    from lab.trainer import TrainingError

    import logging

    # a warning on the command line is one line (e.g. the fused kernel failed to build: pure JAX instead)
    warnings.formatwarning = lambda message, category, *_a, **_k: f"warning: {message}\n"
    logging.getLogger("absl").setLevel(logging.CRITICAL)  # Orbax's own log lines: its errors reach us as exceptions
    try:
        return main(argv)
    except (ValueError, RunDirError, CheckpointError, TrainingError, OSError) as e:
        # OSError: a path that is not what it should be (a file for a directory, a directory for a file, ...)
        message = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, OSError) and e.filename and str(e.filename) not in message:
            message += f": {e.filename}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
