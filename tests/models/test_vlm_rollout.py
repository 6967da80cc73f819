"""Every vision builder against the rollout contract the RL pipelines rely on."""

from __future__ import annotations

import pytest

from rlhfv.config import resolve_target
from rlhfv.data.shapes import ShapesVQA
from rlhfv.rollout import generate, sequence_logprobs


@pytest.mark.parametrize(
    "builder",
    ["rlhfv.models.hf_vlm.tiny_qwen2_vl", "rlhfv.models.hf_vlm.tiny_qwen2_5_vl", "rlhfv.models.hf_vlm.tiny_llava",
     "rlhfv.models.hf_vlm.tiny_idefics3", "rlhfv.models.clip_lm.tiny_clip_lm"],
)  # fmt: skip
def test_every_vision_builder_serves_rollouts_and_trains_through_sequence_logprobs(builder):
    """The contract the RL pipelines rely on: grouped sampling on ShapesVQA prompts, then
    differentiable per-token log-probabilities of the sampled completions."""
    model = resolve_target(builder)(seed=1)
    prompts = [ShapesVQA(size=3, image_size=96)[i].prompt for i in range(3)]
    rollout = generate(model, prompts, group_size=2, max_new_tokens=5)
    assert rollout.completion_ids.shape[0] == 6 and len(rollout.texts) == 6
    logprobs = sequence_logprobs(model, rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask)
    assert logprobs.shape == rollout.completion_ids.shape  # [N, T]
    assert (logprobs <= 0).all() and (logprobs[rollout.completion_mask == 0] == 0).all()
    logprobs.sum().backward()
    grads = [p.grad for p in model.module.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
