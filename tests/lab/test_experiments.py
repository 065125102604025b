"""Experiment presets and their comparison: baselines sized as documented, every preset's
evaluation tasks valid, the loopiness and difficulty statistics right on known inputs, and
train.py / eval.py --experiment end to end on a tiny budget."""
import dataclasses
import json
import shutil

import numpy as np
import pytest

import eval as eval_cli
import train as train_cli
from lab import compare, experiments, models
from lab.cli import run_cli
from lab.rundir import build_model, build_task


def test_write_on_improvement_separates_the_two_kinds_of_step():
    T, B, N = 4, 2, 8
    w = np.full((T, B, 1, N), 1 / N)
    w[0, :, 0] = np.eye(N)[0]  # a focused write on the first step of both examples
    improved = np.zeros((T, B), bool)
    improved[0] = True
    shown = np.ones((T, B), bool)
    shown[3, 1] = False  # not a shown step: left out of both
    w[3, 1, 0] = np.eye(N)[2]
    out = compare.write_on_improvement(w, improved, shown)
    assert out == {"improvement": 1.0, "other": pytest.approx(1 / N), "improvement_steps": 2, "other_steps": 5}


def test_loopiness_counts_one_slot_moves_with_wraparound():
    T, N = 6, 5
    w = np.zeros((T, 2, 2, N))
    for t in range(T):
        w[t, 0, 0, t % N] = 1  # walks +1 and wraps from row 4 to row 0
        w[t, 0, 1, 2] = 1  # stays put
        w[t, 1, 0, (-t) % N] = 1  # walks -1
        w[t, 1, 1, (2 * t) % N] = 1  # jumps by 2
    steps = np.array([T, T])
    assert compare.loopiness(w, steps) == pytest.approx(0.5)
    assert compare.loopiness(w[:, :1, :1], steps[:1]) == 1.0
    assert compare.loopiness(w[:, :1, 1:], steps[:1]) == 0.0
    # steps past an example's own count are ignored
    w2 = w[:, :1, :1].copy()
    w2[4:] = 0
    w2[4:, 0, 0, 0] = 1
    assert compare.loopiness(w2, np.array([4])) == 1.0


def test_quantile_bins_sort_by_difficulty():
    diff = np.array([4.0, 1, 3, 2, 8, 7, 6, 5])
    vals = diff * 10
    bins = compare.quantile_bins(diff, vals, q=4)
    assert [b["mean"] for b in bins] == [15, 35, 55, 75]
    assert [b["examples"] for b in bins] == [2] * 4
    assert bins[0]["difficulty_lo"] == 1 and bins[-1]["difficulty_hi"] == 8


@pytest.mark.parametrize("target", [1_000, 30_000, 500_000])
def test_mlp_hidden_for_matches_the_parameter_count(target):
    X, Y, T, L = 10, 8, 40, 2
    h = models.mlp_hidden_for(target, X, Y, T, L)
    got = models.mlp_params(X, Y, T, h, L)
    step = models.mlp_params(X, Y, T, h + 1, L) - got
    assert abs(got - target) <= step
    built = models.make_model("mlp", X, Y, models.ModelConfig(hidden_size=h, mlp_layers=L), T, 0)
    assert models.count_params(built) == got
    h1 = models.mlp_hidden_for(target, X, Y, T, L, one_output=True)
    one = models.make_model("mlp", X, Y, models.ModelConfig(hidden_size=h1, mlp_layers=L, mlp_one_output=True), T, 0)
    assert models.count_params(one) == models.mlp_params(X, Y, T, h1, L, one_output=True)


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_every_preset_builds_and_its_mlp_covers_every_evaluation(name):
    exp = experiments.get(name)
    T = exp.largest_steps()
    ntm_params = exp.ntm_params()
    for run, cfg in exp.runs():
        assert run.rsplit("-s", 1)[0] in {s.label for s in exp.models}
        assert cfg.head_entropy == next(s for s in exp.models if run.startswith(s.label + "-s")).head_entropy
        task = build_task(cfg)
        assert (task.min_size, task.max_size) == exp.train_sizes
        if cfg.model != "ntm":  # the NTM's own options (a write gate, ...) stay out of a baseline's run
            assert cfg.model_config == cfg.model_config.for_model("lstm")
            assert all(getattr(cfg.model_config, f) == getattr(models.ModelConfig(), f) for f in models.ModelConfig.NTM_ONLY)
        else:
            assert cfg.model_config.write_gate == exp.ntm.write_gate
        if cfg.model == "mlp":
            assert cfg.model_config.mlp_max_steps == T
            spec = next(s for s in exp.models if run.startswith(s.label + "-s"))
            mc = cfg.model_config
            count = lambda h: models.mlp_params(task.input_size, task.output_size, T, h, mc.mlp_layers, True)  # noqa: E731
            p = count(mc.hidden_size)
            assert models.count_params(build_model(cfg, task)) == p
            assert abs(p - spec.match_ntm_params * ntm_params) <= count(mc.hidden_size + 1) - p  # within one unit
    for s in exp.eval_sizes:
        for c in exp.scales:
            t = exp.eval_task(s, c)
            assert t.max_steps() <= T and (t.min_size, t.max_size) == (s, s)


def test_unknown_experiment_or_model_exits_2(capsys, tmp_path):
    assert run_cli(train_cli.main, ["--experiment", "nope"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    assert run_cli(train_cli.main, ["--experiment", "argmax-quick", "--models", "transformer",
                                    "--runs-root", str(tmp_path)]) == 2
    assert "no model" in capsys.readouterr().err
    assert run_cli(eval_cli.main, ["--experiment", "argmax-quick", "--runs-root", str(tmp_path)]) == 2
    assert "no runs" in capsys.readouterr().err


TINY_EXP = dataclasses.replace(
    experiments.get("argmax-quick"), name="tiny", eval_sizes=(4, 8), scales=(1.0, 2.0), train_sizes=(2, 4),
    ntm=models.ModelConfig(memory_rows=8, memory_width=4, controller_size=8))


def test_experiment_trains_every_model_then_compares_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny", TINY_EXP)
    root = str(tmp_path)
    assert run_cli(train_cli.main, ["--experiment", "tiny", "--steps", "10", "--no-progress",
                                    "--runs-root", root]) == 0
    exp = experiments.get("tiny")
    for label in ("ntm", "mlp"):
        assert (tmp_path / exp.name / f"{label}-s0" / "metrics.jsonl").exists()
    mtime = (tmp_path / exp.name / "ntm-s0" / "metrics.jsonl").stat().st_mtime_ns
    assert run_cli(train_cli.main, ["--experiment", "tiny", "--steps", "10", "--no-progress",
                                    "--runs-root", root]) == 0  # finished runs are kept, not retrained
    assert (tmp_path / exp.name / "ntm-s0" / "metrics.jsonl").stat().st_mtime_ns == mtime
    # a run moved aside by --overwrite (<dir>.old-<time>) is not another seed
    shutil.copytree(tmp_path / exp.name / "ntm-s0", tmp_path / exp.name / "ntm-s0.old-20261130-120000")
    assert [p.name for p in compare.find_runs(exp, tmp_path)["ntm"]] == ["ntm-s0"]
    capsys.readouterr()
    assert run_cli(eval_cli.main, ["--experiment", "tiny", "--runs-root", root, "--batch-size", "16"]) == 0
    report_dir = tmp_path / exp.name / "report"
    for f in ("results.json", "results.md", "comparison.png", "ntm_heads.png"):
        assert (report_dir / f).stat().st_size > 0
    rep = json.loads((report_dir / "results.json").read_text())
    assert set(rep["models"]) == {"ntm", "mlp"}
    for m in rep["models"].values():
        assert [r["size"] for r in m["by_size"]] == list(exp.eval_sizes)
        assert [r["scale"] for r in m["by_scale"]] == list(exp.scales)
        assert all(0 <= r["mean"] <= 1 for r in m["by_size"])
        assert len(m["by_difficulty"]["error"]) == compare.QUANTILES
    assert 0 <= rep["models"]["ntm"]["loopiness"]["read_weights"] <= 1
    assert rep["models"]["mlp"]["loopiness"] is None
    wi = rep["models"]["ntm"]["write_on_improvement"]
    assert 0 <= wi["improvement"] <= 1 and 0 <= wi["other"] <= 1 and wi["improvement_steps"] > 0
    assert rep["models"]["mlp"]["write_on_improvement"] is None
    assert "| ntm |" in capsys.readouterr().out
