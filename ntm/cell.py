"""Flax NNX wrapper of the pure core with the ``nnx.RNNCellBase`` calling convention.

Parameters live in ``nnx.Param`` variables with exactly the core's pytree layout; memory and
head weightings live in the carry (an ``NTMState``), never in mutable Variables. Leading batch
axes on ``x`` / the carry are vmapped, so ``nnx.RNN(NTMCell(...))`` works on [B, T, X].
"""
from __future__ import annotations

import jax
from flax import nnx

from ntm import core

Array = jax.Array


class NTMCell(nnx.RNNCellBase):
    def __init__(self, cfg: core.NTMConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.params = nnx.data(jax.tree.map(nnx.Param, core.init_params(rngs.params(), cfg)))

    def pure_params(self) -> core.Params:
        """The core's parameter pytree (plain arrays)."""
        return jax.tree.map(lambda v: v[...], self.params, is_leaf=lambda v: isinstance(v, nnx.Variable))

    def __call__(self, carry: core.NTMState, x: Array) -> tuple[core.NTMState, Array]:
        params = self.pure_params()
        fn = lambda s, xi: core.step(params, s, xi, self.cfg)  # noqa: E731
        for _ in range(x.ndim - 1):  # leading batch axes
            fn = jax.vmap(fn)
        return fn(carry, x)

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: nnx.Rngs | None = None) -> core.NTMState:
        """Carry for inputs of shape (*batch, X); 'random' memory init draws from ``rngs``."""
        batch = tuple(input_shape[:-1])
        params = self.pure_params()
        n = 1
        for b in batch:
            n *= b
        if self.cfg.memory_init == "random":
            if rngs is None:
                raise ValueError("memory_init='random' needs rngs in initialize_carry")
            keys = jax.random.split(rngs.carry(), n)
            states = jax.vmap(lambda k: core.initial_state(params, self.cfg, k))(keys)
        else:
            one = core.initial_state(params, self.cfg)
            states = jax.tree.map(lambda a: jax.numpy.broadcast_to(a, (n, *a.shape)), one)
        return jax.tree.map(lambda a: a.reshape(*batch, *a.shape[1:]), states)

    @property
    def num_feature_axes(self) -> int:
        return 1
