"""recipes/grlhfv_vlm.yaml's tiny variant: the same five stages from a saved tiny ClipLM in place
of the instruction-tuned pretrained MLLM (the loader, LoRA, the compact judge and the ceiling
stage all take the same code path)."""

from __future__ import annotations

import json
from pathlib import Path

from rlhfv.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


def test_grlhfv_vlm_tiny_variant_runs_every_stage_from_a_saved_clip_lm(tmp_path):
    from rlhfv.models.base import save_model
    from rlhfv.models.clip_lm import tiny_clip_lm

    start = tmp_path / "start"
    save_model(tiny_clip_lm(seed=0), start)
    overrides = [
        f"run.dir={tmp_path / 'run'}",
        "run.dtype=float32",
        f"stages.grm_drill.policy.path={start}",
        "stages.grm_drill.steps=1",
        "stages.grm_drill.batch_size=2",
        "stages.grm_drill.eval_data.size=2",
        "stages.grm_sft.steps=1",
        "stages.grm_sft.batch_size=2",
        "stages.grm_sft.train_data.pairs.size=8",
        "stages.grm_rl.steps=1",
        "stages.grm_rl.prompts_per_step=1",
        "stages.grm_rl.group_size=2",
        "stages.grm_rl.max_new_tokens=4",
        "stages.grm_rl.train_data.pairs.data._component_=tests.data.test_pairs.ParityGraded",
        "stages.grm_rl.train_data.pairs.data.size=6",
        "stages.grm_rl.train_data.pairs.max_new_tokens=4",
        "stages.grm_rl.log_rollouts_every=1",
        "stages.policy_rl.steps=1",
        "stages.policy_rl.prompts_per_step=1",
        "stages.policy_rl.group_size=3",
        "stages.policy_rl.max_new_tokens=4",
        "stages.policy_rl.reward.reward.judge.max_new_tokens=4",
        "stages.policy_rl.reward.every=1",
        "stages.policy_rl.log_rollouts_every=1",
    ]
    assert cli(["run", str(ROOT / "recipes" / "grlhfv_vlm.yaml"), *overrides]) == 0
    run = tmp_path / "run"
    for stage in ("grm_drill", "grm_sft", "grm_rl", "policy_rl", "policy_rl_exact"):
        assert (run / stage / "final" / "model.safetensors").is_file(), stage
    judge_row = json.loads((run / "grm_rl" / "rollouts.jsonl").read_text().splitlines()[0])
    assert len(judge_row["readings"]) == 2  # the GRM wrote its own answer before each judgement
    metrics = [json.loads(line) for line in (run / "policy_rl" / "metrics.jsonl").read_text().splitlines()]
    assert any("monitor/judge_decisive_pairs" in m for m in metrics)  # the agreement monitor ran
    exact = [
        json.loads(line) for line in (run / "policy_rl_exact" / "metrics.jsonl").read_text().splitlines()
    ]
    assert not any("monitor/judge_decisive_pairs" in m for m in exact)  # the ceiling has no judge
