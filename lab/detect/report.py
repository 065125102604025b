"""Reports: one row per solver, markdown tables, the calibration table over experiments, the figure, and the two
drivers of ``eval.py detect`` (runs on their own; an experiment's zoo and trained runs together)."""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np

from lab.detect.rule import RULE, bootstrap_verdict, correct, decide
from lab.detect.signatures import DETECT_SEED, Plan, _batch, signatures
from lab.detect.stats import ROUND_DECIMALS, min_of_k_cdf
from lab.detect.zoo import Solver, model_solver, search_task, zoo
from lab.experiments import Experiment


# ---- report ----


def row(name: str, mechanism: str, rec: dict[str, Any]) -> dict[str, Any]:
    """The calibration-table row of one model: its signatures in a line."""
    s = rec.get("steps", {})
    ext = rec.get("extrapolation") or {}
    mem = rec.get("memorisation") or {}
    fam = rec["families"]
    return {
        "model": name, "mechanism": mechanism, "error": rec["error"], "regret": rec["regret"],
        "step_gain": s.get("error", {}).get("gain"), "step_gain_easy": s.get("easy", {}).get("gain"),
        "step_gain_hard": s.get("hard", {}).get("gain"), "overthink": s.get("error", {}).get("overthink"),
        "best_scale": rec["best_scale"], "extrap_error": ext.get("error"), "extrap_rise": ext.get("rise"),
        "easy_hard_gap": rec["easy_hard"]["gap"], "easy_hard_ci": rec["easy_hard"]["gap_ci"],
        "k": rec["min_of_k"]["k"], "k_ks": rec["min_of_k"]["ks"], "k_ks_pos": rec["min_of_k"].get("ks_positive"), "p_zero": fam["p_zero"],
        "exp_ks": fam.get("exponential", {}).get("ks"), "weibull_ks": fam.get("weibull", {}).get("ks"),
        "weibull_shape": fam.get("weibull", {}).get("shape"), "near_tie_match": rec["agreement"]["near_tie_exact_match"],
        "runner_up": rec["agreement"]["runner_up_share_of_errors"], "memo_gap": mem.get("gap"),
        "loop_sigma": (rec.get("loop_fit") or {}).get("sigma"), "loop_leak": (rec.get("loop_fit") or {}).get("leak"),
        "loop_z": (rec.get("loop_fit") or {}).get("max_z"), "loop_comparator": (rec.get("loop_fit") or {}).get("comparator"),
        "label": decide(rec), "held_out": bool(rec.get("held_out", False)),
    }


def _f(x: Any, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, list):
        return "[" + ", ".join(_f(v, nd) for v in x) + "]"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2g}"
    return str(x)


COLUMNS = [("model", "model"), ("mechanism", "truth"), ("error", "error"), ("step_gain", "gain 0.5x->1x"),
           ("step_gain_easy", "gain easy"), ("step_gain_hard", "gain hard"), ("overthink", "overthink"),
           ("extrap_error", "error largest"), ("easy_hard_gap", "hard-easy"), ("easy_hard_ci", "95% CI"),
           ("p_zero", "P(regret=0)"), ("k", "K (min-of-K)"), ("k_ks", "KS"), ("k_ks_pos", "KS of regret>0"), ("weibull_ks", "Weibull KS"),
           ("exp_ks", "exp KS"), ("near_tie_match", "near-tie match"), ("runner_up", "runner-up share"),
           ("memo_gap", "memo gap"), ("loop_comparator", "loop comparator"), ("loop_sigma", "loop sigma"), ("loop_leak", "loop leak"),
           ("loop_z", "loop max z"), ("label", "rule says")]


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(h for _, h in COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    for r in rows:
        lines.append("| " + " | ".join(_f(r.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


# ---- drivers: eval.py detect ----


@dataclasses.dataclass
class Result:
    name: str
    mechanism: str  # ground truth for zoo members, "trained" for trained models
    rec: dict[str, Any]
    m: dict[str, np.ndarray]  # per-example arrays of the main batch
    cand_regret: np.ndarray


def measure(name: str, mechanism: str, solve: Solver, plan: Plan) -> Result:
    rec, m = signatures(solve, plan)
    task = plan.main_task()
    cand = search_task(task).candidates(_batch(task, plan.examples, DETECT_SEED))
    return Result(name, mechanism, rec, m, cand.regret)


def experiment_for_run(run: Any, cfg: Any) -> Experiment:
    """The experiment a run belongs to (its parent directory's name), or one built from its config."""
    from pathlib import Path

    from lab import experiments

    parent = Path(run).resolve().parent.name
    if parent in experiments.EXPERIMENTS and experiments.EXPERIMENTS[parent].task == cfg.task:
        return experiments.EXPERIMENTS[parent]
    from tasks import make_task

    try:
        task = search_task(make_task(cfg.task, **cfg.task_options))
    except ValueError as e:
        raise ValueError(f"{run}: {e}") from None
    lo, hi = cfg.min_size, cfg.max_size
    sizes = task.extrapolation_sizes(hi)
    split = {"in_range_options": {"split": "holdout"}, "beyond_options": {"split": "all"}} if task.has_split else {}
    return Experiment(name=Path(run).name, description=f"{cfg.task} run {run}", task=cfg.task,
                      task_options=dict(cfg.task_options), train_sizes=(lo, hi), eval_sizes=tuple(sizes),
                      ntm=cfg.model_config, models=(), steps=cfg.steps, **split)


def detect_runs(runs: list[str], examples: int = 1024) -> list[Result]:
    """``eval.py detect RUN...``: signatures + verdict per run, written to RUN/detect/."""
    from pathlib import Path

    from lab.rundir import load_run

    results = []
    for run in runs:
        cfg, _, model, step = load_run(run)
        exp = experiment_for_run(run, cfg)
        res = measure(Path(run).name, "trained", model_solver(model), Plan.of(exp, examples))
        res.rec["verdict_bootstrap"] = bootstrap_verdict(res.rec, res.m)
        write(Path(run) / "detect", [res], exp, f"{Path(run).name} ({cfg.model}, step {step})")
        results.append(res)
    return results


def detect_experiment(exp: Experiment, root: str = "runs", examples: int = 1024, out: str | None = None) -> dict[str, Any]:
    """``eval.py detect --experiment NAME``: the zoo (with the experiment's trained MLP) and every trained
    run of the experiment (none yet: the zoo alone), one calibration table + verdicts, written to
    <root>/<NAME>/detect/."""
    from pathlib import Path

    from lab.compare import find_runs
    from lab.rundir import RunDirError, load_run

    try:
        runs = find_runs(exp, Path(root))
    except RunDirError:  # nothing trained yet: the zoo alone
        runs = {}
    plan = Plan.of(exp, examples)
    mlp = load_run(runs["mlp"][0])[2] if "mlp" in runs else None
    results = []
    for z in zoo(exp, mlp):
        results.append(measure(z.name, z.mechanism, z.solve, plan))
        results[-1].rec["held_out"] = z.held_out
    for label, dirs in runs.items():
        for d in dirs:
            if label == "mlp" and d == runs["mlp"][0]:
                continue  # already in the zoo as "trained MLP"
            cfg, _, model, _ = load_run(d)
            res = measure(d.name, "trained", model_solver(model), plan)
            res.rec["verdict_bootstrap"] = bootstrap_verdict(res.rec, res.m)
            results.append(res)
    return write(Path(out) if out else Path(root) / exp.name / "detect", results, exp, exp.name)


def write(out: Any, results: list[Result], exp: Experiment, title: str) -> dict[str, Any]:
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [row(r.name, r.mechanism, r.rec) for r in results]
    zoo_rows = [r for r in rows if r["mechanism"] != "trained"]
    right = [correct(r["mechanism"], r["label"]) for r in zoo_rows]
    held = [ok for ok, r in zip(right, zoo_rows) if r["held_out"]]
    report = {"experiment": exp.name, "task": exp.task, "train_sizes": list(exp.train_sizes), "rule": RULE,
              "zoo_correct": int(sum(right)), "zoo_total": len(right), "held_out_correct": int(sum(held)),
              "held_out_total": len(held), "rows": rows,
              "verdicts": {r.name: r.rec.get("verdict_bootstrap") for r in results if r.mechanism == "trained"},
              "signatures": {r.name: r.rec for r in results}}
    (out / "detect.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    md = markdown(rows, f"{title}: signatures and the rule's label")
    if zoo_rows:
        md += (f"\nThe rule labels {sum(right)}/{len(right)} zoo members correctly ({sum(held)}/{len(held)} of the "
               "held-out members, which were not looked at when its thresholds were chosen).\n")
    for name, v in report["verdicts"].items():
        md += f"\n{name}: verdict {decide(report['signatures'][name])!r}; bootstrap share per label {format_shares(v)}"
    (out / "detect.md").write_text(md + "\n\n```\n" + RULE + "\n```\n")
    plot(results, exp, out / "detect.png", title)
    return report


SIGNATURES = (("gap", "harder inputs err more (easy-vs-hard gap > 0, 95% CI)"),
              ("min_law", "loss a minimum of random draws (min-of-K or share law)"),
              ("loop_law", "errors those of an imprecise loop (loop fit, clause 3)"))


def signature_flags(rec: dict[str, Any]) -> dict[str, bool]:
    """Which of the seed's two behavioural proposals and the loop fit point to search for one record."""
    from lab.detect.rule import imprecise_loop, partial_law

    return {"gap": rec["easy_hard"]["gap_ci"][0] > 0, "min_law": partial_law(rec),
            "loop_law": imprecise_loop(rec.get("loop_fit"))}


def _part(row: dict[str, Any]) -> str:
    """The zoo part of a member: calibration, held out, or a later round of held-out mechanisms ("(held out N)")."""
    later = re.search(r"\((held out \d+)\)", row["model"])
    return later.group(1) if later else "held out" if row.get("held_out") else "calibration"


def read_reports(dirs: list[str]) -> list[dict[str, Any]]:
    """The detect.json of each directory (``eval.py detect --calibration``); a file that is missing, not JSON or
    not a detect report is a ValueError naming it."""
    import json
    from pathlib import Path

    reports = []
    for d in dirs:
        path = Path(d) / "detect.json"
        try:
            rep = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--calibration: {path} is not a readable detect report ({e.__class__.__name__})") from None
        if not isinstance(rep, dict) or not {"experiment", "rows", "signatures"} <= set(rep):
            raise ValueError(f"--calibration: {path} is not a detect report (eval.py detect writes one)")
        reports.append(rep)
    return reports


def calibration_markdown(reports: list[dict[str, Any]]) -> str:
    """One account over several detect.json (``eval.py detect --calibration``): the rule's hit rate on the zoo by
    part (the members its thresholds were read off; those held out; those added once it was fixed), each member's
    label, and per mechanism how often each signature points to search."""
    parts: dict[str, list[int]] = {}
    members = ["| experiment | member | truth | part | error | loop: comparator, sigma | loop max z | rule says | right |",
               "|---|---|---|---|---:|---|---:|---|---|"]
    by_mech: dict[str, dict[str, list[bool]]] = {}
    trained = []
    for rep in reports:
        for r in rep["rows"]:
            rec = rep["signatures"][r["model"]]
            flags = signature_flags(rec)
            mech = r["mechanism"] if r["mechanism"] != "trained" else f"trained ({r['model'].split(' ')[0]})"
            for k, v in flags.items():
                by_mech.setdefault(mech, {}).setdefault(k, []).append(v)
            if r["mechanism"] == "trained":
                trained.append((rep["experiment"], r))
                continue
            ok = correct(r["mechanism"], r["label"])
            parts.setdefault(_part(r), []).append(ok)
            members.append(f"| {rep['experiment']} | {r['model']} | {r['mechanism']} | {_part(r)} | {_f(r['error'])} | "
                           f"{_loop_width(r)} | {_f(r.get('loop_z'), 1)} | {r['label']} | {'yes' if ok else '**no**'} |")
    rates = "\n".join(f"- {name}: **{sum(v)}/{len(v)}**" for name, v in parts.items())
    total = [ok for v in parts.values() for ok in v]
    sig = ["| mechanism | members | " + " | ".join(h for _, h in SIGNATURES) + " |", "|---|---:|" + "---:|" * len(SIGNATURES)]
    for mech, f in by_mech.items():
        n = len(next(iter(f.values())))
        sig.append(f"| {mech} | {n} | " + " | ".join(f"{sum(f[k])}/{n}" for k, _ in SIGNATURES) + " |")
    return ("## Detection: the zoo, part by part\n\n"
            f"The rule labels **{sum(total)}/{len(total)}** zoo members right; by part:\n\n{rates}\n\n"
            "(A feedforward member is right with any label but search and imprecise search; an imprecise loop with "
            "imprecise search or, when it meets clause 1, search.)\n\n"
            "## What each signature says, by mechanism\n\n" + "\n".join(sig) + "\n\n"
            "## Every zoo member\n\n" + "\n".join(members) + "\n\n```\n" + RULE + "\n```\n")


def _loop_width(r: dict[str, Any]) -> str:
    """The fitted comparator and its width, for a row ("-" where there is no loop fit)."""
    if r.get("loop_sigma") is None:
        return "-"
    return f"{r.get('loop_comparator') or 'noise'} {_f(r['loop_sigma'])}"


def format_shares(d: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in (d or {}).items())


def plot(results: list[Result], exp: Experiment, path: Any, title: str) -> None:
    from lab import figures

    plt = figures._plt()
    fig, ax = plt.subplots(1, 4, figsize=(20, 4.2))
    for i, r in enumerate(results):
        style = dict(ls="-" if r.mechanism == "trained" else "--", marker="o", ms=3, color=f"C{i % 10}")
        sc = r.rec["by_scale"]
        ax[0].plot([s["scale"] for s in sc], [s["easy"] for s in sc], label=f"{r.name} easy", alpha=0.5, **{**style, "marker": "^"})
        ax[0].plot([s["scale"] for s in sc], [s["hard"] for s in sc], label=f"{r.name} hard", **style)
        pts = [(s["size"], s["error"]) for s in r.rec["by_size"] if "error" in s]
        if pts:
            ax[1].plot(*zip(*pts), label=r.name, **style)
        ax[2].plot([1, 2, 3, 4], r.rec["easy_hard"]["quartiles"], label=r.name, **style)
        reg = np.sort(np.round(r.m["regret"], ROUND_DECIMALS))
        ax[3].step(reg, np.arange(1, len(reg) + 1) / len(reg), where="post", color=style["color"], ls=style["ls"],
                   label=f"{r.name} (K={r.rec['min_of_k']['k']}, KS {r.rec['min_of_k']['ks']:.2f})")
        k = r.rec["min_of_k"]["k"]
        grid = np.unique(np.concatenate([reg, [0.0]]))
        ax[3].plot(grid, min_of_k_cdf(np.round(r.cand_regret, ROUND_DECIMALS), grid, k)[0], color=style["color"], ls=":", lw=1)
    ax[0].set(xscale="log", xlabel="test-time step multiplier", ylabel="error", title="1. steps: easy (^, faint) and hard halves")
    ax[1].axvspan(*exp.train_sizes, color="gray", alpha=0.15)
    ax[1].set(xlabel="size (steps scaled)", ylabel="error", title="2. extrapolation")
    ax[2].set(xlabel="difficulty quartile (1 = easiest)", ylabel="error", title="3. easy vs hard")
    ax[3].set(xscale="symlog", xlabel="regret (symlog)", ylabel="CDF", title="4. regret CDF; dotted: best min-of-K fit",
              xlim=(0, None))
    ax[3].set_xscale("symlog", linthresh=1e-3)
    for a in ax:
        a.grid(alpha=0.3)
    ax[1].legend(fontsize=6)
    ax[3].legend(fontsize=6)
    fig.suptitle(f"{title}: dashed = ground-truth zoo, solid = trained")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- a recipe's trained models, stage by stage and seed by seed, beside what their weights say ----


def weights_evidence(model: Any, plan: Plan) -> dict[str, Any] | None:
    """What the write heads do on the main batch: the write peak (largest write weight over heads and rows) on
    the steps where the loop's best improves and on the other steps (lab.compare.write_on_improvement), and how
    much of the improving steps' writes go to one row (the register); None for a model without memory heads."""
    from lab import evaluation
    from lab.compare import gated_writes, register_writes, write_on_improvement

    task = plan.main_task()
    batch = _batch(task, plan.examples, DETECT_SEED)
    _, aux = evaluation.Evaluator.of(model).forward(batch)
    if "write_weights" not in aux:
        return None
    try:
        improved, shown = (np.asarray(x) for x in search_task(task).improvements(batch))
    except ValueError:  # the task does not show the values the loop compares
        return None
    w = gated_writes(aux)  # [T, B, heads, N]: what is written
    out = write_on_improvement(w, improved, shown)
    per_row = register_writes(w, improved)
    out["register_share"] = float(per_row.max() / max(per_row.sum(), 1))
    return out


def _register_swap(run: Any, exp: Experiment, examples: int, loaded: tuple) -> dict[str, Any] | None:
    """The causal test of the register (lab.diagnose.register_swap) on lists of the largest training size,
    swapped halfway, for an argmax NTM; None for any other run."""
    from lab import diagnose, models
    from tasks.argmax import Argmax

    if not isinstance(loaded[1], Argmax) or not isinstance(loaded[2], models.NTM):
        return None
    hi = exp.train_sizes[1]
    out = diagnose.register_swap(str(run), size=hi, at=hi // 2, batch_size=examples, run=loaded)
    return {"follows": out["register"]["follows_swap"], "control_follows": out["control"]["follows_swap"],
            "lists": out["lists_where_the_swap_matters"], "row": out["register_row"]}


def detect_recipe(recipe: Any, seeds: list[int], root: str = "runs", examples: int = 1024,
                  out: str | None = None) -> dict[str, Any]:
    """``eval.py detect --recipe NAME``: the zoo of the recipe's headline preset (its calibration), then every
    stage of every chain for every seed that has a finished run, each with its verdict, the bootstrap shares and
    the weights' evidence; written to <root>/<NAME>/detect/."""
    import json
    from pathlib import Path

    from lab import experiments
    from lab.rundir import finished, load_run

    head = experiments.get(recipe.final[0].experiment)
    results = []
    for z in zoo(head):
        results.append(measure(z.name, z.mechanism, z.solve, Plan.of(head, examples)))
        results[-1].rec["held_out"] = z.held_out
    trained = []
    for stage in recipe.stages():
        exp = experiments.get(stage.experiment)
        plan = Plan.of(exp, examples)
        for seed in seeds:
            d = stage.run_dir(seed, root)
            if not finished(d):
                continue
            cfg, _, model, step = load_run(d)
            res = measure(f"{stage} s{seed}", "trained", model_solver(model), plan)
            res.rec["verdict_bootstrap"] = bootstrap_verdict(res.rec, res.m)
            res.rec["weights"] = weights_evidence(model, plan)
            res.rec["register_swap"] = _register_swap(d, exp, examples, (cfg, _, model, step))
            results.append(res)
            trained.append({"stage": str(stage), "model": cfg.model, "seed": seed, "run": str(d), "step": step,
                            "label": decide(res.rec), "bootstrap": res.rec["verdict_bootstrap"],
                            "error": res.rec["error"], "extrapolation": res.rec.get("extrapolation"),
                            "loop_fit": {k: res.rec["loop_fit"].get(k) for k in ("comparator", "sigma", "sigma_interval",
                                                                                 "leak", "max_z", "beyond")},
                            "weights": res.rec["weights"], "register_swap": res.rec["register_swap"]})
    if not trained:
        raise ValueError(f"recipe {recipe.name}: no finished runs under {root} for seeds {seeds} "
                         f"(train them with: python train.py --recipe {recipe.name})")
    dest = Path(out) if out else Path(root) / recipe.name / "detect"
    report = write(dest, results, head, f"recipe {recipe.name}")
    report["trained"] = trained
    (dest / "detect.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    with open(dest / "detect.md", "a") as f:
        f.write("\n" + trained_markdown(trained) + "\n")
    return report


def trained_markdown(trained: list[dict[str, Any]]) -> str:
    """The trained models' verdicts beside the loop fit, the write heads and the register swap (the share of
    lists whose answer follows the swapped-in best; in brackets, with a control row swapped instead)."""
    lines = ["| stage | seed | error | error largest | comparator: sigma (95%) | leak | max z | write peak: improving / other "
             "| register share | swap: follows (control) | rule says | bootstrap |",
             "|---|---:|---:|---:|---|---:|---:|---|---:|---|---|---|"]
    for t in trained:
        lf, w, ext = t["loop_fit"], t["weights"] or {}, t["extrapolation"] or {}
        sw = t.get("register_swap") or {}
        swap = f"{sw['follows']:.2f} ({sw['control_follows']:.2f})" if sw else "-"
        lines.append(f"| {t['stage']} | {t['seed']} | {t['error']:.4f} | {_f(ext.get('error'), 4)} | "
                     f"{lf.get('comparator') or 'noise'}: {lf['sigma']:g} "
                     f"[{lf['sigma_interval'][0]:g}, {lf['sigma_interval'][1]:g}] | {lf['leak']:g} | {lf['max_z']:.1f} | "
                     f"{_f(w.get('improvement'))} / {_f(w.get('other'))} | {_f(w.get('register_share'))} | {swap} | "
                     f"**{t['label']}** | {format_shares(t['bootstrap'])} |")
    return "\n".join(lines)
