"""experiments/textchecks_spct_table.py: the SPCT table's figures from `rlhfv eval grm --out` files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "textchecks_spct_table.py"


def eval_file(path: Path, credits: dict[str, list[float]], ids: list[str] | None = None) -> str:
    """An eval JSON as `rlhfv eval grm --out` writes it, reduced to what the table reads."""
    n = len(next(iter(credits.values())))
    ids = ids or [f"textchecks-test-0-{i}" for i in range(n)]
    per_item = [{"id": ids[i], **{way: c[i] for way, c in credits.items()}} for i in range(n)]
    metrics = {}
    if "greedy" in credits:
        half = sum(credits["greedy"]) / n
        metrics = {
            "greedy/accuracy": {"mean": half, "ci95_low": 0.0, "ci95_high": 1.0, "n": n},
            "greedy/strict_accuracy": {"mean": 0.0, "ci95_low": 0.0, "ci95_high": 1.0, "n": n},
            "greedy/tie_rate": 0.0,
        }
    path.write_text(json.dumps({"per_item": per_item, "seconds": 1.0, "metrics": {"all": metrics}}))
    return str(path)


def table(*runs: str, out: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, str(SCRIPT), "--out", str(out)]
    for run in runs:
        args += ["--run", run]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT)


def test_paired_differences_within_and_across_judges(tmp_path):
    a = eval_file(
        tmp_path / "a.json",
        {
            "greedy": [0.5, 0.5, 0.5, 0.5],
            "voting@1": [1, 0, 0.5, 0],
            "voting@8": [1, 1, 0.5, 0],
            "voting@16": [1, 1, 1, 0],
        },
    )
    b = eval_file(
        tmp_path / "b.json",
        {
            "greedy": [1, 0.5, 1, 0.5],
            "voting@1": [1, 1, 1, 0],
            "voting@8": [1, 1, 1, 1],
            "voting@16": [1, 1, 1, 1],
            "meta@8": [0, 1, 1, 1],
            "meta@16": [0, 0, 1, 1],
        },
    )
    done = table(f"A={a}", f"B={b}", out=tmp_path / "t.json")
    assert done.returncode == 0, done.stderr
    paired = json.loads((tmp_path / "t.json").read_text())["paired"]
    assert paired["A: voting@8 − voting@1"]["half"]["diff"] == 0.25
    # strict: the tie at item 2 counts as wrong on both sides
    assert paired["A: voting@8 − voting@1"]["strict"]["diff"] == 0.25
    assert paired["A: voting@16 − voting@1"]["strict"]["diff"] == 0.5
    assert paired["B: meta@16 − voting@16"]["half"]["diff"] == -0.5
    assert paired["B − A, greedy"]["half"]["diff"] == 0.25
    assert paired["B − A, greedy"]["strict"] is None  # a two-order mean has no per-item strict credit
    assert "A: meta@8 − voting@8" not in paired  # A has no meta-RM
    assert "| B − A, greedy | 4 | n/a | +0.250" in done.stdout


def test_judges_on_different_items_are_refused(tmp_path):
    a = eval_file(tmp_path / "a.json", {"voting@1": [1, 0], "voting@8": [1, 1]})
    b = eval_file(tmp_path / "b.json", {"voting@1": [1, 0], "voting@8": [1, 1]}, ids=["x", "y"])
    done = table(f"A={a}", f"B={b}", out=tmp_path / "t.json")
    assert done.returncode != 0
    assert "judged different items" in done.stderr
