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


def test_count_flops_counts_every_shard_of_a_shard_map():
    """A shard_map body is one device's shard: the program's FLOPs are that times the devices (8 here)."""
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec as P

    w = jnp.ones((3, 4))
    f = lambda x: x @ w  # noqa: E731
    x = jnp.ones((16, 3))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.shard_map(f, mesh=mesh, in_specs=P("data"), out_specs=P("data"))
    whole, _ = bench.count_flops(jax.make_jaxpr(f)(x))
    split, _ = bench.count_flops(jax.make_jaxpr(sharded)(x))
    assert whole == 2 * 16 * 4 * 3 and split == whole and len(jax.devices()) == 8


def test_bench_row_has_throughput_and_roofline_fields():
    peaks = {"matmul_flops_per_s": 1e11, "bandwidth_bytes_per_s": 1e10}
    row = bench.bench_one("copy", "ntm", 2, dispatch=2, repeats=1, peaks=peaks)
    assert row["batch_size"] == 2 and row["examples_per_s"] > 0 and row["ms_per_step"] > 0
    assert row["flops_per_step"] > row["matmul_flops_per_step"] > 0
    assert row["frac_of_matmul_peak"] == pytest.approx(row["flops_per_step"] / (row["ms_per_step"] / 1e3) / 1e11)


def test_profile_groups_xla_ops_and_skips_host_and_control_flow_events(tmp_path):
    import gzip
    import json

    from lab import profile_step

    events = [{"ph": "X", "name": "ynn_fusion.3", "dur": 10}, {"ph": "X", "name": "ynn_fusion.12", "dur": 5},
              {"ph": "X", "name": "ynn_fusion.3", "dur": 10}, {"ph": "X", "name": "dot.1", "dur": 7},
              {"ph": "X", "name": "while.2", "dur": 100}, {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 99},
              {"ph": "X", "name": "$api.py:1 block_until_ready", "dur": 99}, {"ph": "i", "name": "dot.1"}]
    (tmp_path / "a").mkdir()
    with gzip.open(tmp_path / "a" / "host.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    times = profile_step.op_times(tmp_path)
    assert times == {"ynn_fusion.3": (20.0, 2), "ynn_fusion.12": (5.0, 1), "dot.1": (7.0, 1)}
    assert profile_step.group(times) == [("ynn_fusion", 25.0, 3, 2), ("dot", 7.0, 1, 1)]


def test_profile_of_a_real_step_finds_its_matmuls():
    from lab import profile_step

    res = profile_step.profile("argmax", "mlp", 4, dispatch=2, repeats=1)
    kinds = {r["kind"] for r in res["kinds"]}
    assert res["ms_per_step"] > 0 and res["ops_per_step"] >= 1
    assert any("dot" in k or "fusion" in k for k in kinds)
    assert not any(k.startswith(("while", "$", "ThunkExecutor")) for k in kinds)
