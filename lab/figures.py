"""PNG figures, drawn only from files in run directories (metrics.jsonl) and evaluation outputs.

matplotlib is imported lazily with the Agg backend, so importing this module costs nothing and
works without a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(runs: Sequence[tuple[str, list[dict[str, Any]]]], path: str | Path, metric: str = "eval/main",
                    ylabel: str = "eval main metric", target: float | None = None) -> Path:
    """Held-out metric and training loss vs examples seen, one line per run."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in runs:
        ev = [(r["examples_seen"], r[metric]) for r in rows if metric in r]
        tr = [(r["examples_seen"], r["train/loss"]) for r in rows if "train/loss" in r]
        if ev:
            ax1.plot(*zip(*ev), label=label)
        if tr:
            ax2.plot(*zip(*tr), label=label)
    if target is not None:
        ax1.axhline(target, color="k", ls=":", lw=1, label=f"target {target:g}")
    for ax, title in ((ax1, ylabel + " (held-out batch)"), (ax2, "training loss (nats / sequence)")):
        ax.set_xlabel("examples seen")
        ax.set_title(title)
        ax.set_yscale("symlog", linthresh=0.1)
        ax.grid(alpha=0.3)
    if len(runs) <= 12:
        ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _focus_rows(weights: list[np.ndarray], pad: int = 2) -> tuple[int, int]:
    """Memory rows that any head weights by > 1% at some step (plus a margin), so that a 128-row
    memory used over 20 rows is readable."""
    used = np.zeros(weights[0].shape[-1], bool)
    for w in weights:
        used |= (w > 0.01).reshape(-1, w.shape[-1]).any(0)
    idx = np.flatnonzero(used)
    if idx.size == 0:
        return 0, weights[0].shape[-1]
    return max(0, idx[0] - pad), min(len(used), idx[-1] + pad + 1)


def head_picture(trace: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Graves 2014 Fig. 6: inputs, targets, outputs and (NTM) write/read weightings over time.

    ``trace`` holds [T, X] inputs, [T, Y] targets/outputs, [T, heads, N] weightings and, for an NTM with a write
    gate, [T, heads] write gates (the write panels then show the weighting times the gate).
    """
    from lab.compare import gated_writes

    plt = _plt()
    heads = [(k, gated_writes(trace) if k == "write_weights" else trace[k])  # what is written: weighting x gate
             for k in ("write_weights", "read_weights") if k in trace]
    n_panels = 3 + sum(w.shape[1] for _, w in heads)
    fig, axes = plt.subplots(n_panels, 1, figsize=(max(6, 0.16 * len(trace["inputs"])), 1.6 * n_panels),
                             sharex=True, squeeze=False)
    axes = axes[:, 0]
    panels: list[tuple[str, np.ndarray, str]] = [
        ("inputs", trace["inputs"], "gray_r"),
        ("targets (scored steps)", trace["targets"] * trace["mask"][:, None], "gray_r"),
        ("outputs (probability)", trace["outputs"] * trace["mask"][:, None], "gray_r"),
    ]
    if heads:
        lo, hi = _focus_rows([w for _, w in heads])
        gate = " x gate" if "write_gates" in trace and not np.all(trace["write_gates"] == 1) else ""
        for name, w in heads:
            for h in range(w.shape[1]):
                label = f"{name.split('_')[0]} head {h} weighting{gate if name == 'write_weights' else ''}"
                panels.append((f"{label} (rows {lo}-{hi - 1})", w[:, h, lo:hi], "viridis"))
    for i, (ax, (label, img, cmap)) in enumerate(zip(axes, panels)):
        vmax = 1.0 if i < 3 else max(float(img.max()), 1e-6)  # weightings: own scale, so diffuse ones show
        ax.imshow(img.T, aspect="auto", cmap=cmap, interpolation="nearest", vmin=0, vmax=vmax, origin="lower")
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_yticks([])
    axes[-1].set_xlabel("time step")
    return _save(plt, fig, path, title, dpi=120)


def _save(plt: Any, fig: Any, path: str | Path, title: str = "", dpi: int = 110) -> Path:
    """Title, tight layout, write the PNG, close the figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def metric_vs_size(reports: Sequence[dict[str, Any]], path: str | Path, metric: str | None = None) -> Path:
    """Metric vs problem size, one line per report, training range shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for rep in reports:
        m = metric or rep["main_metric"]
        pts = [(r["size"], r[m], r.get(m + "_sem", 0.0)) for r in rep["rows"] if m in r]
        if pts:
            x, y, e = map(np.array, zip(*pts))
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=f"{rep['model']} s{rep['seed']}")
    lo, hi = reports[0]["train_sizes"]
    ax.axvspan(lo, hi, color="gray", alpha=0.15, label="training sizes")
    ax.set_xlabel("size")
    ax.set_ylabel(metric or reports[0]["main_metric"])
    ax.set_yscale("symlog", linthresh=0.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def query_trajectories(curves: dict[str, np.ndarray], polys: np.ndarray, queries: dict[str, np.ndarray],
                       path: str | Path, title: str = "") -> Path:
    """Where each strategy queries a few polynomials: one panel per polynomial (P on [0, 1], grey; each
    strategy's queries in order, joined) and a last panel of the median regret of the best query so far vs
    the number of queries. ``polys`` [n, G] is P on an even grid; ``queries`` name -> [n, Q] (x, and P(x) as
    [2, n, Q]); ``curves`` name -> [Q] median best-so-far regret."""
    plt = _plt()
    n = polys.shape[0]
    fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.2))
    grid = np.linspace(0, 1, polys.shape[1])
    colors = dict(zip(queries, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for i in range(n):
        ax = axes[i]
        ax.plot(grid, polys[i], color="0.6", lw=1)
        for name, (x, p) in queries.items():
            ax.plot(x[i], p[i], "o-", ms=3, lw=0.6, color=colors[name], label=name, alpha=0.8)
        ax.set_xlabel("x")
        ax.set_title(f"polynomial {i + 1}", fontsize=9)
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for name, c in curves.items():
        ax.plot(np.arange(1, len(c) + 1), np.maximum(c, 1e-6), "o-", ms=3, color=colors.get(name), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("queries")
    ax.set_title("median regret of the best query so far", fontsize=9)
    ax.legend(fontsize=7)
    return _save(plt, fig, path, title)
