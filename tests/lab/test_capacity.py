"""lab.capacity: the representation, the width search, a tiny fit that memorises, and bad command lines."""
import json

import numpy as np
import pytest

from lab import capacity
from lab.cli import run_cli
from tasks.modsquare import solve


def test_encodings_spell_n_and_k():
    """k is the loop's answer (recomputed here from the loop itself); the MLP sees n's bits and answers k's on one
    step, the LSTM reads n's bits, then answers k's, one per step."""
    n, k = capacity.modsquare_table(5)
    assert list(n) == list(range(1, 32))
    for m, km in zip(n, k):
        best = 0
        for i in range(1, int(m ** 0.7 + 1e-9) + 1):
            if (i * i) % m > (best * best) % m:
                best = i
        assert km == best
    j = 2 ** np.arange(5)
    x, y, mask = capacity.encode(n, k, 5, "mlp")
    assert x.shape == y.shape == (1, 31, 5) and (mask == 1).all()
    np.testing.assert_array_equal(x[0] @ j, n)
    np.testing.assert_array_equal(y[0] @ j, k)
    x, y, mask = capacity.encode(n, k, 5, "lstm")
    np.testing.assert_array_equal((x[:5, :, 0] * j[:, None]).sum(0), n)
    np.testing.assert_array_equal((y[5:, :, 0] * j[:, None]).sum(0), k)
    assert (x[5:, :, 1] == 1).all() and (x[:5, :, 1] == 0).all() and (y[:5] == 0).all()
    np.testing.assert_array_equal(mask, np.repeat([0.0, 1.0], 5)[:, None] * np.ones((1, 31)))


def test_sweep_finds_the_smallest_width_on_the_grid(monkeypatch):
    """With a fit that succeeds exactly from a known width per b (rising, then falling), the search returns that
    width at every b, and stops at the first b that the widest allowed width misses."""
    need = {4: 6, 5: 16, 6: 11, 7: 64, 8: 10**6}
    monkeypatch.setattr(capacity, "fit", lambda kind, width, bits, steps, lr: {
        "model": kind, "bits": bits, "width": width, "params": width, "exact": float(width >= need[bits]),
        "steps": steps, "lr": lr, "seconds": 0.0})
    tried = capacity.sweep(["mlp"], [4, 5, 6, 7, 8], 1, 1e-2, 4, 128, 0.99, log=lambda *_: None)
    found = capacity.needed(tried, 0.99)["mlp"]
    assert {b: r["width"] for b, r in found.items()} == {4: 6, 5: 16, 6: 11, 7: 64}
    assert max(r["width"] for r in tried if r["bits"] == 8) == 128 and 9 not in {r["bits"] for r in tried}
    tried = capacity.sweep(["mlp"], [4, 5, 6], 1, 1e-2, 4, 128, 0.99, log=lambda *_: None, up_to={"mlp": 5})
    assert {r["bits"] for r in tried} == {4, 5}


def test_small_networks_memorise_every_n_and_the_report_is_written(tmp_path):
    for kind in ("mlp", "lstm"):
        r = capacity.fit(kind, 32, 4, 600, 1e-2)
        assert r["exact"] == 1.0 and r["examples"] == 15, r
    assert capacity.fit("mlp", 1, 6, 50, 1e-2)["exact"] < 0.5  # one hidden unit cannot hold 63 answers
    out = tmp_path / "cap"
    assert run_cli(capacity.main, ["--bits", "3", "4", "--models", "mlp", "--steps", "300", "--min-width", "16",
                                   "--max-width", "32", "--out", str(out)]) == 0
    d = json.loads((out / "capacity.json").read_text())
    assert {r["bits"] for r in d["tried"]} == {3, 4} and d["compiled_ntm_params"] > 0
    assert (out / "capacity.png").stat().st_size > 0 and "| 4 | 15 |" in (out / "capacity.md").read_text()
    assert len((out / "tried.jsonl").read_text().splitlines()) == len(d["tried"])


@pytest.mark.parametrize("argv", [
    ["--bits", "5", "4"],
    ["--bits", "1"],
    ["--target", "1.5"],
    ["--models", "ntm"],
    ["--steps", "x"],
    ["--ntm-examples", "0"],
    ["--up-to", "ntm=4"],
    ["--up-to", "lstm"],
    ["--ntm", "/nonexistent/run"],
])
def test_bad_command_lines_exit_2(argv, tmp_path, capsys):
    try:
        code = run_cli(capacity.main, argv + ["--out", str(tmp_path / "o")])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1
