"""The benchmark's FLOP counter on known programs, and one tiny benchmark row end to end."""
import jax
import jax.numpy as jnp
import pytest

from lab import bench


def test_count_flops_dot_scan_cond_and_elementwise():
    w = jnp.ones((3, 4))

    def f(x):  # x [5, 2, 3]
        def body(c, xt):
            y = xt @ w  # 2*2*4*3 = 48 matmul FLOPs per step
            return c + y.sum(), jnp.tanh(y)  # reduce_sum 8 + add 1 + tanh 8 = 17 other FLOPs
        return jax.lax.scan(body, 0.0, x)

    mm, other = bench.count_flops(jax.make_jaxpr(f)(jnp.ones((5, 2, 3))))
    assert mm == 5 * 48
    assert other == 5 * 17
    g = lambda x: jax.lax.cond(x.sum() > 0, lambda v: v @ w, lambda v: (v * 2) @ w, x)  # noqa: E731
    mm, _ = bench.count_flops(jax.make_jaxpr(g)(jnp.ones((2, 3))))
    assert mm == 48  # one branch


def test_bench_row_has_throughput_and_roofline_fields():
    peaks = {"matmul_flops_per_s": 1e11, "bandwidth_bytes_per_s": 1e10}
    row = bench.bench_one("copy", "ntm", 2, dispatch=2, repeats=1, peaks=peaks)
    assert row["batch_size"] == 2 and row["examples_per_s"] > 0 and row["ms_per_step"] > 0
    assert row["flops_per_step"] > row["matmul_flops_per_step"] > 0
    assert row["frac_of_matmul_peak"] == pytest.approx(row["flops_per_step"] / (row["ms_per_step"] / 1e3) / 1e11)
