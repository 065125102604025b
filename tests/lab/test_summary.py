"""lab.summary: how many runs reach a target, after how many examples, and whether they relapse."""
import json


def test_summary_counts_hits_medians_and_relapses(tmp_path):
    from lab.summary import summarise_runs

    def write(name, values):
        d = tmp_path / name
        d.mkdir()
        rows = [{"step": 10 * i, "examples_seen": 40 * i, "wall_s": float(i), "eval/main": v} for i, v in enumerate(values)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d

    runs = [write("a", [30, 5, 0.05, 0.4, 0.0]), write("b", [30, 0.09]), write("c", [30, 20, 10])]
    s = summarise_runs(runs, 0.1)
    assert (s["reached"], s["total"]) == (2, 3)
    a, b, c = s["runs"]
    assert (a["examples"], a["worst_after"], b["examples"], c["examples"]) == (80, 0.4, 40, None)
    assert s["median_examples"] == 60
