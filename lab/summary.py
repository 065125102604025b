"""Summarise several run directories: who reached a target, after how many examples, and whether
they stayed there.  python -m lab.summary runs/copy10/s* --target 0.1
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from lab.rundir import read_metrics


def summarise_runs(runs: list[Path], target: float, metric: str = "eval/main") -> dict:
    rows = []
    for run in runs:
        m = [r for r in read_metrics(run) if metric in r]
        hit = next((r for r in m if r["step"] > 0 and r[metric] < target), None)
        after = [r[metric] for r in m if hit and r["step"] > hit["step"]]
        rows.append({"run": str(run), "reached": hit is not None,
                     "examples": hit["examples_seen"] if hit else None,
                     "wall_s": round(hit["wall_s"], 1) if hit else None,
                     "final": m[-1][metric] if m else None, "last_examples": m[-1]["examples_seen"] if m else None,
                     "worst_after": max(after) if after else None,
                     "nonfinite_steps": max((r.get("train/nonfinite_steps", 0) for r in m), default=0)})
    hits = [r["examples"] for r in rows if r["reached"]]
    return {"target": target, "metric": metric, "runs": rows, "reached": len(hits), "total": len(rows),
            "median_examples": statistics.median(hits) if hits else None,
            "median_wall_s": statistics.median([r["wall_s"] for r in rows if r["reached"]]) if hits else None}


def main(argv: list[str] | None = None) -> int:
    from lab.cli import Parser

    p = Parser(prog="python -m lab.summary", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--target", type=float, required=True)
    p.add_argument("--metric", default="eval/main")
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    a = p.parse_args(argv)
    for run in a.runs:
        if not (run / "metrics.jsonl").is_file():
            raise ValueError(f"{run} is not a run directory (no metrics.jsonl)")
    if a.json is not None and not a.json.parent.is_dir():
        raise ValueError(f"--json {a.json}: no directory {a.json.parent}")
    s = summarise_runs(a.runs, a.target, a.metric)
    if not any(a.metric in r for run in a.runs for r in read_metrics(run)):
        raise ValueError(f"--metric {a.metric!r}: no run logged it")
    print(f"| run | reached < {a.target} | examples | wall s | final | worst after | non-finite steps |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in s["runs"]:
        print(f"| {r['run']} | {'yes' if r['reached'] else 'no'} | {r['examples'] or ''} | {r['wall_s'] or ''} | "
              f"{r['final']} | {r['worst_after'] if r['worst_after'] is not None else ''} | {r['nonfinite_steps']} |")
    print(f"\n{s['reached']}/{s['total']} reached {a.metric} < {a.target}; median examples {s['median_examples']}, "
          f"median wall s (compile included) {s['median_wall_s']}")
    if a.json:
        a.json.write_text(json.dumps(s, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from lab.cli import run_cli

    sys.exit(run_cli(main))
