"""Programs written in ``compiler.lang``: the modsquare search loop and list argmax.

modsquare (input n on every step; output k after steps(n) = floor(n^0.7) + 1 iterations)::

    k = 0
    for i = 1 to floor(n^0.7):
        if i*i mod n > k*k mod n: k = i
    return k

written pipelined, one comparison behind: iteration t (t = 1, 2, ...) advances the counter to
i = t and s = t^2 mod n (incrementally, (i+1)^2 = i^2 + 2i + 1, reduced by two conditional
subtractions since s + 2i + 1 < 3n while i < n), and compares the *previous* candidate, whose
square it computed one iteration earlier, with the best so far. Iteration t = 1 compares
candidate 0 (value 0, never better), so after floor(n^0.7) + 1 iterations candidates 1..floor(n^0.7)
have all been compared: ``steps(n) = loop_bound(n) + 1``. Every running value stays below 3n.

argmax (input v_t on step t; output after T steps: index of the first maximum of v_0..v_{T-1}).
"""
from __future__ import annotations

from compiler.lang import Input, Program, Reg, gt, le, mod, or_, select

# one iteration of modsquare; registers: i (counter), s = i*i mod n, k (best candidate), best = k*k mod n
_i, _s, _k, _best, _n = Reg("i"), Reg("s"), Reg("k"), Reg("best"), Input("n")
_better = gt(_s, _best)  # candidate i (the counter before this iteration's increment) beats k

MODSQUARE = Program(
    inputs=("n",),
    registers=(("i", 0), ("s", 0), ("k", 0), ("best", 0)),
    body=(
        ("i", _i + 1),
        ("s", mod(_s + 2 * _i + 1, _n, 3)),
        ("k", select(_better, _i, _k)),
        ("best", select(_better, _s, _best)),
    ),
    output="k",
)

# argmax over a stream; registers: t (index of the current value), arg, best
_t, _arg, _top, _v = Reg("t"), Reg("arg"), Reg("best"), Input("v")
# the first value (t <= 0, i.e. t == 0 as t counts up from 0: one comparison instead of eq's two),
# or a strictly larger one (ties keep the first)
_take = or_(le(_t, 0), gt(_v, _top))

ARGMAX = Program(
    inputs=("v",),
    registers=(("t", 0), ("arg", 0), ("best", 0)),
    body=(
        ("t", _t + 1),
        ("arg", select(_take, _t, _arg)),
        ("best", select(_take, _v, _top)),
    ),
    output="arg",
)

PROGRAMS = {"modsquare": MODSQUARE, "argmax": ARGMAX}


def modsquare_steps(n: int) -> int:
    """NTM steps for modsquare at n: floor(n^0.7) + 1."""
    from tasks.modsquare import loop_bound  # the task's exact integer floor(n^0.7)

    return loop_bound(n) + 1
