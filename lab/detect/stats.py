"""The detector's statistics: the easy-vs-hard gap with its bootstrap interval, the minimum-of-K law of a random
candidate's regret and its Kolmogorov-Smirnov fit, exponential and Weibull fits (scipy.stats), agreement with the
reference search. The min-of-K distance stays hand-written: its law is discrete, per example, and no library has it."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from tasks import Candidates

K_GRID = tuple(sorted({int(round(2 ** (e / 2))) for e in range(0, 21)}))  # 1 .. 1024, ~sqrt(2) apart
ROUND_DECIMALS = 4  # regrets are compared after rounding (modsquare's distinct regrets differ by >= 1/n > 1e-4)


def ks_critical(n: int, alpha: float = 0.05) -> float:
    """The two-sided Kolmogorov-Smirnov critical value for a sample of n at level alpha, from the exact
    distribution of the KS statistic (scipy.stats.kstwo; the asymptotic 1.36 / sqrt(n) is off at small n)."""
    return float(stats.kstwo.ppf(1 - alpha, n))


def easy_hard(error: np.ndarray, difficulty: np.ndarray, reps: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Error per difficulty quartile, and hardest minus easiest quartile with a bootstrap 95% CI
    (percentile, examples resampled within each quartile: scipy.stats.bootstrap)."""
    order = np.argsort(difficulty, kind="stable")
    bins = np.array_split(order, 4)
    q1, q4 = error[bins[0]].astype(np.float64), error[bins[-1]].astype(np.float64)
    gap = float(q4.mean() - q1.mean())
    if np.ptp(np.concatenate([q1, q4])) == 0:  # every resample gives the same gap
        ci = [gap, gap]
    else:
        res = stats.bootstrap((q4, q1), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis), n_resamples=reps,
                              method="percentile", vectorized=True, rng=np.random.default_rng(seed))
        ci = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    return {"quartiles": [float(error[b].mean()) for b in bins], "gap": gap, "gap_ci": ci}


def min_of_k_cdf(cand_regret: np.ndarray, r: np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """Pooled CDF at r of the minimum of k uniform draws (with replacement) from each example's candidate
    regrets (nan = not a candidate): mean_b 1 - (1 - p_b(r))^k, p_b(r) = P(candidate regret <= r)."""
    srt = np.sort(np.where(np.isnan(cand_regret), np.inf, cand_regret), axis=1)
    m = np.isfinite(srt).sum(1)  # [B]
    p = np.stack([np.searchsorted(row, r, side="right") for row in srt]) / m[:, None]  # [B, R]
    return np.stack([(1 - (1 - p) ** kk).mean(0) for kk in np.atleast_1d(k)])  # [K, R]


SHARE_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


def share_cdf(cand_regret: np.ndarray, r: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """Pooled CDF at r of the minimum regret over a random subset of each example's candidates, each kept with
    probability q (a loop over a random share of them): mean_b 1 - (1 - q)^c_b(r), c_b(r) = #candidates <= r."""
    srt = np.sort(np.where(np.isnan(cand_regret), np.inf, cand_regret), axis=1)
    c = np.stack([np.searchsorted(row, r, side="right") for row in srt])  # [B, R]
    return np.stack([(1 - (1 - qq) ** c).mean(0) for qq in np.atleast_1d(q)])  # [Q, R]


def fit_min_of_k(regret: np.ndarray, cand_regret: np.ndarray, k_grid: tuple[int, ...] = K_GRID,
                 max_points: int = 512) -> dict[str, Any]:
    """K whose min-of-K distribution is closest (KS) to the observed regrets. Both are rounded to
    ROUND_DECIMALS first: the task scores regret in float32 (and polymax's x passes through a sigmoid), so
    an atom a rounding error away would otherwise count as a miss."""
    out = _fit_min_law(regret, cand_regret, lambda c, pts: min_of_k_cdf(c, pts, np.array(k_grid)), max_points)
    i = out.pop("index")
    return {"k": int(k_grid[i]), **out, "ks_by_k": dict(zip(map(str, k_grid), out.pop("ks_by_grid"))),
            "at_grid_edge": i in (0, len(k_grid) - 1)}


def fit_min_of_share(regret: np.ndarray, cand_regret: np.ndarray, q_grid: tuple[float, ...] = SHARE_GRID,
                     max_points: int = 512) -> dict[str, Any]:
    """The share q whose law (the minimum over a random subset of the candidates, each kept with probability q:
    ``share_cdf``) is closest (KS) to the observed regrets: a minimum of draws whose number grows with the
    number of candidates, where min-of-K fixes it."""
    out = _fit_min_law(regret, cand_regret, lambda c, pts: share_cdf(c, pts, np.array(q_grid)), max_points)
    i = out.pop("index")
    out.pop("ks_by_grid")
    return {"q": q_grid[i], **out, "at_grid_edge": i in (0, len(q_grid) - 1)}


def _fit_min_law(regret: np.ndarray, cand_regret: np.ndarray, law: Any, max_points: int) -> dict[str, Any]:
    """The grid point of a family of laws (``law(cand_regret, points)`` -> CDFs [G, R]) closest in KS distance to
    the regrets, with the shape test of the positive regrets against that law conditioned on regret > 0."""
    regret, cand_regret = np.round(regret, ROUND_DECIMALS), np.round(cand_regret, ROUND_DECIMALS)
    support = np.nanquantile(cand_regret, np.linspace(0, 1, max_points))
    # both CDFs are step functions: compare right limits at every jump of the sample (and a grid of
    # the candidates' jumps); comparing a left limit with a right limit would count every atom as a miss
    pts = np.unique(np.concatenate([regret, support, [0.0]]))
    F = law(cand_regret, pts)  # [G, R]
    G = np.searchsorted(np.sort(regret), pts, side="right") / len(regret)
    d = np.abs(G[None] - F).max(1)  # [G]
    i = int(np.argmin(d))
    # the shape test: the positive regrets against the law conditioned on regret > 0 (matching
    # P(regret = 0) alone is easy: the grid point is chosen for it)
    pos = regret[regret > 0]
    out = {"index": i, "ks": float(d[i]), "crit_5pct": ks_critical(len(regret)), "ks_by_grid": list(map(float, d)),
           "positive": int(len(pos)), "ks_positive": None, "crit_positive_5pct": None}
    if len(pos):
        f0 = F[i][np.searchsorted(pts, 0.0)]
        if f0 < 1:
            cond = (F[i] - f0) / (1 - f0)
            Gp = np.searchsorted(np.sort(pos), pts, side="right") / len(pos)
            keep = pts > 0
            out["ks_positive"] = float(np.abs(Gp[keep] - cond[keep]).max())
            out["crit_positive_5pct"] = ks_critical(len(pos))
    return out


def fit_families(regret: np.ndarray) -> dict[str, Any]:
    """Exponential and Weibull fits to the positive regrets (the zero atom is reported separately)."""
    regret = np.round(regret, ROUND_DECIMALS)
    pos = regret[regret > 0]
    out: dict[str, Any] = {"p_zero": float(np.mean(regret <= 0)), "positive": int(len(pos))}
    if len(pos) < 20 or np.unique(pos).size < 3:
        out["note"] = "fewer than 20 positive regrets, or fewer than 3 distinct ones: no fit"
        return out
    crit = ks_critical(len(pos))
    scale = float(pos.mean())
    out["exponential"] = {"scale": scale, "ks": float(stats.kstest(pos, "expon", args=(0, scale)).statistic),
                          "crit_5pct": crit}
    shape, _, wscale = stats.weibull_min.fit(pos, floc=0)
    out["weibull"] = {"shape": float(shape), "scale": float(wscale),
                      "ks": float(stats.kstest(pos, "weibull_min", args=(shape, 0, wscale)).statistic), "crit_5pct": crit}
    return out


def agreement(m: dict[str, np.ndarray], cand: Candidates) -> dict[str, float]:
    """Exact match overall and on near ties (hardest decile), and the share of wrong answers that are the
    runner-up (the second-best candidate)."""
    wrong = m["error"] > 0.5
    diff = m["difficulty"]
    near = diff >= np.quantile(diff, 0.9)
    reg = np.where(np.isnan(cand.regret), np.inf, cand.regret)
    order = np.argsort(reg, axis=1, kind="stable")
    second = np.take_along_axis(cand.answer, order[:, 1:2], 1)[:, 0]
    out = {"exact_match": float(1 - wrong.mean()), "near_tie_exact_match": float(1 - wrong[near].mean()),
           "runner_up_share_of_errors": float("nan")}
    if cand.answer.dtype.kind != "f" and wrong.any():  # polymax answers are reals: no runner-up candidate
        out["runner_up_share_of_errors"] = float((m["answer"] == second)[wrong].mean())
    return out
