"""Bad inputs from the command line end with exit 2 and one line on stderr, and leave what the user had as it
was: damaged run directories, paths of the wrong kind, options of the wrong type, seeds and names that make no
sense. Each case here once ended in a traceback, a silent fresh start or a changed file."""
import hashlib
import json
import shutil

import pytest

import eval as eval_cli
import train as train_cli
from lab import summary
from lab.cli import run_cli

TINY = ["--task", "argmax", "--task-option", "index_bits=4", "--min-size", "2", "--max-size", "4", "--memory-rows",
        "8", "--memory-width", "4", "--controller-size", "8", "--steps", "10", "--log-every", "10", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("bad") / "ok"
    assert run_cli(train_cli.main, [*TINY, "--workdir", str(wd)]) == 0
    return wd


def _snapshot(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def _one_line(main, argv, capsys):
    try:
        code = run_cli(main, argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def _damaged(run, tmp_path, how):
    wd = tmp_path / how
    shutil.copytree(run, wd)
    if how == "junk-checkpoint":
        shutil.rmtree(wd / "checkpoints")
        (wd / "checkpoints").mkdir()
        (wd / "checkpoints" / "10").write_text("junk")
    elif how == "wrong-type-config":
        cfg = json.loads((wd / "config.json").read_text())
        (wd / "config.json").write_text(json.dumps({**cfg, "steps": "abc"}))
    elif how == "unknown-key-config":
        cfg = json.loads((wd / "config.json").read_text())
        (wd / "config.json").write_text(json.dumps({**cfg, "nope": 1}))
    elif how == "junk-metrics":
        with (wd / "metrics.jsonl").open("a") as f:
            f.write("not json\n")
    elif how == "no-checkpoints":
        shutil.rmtree(wd / "checkpoints")
    return wd


@pytest.mark.parametrize("how", ["junk-checkpoint", "wrong-type-config", "unknown-key-config", "junk-metrics"])
def test_resume_of_a_damaged_run_refuses_and_changes_nothing(run, tmp_path, capsys, how):
    wd = _damaged(run, tmp_path, how)
    before = _snapshot(wd)
    _one_line(train_cli.main, [*TINY, "--steps", "20", "--resume", "--workdir", str(wd)], capsys)
    assert _snapshot(wd) == before


def test_init_from_or_eval_of_a_run_without_checkpoints(run, tmp_path, capsys):
    wd = _damaged(run, tmp_path, "no-checkpoints")
    before = _snapshot(wd)
    assert "no checkpoints" in _one_line(train_cli.main, [*TINY, "--init-from", str(wd), "--workdir", str(tmp_path / "n")], capsys)
    _one_line(eval_cli.main, [str(wd)], capsys)
    assert _snapshot(wd) == before and not (tmp_path / "n").exists()


@pytest.mark.parametrize("argv", [
    ["--resume", "--workdir", "{tmp}/missing"],
    ["--workdir", "{tmp}/a-file"],
    ["--workdir", "{tmp}/a-file/sub"],
    ["--workdir", ""],
    ["--task-option", "levels=abc"],
    ["--task-option", "index_bits=4.5"],
    ["--task-option", "levels=1e400"],
    ["--train-option", "near_ties=abc"],
    ["--train-option", "extra_steps=1.5"],
    ["--trace-loss", "nan"],
    ["--head-hint", "1"],  # argmax has no tape algorithm
    ["--head-hint", "-1"],
    ["--model", "lstm", "--head-hint", "1"],
    ["--write-hint", "-1"],
    ["--model", "lstm", "--write-hint", "1"],  # an LSTM has no writes to hint
    ["--write-gate", "--set", "model_config.write_gate_gain=0"],
    ["--set", "model_config.add_activation=relu"],
    ["--memory-rows", "8", "--read-heads", "0"],
    ["--model", "lstm", "--hidden-size", "0"],
    ["--seed", "-1"],
    ["--set", "train_sizes=[2,"],
    ["--set", "task_options.levels=abc"],
    ["--experiment", ""],
    ["--recipe", ""],
    ["--experiment", "argmax-quick", "--runs-root", "{tmp}/a-file"],
    ["--experiment", "argmax-quick", "--seeds", "-1", "--runs-root", "{tmp}/r"],
])
def test_bad_train_command_lines(tmp_path, capsys, argv):
    (tmp_path / "a-file").write_text("mine")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--experiment" not in argv and "--recipe" not in argv:
        argv = [*TINY, *argv] if "--workdir" in argv else [*TINY, *argv, "--workdir", str(tmp_path / "w")]
    _one_line(train_cli.main, argv, capsys)
    assert (tmp_path / "a-file").read_text() == "mine"
    assert not (tmp_path / "w").exists() and not (tmp_path / "missing").exists() and not (tmp_path / "r").exists()


def test_bad_eval_and_summary_command_lines(run, tmp_path, capsys):
    (tmp_path / "a-file").write_text("mine")
    _one_line(eval_cli.main, [str(run), str(tmp_path / "missing")], capsys)
    assert not (run / "eval.json").exists()  # nothing evaluated before every run was checked
    _one_line(eval_cli.main, [str(run), str(tmp_path), "--out", str(tmp_path / "a-file")], capsys)
    _one_line(eval_cli.main, ["--recipe", "argmax-search", "--runs-root", str(tmp_path / "empty")], capsys)
    assert not (tmp_path / "empty").exists()
    _one_line(summary.main, [str(tmp_path / "missing"), "--target", "0.1"], capsys)
    _one_line(summary.main, [str(run), "--target", "0.1", "--metric", "nope"], capsys)
    assert (tmp_path / "a-file").read_text() == "mine"
