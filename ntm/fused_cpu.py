"""Optional fused CPU kernel for the memory part of one NTM time step (XLA FFI custom calls).

``memory_step`` computes what ``ntm.core._step_t`` does between the controller's head parameters
and the reads, for one example (vmap adds the batch): write-head addressing on the old memory, the
write (erase then add), read-head addressing on the new memory, and the reads. Memory is the
transposed [M, N] layout of ``_step_t``. Forward and backward are two C++ kernels
(``ntm/csrc/memory_step.cc``) joined by ``jax.custom_vjp``; the backward recomputes the forward's
O(N) intermediates, so the only residuals are the inputs.

The library is compiled on first use with the system ``g++`` (``$CXX``) into a per-user cache directory,
``$XDG_CACHE_HOME/ntm-search/fused`` (default ``~/.cache/ntm-search/fused``, created private to the user; an
installed package directory is often read-only), named by a hash of the source, the compiler flags and the
JAX headers, with the library's own SHA-256 beside it: a library is loaded only when both match, i.e. when it
was built from this exact source by this build. ``available()`` says whether that worked;
``unavailable_reason()`` says why not, and ``build_failed()`` whether a compiler was there and failed (which
``ntm.core`` warns about; a missing compiler is a silent fallback under ``fused_memory="auto"``). A call
splits its batch over XLA's intra-op threads when it has at least ~1M multiply-adds of work;
``NTM_FUSED_PARALLEL_MIN_WORK`` (an integer, read once when the library loads) changes that threshold. Nothing
here runs unless ``ntm.core`` takes the fused path (``NTMConfig.fused_memory``), which it does only where
``supports`` says yes.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from ntm.addressing import HeadParams

Array = jax.Array

_SRC = Path(__file__).parent / "csrc" / "memory_step.cc"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ntm-search" / "fused"


_BUILD_DIR: Path | None = None  # None: _cache_dir(), resolved at the first build (tests point it elsewhere)
_FWD_TARGET = "ntm_memory_step_fwd"
_BWD_TARGET = "ntm_memory_step_bwd"

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "lib": None, "error": None, "build_failed": False}


class NoCompiler(RuntimeError):
    """No C++ compiler: the kernel cannot be built here (a silent fallback under ``fused_memory="auto"``)."""


def _cpu_has(flag: str) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and flag in line.split() for line in text.splitlines())


def _compile_flags() -> list[str]:
    # IEEE float semantics apart from FMA contraction: no -ffast-math. -ffp-contract=fast lets a*b+c
    # round once (an FMA) where the CPU has FMA, which moves results by float32 rounding only (the
    # tests compare against pure JAX at 1e-5 / 1e-4). -fno-math-errno and -fno-trapping-math change
    # no computed value (errno is not set, FP exception flags are not preserved), but let sqrt inline
    # and branch-free selects vectorise. -fopenmp-simd only honours the `omp simd` pragmas
    # (vectorised sums); it needs no OpenMP runtime. Vector extensions only as far as this CPU has
    # them (the library is built on the machine that runs it, so detection is exact; they are named
    # explicitly rather than by -march=native so that the build hash records them).
    flags = ["-O3", "-DNDEBUG", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=fast", "-fno-math-errno",
             "-fno-trapping-math", "-fopenmp-simd"]
    if _cpu_has("avx2"):
        flags.append("-mavx2")
        if _cpu_has("fma"):
            flags.append("-mfma")
        if all(_cpu_has(f) for f in ("avx512f", "avx512vl", "avx512bw", "avx512dq")):
            flags += ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq"]
    return flags


def _library_path(compiler: str, flags: list[str]) -> Path:
    h = hashlib.sha256()
    h.update(_SRC.read_bytes())
    h.update(" ".join([compiler, *flags, jax.ffi.include_dir()]).encode())
    h.update((Path(jax.ffi.include_dir()) / "xla" / "ffi" / "api" / "c_api.h").read_bytes())
    return _build_dir() / f"memory_step-{h.hexdigest()[:16]}.so"


def _build_dir() -> Path:
    return _BUILD_DIR if _BUILD_DIR is not None else _cache_dir()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build() -> Path:
    """Compile the kernel library unless a verified build for this source and these flags exists; its path."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise NoCompiler(f"C++ compiler {compiler!r} not found")
    flags = _compile_flags()
    out = _library_path(compiler, flags)
    build_dir = out.parent
    stamp = out.with_suffix(".sha256")
    if out.exists() and stamp.exists() and stamp.read_text().strip() == _digest(out):
        return out
    try:
        build_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Build to temporary names and rename: concurrent processes (pytest-xdist) never see half a file.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=build_dir)
        os.close(fd)
    except OSError as e:
        raise RuntimeError(f"cannot write the kernel build directory {build_dir}: {e}") from e
    cmd = [compiler, *flags, "-isystem", jax.ffi.include_dir(), str(_SRC), "-o", tmp]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RuntimeError(f"{compiler} failed to build {_SRC.name}: {last}")
        fd, tmp_stamp = tempfile.mkstemp(suffix=".sha256", dir=build_dir)
        with os.fdopen(fd, "w") as f:
            f.write(_digest(Path(tmp)) + "\n")
        os.replace(tmp, out)
        os.replace(tmp_stamp, stamp)
        # builds of other sources, flags or JAX versions untouched for 30 days (the cache may be shared by
        # several checkouts, virtual environments and CPU types: never remove one that may be in use)
        for stale in [*build_dir.glob("memory_step-*.so"), *build_dir.glob("memory_step-*.sha256")]:
            if stale.stem != out.stem and time.time() - stale.stat().st_mtime > 30 * 86400:
                stale.unlink(missing_ok=True)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load() -> ctypes.CDLL | None:
    """Build, load and register the kernels once per process; None (reason kept) on failure."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                lib = ctypes.cdll.LoadLibrary(str(_build()))
                jax.ffi.register_ffi_target(_FWD_TARGET, jax.ffi.pycapsule(lib.NtmMemoryStepFwd), platform="cpu")
                jax.ffi.register_ffi_target(_BWD_TARGET, jax.ffi.pycapsule(lib.NtmMemoryStepBwd), platform="cpu")
                _state["lib"] = lib
            except Exception as e:  # noqa: BLE001 -- any failure means "use pure JAX"
                _state["error"] = f"{type(e).__name__}: {e}"
                _state["build_failed"] = not isinstance(e, NoCompiler)
        return _state["lib"]


def available() -> bool:
    """Whether the fused kernels are built and registered (builds them on first call)."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why ``available()`` is False (None when it is True)."""
    _load()
    return None if _state["lib"] is not None else f"fused NTM memory kernel unavailable: {_state['error']}"


def build_failed() -> bool:
    """Whether the kernel is unavailable because a build or load failed (a compiler was there)."""
    _load()
    return bool(_state["build_failed"])


def supports(num_read_heads: int, num_write_heads: int, dtype: Any = jnp.float32) -> bool:
    """Whether the kernel handles this configuration (at least one head of each kind, float32, CPU)."""
    return (num_read_heads >= 1 and num_write_heads >= 1 and jnp.dtype(dtype) == jnp.float32
            and jax.default_backend() == "cpu")


# --- the JAX side ------------------------------------------------------------------------------

Inputs = tuple[Array, ...]  # the 15 kernel inputs, in kernel order


def _flatten(memory_t: Array, write_w_prev: Array, read_w_prev: Array, write_hp: HeadParams, erase: Array,
             add: Array, read_hp: HeadParams) -> Inputs:
    return (memory_t, write_w_prev, read_w_prev,
            write_hp.key, write_hp.beta, write_hp.gate, write_hp.shift, write_hp.gamma, erase, add,
            read_hp.key, read_hp.beta, read_hp.gate, read_hp.shift, read_hp.gamma)


def _forward_call(args: Inputs) -> tuple[Array, Array, Array, Array]:
    memory_t, ww, rw = args[0], args[1], args[2]
    M = memory_t.shape[-2]
    out = (jax.ShapeDtypeStruct(memory_t.shape, jnp.float32),
           jax.ShapeDtypeStruct(ww.shape, jnp.float32),
           jax.ShapeDtypeStruct(rw.shape, jnp.float32),
           jax.ShapeDtypeStruct((*rw.shape[:-1], M), jnp.float32))
    return tuple(jax.ffi.ffi_call(_FWD_TARGET, out, vmap_method="broadcast_all")(*args))  # type: ignore[return-value]


@jax.custom_vjp
def _memory_step_flat(*args: Array) -> tuple[Array, Array, Array, Array]:
    return _forward_call(args)


def _fwd(*args: Array) -> tuple[tuple[Array, Array, Array, Array], Inputs]:
    return _forward_call(args), args


def _bwd(res: Inputs, cts: tuple[Array, Array, Array, Array]) -> Inputs:
    out = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in res)
    cts = tuple(jnp.asarray(c, jnp.float32) for c in cts)
    return tuple(jax.ffi.ffi_call(_BWD_TARGET, out, vmap_method="broadcast_all")(*res, *cts))


_memory_step_flat.defvjp(_fwd, _bwd)


def memory_step(memory_t: Array, write_w_prev: Array, read_w_prev: Array, write_hp: HeadParams, erase: Array,
                add: Array, read_hp: HeadParams) -> tuple[Array, Array, Array, Array]:
    """One example's addressing, write and reads, fused (differentiable; vmap adds the batch).

    memory_t [M, N]; write_w_prev [W, N]; read_w_prev [R, N]; head params as ``split_head_params``
    returns them (key [H, M], beta/gate/gamma [H], shift [H, 2S+1]); erase, add [W, M].
    Returns (new memory_t [M, N], write weights [W, N], read weights [R, N], reads [R, M]).
    Raises RuntimeError if the kernel is unavailable (check ``available()`` first).
    """
    if not available():
        raise RuntimeError(unavailable_reason())
    args = tuple(jnp.asarray(a, jnp.float32)
                 for a in _flatten(memory_t, write_w_prev, read_w_prev, write_hp, erase, add, read_hp))
    return _memory_step_flat(*args)
