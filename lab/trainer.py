"""Training loop: one jitted update over pure (nnx.split) params, several steps per dispatch.

Data flow of one step: key = fold_in(data_key, step) -> task.sample -> model -> task.loss ->
grads -> optax (global-norm clipping) -> update, skipped when loss or grads are not finite.
The host only syncs to log, evaluate on a fixed held-out batch, and checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import shutil
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
from lab.checkpoint import Checkpointer, CheckpointError
from lab.config import TrainConfig
from tasks import Batch, Task, make_task


# Fields that may change when a run is resumed: they steer the loop, not what is computed.
RUN_CONTROL_FIELDS = frozenset({"steps", "target", "log_every", "checkpoint_every", "keep_checkpoints",
                                "max_nonfinite", "steps_per_dispatch", "devices"})
# ModelConfig fields of the same kind (how the model runs: the same function to float32 rounding).
MODEL_CONTROL_FIELDS = frozenset({"fused_memory"})


class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. too many non-finite steps in a row); checkpoints are kept."""


class RunDirError(RuntimeError):
    """The run directory holds something we must not overwrite."""


def build_task(cfg: TrainConfig) -> Task:
    """The task a config names; a task option of the wrong type or out of range is a ValueError."""
    task = make_task(cfg.task, **cfg.task_options)  # unknown and wrongly typed options: ValueError
    try:
        if cfg.min_size is not None or cfg.max_size is not None:
            task = task.with_sizes(cfg.min_size if cfg.min_size is not None else task.min_size,
                                   cfg.max_size if cfg.max_size is not None else task.max_size)
        task.max_steps()  # options whose types only fail once used (e.g. a string where a number belongs)
    except (TypeError, ArithmeticError) as e:
        raise ValueError(f"task {cfg.task} with options {cfg.task_options}: {e}") from None
    return task


def build_model(cfg: TrainConfig, task: Task, max_steps: int | None = None) -> nnx.Module:
    return models.make_model(cfg.model, task.input_size, task.output_size, cfg.model_config,
                             max_steps or task.max_steps(), cfg.seed)


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


def batch_mesh(batch: int, devices: int = 0, what: str = "") -> Mesh:
    """A 1-D ("data",) mesh for a batch of ``batch`` examples: the first ``devices`` devices (the batch
    must split evenly over them), or with 0 the most devices (up to all) that split it evenly."""
    available = jax.devices()
    if devices:
        if devices > len(available):
            where = (f"one per usable core on this CPU; XLA_FLAGS=--xla_force_host_platform_device_count={devices} "
                     "simulates more" if available[0].platform == "cpu" else available[0].platform)
            raise ValueError(f"--devices {devices}: only {len(available)} device(s) available ({where})")
        if batch % devices:
            raise ValueError(f"batch size {batch}{what} does not split over {devices} devices; use a multiple of "
                             f"{devices} or fewer --devices")
        n = devices
    else:
        n = max(d for d in range(1, len(available) + 1) if batch % d == 0)
    if jax.process_count() > 1 and n < len(available):
        raise ValueError(f"batch size {batch}{what} must split over all {len(available)} devices of the "
                         f"{jax.process_count()} processes (a multiple of {len(available)})")
    return Mesh(np.array(available[:n]), ("data",))


# TrainConfig.microbatches = 0 (auto) keeps each device's slice of a recurrent model's forward pass at most
# this many examples: beyond it the scan's saved carries (for the NTM, memory [N, M] per step and example)
# leave the cache and throughput per example falls (README, "Throughput"; python -m lab.bench).
MICROBATCH_PER_DEVICE = 128


def resolve_microbatches(cfg: TrainConfig) -> int:
    """``cfg.microbatches``, or for 0 (auto) the fewest equal micro-batches that keep each CPU device's share of
    a recurrent model's batch at most MICROBATCH_PER_DEVICE (1 for the MLP, which has no time loop, and on
    accelerators, which want the whole batch at once)."""
    if cfg.microbatches:
        return cfg.microbatches
    if cfg.model == "mlp" or jax.devices()[0].platform != "cpu":
        return 1
    per_device = cfg.batch_size // batch_mesh(cfg.batch_size, cfg.devices).size
    fits = [k for k in range(1, per_device + 1)
            if per_device % k == 0 and MICROBATCH_PER_DEVICE // 4 <= per_device // k <= MICROBATCH_PER_DEVICE]
    return fits[0] if per_device > MICROBATCH_PER_DEVICE and fits else 1  # no even split near the cap: whole


def make_mesh(cfg: TrainConfig) -> Mesh:
    """The training mesh: parameters replicated, each forward pass's batch split over it (``batch_mesh`` of
    a micro-batch); with one device this is plain single-device jit. ``cfg.devices`` = 0 (the default) uses
    as many devices as split the batch evenly, all of them whenever the batch is a multiple of their count."""
    k = resolve_microbatches(cfg)
    part = cfg.batch_size // k  # what one forward pass splits over the devices
    what = f" (each of {k} micro-batches of the batch of {cfg.batch_size})" if k > 1 else ""
    mesh = batch_mesh(part, cfg.devices, what)
    if not cfg.devices and mesh.size < len(jax.devices()):
        print(f"note: batch size {part}{what} splits over {mesh.size} of {len(jax.devices())} devices; "
              f"use a multiple of {len(jax.devices())} to use them all", file=sys.stderr)
    return mesh


def sharded_forward(graphdef: Any, mesh: Mesh) -> Callable[..., tuple[jax.Array, Any]]:
    """``forward(params, inputs [T, B, X], steps [B], detach_at [B] | None) -> (logits [T, B, Y], aux)`` with
    each device of ``mesh`` running its slice of the batch (``shard_map``; the parameters' gradient is summed
    over devices by its transpose). GSPMD alone cannot split the fused memory kernel's custom call and would
    run the whole batch on every device. Training and every evaluation use this one forward."""
    def forward(params: Any, inputs: jax.Array, steps: jax.Array, detach_at: jax.Array | None) -> tuple[jax.Array, Any]:
        model = nnx.merge(graphdef, params)
        return model(inputs, steps) if detach_at is None else model(inputs, steps, detach_at=detach_at)

    if mesh.size == 1:
        return forward
    batch_spec = P(None, "data")  # [T, B, ...]
    return jax.shard_map(forward, mesh=mesh, in_specs=(P(), batch_spec, P("data"), P("data")),
                         out_specs=(batch_spec, batch_spec), check_vma=False)  # carries start replicated


def evaluation_forward(graphdef: Any, devices: int = 0) -> Callable[..., tuple[jax.Array, Any]]:
    """``(params, inputs [T, B, X], steps [B]) -> (logits, aux)``, each batch split over the most devices (at
    most ``devices``, 0: all) that divide it, as in training: parameters are replicated and the batch placed
    on that mesh, then one jitted ``sharded_forward`` per mesh runs it."""
    compiled: dict[int, tuple[Mesh, Callable[..., Any]]] = {}

    def forward(params: Any, inputs: jax.Array, steps: jax.Array) -> tuple[jax.Array, Any]:
        B = inputs.shape[1]
        n = max(d for d in range(1, (devices or len(jax.devices())) + 1) if B % d == 0)
        if n not in compiled:
            mesh = batch_mesh(B, n)
            compiled[n] = mesh, jax.jit(lambda p, x, s, f=sharded_forward(graphdef, mesh): f(p, x, s, None))
        mesh, fn = compiled[n]
        put = lambda x, *spec: jax.device_put(x, NamedSharding(mesh, P(*spec)))  # noqa: E731
        return fn(put(params), put(inputs, None, "data"), put(steps, "data"))
    return forward


def map_batch_axis(batch: Batch, fn: Callable[[jax.Array, int], jax.Array]) -> Batch:
    """fn(array, its batch axis) on every array of a batch: axis 1 for [T, B, ...] arrays, 0 for [B] and aux."""
    time_major = {k: fn(v, 0 if v.ndim == 1 else 1) for k, v in batch._asdict().items() if k != "aux"}
    aux = None if batch.aux is None else jax.tree.map(lambda x: fn(x, 0), batch.aux)  # batch-first
    return Batch(**time_major, aux=aux)


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """Constrain a batch to be split over the mesh along its batch axis."""
    def one(x: jax.Array, batch_axis: int) -> jax.Array:
        spec = P(*([None] * batch_axis), "data")
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
    return map_batch_axis(batch, one)


def maybe_initialize_distributed() -> None:
    """Join a multi-host job when the environment describes one (see README, "Many devices")."""
    import os

    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("NTM_DISTRIBUTED") == "1":
        # jax reads JAX_COORDINATOR_ADDRESS itself but not the process count and id, so pass those; with
        # none of them (NTM_DISTRIBUTED=1) it auto-detects Cloud TPU pods and SLURM. On CPU the processes'
        # collectives go through jax_cpu_collectives_implementation (default "gloo").
        count, pid = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
        jax.distributed.initialize(num_processes=int(count) if count else None,
                                   process_id=int(pid) if pid else None)


def is_main_process() -> bool:
    """Whether this process writes the run directory's own files (config.json, metrics, TensorBoard): the
    only one, or process 0 of a multi-host job. Checkpoints are written by every process together (Orbax)."""
    return jax.process_index() == 0


def fetch(tree: Any) -> Any:
    """``jax.device_get`` that also takes arrays spanning other processes' devices (multi-host): a replicated
    one is read from this process's own replica, any other is gathered from every process."""
    def one(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return jax.device_get(x)
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(one, tree)


def on_main_process(fn: Callable[[], None], what: str) -> None:
    """``fn()`` on the main process only, the others waiting for it; when it fails there, every process
    raises (the others a RunDirError naming ``what``) rather than hang in the next collective."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    error = None
    if is_main_process():
        try:
            fn()
        except Exception as e:  # re-raised below, after the others have heard of it
            error = e
    failed = int(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
    if error is not None:
        raise error
    if failed:
        raise RunDirError(f"process 0 failed to {what} (see its output)")


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


def make_program(cfg: TrainConfig, task: Task, graphdef: Any, data_key: jax.Array, mesh: Mesh | None = None) -> Program:
    tx = make_optimizer(cfg)
    mesh = mesh or make_mesh(cfg)
    cfg = dataclasses.replace(cfg, microbatches=resolve_microbatches(cfg))

    forward = sharded_forward(graphdef, mesh)

    def plain_loss(params: Any, batch: Batch, detach_at: jax.Array | None = None) -> jax.Array:
        logits, aux = forward(params, batch.inputs, batch.steps, detach_at)
        loss = task.loss(logits, batch).mean()
        if cfg.head_entropy:
            loss = loss + cfg.head_entropy * head_entropy(aux, batch.steps)
        return loss

    def loss_fn(params: Any, batch: Batch, key: jax.Array) -> jax.Array:
        loss = plain_loss(params, batch)
        if cfg.progressive_loss:  # TrainConfig.progressive_loss: detach each example before a random step
            detach_at = progressive_detach_steps(key, batch.steps)
            loss = (1.0 - cfg.progressive_loss) * loss + cfg.progressive_loss * plain_loss(params, batch, detach_at)
        return loss

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


def prepare_workdir(workdir: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber another run; --overwrite moves the old run aside instead of deleting it."""
    cfg_path = workdir / "config.json"
    if not workdir.exists() or not any(workdir.iterdir()):
        return
    if resume:
        if not cfg_path.exists():
            raise RunDirError(f"{workdir} has no config.json to resume from")
        try:
            old = json.loads(cfg_path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
            TrainConfig.from_dict(old)  # every field known and of its type
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise RunDirError(f"{cfg_path} is not a valid config: {e}") from e
        new = json.loads(cfg.to_json())
        default = json.loads(TrainConfig().to_json())  # fields added since the old run was written
        if isinstance(old.get("model_config"), dict):  # the same for the model's fields
            old["model_config"] = {**default["model_config"], **old["model_config"]}
            for k in MODEL_CONTROL_FIELDS:
                old["model_config"][k] = new["model_config"][k]
        # micro-batches: "auto" (0) and the count it resolved to are the same run; before auto existed it was 1
        old_k = old.get("microbatches", 1) or resolve_microbatches(dataclasses.replace(cfg, microbatches=0))
        if old_k == resolve_microbatches(cfg):
            old["microbatches"] = new["microbatches"]
        # with size buckets the dispatch length decides which steps share a bucket: not a free choice on resume
        control = RUN_CONTROL_FIELDS - ({"steps_per_dispatch"} if cfg.size_buckets > 1 else set())
        diff = {k for k in new if k not in control and old.get(k, default.get(k)) != new[k]}
        if diff:
            raise RunDirError(f"{workdir} holds a run with a different configuration ({', '.join(sorted(diff))}); "
                              "use the same options to resume, or --overwrite")
        return
    if not overwrite:
        raise RunDirError(f"{workdir} already holds a run; pass --resume to continue it or --overwrite to start anew "
                          "(the old run is moved aside, not deleted)")
    backup = workdir.with_name(f"{workdir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.move(str(workdir), str(backup))
    print(f"moved the previous run to {backup}", file=sys.stderr)


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


class _Loggers:
    """Where each logged record goes besides metrics.jsonl (the record every tool reads): TensorBoard event
    files in <workdir>/tb when tensorboardX is installed (``pip install -e .[tensorboard]``) and, when a
    project is named, Weights & Biases (imported only then)."""

    def __init__(self, workdir: Path, cfg: TrainConfig, wandb_project: str | None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            SummaryWriter = None

        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ValueError("--wandb needs the wandb package: pip install wandb") from e
            self.wandb = wandb.init(project=wandb_project, config=dataclasses.asdict(cfg), dir=str(workdir),
                                    name=workdir.name, resume="allow")
        self.tb = SummaryWriter(str(workdir / "tb"), flush_secs=30) if SummaryWriter is not None else None

    def log(self, record: dict[str, Any]) -> None:
        values = {k: v for k, v in record.items() if k != "step"}
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, float(v), record["step"])
        if self.wandb is not None:
            self.wandb.log(values, step=record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def train(cfg: TrainConfig, workdir: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, wandb_project: str | None = None) -> dict[str, Any]:
    """Train one model on one task; returns a summary. The run directory gets config.json,
    metrics.jsonl (one object per log step), TensorBoard event files (tb/) and Orbax checkpoints."""
    workdir = Path(workdir)
    if resume and not cfg.microbatches and (workdir / "config.json").is_file():
        try:  # "auto" resumes with the count the run was trained with (runs written before auto existed: 1)
            cfg = dataclasses.replace(cfg, microbatches=int(json.loads((workdir / "config.json").read_text())
                                                             .get("microbatches", 1)))
        except (ValueError, TypeError, AttributeError) as e:
            raise RunDirError(f"{workdir / 'config.json'} is not a valid config: {e}") from e
    task = build_task(cfg)
    mesh = make_mesh(cfg)  # bad device counts fail before anything on disk changes
    size_buckets(task, cfg.size_buckets)  # so does an impossible bucket count
    if wandb_project:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ValueError("--wandb needs the wandb package: pip install wandb")
    model = build_model(cfg, task)
    graphdef, params = models.split(model)
    init_error: Exception | None = None
    if cfg.init_from:  # read (and check) before the run directory is touched
        try:
            params = params_from(cfg.init_from, params)
        except (RunDirError, CheckpointError) as e:
            ckpts = workdir / "checkpoints"
            if not (resume and ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())):
                raise
            init_error = e  # fatal only if the checkpoint of this run cannot be restored either

    # on resume the run's config.json is rewritten only once its checkpoint has been restored
    defer_config = resume and (workdir / "config.json").is_file()

    def prepare() -> None:
        prepare_workdir(workdir, cfg, resume, overwrite)
        workdir.mkdir(parents=True, exist_ok=True)
        if not defer_config:
            (workdir / "config.json").write_text(cfg.to_json())

    on_main_process(prepare, f"prepare {workdir}")  # multi-host: only process 0 writes the run's own files
    main = is_main_process()

    key = jax.random.key(cfg.seed)
    data_key, eval_key = jax.random.split(jax.random.fold_in(key, 1))
    prog = make_program(cfg, task, graphdef, data_key, mesh)
    params, opt_state, bad_run = prog.initial_carry(params)
    step = 0
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints)
    if resume and ckpt.latest_step() is not None:
        step, restored = ckpt.restore({"params": params, "opt_state": opt_state})
        params, opt_state = prog.replicate((restored["params"], restored["opt_state"]))
    elif resume and any(p.name.isdigit() for p in ckpt.directory.iterdir()):
        raise RunDirError(f"{ckpt.directory} holds checkpoints that cannot be read; nothing was changed "
                          "(move the run aside with --overwrite to start anew)")
    elif init_error is not None:
        raise init_error
    metrics_path = workdir / "metrics.jsonl"
    if main and defer_config:
        _truncate_metrics(metrics_path, step, check_only=True)  # a damaged log: an error before anything changes
        (workdir / "config.json").write_text(cfg.to_json())
    if main and not resume and metrics_path.exists():
        metrics_path.unlink()
    wall_before = 0.0  # training seconds of the earlier calls this one resumes (wall_s counts them all)
    if main:
        wall_before = _truncate_metrics(metrics_path, step)
        (workdir / DONE).unlink(missing_ok=True)  # written again when this call finishes
    eval_batch = jax.jit(task.sample, static_argnums=1)(eval_key, cfg.eval_batch_size)
    bar = _Progress(cfg.steps, step, progress and main)
    loggers = _Loggers(workdir, cfg, wandb_project) if main else None

    def log(record: dict[str, Any]) -> None:
        if loggers is not None:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            loggers.log(record)
    nonfinite_total = 0
    summary: dict[str, Any] = {"stopped": "steps", "params": models.count_params(model)}
    t_start = time.perf_counter()
    t_last, ex_last = t_start, step * cfg.batch_size
    record: dict[str, Any] = {}
    try:
        if step == 0:  # the learning curve starts at the untrained model
            ev = fetch(prog.evaluate(params, eval_batch))
            log({"step": 0, "examples_seen": 0, **{f"eval/{k}": float(v) for k, v in ev.items()},
                 "eval/main": float(ev[task.main_metric])})
        while step < cfg.steps:
            # never cross a dispatch slot's edge, so that the bucket schedule does not depend on where
            # a previous (shorter) run stopped
            num = min(cfg.steps_per_dispatch - step % cfg.steps_per_dispatch, cfg.steps - step)
            bucket = bucket_schedule(cfg, prog.buckets, step)
            params, opt_state, bad_run, stats = prog.train_chunk(params, opt_state, bad_run, jnp.int32(step), prog.data_key,
                                                                 num, bucket)
            step += num
            if step % cfg.log_every and step < cfg.steps:
                if step % cfg.checkpoint_every == 0:
                    ckpt.save(step, {"params": params, "opt_state": opt_state})
                continue
            stats = fetch(stats)
            nonfinite_total += int(stats["nonfinite"].sum())
            now = time.perf_counter()
            ex = step * cfg.batch_size
            finite_losses = stats["loss"][stats["nonfinite"] == 0]
            record = {
                "step": step,
                "examples_seen": ex,
                "train/loss": float(finite_losses.mean()) if finite_losses.size else float("nan"),
                "train/grad_norm": float(stats["grad_norm"][-1]),
                "train/nonfinite_steps": nonfinite_total,
                "examples_per_s": (ex - ex_last) / max(now - t_last, 1e-9),
                "wall_s": wall_before + now - t_start,
            }
            ev = fetch(prog.evaluate(params, eval_batch))
            record.update({f"eval/{k}": float(v) for k, v in ev.items()})
            record["eval/main"] = record[f"eval/{task.main_metric}"]
            log(record)
            bar.update(step, record)
            t_last, ex_last = time.perf_counter(), ex
            if int(fetch(bad_run)) >= cfg.max_nonfinite:
                raise TrainingError(f"{int(fetch(bad_run))} non-finite steps in a row at step {step}; "
                                    f"last good checkpoint kept in {ckpt.directory}")
            if step % cfg.checkpoint_every == 0:
                ckpt.save(step, {"params": params, "opt_state": opt_state})
            if cfg.target is not None and record["eval/main"] < cfg.target:
                summary["stopped"] = "target"
                break
        if int(fetch(bad_run)) == 0 and ckpt.latest_step() != step:
            ckpt.save(step, {"params": params, "opt_state": opt_state})
    finally:
        bar.close()
        if loggers is not None:
            loggers.close()
        ckpt.close()
    summary.update({"step": step, "examples_seen": step * cfg.batch_size,
                    "wall_s": wall_before + time.perf_counter() - t_start,
                    **{k: v for k, v in record.items() if k.startswith("eval/")}})
    if main:  # the run finished (steps done, or the target met): a later stage may start from it
        (workdir / DONE).write_text(json.dumps({"stopped": summary["stopped"], "step": step, "steps": cfg.steps,
                                                "wall_s": round(summary["wall_s"], 1)}) + "\n")
    return summary


DONE = "done.json"  # in a run directory: written when its training call finishes, removed when another starts


def finished(workdir: str | Path, steps: int | None = None) -> dict[str, Any] | None:
    """The done record of a run that finished (``steps``: and reached at least that many steps, or its target),
    else None: never started, interrupted, or still running."""
    path = Path(workdir) / DONE
    try:
        done = json.loads(path.read_text())
        step, stopped = int(done["step"]), str(done["stopped"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if steps is not None and step < steps and stopped != "target":
        return None
    return done


def _truncate_metrics(path: Path, step: int, check_only: bool = False) -> float:
    """On resume, drop log lines written after the checkpoint we restart from (``check_only``: only check that
    the log can be read). Returns the training seconds the kept lines record (0 for a fresh run)."""
    if not path.exists():
        return 0.0
    try:
        records = [(l, json.loads(l)) for l in path.read_text().splitlines() if l.strip()]
        keep = [(l, r) for l, r in records if r["step"] <= step]
        wall = max((float(r.get("wall_s", 0.0)) for _, r in keep), default=0.0)
    except (ValueError, TypeError, KeyError) as e:
        raise RunDirError(f"{path} is damaged ({' '.join(str(e).split())}); nothing was changed") from None
    if not check_only:
        path.write_text("".join(l + "\n" for l, _ in keep))
    return wall


def params_from(workdir: str | Path, like: Any) -> Any:
    """The newest parameters of the run in ``workdir``, checked against the shapes of ``like``; the run must
    have finished (a later stage never starts from an interrupted one)."""
    cfg, _, model, step = load_run(workdir)
    if finished(workdir) is None:
        raise RunDirError(f"--init-from {workdir}: that run did not finish (newest checkpoint: step {step} of "
                          f"{cfg.steps}); finish it first (train.py --resume --workdir {workdir}, or the recipe)")
    params = models.split(model)[1]
    got = jax.tree.map(lambda x: tuple(x.shape), params)
    want = jax.tree.map(lambda x: tuple(x.shape), like)
    if jax.tree.structure(got) != jax.tree.structure(want) or got != want:
        raise RunDirError(f"--init-from {workdir}: its model (step {step}) has other parameter shapes than this run's; "
                          "the model options must match")
    return params


def examples_before(cfg: TrainConfig) -> int:
    """Examples the runs that ``cfg.init_from`` chains back to had seen (0 for a fresh start), so that a
    curriculum stage reports its whole budget. A source that is gone counts as 0."""
    total, src, seen = 0, cfg.init_from, set()
    while src and src not in seen and (Path(src) / "config.json").exists():
        seen.add(src)
        prev = TrainConfig.load(Path(src) / "config.json")
        if (Path(src) / "checkpoints").is_dir():
            ckpt = Checkpointer(Path(src) / "checkpoints", keep=prev.keep_checkpoints)
            try:
                total += (ckpt.latest_step() or 0) * prev.batch_size
            finally:
                ckpt.close()
        src = prev.init_from
    return total


def load_run(workdir: str | Path, step: int | None = None) -> tuple[TrainConfig, Task, nnx.Module, int]:
    """Rebuild the model of a run directory from its config.json and newest checkpoint."""
    workdir = Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.exists():
        raise RunDirError(f"{workdir} is not a run directory (no config.json)")
    try:
        cfg = TrainConfig.load(cfg_path)
        task = build_task(cfg)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise RunDirError(f"{cfg_path} is not a valid config: {' '.join(str(e).split())}") from None
    if not (workdir / "checkpoints").is_dir():
        raise RunDirError(f"{workdir} has no checkpoints (a run that never saved one)")
    model = build_model(cfg, task)
    graphdef, params = models.split(model)
    opt_state = make_optimizer(cfg).init(params)
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints)
    try:
        step, restored = ckpt.restore({"params": params, "opt_state": opt_state}, step)
    finally:
        ckpt.close()
    return cfg, task, nnx.merge(graphdef, restored["params"]), step


__all__ = ["train", "finished", "DONE", "load_run", "params_from", "examples_before", "make_program", "build_task", "build_model", "TrainingError", "RunDirError",
           "CheckpointError"]
