"""The imprecise loop: the search loop with an imprecise comparison and a leaking register, as a zoo member and as a
model fitted to any solver's errors.

A loop visits the candidates an example's steps show, in order, and keeps the best. Its comparison is one of two
kinds (``COMPARATORS``), each with one width sigma:
  noise       ``if v + e > stored: k = i``, e ~ N(0, (sigma x range)^2) drawn afresh at each comparison: a smooth
              error curve, errors at every margin, fewer the larger it is;
  resolution  ``if v > stored + sigma x range: k = i``: differences below the comparator's resolution are not
              seen (a just-noticeable difference), deterministic: without a leak, errors only below that
              margin.
The stored best drifts down by leak x range at every step after it is written (a register that leaks); ``range`` is
the spread of the example's shown values, so sigma and leak have no units. sigma = leak = 0 is the exact loop.

Such a loop's errors are fixed by (comparator, sigma, leak): how they fall with the margin between the best and the runner-up,
and how they grow with the number of comparisons at larger sizes. The fit (maximum likelihood on a grid, on the
examples at the training sizes) and its predictions are the signature that tells an imprecise loop from a heuristic
or a memoriser whose errors fall elsewhere: ``loop_fit``."""
from __future__ import annotations

from typing import Any

import numpy as np

from tasks import Candidates

COMPARATORS = ("noise", "resolution")  # the kinds of imprecise comparison the fit tries (module docstring)
SIGMAS = (0.0, *(round(0.0005 * 2 ** (k / 2), 6) for k in range(21)))  # 0, then 0.0005 .. 0.512, sqrt(2) apart
LEAKS = (0.0, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03)
FIT_REPS = 32  # simulated loops per example and grid point in the fit
PREDICT_REPS = 128  # in the predictions
MARGIN_BINS = 5  # margin quantile bins at the training sizes
JOINT_95 = 2.996  # chi2(2 df).ppf(0.95) / 2: the (sigma, leak) whose log-likelihood is this close to the best (the
#                   comparator is a discrete choice among the points, not a third degree of freedom)
MAX_PLAUSIBLE = 24  # at most this many of them (the likeliest) are tried as predictions
SLACK = 0.05  # relative model error allowed per bin in the calibration z (a trained loop is not exactly this one)


def wrong(cand: Candidates) -> np.ndarray:
    """[B, M] whether answering candidate m is an error (its answer is not the reference; integer answers)."""
    return cand.answer != cand.reference[:, None]


def margin(cand: Candidates) -> np.ndarray:
    """[B] best minus runner-up shown value, in units of the example's shown range (0: a tie at the top)."""
    v = np.sort(np.where(np.isfinite(cand.value), cand.value, -np.inf), axis=1)
    top, second = v[:, -1], v[:, -2] if v.shape[1] > 1 else v[:, -1]
    second = np.where(np.isfinite(second), second, top)
    return (top - second) / value_range(cand.value)


def value_range(value: np.ndarray) -> np.ndarray:
    """[B] the spread of each example's shown values (-inf: not shown); 1 where they are all equal."""
    shown = np.isfinite(value)
    hi = np.where(shown, value, -np.inf).max(1)
    lo = np.where(shown, value, np.inf).min(1)
    r = hi - lo
    return np.where(r > 0, r, 1.0)


def simulate(value: np.ndarray, sigma: float, leak: float, rng: np.random.Generator, reps: int,
             visit: np.ndarray | None = None, comparator: str = "noise", reset: float = 0.0) -> np.ndarray:
    """The chosen candidate index [reps, B] of ``reps`` runs of the imprecise loop over each example's shown
    values ([B, M], -inf = not shown), in order; ``visit`` [reps, B, M] bool: the candidates the loop looks at
    (default all shown); ``comparator``: what sigma is (COMPARATORS); ``reset``: the chance at each step that the
    register is wiped, so that step's candidate is stored whatever its value (a zoo member, not fitted)."""
    if comparator not in COMPARATORS:
        raise ValueError(f"comparator {comparator!r}: one of {COMPARATORS}")
    B, M = value.shape
    scale = value_range(value)[None]  # [1, B]
    shown = np.isfinite(value)
    best = np.full((reps, B), -1)
    stored = np.full((reps, B), -np.inf)
    for m in range(M):
        v = value[:, m][None]
        look = np.broadcast_to(shown[:, m][None], (reps, B))
        if visit is not None:
            look = look & visit[:, :, m]
        if leak > 0:
            stored = stored - leak * scale  # one step older
        if sigma == 0:
            noisy = v
        elif comparator == "noise":
            noisy = v + sigma * scale * rng.standard_normal((reps, B))
        else:  # resolution: a new value must clear the stored one by sigma x range
            noisy = v - sigma * scale
        wiped = rng.random((reps, B)) < reset if reset > 0 else False
        take = look & ((best < 0) | wiped | (noisy > stored))
        best = np.where(take, m, best)
        stored = np.where(take, v, stored)
    first = np.argmax(shown, axis=1)  # nothing visited: the first shown candidate
    return np.where(best < 0, first[None], best)


def error_prob(value: np.ndarray, wrong_m: np.ndarray, sigma: float, leak: float, reps: int, seed: int,
               comparator: str = "noise") -> np.ndarray:
    """[B] the probability that the imprecise loop answers wrong, estimated from ``reps`` runs."""
    chosen = simulate(value, sigma, leak, np.random.default_rng(seed), reps, comparator=comparator)
    return np.take_along_axis(np.broadcast_to(wrong_m[None], (reps, *wrong_m.shape)), chosen[..., None], 2)[..., 0].mean(0)


def fit(value: np.ndarray, wrong_m: np.ndarray, errors: np.ndarray, seed: int = 0,
        comparators: tuple[str, ...] = COMPARATORS) -> dict[str, Any]:
    """Maximum-likelihood (comparator, sigma, leak) on the grid for observed per-example errors [B] (0/1); the
    same random numbers at every grid point (sigma 0, the exact comparison, is one point shared by every kind).
    The interval: the sigmas of the likeliest kind whose profile log-likelihood is within 1.92 of the best (a 95%
    likelihood-ratio interval, on the grid)."""
    y = errors > 0.5
    ll = np.full((len(comparators), len(SIGMAS), len(LEAKS)), -np.inf)
    for c, kind in enumerate(comparators):
        for i, s in enumerate(SIGMAS):
            if s == 0 and c > 0:
                continue  # the exact comparison is counted once, under the first kind
            for j, lk in enumerate(LEAKS):
                p = error_prob(value, wrong_m, s, lk, FIT_REPS, seed, kind)
                p = (p * FIT_REPS + 0.5) / (FIT_REPS + 1)  # never exactly 0 or 1
                ll[c, i, j] = float(np.where(y, np.log(p), np.log1p(-p)).sum())
    c, i, j = np.unravel_index(int(np.argmax(ll)), ll.shape)
    profile = ll[c].max(1)
    profile[0] = ll[0, 0].max()  # sigma 0 belongs to every kind
    inside = [s for s, v in zip(SIGMAS, profile) if v >= ll.max() - 1.92]
    plausible = [(comparators[a], SIGMAS[b], LEAKS[d])
                 for a, b, d in zip(*np.unravel_index(np.argsort(-ll, axis=None), ll.shape))
                 if ll[a, b, d] >= ll.max() - JOINT_95][:MAX_PLAUSIBLE]
    return {"comparator": comparators[c], "sigma": SIGMAS[i], "leak": LEAKS[j],
            "sigma_interval": [min(inside), max(inside)], "loglik": float(ll.max()),
            "at_grid_edge": i == len(SIGMAS) - 1, "plausible": plausible}


def _z(observed: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """One margin bin: observed errors against the loop's predicted probabilities. ``spread``: the variance of
    (observed - predicted) summed over the bin when its examples are resampled (the bootstrap's, rule.py; 0 where
    a deterministic comparator predicts every example exactly)."""
    o, e = float(observed.sum()), float(p.sum())
    var = float((p * (1 - p)).sum()) + (SLACK * e) ** 2 + 1.0
    return {"examples": int(len(p)), "observed": o / len(p), "predicted": e / len(p), "var": var,
            "spread": float(len(p) * np.var(observed - p)), "z": (o - e) / np.sqrt(var)}


def calibration(cand: Candidates, err: np.ndarray, seed: int = 0, comparators: tuple[str, ...] = COMPARATORS
                ) -> dict[str, Any]:
    """(comparator, sigma, leak) fitted to one batch's per-example errors, and the errors it predicts in each
    margin quantile bin of that batch. Every point in the fit's joint 95% likelihood region is tried (a batch may
    not pin the leak down); ``max_z``: the largest calibration |z| over the bins for the one that predicts best,
    whose parameters are ``predicting``."""
    w = wrong(cand)
    out = fit(cand.value, w, err, seed, comparators)
    mg = margin(cand)
    bins = np.array_split(np.argsort(mg, kind="stable"), MARGIN_BINS)
    best: dict[str, Any] | None = None
    for kind, sigma, leak in out.pop("plausible"):
        p = error_prob(cand.value, w, sigma, leak, PREDICT_REPS, seed + 1, kind)
        by = [{"margin": [float(mg[i].min()), float(mg[i].max())], **_z(err[i] > 0.5, p[i])} for i in bins]
        max_z = float(max(abs(b["z"]) for b in by))
        if best is None or max_z < best["max_z"]:
            best = {"predicting": [kind, sigma, leak], "by_margin": by, "max_z": max_z}
    assert best is not None  # the maximum-likelihood point is always plausible
    return {**out, **best}


def loop_fit(main: tuple[Candidates, np.ndarray], beyond: tuple[Candidates, np.ndarray] | None, seed: int = 0
             ) -> dict[str, Any]:
    """The imprecise-loop signature. At the training sizes (``main``: candidates, per-example errors) and at the
    largest size beyond them (``beyond``), separately: the fitted (comparator, sigma, leak) and how well it predicts the
    errors by margin (``calibration``). Then ``growth``: the error at the largest size that the training sizes'
    loop predicts, against the observed (a stationary loop's growth with the number of comparisons); ``max_z``:
    the largest |z| over both sizes' margin bins."""
    out = calibration(*main, seed=seed)
    if beyond is not None:
        bc, be = beyond
        out["beyond"] = calibration(bc, be, seed=seed + 2)
        kind, sigma, leak = out["predicting"]
        p = error_prob(bc.value, wrong(bc), sigma, leak, PREDICT_REPS, seed + 3, kind)
        out["growth"] = {**_z(be > 0.5, p), "ratio": float((be > 0.5).mean() / max(p.mean(), 1e-9))}
        out["max_z"] = max(out["max_z"], out["beyond"]["max_z"])
    return out
