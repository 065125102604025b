"""Differentiable Neural Turing Machine in JAX: a pure-functional core plus a Flax NNX cell.

Reuse without any of this project's tasks or training code::

    from ntm import NTMConfig, init_params, initial_state, step, unroll, NTMCell
"""
from ntm.addressing import HeadParams, address, content_weights, cosine_similarity, interpolate, read, sharpen, shift, write
from ntm.cell import NTMCell
from ntm.core import NTMConfig, NTMState, Trace, init_params, initial_state, num_params, step, unroll

__all__ = [
    "HeadParams", "NTMCell", "NTMConfig", "NTMState", "Trace", "address", "content_weights",
    "cosine_similarity", "init_params", "initial_state", "interpolate", "num_params", "read",
    "sharpen", "shift", "step", "unroll", "write",
]
