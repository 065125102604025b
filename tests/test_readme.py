"""The README's reuse snippet runs as written, and the NTM it builds learns a little."""
import re
from pathlib import Path

import jax
import numpy as np


def _snippet() -> str:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("## Reusing the NTM in your own JAX project", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_reuse_snippet_runs_and_learns():
    ns: dict = {}
    exec(compile(_snippet(), "README.md", "exec"), ns)
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 2, (4, 6, 9)).astype(np.float32)
    ys = xs[..., :8]  # echo the input bits: learnable from the controller alone
    steps = np.array([6, 5, 3, 1], np.int32)
    params, opt_state = ns["params"], ns["opt_state"]
    losses = []
    for _ in range(120):
        params, opt_state, loss = ns["update"](params, opt_state, xs, ys, steps)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.85 * losses[0]
    out = ns["rnn"](xs)
    assert out.shape == (4, 6, 8)
    _, trace = ns["loss_fn"](params, xs, ys, steps)
    np.testing.assert_allclose(np.asarray(trace.read_weights).sum(-1), 1.0, atol=1e-5)
    assert jax.tree.structure(params) == jax.tree.structure(ns["ntm"].init_params(jax.random.key(1), ns["cfg"]))
