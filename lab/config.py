"""Typed run configuration, per-task defaults (the paper's set-ups), and JSON round-trip."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from lab.models import ModelConfig

OPTIMIZERS = ("adam", "rmsprop")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    task: str = "copy"
    model: str = "ntm"
    seed: int = 0
    batch_size: int = 32
    steps: int = 2000  # optimizer steps
    optimizer: str = "adam"
    lr: float = 3e-3
    lr_half_life: int = 0  # optimizer steps; 0: constant learning rate
    clip_norm: float = 10.0
    min_size: int | None = None  # None: the task's default range
    max_size: int | None = None
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the task: what evaluation sees
    # Training signals. The training distribution: options of the task's training_options (argmax: near_ties,
    # min_spread, early_max, extra_steps; modsquare: values) applied to the batches training draws, never to
    # evaluation. Step supervision: add this times the task's loss against its loop's running answer at every
    # step (tasks.base.SupervisedLoop) to the loss; 0: the last step's answer only.
    train_distribution: dict[str, Any] = dataclasses.field(default_factory=dict)
    trace_loss: float = 0.0
    # Head hints: add this times the cross-entropy of the NTM's read and write weightings against the rows the
    # task's tape algorithm uses on each step (tasks.base.TapeHints) to the loss; 0: off.
    head_hint: float = 0.0
    # Write hints: add this times the cross-entropy of how strongly the NTM writes (its write gate with
    # ModelConfig.write_gate, else its write weighting's peak) against the steps on which the task's algorithm
    # writes (tasks.base.WriteHints.write_targets); 0: off.
    write_hint: float = 0.0
    model_config: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    steps_per_dispatch: int = 10  # optimizer steps per jitted call (lax.scan)
    log_every: int = 50  # must be a multiple of steps_per_dispatch
    eval_batch_size: int = 256
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    max_nonfinite: int = 20  # stop after this many non-finite steps in a row
    target: float | None = None  # stop when eval main metric < target
    devices: int = 0  # data-parallel over this many devices; 0: all (jax.devices())
    # Split the size range into this many contiguous buckets, each padded only to its own largest size
    # (one compilation per bucket); each dispatch trains on one bucket, drawn with probability
    # proportional to its share of the sizes, so the size distribution is unchanged. 1: no buckets.
    size_buckets: int = 1
    # A run directory whose newest parameters this run starts from (a later stage of a curriculum:
    # same model shapes, fresh optimizer, its own task options and schedule). "": a fresh init.
    init_from: str = ""
    # Sharp heads: add this times the mean entropy (nats) of the NTM's read and write weightings,
    # over each example's active steps, to the loss. 0: the plain loss (and for non-NTM models).
    head_entropy: float = 0.0
    # The progressive loss of Bansal et al. 2022 (recurrent models): loss = (1 - a) * the plain loss
    # + a * the same loss from a second pass in which each example's state is detached
    # (stop_gradient) before a random step, uniform on [0, its steps) (step 0: nothing detached, Bansal
    # et al.'s n = 0): the later steps must reach the answer from whatever state the earlier ones left,
    # with no credit assignment to them. 0: off.
    progressive_loss: float = 0.0
    # Gradient accumulation: each optimizer step's batch is split into this many equal micro-batches, run one
    # after another (lax.scan) and their gradients averaged: the same step with a smaller working set (a
    # large batch whose arrays no longer fit in cache runs at a small batch's speed). 1: the whole batch at
    # once. 0 (auto): on CPU, the fewest micro-batches that leave each device at most
    # lab.parallel.MICROBATCH_PER_DEVICE examples of a recurrent model's batch (1 for the MLP and on GPU/TPU).
    microbatches: int = 0

    def __post_init__(self) -> None:
        for name in ("lr", "clip_norm", "head_entropy", "head_hint", "write_hint", "progressive_loss", "target", "trace_loss"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("batch_size", "steps", "steps_per_dispatch", "log_every", "eval_batch_size", "checkpoint_every", "keep_checkpoints", "max_nonfinite"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.size_buckets < 1:
            raise ValueError(f"size_buckets must be >= 1, got {self.size_buckets}")
        if self.devices < 0:
            raise ValueError(f"devices must be >= 0 (0 = all), got {self.devices}")
        if self.lr_half_life < 0:
            raise ValueError(f"lr_half_life must be >= 0, got {self.lr_half_life}")
        if self.head_entropy < 0:
            raise ValueError(f"head_entropy must be >= 0, got {self.head_entropy}")
        if self.trace_loss < 0:
            raise ValueError(f"trace_loss must be >= 0, got {self.trace_loss}")
        if self.head_hint < 0:
            raise ValueError(f"head_hint must be >= 0, got {self.head_hint}")
        if self.head_hint and self.model != "ntm":
            raise ValueError(f"head_hint supervises NTM head weightings; model {self.model!r} has none")
        if self.write_hint < 0:
            raise ValueError(f"write_hint must be >= 0, got {self.write_hint}")
        if self.write_hint and self.model != "ntm":
            raise ValueError("write_hint supervises how strongly the NTM writes: it needs model ntm")
        if self.head_entropy and self.model != "ntm":
            raise ValueError(f"head_entropy penalises NTM head weightings; model {self.model!r} has none")
        if self.microbatches < 0 or (self.microbatches and self.batch_size % self.microbatches):
            raise ValueError(f"microbatches must be 0 (auto) or divide batch_size {self.batch_size}, got {self.microbatches}")
        if not 0.0 <= self.progressive_loss <= 1.0:
            raise ValueError(f"progressive_loss must be in [0, 1], got {self.progressive_loss}")
        if self.progressive_loss and self.model not in ("ntm", "lstm"):
            raise ValueError(f"progressive_loss needs a recurrent model (ntm, lstm); model {self.model!r} has no state")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.log_every % self.steps_per_dispatch:
            raise ValueError(f"log_every ({self.log_every}) must be a multiple of steps_per_dispatch ({self.steps_per_dispatch})")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainConfig":
        d = migrate(d)
        d["model_config"] = ModelConfig(**d.get("model_config", {}))
        return TrainConfig(**d)

    @staticmethod
    def load(path: str | Path) -> "TrainConfig":
        return TrainConfig.from_dict(json.loads(Path(path).read_text()))


def migrate(d: dict[str, Any]) -> dict[str, Any]:
    """A config.json written before the training signals left the task options: its ``trace_loss`` task option
    becomes the run's ``trace_loss`` and the task's training-distribution options its ``train_distribution``
    (the same run: the same batches and the same loss). Anything else is returned as it is."""
    d, options = dict(d), d.get("task_options")
    if not isinstance(options, dict):
        return d
    from tasks import REGISTRY

    cls = REGISTRY.get(d.get("task", TrainConfig.task))
    moved = {k: v for k, v in options.items() if cls is not None and k in cls.training_options}
    if "trace_loss" in options:
        d.setdefault("trace_loss", options["trace_loss"])
    if moved or "trace_loss" in options:
        d["task_options"] = {k: v for k, v in options.items() if k not in moved and k != "trace_loss"}
        d["train_distribution"] = {**moved, **d.get("train_distribution", {})}
    return d


# Graves et al. 2014, Tables 1-3 (architecture), with our optimiser defaults. Applied by
# `task_defaults` before command-line overrides, so `--task copy` alone is the paper's set-up.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # batch 4, lr 3e-3: from a sweep over batch {2,4,8,16,32} x lr {1e-3,3e-3,1e-2,3e-2}: 10/10 seeds
    # reach < 0.1 bits (median 2,880 examples); lr 1e-2 is faster but relapses more. Halving the lr
    # every 1000 steps keeps the model converged when training goes on (README, "Copy")
    # One size bucket: four (--size-buckets 4) pad 0.63x as many steps, but at batch 4 the ten steps of a
    # dispatch then share one length range and 10 seeds needed a median 5,120 examples to < 0.1 bits
    # against 3,680 with one (README, "Copy").
    "copy": {"model_config": ModelConfig(memory_rows=128, memory_width=20, controller="lstm", controller_size=100),
             "batch_size": 4, "lr": 3e-3, "lr_half_life": 1000},
    "repeat_copy": {"model_config": ModelConfig(memory_rows=128, memory_width=20, controller="lstm", controller_size=100)},
    # batch 32, lr 3e-3 halved every 3000 steps: < 0.1 bits after 64K episodes (README); batch 4 and 16 were slower
    "associative_recall": {"model_config": ModelConfig(memory_rows=128, memory_width=20, controller="lstm", controller_size=100),
                           "lr_half_life": 3000},
    "priority_sort": {
        "model_config": ModelConfig(memory_rows=128, memory_width=20, controller="feedforward", controller_size=512,
                                    num_read_heads=8, num_write_heads=8),
    },
}


def task_defaults(task: str) -> dict[str, Any]:
    return dict(TASK_DEFAULTS.get(task, {}))
