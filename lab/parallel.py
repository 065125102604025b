"""Data parallelism and multi-host helpers: the batch mesh, micro-batches, the sharded forward pass (training
and every evaluation use it), and the main-process guards of a multi-host job."""
from __future__ import annotations

import sys
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lab.config import TrainConfig
from tasks import Batch


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
        from lab.rundir import RunDirError  # (rundir imports this module)

        raise RunDirError(f"process 0 failed to {what} (see its output)")
