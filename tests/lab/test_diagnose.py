"""lab.diagnose on tiny trained runs: argmax error by margin and ties, the gap breakdown on hand-built lists,
modsquare's value kinds."""
import json

import numpy as np
import pytest

from lab.cli import run_cli
from lab.config import TrainConfig
from lab.models import ModelConfig
from lab.trainer import train


def test_diagnose_argmax_counts_add_up(tmp_path, capsys):
    from lab import diagnose

    cfg = TrainConfig(task="argmax", steps=10, log_every=10, batch_size=8, min_size=2, max_size=8, eval_batch_size=16,
                      checkpoint_every=10, task_options={"labels": "random", "levels": 16},
                      model_config=ModelConfig(memory_rows=8, memory_width=4, controller_size=8))
    train(cfg, tmp_path / "am", progress=False)
    d = diagnose.diagnose(str(tmp_path / "am"), size=12, batch_size=64)
    assert sum(b["lists"] for b in d["by_margin"]) == 64 and sum(b["wrong"] for b in d["by_margin"]) == d["wrong"]
    assert d["error"] == pytest.approx(d["wrong"] / 64)
    assert d["by_margin"][0]["lists"] == round(d["tie_share"] * 64)
    ties = d["ties_by_first_max"]  # quarters of 12 positions: 0-2, 3-5, 6-8, 9-11
    assert [t["positions"] for t in ties] == ["0-2", "3-5", "6-8", "9-11"]
    assert sum(t["lists"] for t in ties) == d["by_margin"][0]["lists"] > 0
    assert sum(t["wrong"] for t in ties) == d["by_margin"][0]["wrong"]
    assert [o["order"] for o in d["one_level_by_order"]] == ["larger first", "larger later", "both sides"]
    assert sum(o["lists"] for o in d["one_level_by_order"]) == d["by_margin"][1]["lists"]
    assert sum(o["wrong"] for o in d["one_level_by_order"]) == d["by_margin"][1]["wrong"]
    jumps = d["ties_by_jump"]  # every tie has a jump into its first maximum (> 0 levels) or opens the list
    assert [j["jump"] for j in jumps] == ["first", "<=8", "9-32", ">=33"]
    assert sum(j["lists"] for j in jumps) == d["by_margin"][0]["lists"]
    assert sum(j["wrong"] for j in jumps) == d["by_margin"][0]["wrong"]
    assert d["wrong_not_in_list"] + d["wrong_later_than_max"] <= d["wrong"]
    assert 0 <= d["register_row"] < 8 and 0 <= d["register_weight_on_other_steps"] <= 1
    assert d["write_on_improvement"]["improvement_steps"] >= 64  # the first value of every list improves
    assert run_cli(diagnose.main, [str(runs_dir := tmp_path / "nowhere")]) == 2 and not runs_dir.exists()
    assert "error" in capsys.readouterr().err
    # another seed: another batch of lists (a validation batch apart from the reported one)
    assert run_cli(diagnose.main, [str(tmp_path / "am"), "--size", "12", "--batch-size", "64", "--seed", "7"]) == 0
    d7 = json.loads(capsys.readouterr().out)
    assert d7["seed"] == 7 and sum(b["lists"] for b in d7["by_margin"]) == 64
    assert d7["write_on_improvement"] != d["write_on_improvement"]
    # the register swap: stepping the NTM one step at a time reproduces its forward pass exactly, and both the
    # register and the control row are swapped on lists where the swap changes the loop's answer
    sw = diagnose.register_swap(str(tmp_path / "am"), size=12, at=6, batch_size=64)
    assert sw["stepped_equals_forward"] == 1.0 and 0 < sw["lists_where_the_swap_matters"] <= 64
    assert sw["register_row"] != sw["control_row"]
    for part in ("register", "control"):
        assert 0 <= sw[part]["follows_swap"] <= 1 and 0 <= sw[part]["keeps_own_answer"] <= 1
    assert run_cli(diagnose.main, [str(tmp_path / "am"), "--size", "12", "--swap-at", "12"]) == 2
    assert "--swap-at must be in 1..11" in capsys.readouterr().err
    assert run_cli(diagnose.main, [str(tmp_path / "am"), "--picture", str(tmp_path / "p.png")]) == 2
    assert "modsquare_serial" in capsys.readouterr().err and not (tmp_path / "p.png").exists()


def test_gap_breakdown_on_hand_built_lists():
    """lab.diagnose's one-level and tie breakdowns on lists whose classes are known (levels of an 8-level grid)."""
    from lab.diagnose import gap_breakdown

    lists = [[3, 5, 4, 0],  # one level: larger first (runner-up only after)
             [4, 1, 5, 0],  # larger later (runner-up only before)
             [4, 5, 4, 2],  # runner-up on both sides
             [6, 6, 1, 0],  # tie, the maximum opens the list
             [0, 7, 2, 7],  # tie after a jump of 7 levels
             [1, 4, 4, -1],  # tie after a jump of 3 (-1: past the list's end)
             [1, 4, 2, 0]]  # neither (gap of 2)
    values = np.array(lists, dtype=np.float64) / 8
    values[values < 0] = -1.0
    wrong = np.array([True, False, True, False, True, True, True])
    out = gap_breakdown(values, wrong, 8)
    assert [(o["order"], o["lists"], o["wrong"]) for o in out["one_level_by_order"]] == [
        ("larger first", 1, 1), ("larger later", 1, 0), ("both sides", 1, 1)]
    assert [(j["jump"], j["lists"], j["wrong"]) for j in out["ties_by_jump"]] == [
        ("first", 1, 0), ("<=8", 2, 2), ("9-32", 0, 0), (">=33", 0, 0)]
    big = np.array([[0.0, 40.0, 40.0, 1.0]]) / 64  # a 40-level jump on a 64-level grid
    assert gap_breakdown(big, np.array([True]), 64)["ties_by_jump"][3]["wrong"] == 1


def test_diagnose_modsquare_value_kinds(tmp_path, capsys):
    """A modsquare run: the error by value kind and bit length, each in [0, 1]; the held-out row equals the
    task's own metric on held-out n; the command line picks this report for modsquare runs."""
    import dataclasses

    import jax

    from lab import diagnose, evaluation
    from lab.rundir import load_run

    cfg = TrainConfig(task="modsquare", steps=10, log_every=10, batch_size=8, min_size=4, max_size=5, eval_batch_size=16,
                      checkpoint_every=10, task_options={"hint": "value", "bits": 8},
                      train_distribution={"values": "random-wide"},
                      model_config=ModelConfig(memory_rows=8, memory_width=4, controller_size=8))
    train(cfg, tmp_path / "ms", progress=False)
    d = diagnose.modsquare_values(str(tmp_path / "ms"), bits=(5,), batch_size=16)
    assert list(d["error"]) == ["modsquare (held-out n)", "modsquare (any n)", "random (any n)", "random-wide (any n)",
                                "random-runs (any n)"]
    assert all(set(row) == {"5"} and all(0 <= e <= 1 for e in row.values()) for row in d["error"].values())
    _, task, model, _ = load_run(tmp_path / "ms")
    t = dataclasses.replace(task, values="modsquare", split="holdout", min_size=5, max_size=5)
    batch = evaluation.fixed_batch(t, 16)
    logits, _ = model(batch.inputs, batch.steps)
    assert d["error"]["modsquare (held-out n)"]["5"] == pytest.approx(float(jax.numpy.mean(t.metrics(logits, batch)["error"])))
    assert run_cli(diagnose.main, [str(tmp_path / "ms"), "--bits", "4", "--batch-size", "16"]) == 0
    assert "random-runs (any n)" in capsys.readouterr().out
