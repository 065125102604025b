"""Training loop: one jitted update over pure (nnx.split) params, several steps per dispatch.

Data flow of one step: key = fold_in(data_key, step) -> task.sample -> model -> task.loss ->
grads -> optax (global-norm clipping) -> update, skipped when loss or grads are not finite.
The host only syncs to log, evaluate on a fixed held-out batch, and checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lab import models
from lab.config import TrainConfig
from lab.parallel import evaluation_forward, fetch, is_main_process, make_mesh, map_batch_axis, on_main_process, resolve_microbatches, \
    shard_batch, sharded_forward
from lab.rundir import (CHECKPOINTS, CONFIG, DONE, METRICS, CheckpointError, Checkpointer, RunDirError, RunLog, build_model,
                        build_task, params_from, prepare_workdir, truncate_metrics)
from tasks import Batch, Task


class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. too many non-finite steps in a row); checkpoints are kept."""


def size_buckets(task: Task, count: int) -> list[Task]:
    """The task's size range cut into ``count`` contiguous buckets (sizes as equal as possible, the
    larger buckets first), each a task padded only to its own largest size."""
    lo, hi = task.min_size, task.max_size
    if not 1 <= count <= hi - lo + 1:
        raise ValueError(f"size_buckets must be in [1, {hi - lo + 1}] (the number of sizes in "
                         f"{lo}..{hi}), got {count}")
    if count == 1:
        return [task]
    width, extra = divmod(hi - lo + 1, count)
    out, start = [], lo
    for b in range(count):
        end = start + width + (b < extra) - 1
        out.append(task.with_sizes(start, end))
        start = end + 1
    return out


def bucket_schedule(cfg: TrainConfig, buckets: list[Task], step: int) -> int:
    """Bucket of the dispatch slot holding optimizer step ``step`` (slots are ``steps_per_dispatch``
    steps long and the trainer never lets a dispatch cross a slot's edge): a deterministic function
    of (seed, slot), so a resumed or extended run trains on the same buckets as an uninterrupted one.
    Drawn with probability proportional to each bucket's number of sizes, or of sampled sizes where the
    task restricts them (modsquare's ``valid_sizes``), so the size distribution is unchanged."""
    if len(buckets) == 1:
        return 0
    slot_start = step - step % cfg.steps_per_dispatch  # (the first step of the slot: keeps earlier runs' schedules)
    return int(np.random.default_rng([cfg.seed & 0xFFFFFFFF, slot_start]).choice(len(buckets), p=bucket_weights(buckets)))


def bucket_weights(buckets: list[Task]) -> np.ndarray:
    """How often ``bucket_schedule`` draws each bucket: its share of the (sampled) sizes."""
    widths = np.array([len(b.valid_sizes()) for b in buckets], np.float64)
    return widths / widths.sum()


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    # lr_half_life > 0: the learning rate halves every that many steps (smoothly)
    lr = optax.exponential_decay(cfg.lr, cfg.lr_half_life, 0.5) if cfg.lr_half_life else cfg.lr
    if cfg.optimizer == "adam":
        opt = optax.adam(lr)
    else:  # Graves 2014: RMSProp with momentum 0.9
        opt = optax.rmsprop(lr, decay=0.95, momentum=0.9, eps=1e-6)
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)


def _tree_all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@dataclasses.dataclass
class Program:
    """The jitted functions of one run and what they close over."""

    task: Task
    graphdef: Any
    tx: optax.GradientTransformation
    train_chunk: Callable[..., Any]
    evaluate: Callable[..., Any]
    mesh: Mesh
    data_key: jax.Array  # the run's batch stream (train_chunk's fifth argument)
    buckets: list[Task] = dataclasses.field(default_factory=list)  # size buckets (train_chunk's last argument)
    microbatches: int = 1  # micro-batches per optimizer step (TrainConfig.microbatches, resolved)

    def replicate(self, tree: Any) -> Any:
        """Place params / optimizer state on every device of the mesh (what train_chunk expects)."""
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def initial_carry(self, params: Any) -> tuple[Any, Any, jax.Array]:
        """(params, fresh optimizer state, non-finite streak 0), placed as train_chunk expects them."""
        params = self.replicate(params)
        return params, self.replicate(self.tx.init(params)), self.replicate(jnp.zeros((), jnp.int32))


def head_entropy(aux: dict[str, jax.Array], steps: jax.Array) -> jax.Array:
    """Mean entropy (nats) of the NTM's read and write weightings [T, B, heads, N] over every
    head and every example's active steps t < steps[b] (the state is frozen after them)."""
    w = jnp.concatenate([aux["read_weights"], aux["write_weights"]], axis=2)  # [T, B, R+W, N]
    ent = -jnp.sum(w * jnp.log(jnp.maximum(w, 1e-30)), axis=-1).mean(axis=-1)  # [T, B]
    active = jnp.arange(w.shape[0])[:, None] < steps[None, :]
    return jnp.sum(jnp.where(active, ent, 0.0)) / jnp.maximum(jnp.sum(active), 1)


def head_hint(aux: dict[str, jax.Array], targets: tuple[jax.Array, ...]) -> jax.Array:
    """Mean cross-entropy (nats) of the NTM's first read and first write weighting [T, B, N] against the rows
    a tape algorithm uses (``TapeHints.head_targets``: rows and where they count, each [T, B])."""
    read_row, read_on, write_row, write_on = targets
    total, count = 0.0, 0.0
    for w, row, on in ((aux["read_weights"][:, :, 0], read_row, read_on), (aux["write_weights"][:, :, 0], write_row, write_on)):
        p = jnp.take_along_axis(w, row[..., None].astype(jnp.int32), axis=-1)[..., 0]  # [T, B]
        total = total + jnp.sum(jnp.where(on, -jnp.log(jnp.maximum(p, 1e-30)), 0.0))
        count = count + jnp.sum(on)
    return total / jnp.maximum(count, 1)


def write_hint(aux: dict[str, jax.Array], targets: tuple[jax.Array, jax.Array], gated: bool = True) -> jax.Array:
    """Mean binary cross-entropy (nats) of how strongly the NTM's first write head writes on each step [T, B] against
    the steps the task's algorithm writes on (``WriteHints.write_targets``: writes and where they count, each
    [T, B]). How strongly: the write gate (``gated``, an NTM with ModelConfig.write_gate), else the write weighting's
    peak (its largest row weight: near 1 a focused write, near 1/N a smear over every row)."""
    writes, on = targets
    g = aux["write_gates"][:, :, 0] if gated else aux["write_weights"][:, :, 0].max(-1)
    g = jnp.clip(g, 1e-7, 1.0 - 1e-7)
    ce = -jnp.where(writes, jnp.log(g), jnp.log1p(-g))
    return jnp.sum(jnp.where(on, ce, 0.0)) / jnp.maximum(jnp.sum(on), 1)


def microbatch(batch: Batch, i: jax.Array, k: int) -> Batch:
    """The i-th of k equal consecutive slices of a batch along its batch axis."""
    def take(x: jax.Array, axis: int) -> jax.Array:
        size = x.shape[axis] // k
        return jax.lax.dynamic_slice_in_dim(x, i * size, size, axis=axis)
    return map_batch_axis(batch, take)


def progressive_detach_steps(key: jax.Array, steps: jax.Array) -> jax.Array:
    """Per example, the step before which the progressive loss detaches the state: uniform on [0, steps[b])."""
    u = jax.random.uniform(key, steps.shape)
    return jnp.minimum(jnp.floor(u * steps).astype(jnp.int32), jnp.maximum(steps, 1) - 1)


def make_loss(cfg: TrainConfig, task: Task, forward: Callable[..., tuple[jax.Array, Any]]
              ) -> Callable[[Any, Batch, jax.Array], jax.Array]:
    """``loss_fn(params, batch, key)``: the task's loss, plus step supervision (trace_loss) and the NTM's
    head-entropy penalty, mixed with the progressive loss; averaged over the batch."""
    def plain_loss(params: Any, batch: Batch, detach_at: jax.Array | None = None) -> jax.Array:
        logits, aux = forward(params, batch.inputs, batch.steps, detach_at)
        loss = task.loss(logits, batch)
        if cfg.trace_loss:  # step supervision (build_task checked that the task is a SupervisedLoop)
            loss = loss + cfg.trace_loss * task.trace_loss(logits, batch)
        loss = loss.mean()
        if cfg.head_entropy:
            loss = loss + cfg.head_entropy * head_entropy(aux, batch.steps)
        if cfg.head_hint:  # build_task checked that the task is a TapeHints
            loss = loss + cfg.head_hint * head_hint(aux, task.head_targets(batch))
        if cfg.write_hint:
            loss = loss + cfg.write_hint * write_hint(aux, task.write_targets(batch), cfg.model_config.write_gate)
        return loss

    def loss_fn(params: Any, batch: Batch, key: jax.Array) -> jax.Array:
        loss = plain_loss(params, batch)
        if cfg.progressive_loss:  # TrainConfig.progressive_loss: detach each example before a random step
            detach_at = progressive_detach_steps(key, batch.steps)
            loss = (1.0 - cfg.progressive_loss) * loss + cfg.progressive_loss * plain_loss(params, batch, detach_at)
        return loss

    return loss_fn


def make_program(cfg: TrainConfig, task: Task, graphdef: Any, data_key: jax.Array, mesh: Mesh | None = None) -> Program:
    """The jitted training and evaluation functions of a run; ``task`` is what training samples (the run's
    training distribution: ``build_task(cfg, training=True)``)."""
    tx = make_optimizer(cfg)
    mesh = mesh or make_mesh(cfg)
    cfg = dataclasses.replace(cfg, microbatches=resolve_microbatches(cfg))

    loss_fn = make_loss(cfg, task, sharded_forward(graphdef, mesh))
    buckets = size_buckets(task, cfg.size_buckets)

    def one_step(carry: tuple[Any, Any, jax.Array], step: jax.Array, data_key: jax.Array, bucket: int = 0):
        params, opt_state, bad_run = carry
        batch = buckets[bucket].sample(jax.random.fold_in(data_key, step), cfg.batch_size)
        progressive_key = jax.random.fold_in(data_key, 0x70726F67)  # its own stream, apart from the batches'
        key = jax.random.fold_in(progressive_key, step)
        if cfg.microbatches == 1:
            loss, grads = jax.value_and_grad(loss_fn)(params, shard_batch(batch, mesh), key)
        else:  # gradient accumulation: the mean over equal micro-batches, one after another (lax.scan)
            def micro(acc: tuple[jax.Array, Any], i: jax.Array) -> tuple[tuple[jax.Array, Any], None]:
                mb = shard_batch(microbatch(batch, i, cfg.microbatches), mesh)
                l, g = jax.value_and_grad(loss_fn)(params, mb, jax.random.fold_in(key, i))
                return (acc[0] + l, jax.tree.map(jnp.add, acc[1], g)), None

            zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss, grads), _ = jax.lax.scan(micro, zero, jnp.arange(cfg.microbatches))
            loss, grads = loss / cfg.microbatches, jax.tree.map(lambda g: g / cfg.microbatches, grads)
        finite = jnp.isfinite(loss) & _tree_all_finite(grads)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        bad_run = jnp.where(finite, 0, bad_run + 1)
        stats = {"loss": loss, "grad_norm": optax.global_norm(grads), "nonfinite": (~finite).astype(jnp.int32)}
        return (keep(new_params, params), keep(new_opt, opt_state), bad_run), stats

    # The data key is an argument, not a constant folded into the program: runs that differ only in their seed
    # (a recipe's seeds, a selection's candidates) compile the same program, which a persistent compilation
    # cache then serves.
    @functools.partial(jax.jit, static_argnums=(5, 6), donate_argnums=(0, 1))
    def train_chunk(params, opt_state, bad_run, start, data_key, num, bucket=0):
        """``num`` optimizer steps from step ``start`` on size bucket ``bucket`` (static: one
        compilation per (num, bucket); see ``bucket_schedule``), batches drawn from ``data_key``."""
        step_fn = functools.partial(one_step, data_key=data_key, bucket=bucket)
        carry, stats = jax.lax.scan(step_fn, (params, opt_state, bad_run), start + jnp.arange(num))
        return (*carry, stats)

    eval_forward = evaluation_forward(graphdef, mesh.size)
    metrics = jax.jit(lambda logits, batch: {k: v.mean() for k, v in task.metrics(logits, batch).items()})

    def evaluate(params: Any, batch: Batch) -> dict[str, jax.Array]:
        logits, _ = eval_forward(params, batch.inputs, batch.steps)
        return metrics(logits, batch)

    return Program(task, graphdef, tx, train_chunk, evaluate, mesh, data_key, buckets, cfg.microbatches)


class _Progress:
    """tqdm bar on a terminal; periodic plain lines otherwise (CI, cluster logs)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        text = f"loss {record['train/loss']:.4g} | eval {record.get('eval/main', float('nan')):.4g} | {record['examples_per_s']:.0f} ex/s"
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text)
        else:
            print(f"step {step} | {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclasses.dataclass
class _Run:
    """An opened run: its program, the training state it resumes from, and where it logs."""
    cfg: TrainConfig
    workdir: Path
    prog: Program
    params: Any
    opt_state: Any
    bad_run: jax.Array
    step: int
    ckpt: Checkpointer
    eval_task: Task  # the task as every evaluation sees it (no training distribution): the logged eval/ metrics
    eval_key: jax.Array  # its fixed held-out batch
    main: bool  # this process writes the run's own files
    wall_before: float  # training seconds of the earlier calls this one resumes (wall_s counts them all)

    def save(self) -> None:
        self.ckpt.save(self.step, {"params": self.params, "opt_state": self.opt_state})


def _resumed_microbatches(cfg: TrainConfig, workdir: Path, resume: bool) -> TrainConfig:
    """Micro-batches "auto" resumes with the count the run was trained with (runs written before auto: 1)."""
    if not (resume and not cfg.microbatches and (workdir / CONFIG).is_file()):
        return cfg
    try:
        return dataclasses.replace(cfg, microbatches=int(json.loads((workdir / CONFIG).read_text())
                                                         .get("microbatches", 1)))
    except (ValueError, TypeError, AttributeError) as e:
        raise RunDirError(f"{workdir / CONFIG} is not a valid config: {e}") from e


def _open_run(cfg: TrainConfig, workdir: Path, resume: bool, overwrite: bool, wandb_project: str | None) -> _Run:
    """Check everything that can be checked, then prepare the run directory and restore the newest checkpoint
    (resume) or the parent's parameters (``init_from``). Nothing on disk changes before the checks pass."""
    task, eval_task = build_task(cfg, training=True), build_task(cfg)
    mesh = make_mesh(cfg)  # bad device counts fail before anything on disk changes
    size_buckets(task, cfg.size_buckets)  # so does an impossible bucket count
    if wandb_project:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ValueError("--wandb needs the wandb package: pip install wandb")
    graphdef, params = models.split(build_model(cfg, task))
    init_error: Exception | None = None
    if cfg.init_from:  # read (and check) before the run directory is touched
        try:
            params = params_from(cfg.init_from, params)
        except (RunDirError, CheckpointError) as e:
            ckpts = workdir / CHECKPOINTS
            if not (resume and ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())):
                raise
            init_error = e  # fatal only if the checkpoint of this run cannot be restored either
    defer_config = resume and (workdir / CONFIG).is_file()  # rewritten once its checkpoint has been restored

    def prepare() -> None:
        prepare_workdir(workdir, cfg, resume, overwrite)
        workdir.mkdir(parents=True, exist_ok=True)
        if not defer_config:
            (workdir / CONFIG).write_text(cfg.to_json())

    on_main_process(prepare, f"prepare {workdir}")  # multi-host: only process 0 writes the run's own files
    data_key, eval_key = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), 1))
    prog = make_program(cfg, task, graphdef, data_key, mesh)
    params, opt_state, bad_run = prog.initial_carry(params)
    step = 0
    ckpt = Checkpointer(workdir / CHECKPOINTS, keep=cfg.keep_checkpoints)
    if resume and ckpt.latest_step() is not None:
        step, restored = ckpt.restore({"params": params, "opt_state": opt_state})
        params, opt_state = prog.replicate((restored["params"], restored["opt_state"]))
    elif resume and any(p.name.isdigit() for p in ckpt.directory.iterdir()):
        raise RunDirError(f"{ckpt.directory} holds checkpoints that cannot be read; nothing was changed "
                          "(move the run aside with --overwrite to start anew)")
    elif init_error is not None:
        raise init_error
    metrics_path, main, wall_before = workdir / METRICS, is_main_process(), 0.0
    if main and defer_config:
        truncate_metrics(metrics_path, step, check_only=True)  # a damaged log: an error before anything changes
        (workdir / CONFIG).write_text(cfg.to_json())
    if main and not resume and metrics_path.exists():
        metrics_path.unlink()
    if main:
        wall_before = truncate_metrics(metrics_path, step)
        (workdir / DONE).unlink(missing_ok=True)  # written again when this call finishes
    return _Run(cfg, workdir, prog, params, opt_state, bad_run, step, ckpt, eval_task, eval_key, main, wall_before)


def _record(run: _Run, stats: dict[str, np.ndarray], nonfinite_total: int, since: tuple[float, int],
            t_start: float) -> dict[str, Any]:
    """The log line of a dispatch: training loss and gradient norm, throughput since the last line, time."""
    now, ex = time.perf_counter(), run.step * run.cfg.batch_size
    finite_losses = stats["loss"][stats["nonfinite"] == 0]
    return {
        "step": run.step,
        "examples_seen": ex,
        "train/loss": float(finite_losses.mean()) if finite_losses.size else float("nan"),
        "train/grad_norm": float(stats["grad_norm"][-1]),
        "train/nonfinite_steps": nonfinite_total,
        "examples_per_s": (ex - since[1]) / max(now - since[0], 1e-9),
        "wall_s": run.wall_before + now - t_start,
    }


def _loop(run: _Run, log: Callable[[dict[str, Any]], None], bar: "_Progress") -> tuple[str, dict[str, Any]]:
    """Train until the run's steps (or its target) are reached; returns (why it stopped, the last record)."""
    cfg, prog = run.cfg, run.prog
    eval_batch = jax.jit(run.eval_task.sample, static_argnums=1)(run.eval_key, cfg.eval_batch_size)

    def evaluate() -> dict[str, float]:
        ev = {f"eval/{k}": float(v) for k, v in fetch(prog.evaluate(run.params, eval_batch)).items()}
        return {**ev, "eval/main": ev[f"eval/{run.eval_task.main_metric}"]}

    if run.step == 0:  # the learning curve starts at the untrained model
        log({"step": 0, "examples_seen": 0, **evaluate()})
    nonfinite_total, record = 0, {}
    t_start = time.perf_counter()
    since = t_start, run.step * cfg.batch_size
    while run.step < cfg.steps:
        # never cross a dispatch slot's edge, so that the bucket schedule does not depend on where
        # a previous (shorter) run stopped
        num = min(cfg.steps_per_dispatch - run.step % cfg.steps_per_dispatch, cfg.steps - run.step)
        bucket = bucket_schedule(cfg, prog.buckets, run.step)
        run.params, run.opt_state, run.bad_run, stats = prog.train_chunk(
            run.params, run.opt_state, run.bad_run, jnp.int32(run.step), prog.data_key, num, bucket)
        run.step += num
        if run.step % cfg.log_every and run.step < cfg.steps:
            if run.step % cfg.checkpoint_every == 0:
                run.save()
            continue
        stats = fetch(stats)
        nonfinite_total += int(stats["nonfinite"].sum())
        record = {**_record(run, stats, nonfinite_total, since, t_start), **evaluate()}
        log(record)
        bar.update(run.step, record)
        since = time.perf_counter(), record["examples_seen"]
        if int(fetch(run.bad_run)) >= cfg.max_nonfinite:
            raise TrainingError(f"{int(fetch(run.bad_run))} non-finite steps in a row at step {run.step}; "
                                f"last good checkpoint kept in {run.ckpt.directory}")
        if run.step % cfg.checkpoint_every == 0:
            run.save()
        if cfg.target is not None and record["eval/main"] < cfg.target:
            return "target", record
    return "steps", record


def train(cfg: TrainConfig, workdir: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, wandb_project: str | None = None) -> dict[str, Any]:
    """Train one model on one task; returns a summary. The run directory (lab.rundir) gets config.json,
    metrics.jsonl (one object per log step), TensorBoard event files (tb/) and Orbax checkpoints."""
    workdir = Path(workdir)
    cfg = _resumed_microbatches(cfg, workdir, resume)
    run = _open_run(cfg, workdir, resume, overwrite, wandb_project)
    bar = _Progress(cfg.steps, run.step, progress and run.main)
    loggers = RunLog(workdir, cfg, wandb_project) if run.main else None

    def log(record: dict[str, Any]) -> None:
        if loggers is not None:
            loggers.log(record)

    t_start = time.perf_counter()
    try:
        stopped, record = _loop(run, log, bar)
        if int(fetch(run.bad_run)) == 0 and run.ckpt.latest_step() != run.step:
            run.save()
    finally:
        bar.close()
        if loggers is not None:
            loggers.close()
        run.ckpt.close()
    summary = {"stopped": stopped, "params": models.count_params(nnx.merge(run.prog.graphdef, run.params)),
               "step": run.step, "examples_seen": run.step * cfg.batch_size,
               "wall_s": run.wall_before + time.perf_counter() - t_start,
               **{k: v for k, v in record.items() if k.startswith("eval/")}}
    if run.main:  # the run finished (steps done, or the target met): a later stage may start from it
        (workdir / DONE).write_text(json.dumps({"stopped": stopped, "step": run.step, "steps": cfg.steps,
                                                "wall_s": round(summary["wall_s"], 1)}) + "\n")
    return summary
