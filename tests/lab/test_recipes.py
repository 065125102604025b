"""Recipes (lab/recipes.py): one command trains every stage of a chain for several seeds and reports on fresh
batches; a stage never starts from an unfinished parent; eval.py --recipe rebuilds the same report; presets
take typed --set overrides; the reproduction driver runs end to end on a tiny preset."""
import dataclasses
import json

import pytest

import eval as eval_cli
import train as train_cli
from lab import detect, diagnose, evaluation, experiments, models, overrides, recipes, reproduce
from lab.cli import run_cli
from lab.config import TrainConfig
from lab.experiments import ModelSpec, Recipe, Stage
from lab.rundir import load_run

TINY_NTM = models.ModelConfig(memory_rows=8, memory_width=4, controller_size=8)
ONE = dataclasses.replace(
    experiments.get("argmax-quick"), name="tiny-1", train_sizes=(2, 4), eval_sizes=(4, 8), scales=(1.0,),
    ntm=TINY_NTM, models=(ModelSpec("ntm", "ntm"), ModelSpec("lstm", "lstm")), steps=20, log_every=10,
    task_options={"index_bits": 4, "labels": "random", "levels": 16})
TWO = dataclasses.replace(ONE, name="tiny-2", lr=3e-3, train_distribution={"min_spread": 0.5},
                          models=(ModelSpec("ntm", "ntm", parent=Stage("tiny-1", "ntm")),
                                  ModelSpec("lstm", "lstm", parent=Stage("tiny-1", "lstm"))))
RECIPE = Recipe(name="tiny-recipe", description="two tiny argmax stages", final=(Stage("tiny-2", "ntm"), Stage("tiny-2", "lstm")),
                sizes=(4, 8), headline_size=8, success_error=0.5, seeds=(0, 1), eval_batch=64)


# The tests of this module share one trained tiny recipe (``trained``), so they run on one xdist worker.
pytestmark = pytest.mark.xdist_group("tiny-recipe")


def _register(mp: pytest.MonkeyPatch) -> None:
    mp.setitem(experiments.EXPERIMENTS, ONE.name, ONE)
    mp.setitem(experiments.EXPERIMENTS, TWO.name, TWO)
    mp.setitem(experiments.RECIPES, RECIPE.name, RECIPE)


@pytest.fixture
def tiny(monkeypatch):
    _register(monkeypatch)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny recipe trained once (every stage, both models, seeds 0 and 1), and the report of that first
    call. Run directories record their parents' paths, so tests use this root in place and change nothing in
    its runs (a test may add runs or rewrite a report)."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        _register(mp)
        assert run_cli(train_cli.main, ["--recipe", RECIPE.name, "--runs-root", str(root), "--no-progress"]) == 0
    return root, json.loads((root / RECIPE.name / "report.json").read_text())


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_every_preset_parent_exists_and_recipes_chain():
    for exp in experiments.EXPERIMENTS.values():
        for spec in exp.models:
            chain = experiments.lineage(Stage(exp.name, spec.label))
            assert chain[-1] == Stage(exp.name, spec.label) and all(experiments.spec(s) for s in chain)
    argmax = experiments.get_recipe("argmax-search")
    assert [str(s) for s in experiments.lineage(argmax.final[0])] == [
        "argmax-long/ntm-r32", "argmax-spread/ntm", "argmax-sharp/ntm", "argmax-trace/ntm", "argmax-ties/ntm",
        "argmax-ties2/ntm"]
    assert len(argmax.stages()) == 12 and len(set(argmax.stages())) == 12
    # the chain's configs: the stage-1 NTM has 32 memory rows, every later stage starts from its parent's run
    cfg = argmax.final[0]
    c = experiments.get(cfg.experiment).config(experiments.spec(cfg), 3, "R")
    assert c.init_from == "R/argmax-ties/ntm-s3" and c.seed == 3
    assert experiments.get("argmax-long").config(experiments.spec(Stage("argmax-long", "ntm-r32")), 0).model_config.memory_rows == 32


def test_recipe_trains_every_stage_reports_and_keeps_finished_runs(tiny, trained, tmp_path, capsys):
    tmp_path, rep = trained
    root = str(tmp_path)
    assert set(rep["models"]) == {"ntm", "lstm"} and rep["eval_examples"] == 128
    for label, m in rep["models"].items():
        assert [r["seed"] for r in m["seeds"]] == [0, 1] and m["of"] == 2
        for r in m["seeds"]:
            assert set(r["errors"]) == {"4", "8"}
            assert all(0 <= e["error"] <= 1 and e["examples"] == 128 for e in r["errors"].values())
            assert [s["stage"] for s in r["stages"]] == [f"tiny-1/{label}", f"tiny-2/{label}"]
            assert all(s["finished"] and s["wall_s"] > 0 and s["steps"] == 20 for s in r["stages"])
        assert m["successes"] == sum(r["errors"]["8"]["error"] <= 0.5 for r in m["seeds"])
    # stage 2 started from stage 1 of the same seed
    assert TrainConfig.load(tmp_path / "tiny-2" / "ntm-s1" / "config.json").init_from == str(tmp_path / "tiny-1" / "ntm-s1")
    md = (tmp_path / RECIPE.name / "report.md").read_text()
    assert "| seed | 4 | 8 |" in md and "tiny-1/ntm" in md
    # the report's error is lab.diagnose's on the same keys (the fresh lists of --seed 2 / --seed 3)
    d = diagnose.diagnose(str(tmp_path / "tiny-2" / "ntm-s0"), size=8, batch_size=64, seed=2)
    assert rep["models"]["ntm"]["seeds"][0]["errors"]["8"]["per_key"][0] == pytest.approx(d["error"])
    # again: every run finished, nothing retrained; eval.py --recipe rebuilds the same report
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("tiny-*/*/metrics.jsonl")}
    assert run_cli(train_cli.main, ["--recipe", RECIPE.name, "--runs-root", root, "--no-progress"]) == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    (tmp_path / RECIPE.name / "report.json").unlink()
    assert run_cli(eval_cli.main, ["--recipe", RECIPE.name, "--runs-root", root]) == 0
    again = json.loads((tmp_path / RECIPE.name / "report.json").read_text())
    assert again["models"]["ntm"]["seeds"][1]["errors"] == rep["models"]["ntm"]["seeds"][1]["errors"]


def test_selection_trains_candidates_keeps_the_best_on_validation_and_counts_their_time(tiny, tmp_path, capsys):
    sel = dataclasses.replace(RECIPE, name="tiny-select", final=(Stage("tiny-2", "ntm"),), seeds=(0,), candidates=2,
                              select_scale=2.0)
    experiments.RECIPES[sel.name] = sel
    try:
        root = str(tmp_path)
        assert run_cli(train_cli.main, ["--recipe", sel.name, "--runs-root", root, "--no-progress"]) == 0
        chosen = tmp_path / "tiny-1" / "ntm-s0"
        record = json.loads((chosen / recipes.SELECTION).read_text())
        cands = record["candidates"]
        assert [c["train_seed"] for c in cands] == [0, 1000] and record["size"] == 4 and record["select_key"] == 1
        # each candidate's validation error is its error on the key-1 batch of size 4 with 2x the steps; the
        # lowest is chosen
        task = ONE.eval_task(4, 2.0)
        for c in cands:
            wrong = evaluation.wrong_on(evaluation.Evaluator.of(load_run(c["run"])[2]), task, sel.select_batch, 1)[3]
            assert c["validation_error"] == pytest.approx(wrong.mean())
        best = min(cands, key=lambda c: (c["validation_error"], c["candidate"]))
        assert record["chosen"] == best["candidate"]
        assert TrainConfig.load(chosen / "config.json").seed == best["train_seed"]
        assert TrainConfig.load(tmp_path / "tiny-2" / "ntm-s0" / "config.json").init_from == str(chosen)
        # the report counts every candidate's training time in the first stage's and names the choice
        rep = json.loads((tmp_path / sel.name / "report.json").read_text())
        first = rep["models"]["ntm"]["seeds"][0]["stages"][0]
        assert first["wall_s"] == pytest.approx(sum(c["wall_s"] for c in cands)) and first["selection"]["chosen"] == best["candidate"]
        assert "candidate 1" in (tmp_path / sel.name / "report.md").read_text()
        # again: nothing retrained, the choice kept
        mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("tiny-*/*/metrics.jsonl")}
        assert run_cli(train_cli.main, ["--recipe", sel.name, "--runs-root", root, "--no-progress"]) == 0
        assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
        # a run in the chosen place that no selection chose is never replaced: one line, nothing changed
        other = tmp_path / "other"
        (other / "tiny-1" / "ntm-s0").mkdir(parents=True)
        (other / "tiny-1" / "ntm-s0" / "note.txt").write_text("mine")
        capsys.readouterr()
        assert run_cli(train_cli.main, ["--recipe", sel.name, "--runs-root", str(other), "--no-progress"]) == 2
        err = _err(capsys)
        assert "no selection chose it" in err and "\n" not in err
        assert (other / "tiny-1" / "ntm-s0" / "note.txt").read_text() == "mine"
    finally:
        del experiments.RECIPES[sel.name]
    with pytest.raises(ValueError, match="evaluation key"):
        dataclasses.replace(RECIPE, select_key=2)


def test_a_stage_refuses_an_unfinished_or_missing_parent(tiny, trained, tmp_path, capsys):
    root = str(tmp_path)
    # no parent run at all: one line, nothing created for the stage
    assert run_cli(train_cli.main, ["--experiment", TWO.name, "--models", "ntm", "--runs-root", root, "--no-progress"]) == 2
    err = _err(capsys)
    assert "tiny-1/ntm" in err and "does not exist" in err and "\n" not in err
    assert not (tmp_path / "tiny-2").exists()
    # an interrupted parent (trained, but its training call never finished): refused, also through --init-from
    _copy_run(trained[0] / "tiny-1" / "ntm-s0", tmp_path / "tiny-1" / "ntm-s0")  # a stage 1: no parent path
    (tmp_path / "tiny-1" / "ntm-s0" / "done.json").unlink()
    capsys.readouterr()
    assert run_cli(train_cli.main, ["--experiment", TWO.name, "--models", "ntm", "--runs-root", root, "--no-progress"]) == 2
    err = _err(capsys)
    assert "did not finish" in err and "\n" not in err and not (tmp_path / "tiny-2").exists()
    single = ["--task", "argmax", "--task-option", "index_bits=4", "--task-option", "labels=random", "--task-option",
              "levels=16", "--min-size", "2", "--max-size", "4", "--memory-rows", "8", "--memory-width", "4",
              "--controller-size", "8", "--steps", "10", "--no-progress", "--log-every", "10"]
    assert run_cli(train_cli.main, [*single, "--init-from", str(tmp_path / "tiny-1" / "ntm-s0"),
                                    "--workdir", str(tmp_path / "single")]) == 2
    assert "did not finish" in _err(capsys) and not (tmp_path / "single").exists()
    # --with-parents finishes the parent (resumed: done again) and then trains the stage
    assert run_cli(train_cli.main, ["--experiment", TWO.name, "--models", "ntm", "--with-parents", "--runs-root", root,
                                    "--no-progress"]) == 0
    assert (tmp_path / "tiny-1" / "ntm-s0" / "done.json").exists() and (tmp_path / "tiny-2" / "ntm-s0" / "done.json").exists()


def test_set_overrides_preset_fields_typed(tiny, tmp_path, capsys):
    root = str(tmp_path)
    assert run_cli(train_cli.main, ["--experiment", ONE.name, "--models", "ntm", "--runs-root", root, "--no-progress",
                                    "--set", "lr=1e-3", "--set", "task_options.levels=8", "--set", "ntm.memory_rows=6",
                                    "--set", "steps=10"]) == 0
    capsys.readouterr()
    cfg = TrainConfig.load(tmp_path / "tiny-1" / "ntm-s0" / "config.json")
    assert (cfg.lr, cfg.task_options["levels"], cfg.model_config.memory_rows, cfg.steps) == (1e-3, 8, 6, 10)
    # the same preset with other values would mix two configurations in one run directory: refused
    assert run_cli(train_cli.main, ["--experiment", ONE.name, "--models", "ntm", "--runs-root", root, "--no-progress",
                                    "--set", "lr=3e-3", "--set", "steps=10"]) == 2
    assert "different configuration" in _err(capsys)
    for bad in (["lr=abc"], ["nope=1"], ["lr"], ["name=x"], ["train_sizes=[2]"], ["ntm.memory_rows=1.5"],
                ["lr=nan"], ["lr=-1"], ["steps=0"], ["task_options=3"]):
        args = ["--experiment", ONE.name, "--runs-root", str(tmp_path / "bad"), "--no-progress"]
        assert run_cli(train_cli.main, [*args, *sum((["--set", b] for b in bad), [])]) == 2, bad
        err = _err(capsys)
        assert err.startswith("error: ") and "\n" not in err, (bad, err)
    assert not (tmp_path / "bad").exists()
    # a single run's TrainConfig takes --set too
    assert overrides.apply(TrainConfig(), ["model_config.controller_size=32", "min_size=3"]).model_config.controller_size == 32
    with pytest.raises(ValueError, match="finite"):
        TrainConfig(lr=float("inf"))


def test_reproduce_driver_end_to_end_on_a_tiny_preset(tiny, trained, tmp_path, monkeypatch):
    det = dataclasses.replace(ONE, name="tiny-quick", models=(ModelSpec("ntm", "ntm"), ModelSpec("mlp", "mlp", match_ntm_params=1.0)),
                              scales=(0.5, 1.0, 2.0))
    monkeypatch.setitem(experiments.EXPERIMENTS, det.name, det)
    monkeypatch.setitem(reproduce.PRESETS, "tiny", {
        "runs": str(trained[0]), "docs": str(tmp_path / "docs"), "recipes": (RECIPE.name,),
        "recipe_seeds": ["0"], "experiments": (det.name,), "detect": (det.name,), "copy_seeds": 0, "sweep": False,
        "assoc": False, "bench": False, "detect_examples": 64})
    monkeypatch.setitem(reproduce.HEADS, det.name, "tiny-heads.png")
    assert reproduce.main(["--preset", "tiny"]) == 0
    figs = tmp_path / "docs" / "figures"
    for f in (f"{det.name}.png", "tiny-heads.png", f"detect-{det.name}.png", "compiled-heads.png", f"{RECIPE.name}.png"):
        assert (figs / f).stat().st_size > 0, f
    t = json.loads((tmp_path / "docs" / "results" / "timings.json").read_text())
    assert t["one_call"]["seconds"] > 0 and "--preset tiny" in t["one_call"]["command"] and t["one_call"]["machine"]
    assert set(t["steps"]) == {f"recipes:{RECIPE.name}", f"experiments:{det.name}", f"detect:{det.name}", "compiled"}
    rep = json.loads((tmp_path / "docs" / "results" / f"recipe-{RECIPE.name}.json").read_text())
    assert rep["seeds"] == [0] and set(rep["models"]) == {"ntm", "lstm"}


def test_one_stage_varied_elsewhere_reads_its_parent_from_parents_root(tiny, trained, tmp_path):
    root = str(trained[0])
    try_root = tmp_path / "try"
    assert run_cli(train_cli.main, ["--experiment", TWO.name, "--models", "ntm", "--set", "lr=1e-3", "--runs-root",
                                    str(try_root), "--parents-root", root, "--no-progress"]) == 0
    cfg = TrainConfig.load(try_root / "tiny-2" / "ntm-s0" / "config.json")
    assert cfg.init_from == str(trained[0] / "tiny-1" / "ntm-s0") and cfg.lr == 1e-3
    assert not (try_root / "tiny-1").exists()


def test_detect_recipe_labels_every_stage_and_seed_beside_the_weights(tiny, trained, tmp_path, capsys):
    root, _ = trained
    out = tmp_path / "detect"
    assert run_cli(eval_cli.main, ["detect", "--recipe", RECIPE.name, "--runs-root", str(root), "--examples", "64",
                                   "--seeds", "1", "--out", str(out)]) == 0
    rep = json.loads((out / "detect.json").read_text())
    got = [(t["stage"], t["seed"]) for t in rep["trained"]]
    assert got == [(f"tiny-{i}/{m}", 1) for m in ("ntm", "lstm") for i in (1, 2)]  # every stage of seed 1 only
    for t in rep["trained"]:
        assert t["label"] == detect.decide(rep["signatures"][f"{t['stage']} s{t['seed']}"])
        assert sum(t["bootstrap"].values()) == pytest.approx(1)
        # the NTM's write heads, measured on the improving steps and the others; the LSTM has none
        assert (t["weights"] is None) == (t["stage"].endswith("lstm"))
        if t["weights"] is not None:
            assert 0 < t["weights"]["improvement"] <= 1 and 0 < t["weights"]["register_share"] <= 1
        # the causal swap of the register (lab.diagnose.register_swap): argmax NTMs only
        assert (t["register_swap"] is None) == (t["stage"].endswith("lstm"))
        if t["register_swap"] is not None:
            assert 0 <= t["register_swap"]["follows"] <= 1 and t["register_swap"]["lists"] > 0
    assert rep["zoo_total"] > 0 and "| stage | seed |" in (out / "detect.md").read_text()
    # a recipe with no finished run: one line, exit 2
    assert run_cli(eval_cli.main, ["detect", "--recipe", RECIPE.name, "--runs-root", str(tmp_path / "none")]) == 2
    assert "no finished runs" in _err(capsys)
