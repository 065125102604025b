"""The decision rule (thresholds read off the zoo, then fixed), its bootstrap stability, and what counts as right."""
from __future__ import annotations

from typing import Any

import numpy as np

from lab.detect.stats import K_GRID

MIN_ERRORS = 50  # positive regrets needed before the shape of their distribution is judged
LOOP_MAX_Z = 4.0  # the imprecise loop's predictions must hold in every bin to |z| <= this
LOOP_MAX_SIGMA = 0.128  # ... with a comparison of width at most this share of the value range (beyond: a random guess)


# ---- the decision rule ----

RULE = """\
Decision rule (fixed before it is applied to trained models; thresholds read off the zoo):
 1. search        error <= 0.05 on held-out instances at the training sizes, error <= 0.1 at the largest size
                  beyond them (steps scaled), and fewer steps hurt (error at 0.5x steps - at 1x >= 0.1);
 2. memoriser     else, if the task has a held-out split and held-out error - training-instance error >= 0.25;
 3. imprecise search else, if at the training sizes and at the largest size beyond them the errors are
                  those of a loop with an imprecise comparison of width sigma (noise: Gaussian, drawn at each
                  comparison; or resolution: differences below sigma not seen) and a leaking register
                  (lab/detect/loopfit.py), fitted by maximum likelihood at each size: its predicted error in each of
                  5 margin bins within |z| <= 4 of the observed, with sigma <= 0.128 of the value range at both sizes;
 4. partial search else, if the regret distribution is a minimum of random draws of a candidate's regret:
                  K draws (2 <= K < 1024), or a random share q of the candidates (0.05 < q < 0.95), whichever
                  fits: KS distance below its 5% critical value at that many examples (the exact Kolmogorov
                  distribution, scipy.stats.kstwo), and the positive regrets (at least 50) shaped like that law
                  conditioned on regret > 0 (KS below the 5% critical value at that many); at the training
                  sizes, or, where they give fewer than 50 positive regrets, at the largest size beyond them;
 5. heuristic     otherwise (a fixed function that neither loops over candidates nor memorises)."""


def decide(rec: dict[str, Any]) -> str:
    steps, ext, mem = rec.get("steps", {}), rec.get("extrapolation"), rec.get("memorisation")
    gain = steps.get("error", {}).get("gain", 0.0)
    if rec["error"] <= 0.05 and ext is not None and ext["error"] <= 0.1 and gain >= 0.1:
        return "search"
    if mem is not None and mem["gap"] >= 0.25:
        return "memoriser"
    if imprecise_loop(rec.get("loop_fit")):
        return "imprecise search"
    if partial_law(rec):
        return "partial search"
    return "heuristic"


def partial_law(rec: dict[str, Any]) -> bool:
    """Clause 4: the regrets are a minimum of K draws or of a random share of the candidates, at the training
    sizes, or at the largest size beyond them where the training sizes leave too few errors to test the shape."""
    laws = rec if rec["min_of_k"].get("positive", 0) >= MIN_ERRORS or "laws_beyond" not in rec else rec["laws_beyond"]
    mk, ms = laws["min_of_k"], laws.get("min_of_share")
    return (min_law(mk) and 2 <= mk["k"] < K_GRID[-1]) or (ms is not None and min_law(ms) and not ms["at_grid_edge"])


def min_law(fit: dict[str, Any]) -> bool:
    """The regrets fit a minimum-of-draws law (fit_min_of_k or fit_min_of_share): overall and in shape."""
    return (fit["ks"] <= fit["crit_5pct"] and fit.get("positive", 0) >= MIN_ERRORS
            and fit.get("ks_positive") is not None and fit["ks_positive"] <= fit["crit_positive_5pct"])


def imprecise_loop(fit: dict[str, Any] | None) -> bool:
    """Clause 3: the fitted imprecise loop predicts the errors, beyond the training sizes included."""
    return (fit is not None and "beyond" in fit and fit["max_z"] <= LOOP_MAX_Z and fit["sigma"] <= LOOP_MAX_SIGMA
            and fit["beyond"]["sigma"] <= LOOP_MAX_SIGMA)


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
        if rec.get("loop_fit"):
            r["loop_fit"] = _resample_loop_fit(rec["loop_fit"], rng)
        label = decide(r)
        counts[label] = counts.get(label, 0) + 1
    return {k: v / reps for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def _resample_loop_fit(fit: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The loop fit's |z| with each margin bin's examples resampled: observed minus predicted errors over the bin
    redrawn with the spread it has under resampling (normal approximation), so an example the loop predicts
    exactly stays predicted (a deterministic comparator's bin does not move); reports without the spread: the
    observed count redrawn as a binomial, the prediction kept."""

    def redraw(cal: dict[str, Any]) -> dict[str, Any]:
        def z(b: dict[str, Any]) -> float:
            n = b["examples"]
            if "spread" in b:
                diff = n * (b["observed"] - b["predicted"]) + rng.normal(0.0, np.sqrt(b["spread"]))
            else:
                diff = rng.binomial(n, b["observed"]) - n * b["predicted"]
            return diff / np.sqrt(b["var"])

        by = [{**b, "z": z(b)} for b in cal["by_margin"]]
        return {**cal, "by_margin": by, "max_z": float(max(abs(b["z"]) for b in by))}

    out = redraw(fit)
    if "beyond" in fit:
        out["beyond"] = redraw(fit["beyond"])
        out["max_z"] = max(out["max_z"], out["beyond"]["max_z"])
    return out


def _truth(mechanism: str) -> str:
    """The label the rule should give each zoo mechanism (a feedforward net is not a searcher; which
    non-search label it gets is not checked)."""
    return {"feedforward": "not search"}.get(mechanism, mechanism)


def correct(mechanism: str, label: str) -> bool:
    """Whether a zoo member's label is right: a feedforward net any label but search and imprecise search; an
    imprecise loop imprecise search, or search where it is precise enough to meet clause 1; others their own."""
    t = _truth(mechanism)
    if t == "not search":
        return label not in ("search", "imprecise search")
    if t == "imprecise search":
        return label in ("imprecise search", "search")
    return label == t
