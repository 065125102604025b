"""Detecting learned search from inputs and outputs alone, calibrated on models whose mechanism we know.

Every model, trained or not, is a *solver*: (task, batch) -> logits in the task's own output format,
scored by the task's own ``metrics`` (error, regret). The ground-truth zoo (``zoo``) answers by a
known mechanism and is encoded into logits, so it goes through exactly the evaluation path of the
trained models:

  search      ``loop``: the reference loop over the candidates the example's steps show (the step
              count ties the loop to the problem: with fewer steps it sees fewer candidates);
              ``compiled``: the compiled NTM of compiler/ (modsquare only), a real network doing the loop;
  partial     ``best-of-K``: K candidates drawn uniformly (with replacement) from those shown, the best
              kept: its regret really is the minimum of K draws of a random guess's regret;
  memoriser   ``lookup``: a table of every training-split instance (modsquare), the nearest stored n for
              any other;
  heuristic   a closed form per task: modsquare the largest i with i*i < n; argmax the first value
              >= 1 - 1/L; polymax the best of x in {0, 1/4, 1/2, 3/4, 1};
  trained     the trained MLP of the experiment (a feedforward net: it cannot loop).

Signatures (``signatures``), each from a fixed evaluation batch:
  1. metric vs test-time step multiplier, on easy and hard examples (difficulty below / above median):
     the gain from more steps (error at 0.5x minus at 1x), the best multiplier, the rise after it;
  2. metric vs problem size with steps scaled (extrapolation);
  3. easy-vs-hard gap: error in the hardest minus the easiest difficulty quartile, bootstrap 95% CI;
  4. regret distribution: P(regret = 0), then fits of (a) the minimum of K draws of a uniformly random
     candidate's regret on the same instances (K by least Kolmogorov-Smirnov distance), (b) an
     exponential and (c) a Weibull (the extreme-value family of minima) to the positive regrets, each
     with its KS distance and the 5% critical value;
  5. agreement with the reference search: exact match, on near ties (hardest decile), and how often a
     wrong answer is the runner-up;
  plus, where the task has a held-out split, the memorisation gap: error on held-out minus training instances.

``decide`` is the stated decision rule; ``detect_experiment`` applies it to the zoo and reports how often it is right.

Modules: ``zoo`` (the members; what they do with a task is the task's, tasks.base.SearchTask), ``stats`` (the
fits and intervals, through scipy.stats), ``signatures``, ``rule`` (the decision rule and its bootstrap) and
``report`` (tables, figure, and the drivers of ``eval.py detect``).
"""
from lab.detect.report import (Result, calibration_markdown, detect_experiment, detect_recipe, detect_runs,
                               experiment_for_run, format_shares, markdown, measure, plot, read_reports, row, weights_evidence,
                               write)
from lab.detect.rule import MIN_ERRORS, RULE, bootstrap_verdict, correct, decide
from lab.detect.signatures import DETECT_SEED, Plan, per_example, signatures
from lab.detect.stats import (K_GRID, ROUND_DECIMALS, SHARE_GRID, agreement, easy_hard, fit_families, fit_min_of_k,
                              fit_min_of_share, ks_critical, min_of_k_cdf, share_cdf)
from lab.detect.zoo import (Member, Solver, best_of_k_solver, compiled_solver, heuristic_solver, imprecise_loop_solver,
                            lookup_solver, loop_solver, model_solver, noisy_read_loop_solver, quantised_loop_solver,
                            reset_loop_solver, search_task, subset_loop_solver, tournament_solver, vote_solver,
                            window_solver, zoo)

__all__ = ["Result", "calibration_markdown", "detect_experiment", "detect_recipe", "detect_runs", "weights_evidence", "read_reports", "experiment_for_run", "format_shares",
           "markdown", "measure", "plot", "row", "write", "MIN_ERRORS", "RULE", "bootstrap_verdict", "correct",
           "decide", "DETECT_SEED", "Plan", "per_example", "signatures", "K_GRID", "ROUND_DECIMALS", "agreement",
           "easy_hard", "fit_families", "fit_min_of_k", "ks_critical", "min_of_k_cdf", "SHARE_GRID", "fit_min_of_share",
           "share_cdf", "imprecise_loop_solver", "subset_loop_solver", "window_solver", "quantised_loop_solver",
           "tournament_solver", "noisy_read_loop_solver", "reset_loop_solver", "vote_solver", "Member", "Solver",
           "best_of_k_solver", "compiled_solver", "heuristic_solver", "lookup_solver", "loop_solver", "model_solver",
           "search_task", "zoo"]
