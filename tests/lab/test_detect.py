"""Detection (lab/detect/): the zoo answers by its stated mechanism through the tasks' own metrics,
the distribution fits recover known parameters, the decision rule labels the zoo, and
``eval.py detect`` runs end to end on a tiny experiment."""
import dataclasses
import json
import math

import numpy as np
import pytest

import eval as eval_cli
import train as train_cli
from lab import detect, evaluation, experiments, models
from lab.cli import run_cli
from lab.detect import loopfit
from tasks import Candidates, make_task
from tasks.base import bits_np
from tasks.modsquare import held_out, loop_bound, solve

TASKS = {
    "modsquare": make_task("modsquare", bits=8).with_sizes(4, 8),
    "argmax": make_task("argmax", index_bits=5).with_sizes(2, 12),
    "argmax-random": make_task("argmax", index_bits=6, labels="random", levels=16).with_sizes(2, 12),
    "polymax": make_task("polymax", index_bits=4).with_sizes(2, 6),
}


def _batch(task, n=128, seed=3):
    return evaluation.fixed_batch(task, n, seed)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_reference_answers_encode_to_zero_error_and_the_loop_finds_them(name):
    task = TASKS[name]
    b = _batch(task)
    c = task.candidates(b)
    m = task.metrics(task.encode_answers(b, c.reference), b)
    assert float(np.max(m["regret"])) < 1e-4
    if name != "polymax":
        assert float(np.max(m["error"])) == 0
        assert np.array_equal(task.decode_answers(b, task.encode_answers(b, c.reference)), c.reference)
    loop = detect.per_example(detect.loop_solver, task, b)
    assert loop["error"].max() == 0
    # candidate regrets: >= 0, and 0 exactly at the reference answer
    assert np.nanmin(c.regret) >= 0
    if name != "polymax":
        at_ref = np.take_along_axis(c.regret, np.argmax(c.answer == c.reference[:, None], 1)[:, None], 1)
        assert np.allclose(at_ref, 0)


def test_argmax_regret_metric_matches_numpy():
    task = TASKS["argmax-random"]
    b = _batch(task, 64)
    rng = np.random.default_rng(0)
    guess = rng.integers(0, 2**task.index_bits, 64)
    m = task.metrics(task.encode_answers(b, guess), b)
    values, labels = np.asarray(b.aux[:, 0]), np.asarray(b.aux[:, 1]).astype(int)
    for i in range(64):
        inside = values[i] >= 0
        hit = inside & (labels[i] == guess[i])
        want = values[i][inside].max() - (values[i][hit].max() if hit.any() else 0.0)
        assert float(m["regret"][i]) == pytest.approx(want, abs=1e-6)


def test_min_of_k_cdf_by_hand():
    # one example, candidate regrets {0, 1, 2}: min of K draws <= r with probability 1 - (1 - p(r))^K
    cand = np.array([[0.0, 1.0, 2.0, np.nan]])
    r = np.array([-0.5, 0.0, 1.0, 2.0])
    F = detect.min_of_k_cdf(cand, r, np.array([1, 2]))
    assert np.allclose(F[0], [0, 1 / 3, 2 / 3, 1])
    assert np.allclose(F[1], [0, 1 - (2 / 3) ** 2, 1 - (1 / 3) ** 2, 1])


@pytest.mark.parametrize("k", [3, 16])
def test_fit_min_of_k_recovers_k_of_simulated_draws(k):
    rng = np.random.default_rng(k)
    B, M = 2048, 40
    cand = np.round(rng.exponential(1.0, (B, M)), 3)
    cand[:, 30:] = np.nan  # ragged: only 30 candidates per example
    draws = cand[np.arange(B)[:, None], rng.integers(0, 30, (B, k))].min(1)
    fit = detect.fit_min_of_k(draws, cand)
    assert abs(np.log(fit["k"] / k)) <= np.log(1.5), fit["k"]  # within one grid step
    assert fit["ks"] < fit["crit_5pct"]


@pytest.mark.parametrize("scale", [0.25, 0.5, 1.0])
def test_modsquare_shown_candidates_are_the_hinted_ones(scale):
    task = dataclasses.replace(TASKS["modsquare"], step_scale=scale)
    b = _batch(task, 64)
    c = task.candidates(b)
    x = np.asarray(b.inputs)
    C = task.candidate_bits
    for j in range(64):
        hinted = bits_np(x[:, j, task.bits : task.bits + C])  # [T] candidate i shown on each step
        assert set(c.answer[j][np.isfinite(c.value[j])]) == {0, *hinted[hinted > 0].tolist()}


def test_min_of_k_shape_test_rejects_a_solver_that_is_right_or_very_wrong():
    # right 96% of the time, else the *worst* candidate: P(regret = 0) is matched by some K, the shape is not
    rng = np.random.default_rng(1)
    B = 2048
    cand = np.round(rng.random((B, 16)), 3)
    cand[:, 0] = 0
    worst = rng.random(B) < 0.04 * 4  # 16%: enough errors for the shape test
    regret = np.where(worst, np.nanmax(cand, 1), 0.0)
    fit = detect.fit_min_of_k(regret, cand)
    assert fit["ks_positive"] > fit["crit_positive_5pct"]
    draws = cand[np.arange(B)[:, None], rng.integers(0, 16, (B, 4))].min(1)
    good = detect.fit_min_of_k(draws, cand)
    assert good["ks_positive"] < good["crit_positive_5pct"]


def test_fit_families_on_exponential_and_weibull_samples():
    rng = np.random.default_rng(0)
    e = detect.fit_families(rng.exponential(0.3, 4000))
    assert e["p_zero"] == 0 and e["exponential"]["ks"] < e["exponential"]["crit_5pct"]
    assert e["exponential"]["scale"] == pytest.approx(0.3, rel=0.06)
    w = detect.fit_families(np.concatenate([np.zeros(1000), 0.2 * rng.weibull(2.5, 3000)]))
    assert w["p_zero"] == pytest.approx(0.25)
    assert w["weibull"]["shape"] == pytest.approx(2.5, rel=0.08)
    assert w["weibull"]["ks"] < w["weibull"]["crit_5pct"] < w["exponential"]["ks"]
    assert "note" in detect.fit_families(np.zeros(100))


def test_easy_hard_gap_and_interval():
    diff = np.arange(400.0)
    err = (diff >= 300).astype(float)  # wrong exactly on the hardest quartile
    r = detect.easy_hard(err, diff)
    assert r["quartiles"] == [0, 0, 0, 1] and r["gap"] == 1 and r["gap_ci"] == [1, 1]
    rng = np.random.default_rng(0)
    noisy = detect.easy_hard(rng.random(4000) < 0.3, rng.random(4000))
    assert noisy["gap_ci"][0] < 0 < noisy["gap_ci"][1]


def test_best_of_k_answers_are_the_best_of_k_shown_candidates():
    task = TASKS["argmax"]
    b = _batch(task, 256)
    c = task.candidates(b)
    one = detect.per_example(detect.best_of_k_solver(1), task, b)
    many = detect.per_example(detect.best_of_k_solver(4096), task, b)
    assert many["error"].max() == 0  # 4096 draws cover every list of <= 12 with overwhelming probability
    # one draw: the answer is a shown label, right about mean(1/L) of the time
    shown = np.isfinite(c.value)
    assert all(a in c.answer[i][shown[i]] for i, a in enumerate(one["answer"]))
    assert 1 - one["error"].mean() == pytest.approx((1 / shown.sum(1)).mean(), abs=0.08)


def test_modsquare_zoo_mechanisms():
    task = TASKS["modsquare"]
    b = _batch(task, 96)
    n = bits_np(np.asarray(b.inputs)[0, :, : task.bits])
    heur = detect.per_example(detect.heuristic_solver, task, b)
    assert all(a == min(math.isqrt(int(x) - 1), loop_bound(int(x))) for a, x in zip(heur["answer"], n))
    comp = detect.per_example(detect.compiled_solver(task.compiled_program), task, b)
    assert np.array_equal(comp["answer"], [solve(int(x)) for x in n])
    # the lookup table knows every training-split n, and only answers others by the nearest stored n
    lookup = detect.lookup_solver(dataclasses.replace(task, split="train").memoriser())
    train_b = _batch(dataclasses.replace(task, split="train"), 96)
    assert detect.per_example(lookup, task, train_b)["error"].max() == 0
    ho = dataclasses.replace(task, split="holdout")
    ho_b = _batch(ho, 96)
    ho_n = bits_np(np.asarray(ho_b.inputs)[0, :, : task.bits])
    assert held_out(ho_n, task.holdout_fraction, task.holdout_seed).all()
    assert detect.per_example(lookup, ho, ho_b)["error"].mean() > 0.1  # nearby n often share the answer


def _values(b=512, m=12, levels=64, seed=0):
    """Random candidate values on a grid (ties included), a random number shown per example (-inf: not shown)."""
    rng = np.random.default_rng(seed)
    v = rng.integers(0, levels, (b, m)) / levels
    shown = np.arange(m)[None] < rng.integers(2, m + 1, b)[:, None]
    return np.where(shown, v, -np.inf)


def test_exact_imprecise_loop_is_the_loop_and_the_leak_takes_later_near_ties():
    v = _values()
    rng = np.random.default_rng(0)
    assert np.array_equal(loopfit.simulate(v, 0.0, 0.0, rng, 3), np.broadcast_to(np.argmax(v, 1), (3, len(v))))
    # a leaking register: after k more steps the stored best sits k x leak x range lower, so a later value within
    # that distance of the best wins; a later exact tie always wins
    ch = loopfit.simulate(v, 0.0, 1e-6, rng, 1)[0]
    last_max = v.shape[1] - 1 - np.argmax(v[:, ::-1] == v.max(1, keepdims=True), 1)
    assert np.array_equal(ch, last_max)


def test_loop_fit_recovers_the_noise_of_a_noisy_loop_and_predicts_its_growth():
    v, v_long = _values(2048, 12, 256, seed=1), _values(1024, 48, 256, seed=2)
    cand = lambda v: Candidates(np.broadcast_to(np.arange(v.shape[1]), v.shape), v, np.zeros_like(v), np.argmax(v, 1))
    def errors(v, seed):
        return (loopfit.simulate(v, 0.02, 0.0, np.random.default_rng(seed), 1)[0] != np.argmax(v, 1)).astype(float)
    out = loopfit.loop_fit((cand(v), errors(v, 3)), (cand(v_long), errors(v_long, 4)))
    step = 2 ** 0.5  # the grid's spacing: the interval's ends are grid points
    lo, hi = out["sigma_interval"]
    assert lo / step <= 0.02 <= hi * step and hi / lo <= 4 and out["max_z"] < 4
    assert out["beyond"]["sigma_interval"][0] / step <= 0.02 <= out["beyond"]["sigma_interval"][1] * step
    assert abs(out["growth"]["z"]) < 4 and out["growth"]["observed"] > 1.5 * errors(v, 3).mean()  # more comparisons
    # a solver that is wrong at any margin (a random shown candidate half the time) is not that loop
    rng = np.random.default_rng(5)
    guess = (rng.random(len(v)) < 0.5) & (np.argmax(v, 1) != (rng.random(len(v)) * np.isfinite(v).sum(1)).astype(int))
    assert loopfit.calibration(cand(v), guess.astype(float))["max_z"] > 4


def test_loop_fit_tells_a_comparator_with_a_resolution_from_a_noisy_one():
    v, v_long = _values(2048, 12, 256, seed=1), _values(1024, 48, 256, seed=2)
    cand = lambda v: Candidates(np.broadcast_to(np.arange(v.shape[1]), v.shape), v, np.zeros_like(v), np.argmax(v, 1))
    # a loop that does not see differences below 0.03 of the range: deterministic, errs only below that margin
    coarse = lambda v: (loopfit.simulate(v, 0.03, 0.0, np.random.default_rng(0), 1, comparator="resolution")[0]
                        != np.argmax(v, 1)).astype(float)
    assert (coarse(v)[loopfit.margin(cand(v)) >= 0.03] == 0).all() and coarse(v).mean() > 0.05
    out = loopfit.loop_fit((cand(v), coarse(v)), (cand(v_long), coarse(v_long)))
    assert out["comparator"] == "resolution" and out["beyond"]["comparator"] == "resolution"
    assert 0.03 / 2 ** 0.5 <= out["sigma"] <= 0.03 * 2 ** 0.5 and out["max_z"] < 4
    # the best noisy comparator explains its errors less well (a smooth curve for a step at the margin)
    noise_only = loopfit.fit(v, loopfit.wrong(cand(v)), coarse(v), comparators=("noise",))
    assert noise_only["comparator"] == "noise" and noise_only["loglik"] < out["loglik"] - 10
    with pytest.raises(ValueError, match="comparator"):
        loopfit.simulate(v, 0.03, 0.0, np.random.default_rng(0), 1, comparator="coarse")


def test_share_law_is_the_subset_loops_regret_law():
    task = TASKS["argmax"]
    b = _batch(task, 1024)
    c = task.candidates(b)
    m = detect.per_example(detect.subset_loop_solver(0.5, seed=2), task, b)
    fit = detect.fit_min_of_share(m["regret"], c.regret)
    assert fit["q"] == pytest.approx(0.5, abs=0.1) and fit["ks"] <= fit["crit_5pct"]
    # the exact loop over every candidate: a share of 1 (the grid's edge)
    assert detect.fit_min_of_share(np.zeros(len(c.regret)), c.regret)["q"] == max(detect.SHARE_GRID)


def test_window_solver_is_exact_in_its_window_and_blind_after():
    task = TASKS["argmax"]
    b = _batch(task, 256)
    c = task.candidates(b)
    m = detect.per_example(detect.window_solver(4), task, b)
    first4 = np.where(np.cumsum(np.isfinite(c.value), 1) <= 4, c.value, -np.inf)
    assert np.array_equal(m["answer"], np.take_along_axis(c.answer, np.argmax(first4, 1)[:, None], 1)[:, 0])


def test_exact_tournament_and_finest_quantised_loop_are_the_loop_and_coarser_ones_err():
    task = TASKS["argmax-random"]  # 16 levels: exact ties, which both resolve to the earliest as the loop does
    b = _batch(task, 256)
    assert detect.per_example(detect.tournament_solver(0.0), task, b)["error"].max() == 0
    assert detect.per_example(detect.quantised_loop_solver(10**6), task, b)["error"].max() == 0
    coarse = detect.per_example(detect.quantised_loop_solver(2), task, b)
    c = task.candidates(b)
    # a coarse comparator keeps the first value of the top half of the range: never worse than half the range
    assert coarse["error"].mean() > 0.2 and (c.value.max(1) - c.value[np.arange(len(c.value)), _index(c, coarse)]
                                             <= 0.5 * loopfit.value_range(c.value) + 1e-9).all()


def test_third_round_members_without_their_imprecision_are_the_loop_and_with_it_err():
    task = TASKS["argmax-random"]  # 16 levels: exact ties, which every member resolves to the earliest
    b = _batch(task, 256)
    c = task.candidates(b)
    for exact in (detect.noisy_read_loop_solver(0.0), detect.reset_loop_solver(0.0), detect.vote_solver(0.0)):
        assert detect.per_example(exact, task, b)["error"].max() == 0
    for imprecise in (detect.noisy_read_loop_solver(0.2), detect.reset_loop_solver(0.3), detect.vote_solver(0.2)):
        assert detect.per_example(imprecise, task, b)["error"].mean() > 0.05
    # a register wiped at every step keeps only the last candidate shown
    last = np.isfinite(c.value).sum(1) - 1
    assert np.array_equal(_index(c, detect.per_example(detect.reset_loop_solver(1.0), task, b)), last)


def _index(c, m):
    return np.array([int(np.flatnonzero(row == a)[0]) for row, a in zip(c.answer, m["answer"])])


def _rec(error=0.5, gain=0.0, ext=None, mem=None, k=8, ks=0.2, ks_pos=0.01):
    rec = {"error": error, "steps": {"error": {"gain": gain}},
           "min_of_k": {"k": k, "ks": ks, "crit_5pct": 0.04, "positive": 400, "ks_positive": ks_pos, "crit_positive_5pct": 0.07}}
    if ext is not None:
        rec["extrapolation"] = {"error": ext, "rise": ext - error}
    if mem is not None:
        rec["memorisation"] = {"gap": mem, "train_error": 0.0, "holdout_error": mem}
    return rec


def test_decision_rule():
    assert detect.decide(_rec(0.01, 0.3, ext=0.02)) == "search"
    assert detect.decide(_rec(0.01, 0.0, ext=0.02)) != "search"  # no gain from steps: not a loop over them
    assert detect.decide(_rec(0.01, 0.3)) != "search"  # no extrapolation measured: no verdict of search
    assert detect.decide(_rec(0.4, 0.0, ext=0.6, ks=0.01, k=8, ks_pos=0.2)) == "heuristic"  # wrong shape
    assert detect.decide(_rec(0.01, 0.3, ext=0.5, mem=0.6)) == "memoriser"
    assert detect.decide(_rec(0.4, 0.0, ext=0.6, ks=0.01, k=8)) == "partial search"
    assert detect.decide(_rec(0.4, 0.0, ext=0.6, ks=0.01, k=1)) == "heuristic"  # K = 1: a single guess
    assert detect.decide(_rec(0.4, 0.0, ext=0.6, ks=0.2)) == "heuristic"
    assert detect.correct("feedforward", "heuristic") and not detect.correct("feedforward", "search")
    assert not detect.correct("feedforward", "imprecise search") and detect.correct("imprecise search", "search")
    # the imprecise loop: its margin curves fit at both sizes with small noise
    fit = {"sigma": 0.01, "max_z": 2.0, "beyond": {"sigma": 0.02, "max_z": 2.0}}
    assert detect.decide({**_rec(0.1, 0.3, ext=0.4), "loop_fit": fit}) == "imprecise search"
    assert detect.decide({**_rec(0.1, 0.3, ext=0.4), "loop_fit": {**fit, "max_z": 5.0}}) != "imprecise search"
    assert detect.decide({**_rec(0.1, 0.3, ext=0.4), "loop_fit": {**fit, "beyond": {"sigma": 0.3, "max_z": 1}}}) != "imprecise search"
    no_beyond = {k: v for k, v in fit.items() if k != "beyond"}
    assert detect.decide({**_rec(0.1, 0.3, ext=0.4), "loop_fit": no_beyond}) != "imprecise search"
    # a minimum over a random share of the candidates is partial search too
    share = {"q": 0.5, "ks": 0.01, "crit_5pct": 0.04, "positive": 400, "ks_positive": 0.01, "crit_positive_5pct": 0.07,
             "at_grid_edge": False}
    assert detect.decide({**_rec(0.4, 0.0, ext=0.6, ks=0.2), "min_of_share": share}) == "partial search"
    assert detect.decide({**_rec(0.4, 0.0, ext=0.6, ks=0.2), "min_of_share": {**share, "at_grid_edge": True}}) == "heuristic"
    # too few errors at the training sizes to test the shape: the law is judged where the errors are, beyond them
    few = _rec(0.03, 0.0, ext=0.6, ks=0.01, k=32)
    few["min_of_k"] = {**few["min_of_k"], "positive": 30, "ks_positive": None}
    assert detect.decide(few) == "heuristic"
    beyond_law = {"min_of_k": _rec(ks=0.01, k=32)["min_of_k"], "min_of_share": None}
    assert detect.decide({**few, "laws_beyond": beyond_law}) == "partial search"
    assert detect.decide({**_rec(0.4, 0.0, ext=0.6, ks=0.2), "laws_beyond": beyond_law}) == "heuristic"  # enough errors


TINY = dataclasses.replace(
    experiments.get("argmax-quick"), name="tiny-detect", eval_sizes=(4, 8), scales=(0.5, 1.0, 2.0),
    train_sizes=(2, 4), ntm=models.ModelConfig(memory_rows=8, memory_width=4, controller_size=8))


def test_detect_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(experiments.EXPERIMENTS, TINY.name, TINY)
    root = str(tmp_path)
    assert run_cli(train_cli.main, ["--experiment", TINY.name, "--steps", "10", "--no-progress", "--runs-root", root]) == 0
    capsys.readouterr()
    assert run_cli(eval_cli.main, ["detect", "--experiment", TINY.name, "--runs-root", root, "--examples", "64"]) == 0
    out = tmp_path / TINY.name / "detect"
    rep = json.loads((out / "detect.json").read_text())
    names = [r["model"] for r in rep["rows"]]
    held = ["best-of-4 (held out)", "best-of-16 (held out)", "leaky loop 0.001 (held out)",
            "leaky loop 0.003 (held out)", "leaky loop 0.01 (held out)", "subset loop 0.5 (held out)",
            "subset loop 0.75 (held out)", "subset loop 0.9 (held out)", "quantised loop 8 (held out 2)",
            "quantised loop 32 (held out 2)", "quantised loop 128 (held out 2)", "tournament 0.003 (held out 2)",
            "tournament 0.01 (held out 2)", "tournament 0.03 (held out 2)", "noisy-read loop 0.003 (held out 3)",
            "noisy-read loop 0.01 (held out 3)", "noisy-read loop 0.03 (held out 3)", "reset loop 0.003 (held out 3)",
            "reset loop 0.01 (held out 3)", "reset loop 0.03 (held out 3)", "vote 0.003 (held out 3)",
            "vote 0.01 (held out 3)", "vote 0.03 (held out 3)", "window 4 (held out)"]
    assert names[:32] == ["loop", "noisy loop 0.003", "noisy loop 0.01", "noisy loop 0.03", "best-of-2", "best-of-8",
                          "best-of-32", *held, "heuristic"]
    assert "trained MLP" in names and "ntm-s0" in names
    assert rep["zoo_total"] == 33 and 0 <= rep["zoo_correct"] <= 33
    assert rep["held_out_total"] == 24 and [r["model"] for r in rep["rows"] if r["held_out"]] == held
    assert all(rep["signatures"][n]["loop_fit"]["sigma"] <= 0.064 for n in names[1:4])  # noisy loops: small noise
    loop = rep["rows"][0]
    assert loop["error"] == 0 and loop["extrap_error"] == 0  # (lists of 2-4 are too short for 0.5x steps to hurt much)
    assert all(r["label"] == detect.decide(rep["signatures"][r["model"]]) for r in rep["rows"])
    assert set(rep["verdicts"]) == {"ntm-s0"} and sum(rep["verdicts"]["ntm-s0"].values()) == pytest.approx(1)
    assert (out / "detect.png").stat().st_size > 0 and "rule says" in (out / "detect.md").read_text()
    # one run on its own: RUN/detect/
    run = tmp_path / TINY.name / "ntm-s0"
    assert run_cli(eval_cli.main, ["detect", str(run), "--examples", "64"]) == 0
    assert "ntm-s0:" in capsys.readouterr().out
    assert json.loads((run / "detect" / "detect.json").read_text())["rows"][0]["mechanism"] == "trained"


def test_calibration_pools_reports_by_part_and_signature(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(experiments.EXPERIMENTS, TINY.name, TINY)
    out = tmp_path / "zoo"
    assert run_cli(eval_cli.main, ["detect", "--experiment", TINY.name, "--runs-root", str(tmp_path), "--examples", "64",
                                   "--out", str(out)]) == 0  # nothing trained: the zoo alone
    assert run_cli(eval_cli.main, ["detect", "--calibration", str(out), str(out), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "calibration.md").read_text()
    rep = json.loads((out / "detect.json").read_text())
    assert f"**{2 * rep['zoo_correct']}/{2 * rep['zoo_total']}**" in md and "| imprecise search | 42 |" in md
    assert "- held out 3: **" in md  # each later round of held-out mechanisms is its own part
    assert run_cli(eval_cli.main, ["detect", "--calibration", str(tmp_path / "missing")]) == 2
    assert "not a readable detect report" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "detect.json").write_text("{}")
    assert run_cli(eval_cli.main, ["detect", "--calibration", str(tmp_path / "other")]) == 2
    assert "is not a detect report" in capsys.readouterr().err


def test_detect_bad_input_exits_2(tmp_path, capsys):
    assert run_cli(eval_cli.main, ["detect"]) == 2
    assert run_cli(eval_cli.main, ["detect", str(tmp_path), "--examples", "8"]) == 2
    assert "--examples" in capsys.readouterr().err
    assert run_cli(eval_cli.main, ["detect", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_the_main_batch_spans_the_training_sizes_even_where_the_smallest_has_no_held_out_instance():
    """modsquare-serial trains on n of 3-8 bits and evaluates in range on held-out n; no 3-bit n is held out, so
    the main task is built at the largest training size and then spans all of them (it crashed before)."""
    from lab.detect.signatures import Plan

    exp = experiments.get("modsquare-serial")
    task = Plan.of(exp, 64).main_task()
    assert (task.min_size, task.max_size, task.split) == (3, 8, "holdout")
    b = evaluation.fixed_batch(task, 64, 0)
    assert set(np.asarray(b.aux[:, 1]).tolist()) <= set(range(4, 9))  # held-out n exist from 4 bits on


def test_bootstrap_keeps_an_exactly_predicted_bin_and_moves_a_noisy_one():
    from lab.detect.rule import _resample_loop_fit

    # a deterministic comparator that predicts each example of the bin exactly has nothing to resample
    y = np.r_[np.ones(20), np.zeros(180)]
    exact = loopfit._z(y, y.copy())
    noisy = loopfit._z(y, np.full(200, 0.1))
    assert exact["spread"] == 0 and exact["z"] == 0 and noisy["spread"] > 10
    rng = np.random.default_rng(0)
    fit = lambda b: {"by_margin": [b], "max_z": abs(b["z"])}
    assert all(_resample_loop_fit(fit(exact), rng)["max_z"] == 0 for _ in range(20))
    zs = [_resample_loop_fit(fit(noisy), rng)["max_z"] for _ in range(200)]
    assert 0.3 < np.std(zs) < 3
