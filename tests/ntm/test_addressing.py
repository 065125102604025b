"""Each addressing function on its own: normalisation, known cases, gradients, edge cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.test_util import check_grads

from ntm import addressing as A

N, M = 8, 5


def _rand(seed, *shape):
    return jax.random.normal(jax.random.key(seed), shape)


def _dist(seed, n):
    return jax.nn.softmax(_rand(seed, n))


def test_content_weights_normalised_and_focus_on_matching_row():
    mem = _rand(0, N, M)
    w = A.content_weights(mem, mem[3], jnp.float32(50.0))
    assert w.shape == (N,)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    assert (w >= 0).all()
    assert int(jnp.argmax(w)) == 3 and w[3] > 0.9


def test_content_weights_beta_zero_is_uniform():
    w = A.content_weights(_rand(0, N, M), _rand(1, M), jnp.float32(0.0))
    np.testing.assert_allclose(w, np.full(N, 1 / N), rtol=1e-6)


# In the model beta = softplus(clipped output) <= ~20; 1e6 stands for "huge" (the true gradient
# grows with beta, so a float32 gradient at 1e30 would overflow by mathematics, not by bug).
@pytest.mark.parametrize("beta", [0.0, 1e-8, 1.0, 1e4, 1e6])
def test_content_weights_finite_for_zero_memory_and_extreme_beta(beta):
    for mem, key in [(jnp.zeros((N, M)), jnp.zeros(M)), (jnp.zeros((N, M)), _rand(1, M)), (_rand(0, N, M), jnp.zeros(M))]:
        w = A.content_weights(mem, key, jnp.float32(beta))
        assert jnp.isfinite(w).all()
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)
        g = jax.grad(lambda m, k: A.content_weights(m, k, jnp.float32(beta))[0])(mem, key)
        assert all(jnp.isfinite(x).all() for x in g)


def test_cosine_similarity_known_values():
    mem = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(A.cosine_similarity(mem, jnp.array([2.0, 0.0])), [1, 0, -1, 1 / np.sqrt(2)], atol=1e-6)


def test_interpolate_gate_extremes():
    a, b = _dist(0, N), _dist(1, N)
    np.testing.assert_allclose(A.interpolate(a, b, jnp.float32(1.0)), a)
    np.testing.assert_allclose(A.interpolate(a, b, jnp.float32(0.0)), b)
    np.testing.assert_allclose(A.interpolate(a, b, jnp.float32(0.3)).sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 2])
def test_shift_moves_one_hot_circularly(offset):
    S = 2
    s = jnp.zeros(2 * S + 1).at[offset + S].set(1.0)
    for i in [0, 3, N - 1]:
        w = jnp.zeros(N).at[i].set(1.0)
        np.testing.assert_allclose(A.shift(w, s), jnp.zeros(N).at[(i + offset) % N].set(1.0))


def test_shift_matches_numpy_circular_convolution():
    w, s = np.asarray(_dist(0, N)), np.asarray(_dist(1, 3))
    expected = np.array([sum(w[(i - j) % N] * s[j + 1] for j in (-1, 0, 1)) for i in range(N)])
    np.testing.assert_allclose(A.shift(jnp.asarray(w), jnp.asarray(s)), expected, rtol=1e-6)


def test_sharpen_identity_at_one_and_argmax_when_large():
    w = _dist(0, N)
    np.testing.assert_allclose(A.sharpen(w, jnp.float32(1.0)), w, rtol=1e-5)
    sharp = A.sharpen(w, jnp.float32(1e3))
    assert sharp[jnp.argmax(w)] > 0.999
    z = A.sharpen(jnp.zeros(N).at[2].set(1.0), jnp.float32(3.0))
    assert jnp.isfinite(z).all() and float(z[2]) == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), S=st.integers(0, 3), gamma=st.floats(1.0, 50.0))
def test_address_gives_a_distribution(seed, S, gamma):
    raw = _rand(seed, M + 4 + 2 * S) * 3
    head = A.HeadParams.from_raw(raw, M, S)._replace(gamma=jnp.float32(gamma))
    w = A.address(_rand(seed + 1, N, M), _dist(seed + 2, N), head)
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)


def test_read_is_weighted_sum():
    mem = _rand(0, N, M)
    w = jnp.zeros((1, N)).at[0, 2].set(0.25).at[0, 5].set(0.75)
    np.testing.assert_allclose(A.read(mem, w)[0], 0.25 * mem[2] + 0.75 * mem[5], rtol=1e-6)


def test_write_erase_then_add():
    mem = _rand(0, N, M)
    w = jnp.zeros((1, N)).at[0, 4].set(1.0)
    out = A.write(mem, w, jnp.ones((1, M)), jnp.full((1, M), 0.5))
    np.testing.assert_allclose(out[4], jnp.full(M, 0.5))
    np.testing.assert_allclose(jnp.delete(out, 4, axis=0), jnp.delete(mem, 4, axis=0))
    # two heads: erasures multiply, additions sum (the paper's order-free rule)
    w2 = jnp.stack([_dist(1, N), _dist(2, N)])
    e2, a2 = jax.nn.sigmoid(_rand(3, 2, M)), _rand(4, 2, M)
    keep = (1 - w2[0][:, None] * e2[0][None]) * (1 - w2[1][:, None] * e2[1][None])
    expected = mem * keep + w2[0][:, None] * a2[0][None] + w2[1][:, None] * a2[1][None]
    np.testing.assert_allclose(A.write(mem, w2, e2, a2), expected, rtol=1e-5, atol=1e-6)


GRAD_CASES = {
    "cosine": (A.cosine_similarity, lambda: (_rand(0, N, M), _rand(1, M))),
    "content": (A.content_weights, lambda: (_rand(0, N, M), _rand(1, M), jnp.float32(2.0))),
    "interpolate": (A.interpolate, lambda: (_dist(0, N), _dist(1, N), jnp.float32(0.4))),
    "shift": (A.shift, lambda: (_dist(0, N), _dist(1, 3))),
    "sharpen": (A.sharpen, lambda: (_dist(0, N), jnp.float32(2.5))),
    "read": (A.read, lambda: (_rand(0, N, M), _dist(1, N)[None])),
    "write": (A.write, lambda: (_rand(0, N, M), _dist(1, N)[None], jax.nn.sigmoid(_rand(2, 1, M)), _rand(3, 1, M))),
    "address": (lambda m, w, raw: A.address(m, w, A.HeadParams.from_raw(raw, M, 1)),
                lambda: (_rand(0, N, M), _dist(1, N), _rand(2, M + 6))),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradients_match_finite_differences(name):
    fn, args = GRAD_CASES[name]
    with jax.enable_x64():  # finite differences need double precision to be meaningful
        args64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), args())
        check_grads(fn, args64, order=1, modes=("rev", "fwd"), atol=1e-5, rtol=1e-5)
