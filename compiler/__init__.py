"""Loops compiled into Neural Turing Machine weights (in the spirit of tracr).

    from compiler import lang, compile_program, MODSQUARE
    c = compile_program(MODSQUARE)          # c.cfg: ntm.NTMConfig, c.params: ntm parameters
    ys, trace, state = ntm.unroll(c.params, c.cfg, inputs)   # the project's own NTM code path

``lang`` is the register-machine language and its interpreter, ``compile`` the compiler,
``programs`` the modsquare and argmax programs, ``run`` batched execution, and the commands
``python -m compiler.sweep``, ``compiler.size``, ``compiler.fragility``, ``compiler.finetune`` (Adam from the
compiled weights), ``compiler.show`` the measurements and a per-step picture / head figure.
See docs/compiled_ntm.md.
"""
from compiler import lang
from compiler.compile import CompileError, Compiled, compile_program
from compiler.programs import ARGMAX, MODSQUARE

__all__ = ["ARGMAX", "CompileError", "Compiled", "MODSQUARE", "compile_program", "lang"]
