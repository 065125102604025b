"""Compile a ``compiler.lang.Program`` into parameters of this project's own NTM.

The target is ``ntm.NTMConfig(controller="feedforward", activation="relu", add_activation=
"identity", initial_reads="memory", memory_init="learned", shift_range=0)`` with N = 2 memory
rows, R = 1 read head and one write head per *condition* of the program. One NTM step runs one
loop iteration; nothing in the parameters depends on the inputs or on the number of steps.

Memory (N = 2 rows, M = #registers + 2 columns)::

    row 0  "registers": [r_1 * 2^-S, ..., r_K * 2^-S, 1, 0]   the loop state, fixed point
    row 1  "scratch":   [junk ...,                     0, 1]   where untaken branches write

The last two columns are tags that content addressing uses to tell the rows apart; the register
columns store each integer scaled by 2^-S (S = ``value_bits``, default 32), which is exact in
binary floating point and keeps every row of norm ~1 so that the tags dominate cosine similarity.

One step (one iteration):
  controller   h = relu(W_c [x; reads] + b_c): for every variable v (input or register) used in a
               written value the pair relu(v), relu(-v); for every comparison atom [d >= 1] (d an
               integer affine form of inputs and registers) the pair relu(d), relu(d - 1), whose
               difference is the 0/1 bit of the comparison.
  write head 0 (unconditional) content-addresses row 0 and writes the part of every assigned
               register that does not depend on a condition (erase 1 on assigned columns, add the
               affine value * 2^-S).
  write head j (one per monomial, i.e. conjunction of atoms, of the program's conditions) gets
               the key +-(tag0 - tag1), with sign tanh(K * (sum of its bits - q + 1/2)): it lands on
               row 0 when all its q atoms hold, and on the scratch row otherwise, adding there its
               conditional term (e.g. "-n" of a modular reduction, or "i - k" of "k := i if better").
               Erasures multiply and additions sum (the paper's write rule), so row 0 ends up with
               base + sum of the terms whose conditions hold: if-then-else is head *placement*.
  read head    content-addresses row 0 and reads the updated registers; they are the next step's
               controller input and the output y = 2^S * reads[output register].

Every selection is exact, not just close: the logits (K = ``logit_scale``, default 1000) push
tanh/sigmoid to exactly +-1/0/1 and the content softmax plus sharpening (beta = softplus(K),
gamma = 1 + softplus(K)) to an exactly one-hot weighting, in float32 and float64. Integers stay
exact while every intermediate value is below 2^24 (float32) or 2^53 (float64).

A select nested under a condition multiplies conditions: a program's conditions are expanded into
a multilinear polynomial in comparison bits (not c = 1 - c, c and d = c*d, c or d = c + d - c*d),
and each monomial of that polynomial costs one write head. Comparisons, and the value reduced by
``mod``, must be affine in inputs and registers (``CompileError`` otherwise).
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import jax.numpy as jnp
import numpy as np

import ntm
from compiler import lang

VALUE_BITS = 32
LOGIT_SCALE = 1000.0


class CompileError(ValueError):
    pass


# ---- affine forms, atoms, normal forms ----


@dataclasses.dataclass(frozen=True, order=True)
class Lin:
    """Integer affine form sum(coef * var) + const; vars are ("in", name) or ("reg", name)."""

    terms: tuple[tuple[tuple[str, str], int], ...] = ()
    const: int = 0

    @staticmethod
    def make(terms: dict[tuple[str, str], int], const: int = 0) -> "Lin":
        return Lin(tuple(sorted((v, c) for v, c in terms.items() if c != 0)), const)

    def __add__(self, other: "Lin") -> "Lin":
        d = dict(self.terms)
        for v, c in other.terms:
            d[v] = d.get(v, 0) + c
        return Lin.make(d, self.const + other.const)

    def scale(self, c: int) -> "Lin":
        return Lin.make({v: c * k for v, k in self.terms}, c * self.const)

    def shift(self, c: int) -> "Lin":
        return Lin(self.terms, self.const + c)

    def is_zero(self) -> bool:
        return not self.terms and self.const == 0

    def __str__(self) -> str:
        parts = [v[1] if c == 1 else f"-{v[1]}" if c == -1 else f"{c}*{v[1]}" for v, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts).replace("+ -", "- ")


Monomial = frozenset  # of Lin atoms d, meaning the product of the bits [d >= 1]
Poly = dict  # Monomial -> int coefficient (indicator polynomials)
NormalForm = dict  # Monomial -> Lin: sum over monomials of (product of bits) * affine value


def _simplify(atoms: frozenset) -> frozenset | None:
    """Conjunction of atoms [d >= 1]: drop implied atoms; None when it is identically false."""
    best: dict[tuple, int] = {}
    for a in atoms:
        if not a.terms:  # a constant comparison
            if a.const < 1:
                return None
            continue
        best[a.terms] = min(best.get(a.terms, a.const), a.const)  # d + a >= 1 implies d + b >= 1, b > a
    return frozenset(Lin(t, c) for t, c in best.items())


def _poly_mul(p: Poly, q: Poly) -> Poly:
    out: Poly = defaultdict(int)
    for m1, c1 in p.items():
        for m2, c2 in q.items():
            m = _simplify(m1 | m2)
            if m is not None:
                out[m] += c1 * c2
    return {m: c for m, c in out.items() if c}


def _poly_add(p: Poly, q: Poly, s: int = 1) -> Poly:
    out: Poly = defaultdict(int, p)
    for m, c in q.items():
        out[m] += s * c
    return {m: c for m, c in out.items() if c}


_ONE: Poly = {frozenset(): 1}


def _atom(d: Lin) -> Poly:
    m = _simplify(frozenset([d]))
    return {} if m is None else {m: 1}


def _nf_add(a: NormalForm, b: NormalForm, s: int = 1) -> NormalForm:
    out = dict(a)
    for m, v in b.items():
        out[m] = out[m] + v.scale(s) if m in out else v.scale(s)
    return {m: v for m, v in out.items() if not v.is_zero()}


def _nf_times_poly(nf: NormalForm, p: Poly) -> NormalForm:
    out: NormalForm = {}
    for m1, v in nf.items():
        for m2, c in p.items():
            m = _simplify(m1 | m2)
            if m is not None:
                out = _nf_add(out, {m: v.scale(c)})
    return out


def _affine(nf: NormalForm, what: str) -> Lin:
    if any(m for m in nf):
        raise CompileError(f"{what} must be affine in inputs and registers (no select/mod inside): "
                           "comparisons see the registers of the previous iteration; pipeline the loop")
    return nf.get(frozenset(), Lin())


def normal_form(e: lang.Expr) -> NormalForm:
    """Expression -> {monomial: affine}, value = sum(prod(bits of monomial) * affine)."""
    if isinstance(e, lang.Const):
        return {frozenset(): Lin((), e.value)} if e.value else {}
    if isinstance(e, lang.Reg):
        return {frozenset(): Lin.make({("reg", e.name): 1})}
    if isinstance(e, lang.Input):
        return {frozenset(): Lin.make({("in", e.name): 1})}
    if isinstance(e, lang.Add):
        return _nf_add(normal_form(e.a), normal_form(e.b))
    if isinstance(e, lang.Sub):
        return _nf_add(normal_form(e.a), normal_form(e.b), -1)
    if isinstance(e, lang.Scale):
        return {m: v.scale(e.c) for m, v in normal_form(e.a).items() if e.c}
    if isinstance(e, lang.Mod):
        x = _affine(normal_form(e.x), "the value reduced by mod")
        m = _affine(normal_form(e.m), "the modulus")
        out: NormalForm = {frozenset(): x} if not x.is_zero() else {}
        for j in range(1, e.c):  # x - m * [x >= j*m]  ==  x - m * [x - j*m + 1 >= 1]
            out = _nf_add(out, _nf_times_poly({frozenset(): m.scale(-1)}, _atom((x + m.scale(-j)).shift(1))))
        return out
    if isinstance(e, lang.Select):
        a, b = normal_form(e.a), normal_form(e.b)
        return _nf_add(b, _nf_times_poly(_nf_add(a, b, -1), condition_poly(e.cond)))
    raise TypeError(f"not an expression: {e!r}")


def condition_poly(c: lang.Cond) -> Poly:
    """Condition -> multilinear polynomial in comparison bits [d >= 1] (d integer affine)."""
    if isinstance(c, lang.Compare):
        d = _affine(normal_form(c.a), "a comparison operand") + _affine(normal_form(c.b), "a comparison operand").scale(-1)
        if c.op == ">":
            return _atom(d)
        if c.op == ">=":
            return _atom(d.shift(1))
        if c.op == "<":
            return _atom(d.scale(-1))
        if c.op == "<=":
            return _atom(d.scale(-1).shift(1))
        is_eq = _poly_add(_atom(d.shift(1)), _atom(d), -1)  # [d >= 0] - [d >= 1]
        return is_eq if c.op == "==" else _poly_add(_ONE, is_eq, -1)
    if isinstance(c, lang.Not):
        return _poly_add(_ONE, condition_poly(c.c), -1)
    if isinstance(c, lang.And):
        p = _ONE
        for x in c.cs:
            p = _poly_mul(p, condition_poly(x))
        return p
    if isinstance(c, lang.Or):  # 1 - prod(1 - c_i)
        p = _ONE
        for x in c.cs:
            p = _poly_mul(p, _poly_add(_ONE, condition_poly(x), -1))
        return _poly_add(_ONE, p, -1)
    raise TypeError(f"not a condition: {c!r}")


# ---- layout and parameters ----


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything lives; all of it is independent of the inputs and of the step count."""

    registers: tuple[str, ...]  # memory columns 0..K-1 of row 0
    inputs: tuple[str, ...]  # controller input columns 0..X-1
    variables: tuple[tuple[str, str], ...]  # pass-through unit pairs, hidden units 2v, 2v+1
    atoms: tuple[Lin, ...]  # comparison unit pairs after the variables
    heads: tuple[frozenset, ...]  # write head j's monomial (head 0: the empty one, always true)
    values: dict  # register -> NormalForm of its new value
    value_bits: int
    logit_scale: float

    @property
    def tag_columns(self) -> tuple[int, int]:
        return len(self.registers), len(self.registers) + 1

    def atom_units(self, a: Lin) -> tuple[int, int]:
        u = 2 * len(self.variables) + 2 * self.atoms.index(a)
        return u, u + 1


@dataclasses.dataclass(frozen=True)
class Compiled:
    program: lang.Program
    cfg: ntm.NTMConfig
    params: dict[str, Any]
    layout: Layout

    def describe(self) -> str:
        return describe(self)


def compile_program(program: lang.Program, *, value_bits: int = VALUE_BITS, logit_scale: float = LOGIT_SCALE,
                    dtype: Any = jnp.float32) -> Compiled:
    """Program -> (NTMConfig, params) for ntm.step / ntm.unroll."""
    regs = program.register_names
    values: dict[str, NormalForm] = {r: normal_form(e) for r, e in program.body}
    monomials = sorted({m for nf in values.values() for m in nf if m}, key=lambda m: (len(m), sorted(m)))
    heads = (frozenset(), *monomials)
    atoms = tuple(sorted({a for m in monomials for a in m}))
    variables = tuple(sorted({v for nf in values.values() for lin in nf.values() for v, _ in lin.terms}))
    layout = Layout(regs, program.inputs, variables, atoms, heads, values, value_bits, logit_scale)

    X, K = len(program.inputs), len(regs)
    M, N, W = K + 2, 2, len(heads)
    H = max(1, 2 * len(variables) + 2 * len(atoms))
    cfg = ntm.NTMConfig(
        input_size=X, output_size=1, memory_rows=N, memory_width=M, controller="feedforward",
        controller_size=H, activation="relu", num_read_heads=1, num_write_heads=W, shift_range=0,
        memory_init="learned", clip_value=float(2.0**value_bits), add_activation="identity",
        initial_reads="memory",
        # exact float32 products wherever the step runs (GPUs default to TF32 for float32 matmuls)
        matmul_precision="highest",
    )
    scale, unscale, Kl = 2.0**-value_bits, 2.0**value_bits, logit_scale
    t0, t1 = layout.tag_columns

    # controller: [x (X); reads (M)] -> H
    def lin_weights(lin: Lin) -> np.ndarray:
        w = np.zeros(X + M)
        for (kind, name), c in lin.terms:
            if kind == "in":
                w[program.inputs.index(name)] += c
            else:
                w[X + regs.index(name)] += c * unscale  # registers are stored * 2^-S
        return w

    wc, bc = np.zeros((X + M, H)), np.zeros(H)
    for u, v in enumerate(variables):
        unit = lin_weights(Lin.make({v: 1}))
        wc[:, 2 * u], wc[:, 2 * u + 1] = unit, -unit
    for a in atoms:
        u0, u1 = layout.atom_units(a)
        wc[:, u0] = wc[:, u1] = lin_weights(a)
        bc[u0], bc[u1] = a.const, a.const - 1

    # heads: H -> [read head (M + 4); W write heads (M + 4 + 2M)]
    P_r = cfg.read_head_size
    wh, bh = np.zeros((H, cfg.head_params_size)), np.zeros(cfg.head_params_size)

    def addressing(off: int, gate_units: list[tuple[int, float]], gate_bias: float) -> None:
        """Key = s * (tag0 - tag1) with s = tanh(sum(units) + bias); beta, gate, gamma saturated."""
        for u, c in gate_units:
            wh[u, off + t0] += c
            wh[u, off + t1] -= c
        bh[off + t0], bh[off + t1] = gate_bias, -gate_bias
        bh[off + M] = Kl  # beta = softplus(K)
        bh[off + M + 1] = Kl  # gate = sigmoid(K) = 1: pure content addressing
        bh[off + M + 2] = 0.0  # the single shift (shift_range 0)
        bh[off + M + 3] = Kl  # gamma = 1 + softplus(K)

    addressing(0, [], Kl)  # the read head: always row 0
    assigned = [regs.index(r) for r, _ in program.body]
    for j, mono in enumerate(heads):
        off = P_r + j * cfg.write_head_size
        units = []
        for a in mono:
            u0, u1 = layout.atom_units(a)
            units += [(u0, Kl), (u1, -Kl)]  # K * bit
        addressing(off, units, Kl * (0.5 - len(mono)))
        erase, add = off + cfg.read_head_size, off + cfg.read_head_size + M
        bh[erase : erase + M] = -Kl
        bh[[erase + c for c in assigned]] = Kl
        for r, nf in values.items():
            lin = nf.get(mono)
            if lin is None:
                continue
            col = add + regs.index(r)
            for (v, c) in lin.terms:
                u = variables.index(v)
                wh[2 * u, col] += c * scale
                wh[2 * u + 1, col] -= c * scale
            bh[col] += lin.const * scale

    # output: [h (H); reads (M)] -> y = 2^S * reads[output]
    wo = np.zeros((H + M, 1))
    wo[H + regs.index(program.output), 0] = unscale

    memory = np.zeros((N, M))
    memory[0, :K] = [v * scale for _, v in program.registers]
    memory[0, t0] = memory[1, t1] = 1.0
    focus = np.zeros((1, N))
    focus[0, 0] = Kl
    params = {
        "controller": {"w": wc, "b": bc},
        "heads": {"w": wh, "b": bh},
        "output": {"w": wo, "b": np.zeros(1)},
        "init": {"read_logits": focus, "write_logits": np.repeat(focus, W, 0), "memory": memory},
    }
    params = {g: {k: jnp.asarray(v, dtype) for k, v in d.items()} for g, d in params.items()}
    return Compiled(program, cfg, params, layout)


def _show_monomial(m: frozenset) -> str:
    return " and ".join(f"[{a} >= 1]" for a in sorted(m)) if m else "always"


def describe(c: Compiled) -> str:
    """Human-readable account of the memory layout, units and heads."""
    L = c.layout
    lines = [f"memory: N={c.cfg.memory_rows} rows x M={c.cfg.memory_width} columns; row 0 = registers "
             f"{list(L.registers)} (scaled by 2^-{L.value_bits}) + tags [1, 0]; row 1 = scratch + tags [0, 1]",
             f"controller: H={c.cfg.controller_size} ReLU units"]
    for u, v in enumerate(L.variables):
        lines.append(f"  units {2 * u},{2 * u + 1}: relu(+-{v[1]})")
    for a in L.atoms:
        u0, u1 = L.atom_units(a)
        lines.append(f"  units {u0},{u1}: relu({a}), relu({a} - 1)  -> bit [{a} >= 1]")
    lines.append("read head: row 0 every step (registers after this step's writes)")
    for j, m in enumerate(L.heads):
        op = ":=" if not m else "+="
        terms = [f"{r} {op} {nf[m]}" for r, nf in L.values.items() if m in nf]
        lines.append(f"write head {j}: row 0 if {_show_monomial(m)} else scratch; adds {', '.join(terms) or 'nothing'}")
    lines.append(f"output: y = 2^{L.value_bits} * read[{c.program.output}]")
    lines.append(f"parameters: {ntm.num_params(c.params)}")
    return "\n".join(lines)
