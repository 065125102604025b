"""Pure-functional Neural Turing Machine core (Graves et al. 2014), one example at a time.

optax-style API: ``init_params(key, cfg)``, ``initial_state(params, cfg)``,
``step(params, state, x, cfg) -> (state, y)``. ``vmap`` gives the batch; ``unroll`` runs a
whole sequence with ``lax.scan`` and a per-example number of steps (state frozen past it).

Shape glossary: T time steps, N memory rows, M memory width, H controller width,
R read heads, W write heads, X input width, Y output width, S shift range (shifts -S..S).

Order inside one step: the controller sees the input and last step's reads; it emits head
parameters; the write heads address and write (erase then add); the read heads then address
and read the *updated* memory; the output is computed from the controller output and the new
reads. Everything the heads did (weightings) is part of the returned state, so inspection
needs no second code path.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from ntm import addressing

Array = jax.Array
Params = dict[str, Any]

CONTROLLERS = ("lstm", "feedforward")
MEMORY_INITS = ("constant", "learned", "random")
ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "identity": lambda v: v}
ADD_ACTIVATIONS = ("tanh", "identity")
INITIAL_READS = ("learned", "memory")

# NTMConfig.fused_memory: "auto" uses the fused CPU memory kernel (ntm/fused_cpu.py) wherever it applies and
# the pure-JAX step elsewhere, silently; "on" asks for it and warns when it cannot be had; "off" never uses it.
FUSED_MODES = ("auto", "on", "off")
MATMUL_PRECISIONS = (None, "default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


@dataclasses.dataclass(frozen=True)
class NTMConfig:
    """Static hyperparameters of one NTM. Defaults are Graves 2014's copy configuration."""

    input_size: int  # X
    output_size: int  # Y
    memory_rows: int = 128  # N
    memory_width: int = 20  # M
    controller: str = "lstm"  # one of CONTROLLERS
    controller_size: int = 100  # H
    activation: str = "tanh"  # feedforward controller's nonlinearity
    num_read_heads: int = 1  # R
    num_write_heads: int = 1  # W
    shift_range: int = 1  # S: shifts -S..+S
    memory_init: str = "constant"  # one of MEMORY_INITS
    memory_init_value: float = 1e-6
    clip_value: float = 20.0  # controller outputs (head params, logits) clipped to +-clip
    # Write heads' add vector: "tanh" (the paper, |add| < 1) or "identity" (any value, e.g. exact
    # integers written by compiled programs; still bounded by clip_value).
    add_activation: str = "tanh"
    # Reads at t = 0: "learned" (tanh of a parameter) or "memory" (the initial read weightings
    # applied to the initial memory, i.e. what the read heads would see before the first step).
    initial_reads: str = "learned"
    # A write gate (as in the DNC): one more controller output per write head, g = sigmoid(.), scales
    # that head's erase and add vectors, so g -> 0 leaves the memory untouched whatever the head's
    # weighting (a soft weighting otherwise writes a little everywhere on every step). The head's
    # weighting itself, which the next step's location addressing starts from, is not gated.
    write_gate: bool = False
    # The gate's logit is multiplied by this (g = sigmoid(gain * output)): a gate that must switch on a small
    # difference of inputs (argmax's one-level gaps) needs a steep sigmoid, which the controller's weights reach
    # only slowly at gain 1.
    write_gate_gain: float = 1.0
    # Addressing, write and reads of each step in one fused C++ kernel (forward and backward; CPU,
    # float32, R >= 1 and W >= 1; see ntm/fused_cpu.py); the same function as the pure-JAX step to
    # float32 rounding. One of FUSED_MODES: "auto" (the kernel wherever it applies, pure JAX elsewhere:
    # GPU, TPU, float64, no C++ compiler), "on" (as auto, but warns when it falls back), "off".
    # A kernel that fails to build is one warning and the pure-JAX step, in "auto" and "on".
    fused_memory: str = "auto"
    # Precision of every matmul of the step (jax.default_matmul_precision, scoped to the step): None keeps
    # the backend's default (TF32 for float32 on recent NVIDIA GPUs); "highest" asks for exact float32
    # products, as programs compiled into the weights (compiler/) need.
    matmul_precision: str | None = None

    def __post_init__(self) -> None:
        if self.controller not in CONTROLLERS:
            raise ValueError(f"controller must be one of {CONTROLLERS}, got {self.controller!r}")
        if self.memory_init not in MEMORY_INITS:
            raise ValueError(f"memory_init must be one of {MEMORY_INITS}, got {self.memory_init!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}")
        if self.add_activation not in ADD_ACTIVATIONS:
            raise ValueError(f"add_activation must be one of {ADD_ACTIVATIONS}, got {self.add_activation!r}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {MATMUL_PRECISIONS}, got {self.matmul_precision!r}")
        if self.fused_memory not in FUSED_MODES:
            raise ValueError(f"fused_memory must be one of {FUSED_MODES}, got {self.fused_memory!r}")
        if self.initial_reads not in INITIAL_READS:
            raise ValueError(f"initial_reads must be one of {INITIAL_READS}, got {self.initial_reads!r}")
        for name in ("input_size", "output_size", "memory_rows", "memory_width", "controller_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_read_heads < 0 or self.num_write_heads < 0:
            raise ValueError("head counts must be >= 0")
        if not self.write_gate_gain > 0:
            raise ValueError(f"write_gate_gain must be > 0, got {self.write_gate_gain}")
        if not 0 <= self.shift_range < self.memory_rows:
            raise ValueError(f"shift_range must be in [0, memory_rows), got {self.shift_range}")

    @property
    def read_head_size(self) -> int:
        """key M, beta 1, gate 1, shift 2S+1, gamma 1."""
        return self.memory_width + 3 + 2 * self.shift_range + 1

    @property
    def write_head_size(self) -> int:
        """A read head's parameters plus erase M and add M (and the write gate's logit, if any)."""
        return self.read_head_size + 2 * self.memory_width + int(self.write_gate)

    @property
    def head_params_size(self) -> int:
        return self.num_read_heads * self.read_head_size + self.num_write_heads * self.write_head_size

    @property
    def controller_input_size(self) -> int:
        return self.input_size + self.num_read_heads * self.memory_width


class NTMState(NamedTuple):
    """Recurrent state of one example."""

    memory: Array  # [N, M]
    read_weights: Array  # [R, N]
    write_weights: Array  # [W, N]
    reads: Array  # [R, M]
    controller: tuple[Array, ...]  # LSTM: (h [H], c [H]); feedforward: ()
    # [W] each write head's gate on the step that made this state (NTMConfig.write_gate; 1 without the option,
    # 0 before the first step): how much of its erase and add reached the memory
    write_gate: Array | None = None


def _dense_init(key: Array, fan_in: int, fan_out: int) -> dict[str, Array]:
    w = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * (1.0 / jnp.sqrt(fan_in))
    return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def _focused_logits(num_heads: int, rows: int) -> Array:
    """Initial weighting logits focused on row 0, so that shifts have somewhere to start."""
    return jnp.zeros((num_heads, rows), jnp.float32).at[:, 0].set(10.0)


def init_params(key: Array, cfg: NTMConfig) -> Params:
    """All trainable parameters as a nested dict of arrays."""
    k_ctrl, k_head, k_out, k_mem, k_read = jax.random.split(key, 5)
    H, N, M = cfg.controller_size, cfg.memory_rows, cfg.memory_width
    if cfg.controller == "lstm":
        ctrl = _dense_init(k_ctrl, cfg.controller_input_size + H, 4 * H)
        ctrl["b"] = ctrl["b"].at[H : 2 * H].set(1.0)  # forget-gate bias 1
    else:
        ctrl = _dense_init(k_ctrl, cfg.controller_input_size, H)
    params: Params = {
        "controller": ctrl,
        "heads": _dense_init(k_head, H, cfg.head_params_size),
        "output": _dense_init(k_out, H + cfg.num_read_heads * M, cfg.output_size),
        "init": {
            "read_logits": _focused_logits(cfg.num_read_heads, N),  # [R, N]
            "write_logits": _focused_logits(cfg.num_write_heads, N),  # [W, N]
        },
    }
    if cfg.initial_reads == "learned":
        params["init"]["reads"] = jax.random.normal(k_read, (cfg.num_read_heads, M), jnp.float32) * 0.01  # [R, M]
    if cfg.memory_init == "learned":
        params["init"]["memory"] = jnp.full((N, M), cfg.memory_init_value, jnp.float32)
    return params


def initial_state(params: Params, cfg: NTMConfig, key: Array | None = None) -> NTMState:
    """State at t = 0. ``memory_init='random'`` needs ``key`` (fresh memory per episode)."""
    N, M, H = cfg.memory_rows, cfg.memory_width, cfg.controller_size
    if cfg.memory_init == "constant":
        memory = jnp.full((N, M), cfg.memory_init_value, jnp.float32)
    elif cfg.memory_init == "learned":
        memory = params["init"]["memory"]
    else:
        if key is None:
            raise ValueError("memory_init='random' needs a PRNG key in initial_state")
        memory = jax.random.uniform(key, (N, M), jnp.float32, -1.0, 1.0) / jnp.sqrt(M)
    init = params["init"]
    controller: tuple[Array, ...] = ()
    if cfg.controller == "lstm":
        controller = (jnp.zeros((H,), jnp.float32), jnp.zeros((H,), jnp.float32))
    read_weights = jax.nn.softmax(init["read_logits"], axis=-1)  # [R, N]
    with _precision(cfg):
        reads = jnp.tanh(init["reads"]) if cfg.initial_reads == "learned" else addressing.read(memory, read_weights)  # [R, M]
    return NTMState(
        memory=memory,
        read_weights=read_weights,
        write_weights=jax.nn.softmax(init["write_logits"], axis=-1),
        reads=reads,
        controller=controller,
        write_gate=jnp.zeros((cfg.num_write_heads,), params["heads"]["w"].dtype),
    )


def _controller(params: Params, cfg: NTMConfig, state: tuple[Array, ...], inp: Array) -> tuple[Array, tuple[Array, ...]]:
    p = params["controller"]
    if cfg.controller == "lstm":
        h, c = state
        z = jnp.concatenate([inp, h]) @ p["w"] + p["b"]  # [4H]
        i, f, g, o = jnp.split(z, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, (h, c)
    out = ACTIVATIONS[cfg.activation](inp @ p["w"] + p["b"])  # [H]
    return out, ()


def split_head_params(cfg: NTMConfig, flat: Array) -> tuple[addressing.HeadParams, addressing.HeadParams, Array, Array]:
    """Cut the controller's flat head vector into read heads, write heads, erase and add.

    Returns HeadParams with leading axes [R, ...] and [W, ...], erase [W, M], add [W, M] (with
    ``write_gate``, erase and add already scaled by each head's gate).
    """
    R, W, M, S = cfg.num_read_heads, cfg.num_write_heads, cfg.memory_width, cfg.shift_range
    read_flat, write_flat = jnp.split(flat, [R * cfg.read_head_size])
    read_flat = read_flat.reshape(R, cfg.read_head_size)  # [R, P_r]
    write_flat = write_flat.reshape(W, cfg.write_head_size)  # [W, P_w]
    reads = addressing.HeadParams.from_raw(read_flat[:, : cfg.read_head_size], M, S)
    writes = addressing.HeadParams.from_raw(write_flat[:, : cfg.read_head_size], M, S)
    P = cfg.read_head_size
    erase = jax.nn.sigmoid(write_flat[:, P : P + M])  # [W, M]
    add = write_flat[:, P + M : P + 2 * M]  # [W, M]
    if cfg.add_activation == "tanh":
        add = jnp.tanh(add)
    if cfg.write_gate:  # scaling erase and add by g is writing with weighting g * w
        gate = _gate(cfg, write_flat)[:, None]  # [W, 1]
        erase, add = erase * gate, add * gate
    return reads, writes, erase, add


def _gate(cfg: NTMConfig, write_flat: Array) -> Array:
    """[W] each write head's gate from its [W, P_w] parameters (the last entry is the gate's logit)."""
    return jax.nn.sigmoid(cfg.write_gate_gain * write_flat[:, -1])


def write_gates(cfg: NTMConfig, flat: Array) -> Array:
    """[W] each write head's gate (NTMConfig.write_gate) from the controller's flat head vector; ones without it."""
    if not cfg.write_gate:
        return jnp.ones((cfg.num_write_heads,), flat.dtype)
    R, W = cfg.num_read_heads, cfg.num_write_heads
    return _gate(cfg, flat[R * cfg.read_head_size:].reshape(W, cfg.write_head_size))


def step(params: Params, state: NTMState, x: Array, cfg: NTMConfig) -> tuple[NTMState, Array]:
    """One NTM time step on one example: x [X] -> (new state, output logits [Y])."""
    new, y = _step_t(params, state._replace(memory=state.memory.T), x, cfg)
    return new._replace(memory=new.memory.T), y


def _step_t(params: Params, state: NTMState, x: Array, cfg: NTMConfig) -> tuple[NTMState, Array]:
    """``step`` on a state whose memory is stored transposed, [M, N] (``unroll`` keeps it so)."""
    with _precision(cfg):
        return _step_t_body(params, state, x, cfg)


def _precision(cfg: NTMConfig) -> contextlib.AbstractContextManager:
    """``cfg.matmul_precision`` for the matmuls traced inside it (nothing when None)."""
    if cfg.matmul_precision is None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision(cfg.matmul_precision)


def _step_t_body(params: Params, state: NTMState, x: Array, cfg: NTMConfig) -> tuple[NTMState, Array]:
    """The step itself.

    Why: under vmap the memory is [B, N, M] with the short M = 20 axis minor, and XLA:CPU's
    memory-sized elementwise ops and reductions over it are slow (presumably poor
    vectorisation of a 20-wide minor axis). With rows minor (N = 128) the forward pass measured
    2x faster and the gradient ~1.6x faster (batch 16, 2-core CPU).
    """
    inp = jnp.concatenate([x, state.reads.reshape(-1)])  # [X + R*M]
    h, ctrl_state = _controller(params, cfg, state.controller, inp)
    flat = jnp.clip(h @ params["heads"]["w"] + params["heads"]["b"], -cfg.clip_value, cfg.clip_value)
    read_hp, write_hp, erase, add = split_head_params(cfg, flat)

    memory_t = state.memory
    if _use_fused(cfg, jnp.result_type(memory_t, flat)):  # the same maths in one C++ call (ntm/fused_cpu.py)
        from ntm import fused_cpu

        memory_t, write_w, read_w, reads = fused_cpu.memory_step(
            memory_t, state.write_weights, state.read_weights, write_hp, erase, add, read_hp)
        # Saved for the backward pass (unroll's checkpoint policy), so that it need not run the kernel's
        # forward again: the backward kernel itself only needs the step's inputs.
        write_w, read_w, reads = (checkpoint_name(a, _FUSED_RESIDUAL) for a in (write_w, read_w, reads))
    else:
        address = jax.vmap(addressing._address_t, in_axes=(None, 0, 0))  # over heads
        write_w = address(memory_t, state.write_weights, write_hp) if cfg.num_write_heads else state.write_weights
        if cfg.num_write_heads:
            memory_t = addressing._write_t(memory_t, write_w, erase, add)
        read_w = address(memory_t, state.read_weights, read_hp) if cfg.num_read_heads else state.read_weights
        reads = addressing._read_t(memory_t, read_w)  # [R, M]

    out_in = jnp.concatenate([h, reads.reshape(-1)])  # [H + R*M]
    y = jnp.clip(out_in @ params["output"]["w"] + params["output"]["b"], -cfg.clip_value, cfg.clip_value)
    return NTMState(memory_t, read_w, write_w, reads, ctrl_state, write_gates(cfg, flat)), y


_FUSED_WARNED: set[str] = set()
_FUSED_RESIDUAL = "ntm_fused_memory_out"
# What unroll's rematerialised steps keep: matmul outputs, and the fused kernel's small outputs (weights,
# reads; not the new memory, which the next step's saved carry holds).
_REMAT_POLICY = jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.dots_saveable, jax.checkpoint_policies.save_only_these_names(_FUSED_RESIDUAL))


def _use_fused(cfg: NTMConfig, dtype: Any) -> bool:
    """Whether this step (being traced) uses the fused CPU memory kernel (``NTMConfig.fused_memory``).

    "auto" falls back to pure JAX silently where the kernel does not apply (configuration, dtype,
    backend, no compiler); a kernel that a compiler failed to build is warned about once, as is any
    fallback under "on"."""
    if cfg.fused_memory == "off":
        return False
    from ntm import fused_cpu

    reason, loud = None, cfg.fused_memory == "on"
    if not fused_cpu.supports(cfg.num_read_heads, cfg.num_write_heads, dtype):
        reason = (f"fused NTM memory kernel does not support R={cfg.num_read_heads}, W={cfg.num_write_heads}, "
                  f"{jax.numpy.dtype(dtype).name} on backend {jax.default_backend()!r} (needs R >= 1, W >= 1, "
                  "float32, CPU)")
    elif not fused_cpu.available():
        reason = fused_cpu.unavailable_reason()
        loud = loud or fused_cpu.build_failed()
    if reason is None:
        return True
    if loud and reason not in _FUSED_WARNED:
        _FUSED_WARNED.add(reason)
        warnings.warn(f"{reason}; using the pure-JAX memory step", RuntimeWarning, stacklevel=3)
    return False


class Trace(NamedTuple):
    """Per-step record of what the heads did, for inspection."""

    read_weights: Array  # [T, R, N]
    write_weights: Array  # [T, W, N]
    write_gates: Array | None = None  # [T, W] (NTMState.write_gate)


def unroll(
    params: Params,
    cfg: NTMConfig,
    inputs: Array,
    num_steps: Array | int | None = None,
    state: NTMState | None = None,
    key: Array | None = None,
    detach_at: Array | int | None = None,
    feedback: Callable[[Array, Array], Array] | None = None,
) -> tuple[Array, Trace, NTMState]:
    """Run ``step`` over inputs [T, X] with ``lax.scan``; one example.

    Steps t >= num_steps leave the state unchanged and output zeros, so a batch padded to its
    longest example (vmap over this function) computes exactly what each example alone would.
    ``detach_at`` (for the progressive loss of Bansal et al. 2022): the state entering step
    ``detach_at`` is a constant for differentiation (``stop_gradient``), so losses on later outputs
    train only the steps from there on, starting from whatever state the earlier steps left; the
    values computed are unchanged. ``detach_at`` = 0 detaches nothing (as Bansal et al.'s n = 0).
    ``feedback`` closes the loop (an environment that answers the model's actions): step t sees
    ``feedback(inputs[t], y[t-1])`` [X] instead of inputs[t], with y[-1] = 0; None: open loop.
    Returns (outputs [T, Y], Trace, final state). Unused Trace fields cost nothing under jit.
    """
    T = inputs.shape[0]
    if state is None:
        state = initial_state(params, cfg, key)
    if state.write_gate is None:  # a state built by hand without the gate: none written yet
        state = state._replace(write_gate=jnp.zeros((cfg.num_write_heads,), state.memory.dtype))
    if num_steps is None:
        num_steps = T
    num_steps = jnp.asarray(num_steps, jnp.int32)

    def body(carry: tuple[NTMState, Array], tx: tuple[Array, Array]
             ) -> tuple[tuple[NTMState, Array], tuple[Array, Array, Array]]:
        s, y_prev = carry
        t, x = tx
        if detach_at is not None:
            cut = (t == detach_at) & (t > 0)  # 0: nothing before it (the learned initial state keeps its gradient)
            s, y_prev = jax.tree.map(lambda a: jnp.where(cut, jax.lax.stop_gradient(a), a), (s, y_prev))
        if feedback is not None:
            x = feedback(x, y_prev)
        new, y = _step_t(params, s, x, cfg)
        active = t < num_steps
        s = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, s)
        y = jnp.where(active, y, jnp.zeros_like(y))
        return (s, y), (y, s.read_weights, s.write_weights, s.write_gate)

    # Rematerialise each step in the backward pass, keeping only the matmul outputs: the scan
    # then stores the carry and a few dot results per step instead of ~100 residual arrays
    # (3 of them memory-sized). Measured on 2-core XLA:CPU, grad of the copy task: -25..-35%.
    body = jax.checkpoint(body, policy=_REMAT_POLICY)
    # The carry holds memory transposed ([M, N], see _step_t); transpose once at each end.
    state = state._replace(memory=state.memory.T)
    y0 = jnp.zeros((cfg.output_size,), inputs.dtype)
    (final, _), (ys, rw, ww, wg) = jax.lax.scan(body, (state, y0), (jnp.arange(T), inputs))
    return ys, Trace(rw, ww, wg), final._replace(memory=final.memory.T)


def num_params(params: Params) -> int:
    return sum(int(p.size) for p in jax.tree.leaves(params))
