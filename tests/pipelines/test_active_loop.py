"""The active loop: rounds of sample → score → queue → label → export → retrain, its stopping
rules and bad input, and kill -9 at each phase followed by run.resume=auto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfv.cli import main as cli
from rlhfv.store.store import NewTask, Store

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes" / "active_loop_shapes.yaml")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from rlhfv.models.base import save_model
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model(tiny_qwen2_vl(seed=0), path)
    return path


def tiny(run_dir: Path, model: Path, *extra: str) -> list[str]:
    """The recipe cut to seconds: tiny models, a parity checker a random policy's answers split."""
    parity = "tests.data.test_pairs.ParityGraded"
    return [
        f"run.dir={run_dir}", "run.resume=auto", f"policy.path={model}", f"grm.path={model}",
        f"pool._component_={parity}", "pool.size=6", "pool.tasks=[count]",
        "samples=3", "max_new_tokens=6", "judge_samples=2", "judge_max_new_tokens=6", "judge_force=true",
        "per_round=2", "rounds=2", "overlap=2", "simulated.count=2", "poll_s=0.05", "store_backoff_s=0.01",
        "grm_train.steps=2", "grm_train.batch_size=2", "grm_train.warmup_steps=0", "grm_train.eval_batch_size=4",
        "grm_train.max_new_tokens=6", f"grm_train.eval_data.pairs.data._component_={parity}",
        "grm_train.eval_data.pairs.data.size=4", "grm_train.eval_data.pairs.data.tasks=[count]",
        "grm_train.eval_data.pairs.max_new_tokens=6", "grm_train.eval_data.pairs.samples=3", *extra,
    ]  # fmt: skip


def loop_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "loop_state.json").read_text())


def check_store(run_dir: Path, rounds: int, per_round: int = 2, overlap: int = 2) -> None:
    """Each round's tasks queued once, each with exactly `overlap` labels, none counted twice."""
    store = Store(run_dir / "store.db")
    progress = store.task_progress("loop:")
    labels = store.labels()
    store.close()
    ids = list(progress)
    assert len(ids) == len(set(ids)) == rounds * per_round
    assert sorted({i.split(":")[2] for i in ids}) == [f"r{r}" for r in range(1, rounds + 1)]
    assert all(p.labels == overlap for p in progress.values())
    assert (
        len(labels)
        == len({(row["task_id"], row["annotator"]) for row in labels})
        == rounds * per_round * overlap
    )
    history = loop_state(run_dir)["history"]
    assert [h["round"] for h in history] == list(range(1, rounds + 1))
    assert [h["labels/used"] for h in history] == [r * per_round * overlap for r in range(1, rounds + 1)]


@pytest.mark.slow
def test_the_tiny_loop_runs_its_rounds_and_reports_accuracy_per_round(tmp_path, tiny_model, capsys):
    assert cli(["run", RECIPE, *tiny(tmp_path / "run", tiny_model)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rounds"] == 2 and out["labels_by_round"] == [4, 8] and len(out["accuracy_by_round"]) == 2
    assert out["stopped"] == "all 2 rounds done"
    check_store(tmp_path / "run", rounds=2)
    # each round trained from the starting GRM on the pairs of all labels so far, and judged the next
    assert (tmp_path / "run" / "round_2" / "grm" / "final").is_dir()
    assert loop_state(tmp_path / "run")["grm"].endswith("round_2/grm/final")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "grm/accuracy" in r] == [1, 2]
    assert all("loop/unparsable" in r for r in rows if "grm/accuracy" in r)
