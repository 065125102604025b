"""Every model the trainer can use, behind one interface, swapped by name.

A model is an ``nnx.Module`` called as ``model(inputs [T, B, X], steps [B]) -> (logits [T, B, Y], aux)``.
Steps t >= steps[b] do not change example b's state and output zeros. The recurrent models also take
``detach_at`` [B] (the progressive loss, lab.trainer): the state entering step detach_at[b] is
treated as a constant by autodiff (values unchanged). ``aux`` holds inspection
data (for the NTM, read/write weightings [T, B, heads, N]); under jit unused aux costs nothing.

Closed loops (a task that answers the model's actions, tasks.base.feedback_of): the recurrent models are
built with the task's ``feedback(x_t [X], y_prev [Y], inputs [T, X]) -> x_t [X]`` (one example) and feed
each step's output back through it into the next step's input. The MLP has no steps to act on; it sees
the open-loop inputs (the feedback channels stay zero), the fully amortised baseline.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

import ntm

Array = jax.Array
Feedback = Callable[[Array, Array, Array], Array]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    memory_rows: int = 128
    memory_width: int = 20
    controller: str = "lstm"
    controller_size: int = 100
    activation: str = "tanh"
    num_read_heads: int = 1
    num_write_heads: int = 1
    shift_range: int = 1
    memory_init: str = "constant"
    write_gate: bool = False  # NTM only: ntm.NTMConfig.write_gate
    write_gate_gain: float = 1.0  # NTM only: ntm.NTMConfig.write_gate_gain
    add_activation: str = "tanh"  # NTM only: ntm.NTMConfig.add_activation ("identity": any value can be written)
    fused_memory: str = "auto"  # NTM only: ntm.NTMConfig.fused_memory (how it runs, not what it computes)
    hidden_size: int = 256  # LSTM / MLP baselines
    mlp_layers: int = 2
    mlp_max_steps: int = 0  # MLP input/output length (padded); 0: the training task's max_steps()
    mlp_one_output: bool = False  # MLP emits one Y-vector, repeated at every step (tasks scored once)

    NTM_ONLY: ClassVar[tuple[str, ...]] = ("write_gate", "write_gate_gain", "add_activation")

    def for_model(self, model: str) -> "ModelConfig":
        """This configuration as a run of ``model`` records it: the NTM-only options at their defaults for another
        model (a baseline built beside an NTM with a write gate is the same run as one built beside any NTM)."""
        if model == "ntm":
            return self
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in self.NTM_ONLY}
        return dataclasses.replace(self, **defaults)

    def __post_init__(self) -> None:
        for name in ("memory_rows", "memory_width", "controller_size", "num_read_heads", "num_write_heads",
                     "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model option {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.mlp_layers, int) or self.mlp_layers < 0:
            raise ValueError(f"model option mlp_layers must be an integer >= 0, got {self.mlp_layers!r}")
        if not isinstance(self.shift_range, int) or self.shift_range < 0:
            raise ValueError(f"model option shift_range must be an integer >= 0, got {self.shift_range!r}")


class NTM(nnx.Module):
    """The project's NTM cell (ntm.NTMCell) unrolled over time, vmapped over the batch."""

    def __init__(self, input_size: int, output_size: int, mc: ModelConfig, max_steps: int, *, rngs: nnx.Rngs,
                 feedback: Feedback | None = None):
        self.feedback = feedback
        self.cfg = ntm.NTMConfig(
            input_size=input_size, output_size=output_size, memory_rows=mc.memory_rows,
            memory_width=mc.memory_width, controller=mc.controller, controller_size=mc.controller_size,
            activation=mc.activation, num_read_heads=mc.num_read_heads, num_write_heads=mc.num_write_heads,
            shift_range=mc.shift_range, memory_init=mc.memory_init, write_gate=mc.write_gate,
            write_gate_gain=mc.write_gate_gain, add_activation=mc.add_activation, fused_memory=mc.fused_memory,
        )
        self.cell = ntm.NTMCell(self.cfg, rngs=rngs)

    def __call__(self, inputs: Array, steps: Array, key: Array | None = None,
                 detach_at: Array | None = None) -> tuple[Array, dict[str, Array]]:
        params = self.cell.pure_params()
        B = inputs.shape[1]
        keys = None if key is None else jax.random.split(key, B)

        def one(x: Array, n: Array, k: Array | None, d: Array | None) -> tuple[Array, ntm.Trace]:
            fb = None if self.feedback is None else (lambda xt, y: self.feedback(xt, y, x))
            ys, trace, _ = ntm.unroll(params, self.cfg, x, n, key=k, detach_at=d, feedback=fb)
            return ys, trace

        in_axes = (1, 0, None if keys is None else 0, None if detach_at is None else 0)
        ys, trace = jax.vmap(one, in_axes=in_axes, out_axes=1)(inputs, steps, keys, detach_at)
        return ys, {"read_weights": trace.read_weights, "write_weights": trace.write_weights,  # [T, B, R|W, N]
                    "write_gates": trace.write_gates}  # [T, B, W]


class LSTM(nnx.Module):
    """LSTM baseline: same inputs and steps as the NTM, no external memory."""

    def __init__(self, input_size: int, output_size: int, mc: ModelConfig, max_steps: int, *, rngs: nnx.Rngs,
                 feedback: Feedback | None = None):
        self.feedback = feedback
        self.cell = nnx.LSTMCell(input_size, mc.hidden_size, rngs=rngs)
        self.out = nnx.Linear(mc.hidden_size, output_size, rngs=rngs)

    def __call__(self, inputs: Array, steps: Array, key: Array | None = None,
                 detach_at: Array | None = None) -> tuple[Array, dict[str, Array]]:
        T, B, _ = inputs.shape
        carry = self.cell.initialize_carry((B, inputs.shape[-1]), nnx.Rngs(0))
        y0 = jnp.zeros((B, self.out.out_features), inputs.dtype)
        fb = None if self.feedback is None else jax.vmap(self.feedback, in_axes=(0, 0, 1))

        def body(cy, tx):
            c, y_prev = cy
            t, x = tx
            if detach_at is not None:
                cut = ((t == detach_at) & (t > 0))[:, None]  # [B, 1]; 0: nothing detached (as ntm.unroll)
                c, y_prev = jax.tree.map(lambda a: jnp.where(cut, jax.lax.stop_gradient(a), a), (c, y_prev))
            if fb is not None:
                x = fb(x, y_prev, inputs)
            new, h = self.cell(c, x)
            active = (t < steps)[:, None]  # [B, 1]
            c = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, c)
            h = jnp.where(active, h, 0.0)
            # the output of a closed loop is needed inside the scan; an open loop's is computed once after it
            return (c, jnp.where(active, self.out(h), 0.0) if fb is not None else y_prev), h

        _, hs = jax.lax.scan(body, (carry, y0), (jnp.arange(T), inputs))  # [T, B, H]
        logits = jnp.where((jnp.arange(T)[:, None] < steps[None, :])[..., None], self.out(hs), 0.0)
        return logits, {}


class MLP(nnx.Module):
    """Feedforward baseline that sees the whole (padded) input sequence at once.

    Inputs are padded to ``max_steps`` (the largest size it will be evaluated on) and flattened;
    it emits all T outputs at once.
    """

    def __init__(self, input_size: int, output_size: int, mc: ModelConfig, max_steps: int, *, rngs: nnx.Rngs,
                 feedback: Feedback | None = None):  # no steps to act on: open loop (see the module docstring)
        self.max_steps, self.output_size, self.one_output = max_steps, output_size, mc.mlp_one_output
        sizes = [max_steps * input_size] + [mc.hidden_size] * mc.mlp_layers
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(sizes[-1], (1 if mc.mlp_one_output else max_steps) * output_size, rngs=rngs)

    def __call__(self, inputs: Array, steps: Array, key: Array | None = None) -> tuple[Array, dict[str, Array]]:
        T, B, X = inputs.shape
        if T > self.max_steps:
            raise ValueError(f"MLP was built for at most {self.max_steps} steps, got {T}")
        x = jnp.pad(inputs, ((0, self.max_steps - T), (0, 0), (0, 0)))  # [T', B, X]
        h = jnp.transpose(x, (1, 0, 2)).reshape(B, -1)  # [B, T'*X]
        for layer in self.layers:
            h = jax.nn.relu(layer(h))
        if self.one_output:
            y = jnp.broadcast_to(self.out(h)[None], (T, B, self.output_size))  # [T, B, Y]
        else:
            y = self.out(h).reshape(B, self.max_steps, self.output_size).transpose(1, 0, 2)[:T]  # [T, B, Y]
        return jnp.where((jnp.arange(T)[:, None] < steps[None, :])[..., None], y, 0.0), {}


MODELS: dict[str, Callable[..., nnx.Module]] = {"ntm": NTM, "lstm": LSTM, "mlp": MLP}


def make_model(name: str, input_size: int, output_size: int, mc: ModelConfig, max_steps: int, seed: int,
               feedback: Feedback | None = None) -> nnx.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    if mc.mlp_max_steps and name == "mlp":
        if mc.mlp_max_steps < max_steps:
            raise ValueError(f"mlp_max_steps={mc.mlp_max_steps} is shorter than the task's {max_steps} steps")
        max_steps = mc.mlp_max_steps
    return MODELS[name](input_size, output_size, mc, max_steps, rngs=nnx.Rngs(seed), feedback=feedback)


def mlp_params(input_size: int, output_size: int, max_steps: int, hidden: int, layers: int,
               one_output: bool = False) -> int:
    """Parameter count of MLP(...) without building it."""
    sizes = [max_steps * input_size] + [hidden] * layers + [(1 if one_output else max_steps) * output_size]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def mlp_hidden_for(params: int, input_size: int, output_size: int, max_steps: int, layers: int,
                   one_output: bool = False) -> int:
    """The hidden width whose MLP has closest to ``params`` parameters (at least 1)."""
    n = lambda h: mlp_params(input_size, output_size, max_steps, h, layers, one_output)  # noqa: E731
    lo, hi = 1, 1
    while n(hi) < params:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if n(mid) < params:
            lo = mid + 1
        else:
            hi = mid
    below = max(1, lo - 1)
    count = lambda h: abs(n(h) - params)  # noqa: E731
    return below if count(below) < count(lo) else lo


def count_params(model: nnx.Module) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def split(model: nnx.Module) -> tuple[Any, Any]:
    """(graphdef, params) for use with plain jax.jit; nnx.merge(graphdef, params) rebuilds it."""
    return nnx.split(model, nnx.Param)
