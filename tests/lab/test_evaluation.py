"""eval.py on a tiny trained run: tables and figures are written, evaluation is deterministic,
sizes beyond an MLP's input width are reported as skipped, bad run directories exit 2."""
import json
import shutil

import numpy as np
import pytest

import eval as eval_cli
from lab import evaluation
from lab.cli import run_cli
from lab.config import TrainConfig
from lab.models import ModelConfig
from lab.rundir import load_run
from lab.trainer import train

TINY = TrainConfig(steps=20, log_every=10, batch_size=8, min_size=1, max_size=4, eval_batch_size=16,
                   checkpoint_every=10, model_config=ModelConfig(memory_rows=16, memory_width=8, controller_size=16,
                                                                 hidden_size=16))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    train(TINY, root / "ntm", progress=False)
    train(TrainConfig(**{**TINY.__dict__, "model": "mlp"}), root / "mlp", progress=False)
    return root


def test_eval_writes_tables_and_figures(runs, capsys):
    out = runs / "combined"
    assert run_cli(eval_cli.main, [str(runs / "ntm"), str(runs / "mlp"), "--sizes", "2", "4", "8",
                                   "--batch-size", "8", "--out", str(out)]) == 0
    for run in ("ntm", "mlp"):
        for f in ("eval.json", "eval.md", "learning_curve.png", "example.png"):
            assert (runs / run / f).stat().st_size > 0
    for f in ("eval.json", "eval.md", "metric_vs_size.png", "learning_curves.png"):
        assert (out / f).stat().st_size > 0
    ntm = json.loads((runs / "ntm" / "eval.json").read_text())
    assert [r["size"] for r in ntm["rows"]] == [2, 4, 8]
    assert all(0 <= r["exact_match"] <= 1 and r["bits_per_seq"] >= 0 for r in ntm["rows"])
    assert ntm["checkpoint_step"] == TINY.steps and ntm["examples_seen"] == TINY.steps * TINY.batch_size
    mlp = json.loads((runs / "mlp" / "eval.json").read_text())
    assert "skipped" not in mlp["rows"][1] and "skipped" in mlp["rows"][2]  # built for length <= 4
    assert "| 8 (beyond training) |" in (runs / "ntm" / "eval.md").read_text()


def test_evaluation_is_deterministic_and_matches_direct_metrics(runs):
    a = evaluation.evaluate_run(runs / "ntm", [3], batch_size=8)
    b = evaluation.evaluate_run(runs / "ntm", [3], batch_size=8)
    assert a == b
    cfg, task, model, _ = load_run(runs / "ntm")
    t = task.with_sizes(3, 3)
    batch = evaluation.fixed_batch(t, 8)
    logits, _ = model(batch.inputs, batch.steps)
    direct = t.metrics(logits, batch)
    np.testing.assert_allclose(a["rows"][0]["bits_per_seq"], float(direct["bits_per_seq"].mean()), rtol=1e-5)


def test_example_trace_weightings_are_distributions(runs):
    cfg, task, model, _ = load_run(runs / "ntm")
    tr = evaluation.example_trace(model, task, 3)
    T = 2 * 3 + 1
    assert tr["inputs"].shape[0] == tr["outputs"].shape[0] == T
    for k in ("read_weights", "write_weights"):
        assert tr[k].shape == (T, 1, 16)
        np.testing.assert_allclose(tr[k].sum(-1), 1.0, atol=1e-5)


def test_bad_run_directories_exit_2(runs, tmp_path, capsys):
    assert run_cli(eval_cli.main, [str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(runs / "ntm", broken)
    for d in (broken / "checkpoints").iterdir():
        for f in d.rglob("*"):
            if f.is_file():
                f.write_bytes(b"garbage")
    before = sorted(p.relative_to(broken) for p in broken.rglob("*"))
    assert run_cli(eval_cli.main, [str(broken)]) == 2
    assert "cannot be restored" in capsys.readouterr().err
    assert sorted(p.relative_to(broken) for p in broken.rglob("*")) == before  # nothing deleted
    assert run_cli(eval_cli.main, [str(runs / "ntm"), "--sizes", "0"]) == 2


def test_eval_draws_the_compiled_ntm(tmp_path, capsys):
    assert run_cli(eval_cli.main, ["--compiled", "30", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "compiled_heads_n30.png").stat().st_size > 0
    assert run_cli(eval_cli.main, ["--compiled", "1", "--out", str(tmp_path)]) == 2
