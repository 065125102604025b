"""Compare the runs of one experiment: metric vs size, vs test-time steps, easy vs hard, and
what the NTM's heads do (weightings over time and a "loopiness" number).

Writes into ``runs/<experiment>/report/``: ``results.json``, ``results.md`` and PNG figures.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lab import evaluation, figures, models
from lab.experiments import Experiment
from lab.rundir import RunDirError, examples_before, load_run
from tasks import SearchTask

QUANTILES = 4  # difficulty bins for easy vs hard


def loopiness(weights: np.ndarray, steps: np.ndarray) -> float:
    """Fraction of steps on which a head's focus (argmax row) moves by exactly one slot.

    weights [T, B, heads, N], steps [B]. Counts transitions t-1 -> t for 1 <= t < steps[b].
    """
    T, B, H, N = weights.shape
    pos = weights.argmax(-1)  # [T, B, H]
    delta = np.mod(pos[1:] - pos[:-1], N)  # [T-1, B, H]
    moved_one = (delta == 1) | (delta == N - 1)
    valid = (np.arange(1, T)[:, None] < steps[None, :])[..., None]  # [T-1, B, 1]
    valid = np.broadcast_to(valid, moved_one.shape)
    return float(moved_one[valid].mean()) if valid.any() else float("nan")


def write_on_improvement(weights: np.ndarray, improved: np.ndarray, shown: np.ndarray) -> dict[str, float]:
    """How sharply the write heads write when the running best improves, against the other steps.

    weights [T, B, heads, N]; improved, shown [T, B] bool (a task's ``improvements``). The peak of a
    step is its largest write weight over heads and rows: near 1 is a focused write, near 1/N a
    diffuse one. A model keeping the loop's best in memory writes sharply on improvements only.
    """
    T = min(weights.shape[0], improved.shape[0])
    peak = weights[:T].max(axis=(-1, -2))  # [T, B]
    imp, other = improved[:T], shown[:T] & ~improved[:T]
    return {"improvement": float(peak[imp].mean()) if imp.any() else float("nan"),
            "other": float(peak[other].mean()) if other.any() else float("nan"),
            "improvement_steps": int(imp.sum()), "other_steps": int(other.sum())}


def gated_writes(aux: dict[str, Any]) -> np.ndarray:
    """[T, B, heads, N] what each write head writes with: its weighting scaled by its gate (ntm.NTMConfig.write_gate;
    the NTM's trace gives gates of 1 without the option, so this is then the weighting itself)."""
    w = np.asarray(aux["write_weights"])
    return w * np.asarray(aux["write_gates"])[..., None] if "write_gates" in aux else w


def register_writes(weights: np.ndarray, improved: np.ndarray) -> np.ndarray:
    """[N] how many improving steps put their largest write weight on each memory row (weights [T, B, heads, N],
    improved [T, B]): the register is the argmax, the share of improving steps it takes the max over the sum."""
    T = min(weights.shape[0], improved.shape[0])
    return np.bincount(weights[:T].max(axis=2)[improved[:T]].argmax(-1), minlength=weights.shape[-1])


def quantile_bins(difficulty: np.ndarray, values: np.ndarray, q: int = QUANTILES) -> list[dict[str, float]]:
    """Mean (and s.e.) of ``values`` in q equal-count bins of difficulty, easiest first."""
    order = np.argsort(difficulty, kind="stable")
    out = []
    for i, idx in enumerate(np.array_split(order, q)):
        v = values[idx].astype(np.float64)
        out.append({"quantile": i + 1, "difficulty_lo": float(difficulty[idx].min()),
                    "difficulty_hi": float(difficulty[idx].max()), "mean": float(v.mean()),
                    "sem": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0, "examples": len(idx)})
    return out


def find_runs(exp: Experiment, root: Path) -> dict[str, list[Path]]:
    """label -> run directories (with a checkpoint) under runs/<experiment>/."""
    found: dict[str, list[Path]] = defaultdict(list)
    base = root / exp.name
    if not base.is_dir():
        raise RunDirError(f"no runs for experiment {exp.name} in {base}; train them with "
                          f"`python train.py --experiment {exp.name}`")
    labels = {s.label for s in exp.models}
    for d in sorted(base.iterdir()):
        m = re.fullmatch(r"(.+)-s(\d+)", d.name)  # <label>-s<seed>; not a run moved aside by --overwrite
        if m and m.group(1) in labels and (d / "config.json").exists() and (d / "checkpoints").is_dir():
            label = m.group(1)
            found[label].append(d)
    if not found:
        raise RunDirError(f"{base} holds no finished runs of experiment {exp.name}")
    return found


def evaluate_one(exp: Experiment, run: Path, batch_size: int) -> dict[str, Any]:
    cfg, task, model, step = load_run(run)
    ev = evaluation.Evaluator.of(model)
    main = task.main_metric
    rec: dict[str, Any] = {"run": str(run), "model": cfg.model, "seed": cfg.seed, "checkpoint_step": step,
                           "examples_seen": step * cfg.batch_size + examples_before(cfg), "init_from": cfg.init_from,
                           "params": models.count_params(model),
                           "main_metric": main, "by_size": [], "by_scale": [], "by_difficulty": {}}
    rec["by_size"] = [evaluation.evaluate_on(ev, lambda s=size: exp.eval_task(s), batch_size, size=size)
                      for size in exp.eval_sizes]
    hi = exp.train_sizes[1]
    rec["by_scale"] = [evaluation.evaluate_on(ev, lambda c=scale: exp.eval_task(hi, c), batch_size, scale=scale, size=hi)
                       for scale in exp.scales]
    # easy vs hard over the whole training range (held-out instances where the task has them)
    t = exp.eval_task(exp.train_sizes[0]).with_sizes(*exp.train_sizes)
    batch = evaluation.fixed_batch(t, 4 * batch_size, seed=evaluation.EVAL_SEED + 1)
    logits, aux = ev.forward(batch)
    per = {k: np.asarray(v) for k, v in evaluation.task_metrics(t)(logits, batch).items()}
    diff = np.asarray(batch.difficulty)
    rec["by_difficulty"] = {k: quantile_bins(diff, per[k]) for k in (main, "loss") if k in per}
    if "read_weights" in aux:
        steps = np.asarray(batch.steps)
        rec["loopiness"] = {k: loopiness(np.asarray(aux[k]), steps) for k in ("read_weights", "write_weights")}
        try:  # tasks with a running best (argmax, modsquare with hint=value) say where it improves
            improved, shown = (np.asarray(x) for x in t.improvements(batch)) if isinstance(t, SearchTask) else (None, None)
        except ValueError:  # the task does not show the values (e.g. modsquare with another hint)
            improved = None
        if improved is not None:
            rec["write_on_improvement"] = write_on_improvement(gated_writes(aux), improved, shown)
    return rec


def aggregate(records: list[dict[str, Any]], key: str, x: str) -> list[dict[str, Any]]:
    """Mean over seeds (and the spread) of the main metric along ``x`` of ``records[*][key]``."""
    main = records[0]["main_metric"]
    rows = []
    for i, r0 in enumerate(records[0][key]):
        vals = [r[key][i][main] for r in records if main in r[key][i]]
        row = {x: r0[x], "seeds": len(vals)}
        if vals:
            row.update(mean=float(np.mean(vals)), min=float(np.min(vals)), max=float(np.max(vals)))
        else:
            row["skipped"] = records[0][key][i].get("skipped", "")
        rows.append(row)
    return rows


def compare(exp: Experiment, root: str | Path = "runs", batch_size: int = 256) -> dict[str, Any]:
    root = Path(root)
    runs = find_runs(exp, root)
    per_label = {label: [evaluate_one(exp, r, batch_size) for r in dirs] for label, dirs in runs.items()}
    order = [s.label for s in exp.models if s.label in per_label]
    report: dict[str, Any] = {"experiment": exp.name, "description": exp.description, "task": exp.task,
                              "train_sizes": list(exp.train_sizes),
                              "budget_examples": max(r["examples_seen"] for rs in per_label.values() for r in rs),
                              "main_metric": next(iter(per_label.values()))[0]["main_metric"], "models": {},
                              "init_from": sorted({r["init_from"] for rs in per_label.values() for r in rs if r["init_from"]})}
    for label in order:
        recs = per_label[label]
        report["models"][label] = {
            "params": recs[0]["params"], "seeds": [r["seed"] for r in recs],
            "examples_seen": [r["examples_seen"] for r in recs],
            "by_size": aggregate(recs, "by_size", "size"), "by_scale": aggregate(recs, "by_scale", "scale"),
            "by_difficulty": _mean_bins([r["by_difficulty"] for r in recs]),
            "loopiness": _mean_dict([r["loopiness"] for r in recs if "loopiness" in r]),
            "write_on_improvement": _mean_dict([r["write_on_improvement"] for r in recs if "write_on_improvement" in r]),
            "runs": recs,
        }
    out = root / exp.name / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report))
    _figures(exp, report, per_label, out)
    return report


def _mean_bins(items: list[dict[str, list[dict[str, float]]]]) -> dict[str, list[dict[str, float]]]:
    out = {}
    for k in items[0]:
        bins = []
        for i, b in enumerate(items[0][k]):
            vals = [it[k][i]["mean"] for it in items]
            bins.append({**{kk: b[kk] for kk in ("quantile", "difficulty_lo", "difficulty_hi")},
                         "mean": float(np.mean(vals)), "min": float(np.min(vals)), "max": float(np.max(vals))})
        out[k] = bins
    return out


def _mean_dict(items: list[dict[str, float]]) -> dict[str, float] | None:
    return {k: float(np.mean([d[k] for d in items])) for k in items[0]} if items else None


def _fmt(row: dict[str, Any]) -> str:
    if "mean" not in row:
        return "n/a"
    return f"{row['mean']:.3g}" if row["seeds"] == 1 else f"{row['mean']:.3g} [{row['min']:.3g}, {row['max']:.3g}]"


def markdown(report: dict[str, Any]) -> str:
    main, (lo, hi) = report["main_metric"], report["train_sizes"]
    first = next(iter(report["models"].values()))
    sizes = [r["size"] for r in first["by_size"]]
    scales = [r["scale"] for r in first["by_scale"]]
    head = " | ".join(f"{s}{'' if lo <= s <= hi else ' (beyond)'}" for s in sizes)
    lines = [f"### {report['experiment']}: {report['description']}", "",
             f"{main} (lower is better), mean over seeds [min, max]; trained on sizes {lo}-{hi}, "
             f"{report['budget_examples']:,} examples each"
             + (" (counting the runs each started from: " + ", ".join(sorted(report["init_from"])) + ")" if report.get("init_from") else "")
             + ".", "",
             f"| model | params | seeds | {head} |", "|---|---:|---:|" + "---:|" * len(sizes)]
    for label, m in report["models"].items():
        lines.append(f"| {label} | {m['params']:,} | {len(m['seeds'])} | " + " | ".join(_fmt(r) for r in m["by_size"]) + " |")
    lines += ["", f"{main} at size {hi} vs test-time step multiplier:", "",
              "| model | " + " | ".join(f"{c}x" for c in scales) + " |", "|---|" + "---:|" * len(scales)]
    for label, m in report["models"].items():
        lines.append(f"| {label} | " + " | ".join(_fmt(r) for r in m["by_scale"]) + " |")
    lines += ["", f"{main} by difficulty quartile (training sizes; 1 = easiest):", "",
              "| model | " + " | ".join(f"Q{i + 1}" for i in range(QUANTILES)) + " | loopiness (read, write) |"
              + " write peak (new best, other steps) |",
              "|---|" + "---:|" * (QUANTILES + 2)]
    for label, m in report["models"].items():
        bins = m["by_difficulty"].get(main, [])
        loop = m["loopiness"]
        lp = f"{loop['read_weights']:.2f}, {loop['write_weights']:.2f}" if loop else ""
        wi = m.get("write_on_improvement")
        wp = f"{wi['improvement']:.2f}, {wi['other']:.2f}" if wi else ""
        lines.append(f"| {label} | " + " | ".join(f"{b['mean']:.3g}" for b in bins) + f" | {lp} | {wp} |")
    return "\n".join(lines) + "\n"


def _figures(exp: Experiment, report: dict[str, Any], per_label: dict[str, list[dict[str, Any]]], out: Path) -> None:
    plt = figures._plt()
    main = report["main_metric"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, m in report["models"].items():
        pts = [(r["size"], r["mean"], r["min"], r["max"]) for r in m["by_size"] if "mean" in r]
        if pts:
            x, y, a, b = map(np.array, zip(*pts))
            axes[0].plot(x, y, marker="o", label=label)
            axes[0].fill_between(x, a, b, alpha=0.15)
        pts = [(r["scale"], r["mean"], r["min"], r["max"]) for r in m["by_scale"] if "mean" in r]
        if pts:
            x, y, a, b = map(np.array, zip(*pts))
            axes[1].plot(x, y, marker="o", label=label)
            axes[1].fill_between(x, a, b, alpha=0.15)
        bins = m["by_difficulty"].get(main, [])
        if bins:
            axes[2].plot([b["quantile"] for b in bins], [b["mean"] for b in bins], marker="o", label=label)
    axes[0].axvspan(*exp.train_sizes, color="gray", alpha=0.15, label="training sizes")
    axes[0].set(xlabel="size", ylabel=main, title=f"{exp.name}: {main} vs size")
    axes[1].set(xlabel="test-time step multiplier", ylabel=main, xscale="log", title=f"size {exp.train_sizes[1]}: vs steps")
    axes[2].set(xlabel="difficulty quartile (1 = easiest)", ylabel=main, title="easy vs hard (training sizes)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=120)
    plt.close(fig)
    if "ntm" in per_label:
        _, task, model, _ = load_run(per_label["ntm"][0]["run"])
        size = exp.train_sizes[1]
        t = exp.eval_task(size)
        trace = evaluation.example_trace(model, t, size)
        figures.head_picture(trace, out / "ntm_heads.png", title=f"{exp.name}: NTM on one example of size {size}")
