"""The DPO and reward-model recipes: their tiny variants run every stage through `rlhfv run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfv.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


def tiny_overrides(run_dir: Path, stage: str) -> list[str]:
    """A 2-step SFT, then 2 steps of `stage` on pairs a barely trained policy splits
    (`ParityGraded`: an even number of characters passes)."""
    pairs = [
        f"stages.{stage}.{part}.{key}"
        for part in ("train_data", "eval_pairs")
        for key in ("data._component_=tests.data.test_pairs.ParityGraded", "data.size=6", "max_new_tokens=6")
    ]
    return [
        f"run.dir={run_dir}",
        "stages.sft.steps=2",
        "stages.sft.train_data.size=16",
        "stages.sft.eval_data.size=2",
        "stages.sft.batch_size=2",
        "stages.sft.warmup_steps=1",
        *pairs,
        f"stages.{stage}.steps=2",
        f"stages.{stage}.batch_size=2",
        f"stages.{stage}.log_every=1",
        f"stages.{stage}.eval_every=0",
    ]


@pytest.mark.slow
def test_dpo_recipe_tiny_variant_runs_and_reports_accuracy_before_and_after(tmp_path, caplog):
    extra = ["stages.dpo.eval_data.size=2", "stages.dpo.max_new_tokens=4"]
    with caplog.at_level("INFO", logger="rlhfv"):
        assert (
            cli(["run", str(ROOT / "recipes" / "dpo_shapes.yaml"), *tiny_overrides(tmp_path, "dpo"), *extra])
            == 0
        )
    summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
    assert {"before/accuracy", "after/accuracy", "after/reward_accuracy"} <= set(summary)
    assert (
        "held-out accuracy by stage" in caplog.text
        and (tmp_path / "dpo" / "final" / "rlhfv_model.json").is_file()
    )


@pytest.mark.slow
def test_rm_recipe_tiny_variant_prints_pairwise_accuracy(tmp_path, caplog):
    with caplog.at_level("INFO", logger="rlhfv"):
        assert cli(["run", str(ROOT / "recipes" / "rm_shapes.yaml"), *tiny_overrides(tmp_path, "rm")]) == 0
    summary = json.loads((tmp_path / "rm" / "summary.json").read_text())
    assert 0.0 <= summary["after/pairwise_accuracy"] <= 1.0 and "before/pairwise_accuracy" in summary
    assert "held-out pairwise accuracy: before" in caplog.text
    assert (tmp_path / "rm" / "final" / "score_head.safetensors").is_file()
