"""Gemma-3 and SmolVLM/Idefics3 through SFT, DPO and GRPO, as the other tiny families go."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhfv.cli import main as cli
from rlhfv.training.metrics import read_metrics
from tests.pipelines.test_dpo import PAIRS, run_dpo
from tests.pipelines.test_grpo import run as run_grpo

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ["tiny_gemma3", "tiny_idefics3"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sft_lowers_the_loss_on_the_examples_it_repeats(tmp_path, family):
    cfg = OmegaConf.load(ROOT / "recipes" / "sft_shapes.yaml")
    cfg.policy = {"_component_": f"rlhfv.models.hf_vlm.{family}", "seed": 0}
    del cfg["eval_data"]
    OmegaConf.save(cfg, tmp_path / "sft.yaml")
    tiny = ["train_data.size=4", "batch_size=4", "steps=3", "warmup_steps=0", "log_every=1", "eval_every=0"]
    assert cli(["run", str(tmp_path / "sft.yaml"), *tiny, f"run.dir={tmp_path / 'run'}"]) == 0
    losses = [r["loss/sft"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss/sft" in r]
    assert len(losses) == 3 and losses[-1] < losses[0]  # the same 4 examples every step


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_dpo_raises_the_chosen_margin(tmp_path, family):
    policy = {"_component_": f"rlhfv.models.hf_vlm.{family}", "seed": 0}
    _, rows = run_dpo(tmp_path, policy=policy, train_data={**PAIRS, "size": 4}, steps=4)
    assert rows[0]["reward/margin"] == pytest.approx(0.0, abs=1e-5)  # the policy starts as its reference
    assert rows[-1]["reward/margin"] > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_grpo_steps_with_finite_losses_and_logs_rollouts(tmp_path, family):
    rows = run_grpo(
        tmp_path, "kl_coef=0.05", policy={"_component_": f"rlhfv.models.hf_vlm.{family}", "seed": 0}
    )
    steps = [r for r in rows if "loss/policy" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(math.isfinite(r["loss/kl"]) for r in steps)
    assert (tmp_path / "run" / "rollouts.jsonl").is_file()
