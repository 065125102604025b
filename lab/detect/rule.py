"""The decision rule (thresholds read off the zoo, then fixed), its bootstrap stability, and what counts as right."""
from __future__ import annotations

from typing import Any

import numpy as np

from lab.detect.stats import K_GRID

MIN_ERRORS = 50  # positive regrets needed before the shape of their distribution is judged


# ---- the decision rule ----

RULE = """\
Decision rule (fixed before it is applied to trained models; thresholds read off the zoo):
 1. search        error <= 0.05 on held-out instances at the training sizes, error <= 0.1 at the largest size
                  beyond them (steps scaled), and fewer steps hurt (error at 0.5x steps - at 1x >= 0.1);
 2. memoriser     else, if the task has a held-out split and held-out error - training-instance error >= 0.25;
 3. partial search else, if the regret distribution is a minimum of K draws of a random candidate's regret:
                  KS distance below its 5% critical value at that many examples (the exact Kolmogorov
                  distribution, scipy.stats.kstwo), with 2 <= K < 1024, and the positive regrets (at least 50)
                  shaped like that law conditioned on regret > 0 (KS below the 5% critical value at that many);
 4. heuristic     otherwise (a fixed function that neither loops over candidates nor memorises)."""


def decide(rec: dict[str, Any]) -> str:
    steps, ext, mem, mk = rec.get("steps", {}), rec.get("extrapolation"), rec.get("memorisation"), rec["min_of_k"]
    gain = steps.get("error", {}).get("gain", 0.0)
    if rec["error"] <= 0.05 and ext is not None and ext["error"] <= 0.1 and gain >= 0.1:
        return "search"
    if mem is not None and mem["gap"] >= 0.25:
        return "memoriser"
    if (mk["ks"] <= mk["crit_5pct"] and 2 <= mk["k"] < K_GRID[-1] and mk.get("positive", 0) >= MIN_ERRORS
            and mk.get("ks_positive") is not None and mk["ks_positive"] <= mk["crit_positive_5pct"]):
        return "partial search"
    return "heuristic"


def bootstrap_verdict(rec: dict[str, Any], m: dict[str, np.ndarray], reps: int = 200, seed: int = 0) -> dict[str, float]:
    """How stable the verdict is: the rule re-applied with the main batch's error (and the sweep points'
    errors, as binomial draws) resampled; fraction of resamples per label."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    n_sweep = 256
    for _ in range(reps):
        r = dict(rec)
        r["error"] = float(m["error"][rng.integers(0, len(m["error"]), len(m["error"]))].mean())
        if "steps" in rec and rec["steps"]:
            e = {x["scale"]: rng.binomial(n_sweep, x["error"]) / n_sweep for x in rec["by_scale"]}
            r["steps"] = {"error": {"gain": e[0.5] - e[1.0]}} if 0.5 in e and 1.0 in e else {}
        if rec.get("extrapolation"):
            ext = dict(rec["extrapolation"])
            ext["error"] = rng.binomial(n_sweep, ext["error"]) / n_sweep
            ext["rise"] = ext["error"] - (rec["extrapolation"]["error"] - rec["extrapolation"]["rise"])
            r["extrapolation"] = ext
        if rec.get("memorisation"):
            mem = dict(rec["memorisation"])
            mem["gap"] = r["error"] - rng.binomial(n_sweep, mem["train_error"]) / n_sweep
            r["memorisation"] = mem
        label = decide(r)
        counts[label] = counts.get(label, 0) + 1
    return {k: v / reps for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def _truth(mechanism: str) -> str:
    """The label the rule should give each zoo mechanism (a feedforward net is not a searcher; which
    non-search label it gets is not checked)."""
    return {"feedforward": "not search"}.get(mechanism, mechanism)


def correct(mechanism: str, label: str) -> bool:
    t = _truth(mechanism)
    return label != "search" if t == "not search" else label == t
