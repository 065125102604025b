"""A tiny register-machine language for loops, and its plain-integer interpreter.

A ``Program`` is one loop whose counter is the clock: every iteration assigns all registers *in
parallel* (each right-hand side reads the values from the end of the previous iteration and the
inputs of the current one), and the loop runs for as many iterations as it is given steps::

    regs = initial values
    for t in range(steps):                 # the loop over a counter (one iteration per NTM step)
        regs = {r: body[r](regs, inputs[t]) for r in regs}   # unassigned registers keep their value
        out[t] = regs[output]

Values are integers. Expressions:

    Const(c), Reg(r), Input(x)             atoms
    a + b, a - b, c * a, -a                add / subtract registers and constants, scale by a constant
    select(cond, a, b)                     if cond then a else b
    mod(x, m, c)                           bounded modular reduction: c - 1 conditional subtractions,
                                           x - m * #{j in 1..c-1 : x >= j*m}; equals x mod m when
                                           m > 0 and 0 <= x < c*m
Conditions: lt/le/gt/ge/eq/ne(a, b), not_(c), and_(c, ...), or_(c, ...).

What compiles (``compiler.compile``): a comparison, and the value reduced by ``mod``, must be
*affine* (no select or mod inside): comparisons see the registers as they were at the start of the
iteration. A loop that compares a value computed in the same iteration is written pipelined, one
iteration behind (see ``compiler.programs.modsquare``). The interpreter evaluates everything.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Union

IntLike = Union[int, "Expr"]


class Expr:
    """Integer-valued expression; ``+ - *`` build Add / Sub / Scale nodes."""

    def __add__(self, other: IntLike) -> "Expr":
        return Add(self, lift(other))

    def __radd__(self, other: IntLike) -> "Expr":
        return Add(lift(other), self)

    def __sub__(self, other: IntLike) -> "Expr":
        return Sub(self, lift(other))

    def __rsub__(self, other: IntLike) -> "Expr":
        return Sub(lift(other), self)

    def __mul__(self, c: int) -> "Expr":
        if not isinstance(c, int):
            raise TypeError("expressions can only be multiplied by integer constants")
        return Scale(c, self)

    __rmul__ = __mul__

    def __neg__(self) -> "Expr":
        return Scale(-1, self)


@dataclasses.dataclass(frozen=True)
class Const(Expr):
    value: int


@dataclasses.dataclass(frozen=True)
class Reg(Expr):
    name: str


@dataclasses.dataclass(frozen=True)
class Input(Expr):
    name: str


@dataclasses.dataclass(frozen=True)
class Add(Expr):
    a: Expr
    b: Expr


@dataclasses.dataclass(frozen=True)
class Sub(Expr):
    a: Expr
    b: Expr


@dataclasses.dataclass(frozen=True)
class Scale(Expr):
    c: int
    a: Expr


@dataclasses.dataclass(frozen=True)
class Mod(Expr):
    x: Expr
    m: Expr
    c: int  # x < c*m is assumed for a true modulus; c - 1 conditional subtractions


@dataclasses.dataclass(frozen=True)
class Select(Expr):
    cond: "Cond"
    a: Expr
    b: Expr


class Cond:
    """Boolean condition."""


COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


@dataclasses.dataclass(frozen=True)
class Compare(Cond):
    op: str
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        if self.op not in COMPARISONS:
            raise ValueError(f"comparison must be one of {COMPARISONS}, got {self.op!r}")


@dataclasses.dataclass(frozen=True)
class Not(Cond):
    c: Cond


@dataclasses.dataclass(frozen=True)
class And(Cond):
    cs: tuple[Cond, ...]


@dataclasses.dataclass(frozen=True)
class Or(Cond):
    cs: tuple[Cond, ...]


def lift(v: IntLike) -> Expr:
    if isinstance(v, Expr):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return Const(v)
    raise TypeError(f"not an integer expression: {v!r}")


def lt(a: IntLike, b: IntLike) -> Cond:
    return Compare("<", lift(a), lift(b))


def le(a: IntLike, b: IntLike) -> Cond:
    return Compare("<=", lift(a), lift(b))


def gt(a: IntLike, b: IntLike) -> Cond:
    return Compare(">", lift(a), lift(b))


def ge(a: IntLike, b: IntLike) -> Cond:
    return Compare(">=", lift(a), lift(b))


def eq(a: IntLike, b: IntLike) -> Cond:
    return Compare("==", lift(a), lift(b))


def ne(a: IntLike, b: IntLike) -> Cond:
    return Compare("!=", lift(a), lift(b))


def not_(c: Cond) -> Cond:
    return Not(c)


def and_(*cs: Cond) -> Cond:
    return And(tuple(cs))


def or_(*cs: Cond) -> Cond:
    return Or(tuple(cs))


def select(cond: Cond, a: IntLike, b: IntLike) -> Expr:
    return Select(cond, lift(a), lift(b))


def mod(x: IntLike, m: IntLike, c: int) -> Expr:
    if c < 1:
        raise ValueError(f"mod needs c >= 1, got {c}")
    return Mod(lift(x), lift(m), c)


@dataclasses.dataclass(frozen=True)
class Program:
    """inputs: names of the X per-step inputs; registers: (name, initial value) pairs;
    body: (register, expression) parallel assignments of one iteration; output: the register
    reported after every iteration."""

    inputs: tuple[str, ...]
    registers: tuple[tuple[str, int], ...]
    body: tuple[tuple[str, Expr], ...]
    output: str

    def __post_init__(self) -> None:
        names = [r for r, _ in self.registers]
        if len(set(names)) != len(names):
            raise ValueError("duplicate register names")
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError("duplicate input names")
        assigned = [r for r, _ in self.body]
        if len(set(assigned)) != len(assigned):
            raise ValueError("a register is assigned twice in one iteration")
        for r in assigned + [self.output]:
            if r not in names:
                raise ValueError(f"unknown register {r!r}")
        for _, e in self.body:
            _check_names(e, set(names), set(self.inputs))

    @property
    def register_names(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.registers)


def _check_names(node: Expr | Cond, regs: set[str], inputs: set[str]) -> None:
    if isinstance(node, Reg) and node.name not in regs:
        raise ValueError(f"unknown register {node.name!r}")
    if isinstance(node, Input) and node.name not in inputs:
        raise ValueError(f"unknown input {node.name!r}")
    for child in _children(node):
        _check_names(child, regs, inputs)


def _children(node: Expr | Cond) -> tuple:
    if isinstance(node, (Add, Sub)):
        return (node.a, node.b)
    if isinstance(node, Scale):
        return (node.a,)
    if isinstance(node, Mod):
        return (node.x, node.m)
    if isinstance(node, Select):
        return (node.cond, node.a, node.b)
    if isinstance(node, Compare):
        return (node.a, node.b)
    if isinstance(node, Not):
        return (node.c,)
    if isinstance(node, (And, Or)):
        return node.cs
    return ()


# ---- interpreter (plain Python ints) ----


def evaluate(e: Expr, regs: Mapping[str, int], inputs: Mapping[str, int]) -> int:
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Reg):
        return regs[e.name]
    if isinstance(e, Input):
        return inputs[e.name]
    if isinstance(e, Add):
        return evaluate(e.a, regs, inputs) + evaluate(e.b, regs, inputs)
    if isinstance(e, Sub):
        return evaluate(e.a, regs, inputs) - evaluate(e.b, regs, inputs)
    if isinstance(e, Scale):
        return e.c * evaluate(e.a, regs, inputs)
    if isinstance(e, Mod):
        x, m = evaluate(e.x, regs, inputs), evaluate(e.m, regs, inputs)
        return x - m * sum(x >= j * m for j in range(1, e.c))
    if isinstance(e, Select):
        return evaluate(e.a if holds(e.cond, regs, inputs) else e.b, regs, inputs)
    raise TypeError(f"not an expression: {e!r}")


def holds(c: Cond, regs: Mapping[str, int], inputs: Mapping[str, int]) -> bool:
    if isinstance(c, Compare):
        a, b = evaluate(c.a, regs, inputs), evaluate(c.b, regs, inputs)
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[c.op]
    if isinstance(c, Not):
        return not holds(c.c, regs, inputs)
    if isinstance(c, And):
        return all(holds(x, regs, inputs) for x in c.cs)
    if isinstance(c, Or):
        return any(holds(x, regs, inputs) for x in c.cs)
    raise TypeError(f"not a condition: {c!r}")


def interpret(program: Program, inputs: Sequence[Sequence[int]], steps: int | None = None) -> list[int]:
    """Run the loop for ``steps`` iterations (default len(inputs)) on per-step inputs [T][X];
    returns the output register after each iteration."""
    steps = len(inputs) if steps is None else steps
    regs = dict(program.registers)
    outs = []
    for t in range(steps):
        inp = dict(zip(program.inputs, (int(v) for v in inputs[t]), strict=True))
        new = {r: evaluate(e, regs, inp) for r, e in program.body}
        regs.update(new)
        outs.append(regs[program.output])
    return outs


def interpret_registers(program: Program, inputs: Sequence[Sequence[int]]) -> list[dict[str, int]]:
    """All registers after each iteration (for inspection)."""
    regs = dict(program.registers)
    trace = []
    for row in inputs:
        inp = dict(zip(program.inputs, (int(v) for v in row), strict=True))
        regs = {**regs, **{r: evaluate(e, regs, inp) for r, e in program.body}}
        trace.append(dict(regs))
    return trace


def show(node: Expr | Cond) -> str:
    """Readable infix form."""
    if isinstance(node, Const):
        return str(node.value)
    if isinstance(node, (Reg, Input)):
        return node.name
    if isinstance(node, Add):
        return f"({show(node.a)} + {show(node.b)})"
    if isinstance(node, Sub):
        return f"({show(node.a)} - {show(node.b)})"
    if isinstance(node, Scale):
        return f"{node.c}*{show(node.a)}"
    if isinstance(node, Mod):
        return f"mod({show(node.x)}, {show(node.m)}, {node.c})"
    if isinstance(node, Select):
        return f"({show(node.a)} if {show(node.cond)} else {show(node.b)})"
    if isinstance(node, Compare):
        return f"{show(node.a)} {node.op} {show(node.b)}"
    if isinstance(node, Not):
        return f"not ({show(node.c)})"
    if isinstance(node, And):
        return " and ".join(f"({show(c)})" for c in node.cs)
    if isinstance(node, Or):
        return " or ".join(f"({show(c)})" for c in node.cs)
    raise TypeError(node)
