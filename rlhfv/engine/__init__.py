"""Rollout engines: what samples a pipeline's completions. Two backends return the same `Rollout`.

- `HFEngine`: `rlhfv.rollout.generate` in the trainer's own process, on the trainer's weights.
- `rlhfv.engine.vllm.VLLMEngine`: vLLM in its own process and Python environment (as TRL's
  server mode runs it), or colocated inside the training process (TRL's colocate mode), fed
  the trainer's weights every `sync_every` steps.

A recipe picks one with `rollout.engine: hf | vllm` (`RolloutConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rlhfv.models.base import ChatModel
from rlhfv.rollout import Rollout, generate
from rlhfv.types import Prompt

ENGINES = ("hf", "vllm")
MODES = ("server", "colocate")


@dataclass
class RolloutConfig:
    """Recipe keys under `rollout:`, for pipelines that sample from their policy.

    Attributes:
        engine: "hf" (transformers' generate in the trainer) or "vllm" (a vLLM process).
        mode: vLLM engines: "server" (its own process and environment, synced through a
            weights file; CPU, or a separate GPU) or "colocate" (an engine inside each training
            process, as TRL's default: weights sync in memory, and on GPU it sleeps while
            training runs; needs vllm importable beside rlhfv).
        vllm_python: The engine environment's interpreter ("" = the one `rlhfv engine install
            vllm` made: `$RLHFV_HOME/engines/vllm/bin/python`, else `~/.cache/rlhfv/engines/…`).
        sync_every: Copy the trainer's weights to the engine every this many steps (1: every
            step, on-policy; larger: cheaper, and the samples come from an older policy).
        logprob_gap_warn: Warn when `rollout/logprob_gap` (mean |log π_engine − log π_trainer|
            per completion token) exceeds this (0: never).
        tis_cap: Truncated importance sampling (0: off): each token's loss is weighted by
            min(π_trainer / π_engine, tis_cap), correcting for the engine's sampler differing
            from the trained policy (TRL's vllm_importance_sampling_cap, verl's TIS).
        start_timeout_s: Give up on an engine that is not ready after this long.
        request_timeout_s: Give up on a generate or sync request after this long.
        kv_cache_gb: CPU engines: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE).
        threads: CPU engines: VLLM_CPU_OMP_THREADS_BIND ("auto", "0-1", "nobind" …).
        gpu_memory_utilization: GPU engines: share of the GPU vLLM may take (0: vLLM's default);
            the trainer shares the GPU, so keep it well below 1.
        max_model_len: Longest prompt + completion the engine accepts (0: `max_prompt_tokens`
            + the recipe's `max_new_tokens`, at most the model's positions).
        max_prompt_tokens: The longest prompt (image tokens included) when max_model_len is 0.
        limit_mm_per_prompt: Vision-language policies: the most images one prompt may carry
            (vLLM's `limit_mm_per_prompt`; the engine reserves encoder memory for that many).
        request_seeds: Seed every request from (run.seed, step), so a resumed run or a repeated
            call draws the same samples. Off: the engine's own generator (seeded once at start),
            which on GPU keeps vLLM on its faster batched sampling path.
        seed_per_prompt: "hf" only: sample each prompt's group with generators seeded from
            (run seed, step, the prompt's place in the global batch), instead of the global RNG
            shared by the whole batched generate. A run then draws the same samples on any
            number of processes (the multi-process equivalence tests rely on it); it costs one
            small sampling call per row and token (`rlhfv.rollout.RowSeededSampler`).
    """

    engine: str = "hf"
    mode: str = "server"
    vllm_python: str = ""
    sync_every: int = 1
    logprob_gap_warn: float = 0.1
    tis_cap: float = 0.0
    start_timeout_s: float = 300.0
    request_timeout_s: float = 1800.0
    kv_cache_gb: int = 1
    threads: str = "auto"
    gpu_memory_utilization: float = 0.3
    max_model_len: int = 0
    max_prompt_tokens: int = 2048
    limit_mm_per_prompt: int = 1
    request_seeds: bool = False
    seed_per_prompt: bool = False


def check_rollout_config(rollout: RolloutConfig) -> None:
    """Refuse values that cannot work (the model check is `rlhfv.engine.vllm.check_supported`)."""
    if rollout.engine not in ENGINES:
        raise ValueError(f"rollout.engine = {rollout.engine!r}; choose one of {ENGINES}")
    if rollout.sync_every < 1:
        raise ValueError(f"rollout.sync_every = {rollout.sync_every}; 1 (every step) or more")
    if rollout.seed_per_prompt and rollout.engine != "hf":
        raise ValueError(
            f"rollout.seed_per_prompt with rollout.engine = {rollout.engine!r}: only 'hf' takes row seeds"
        )
    if rollout.tis_cap < 0 or 0 < rollout.tis_cap < 1:
        raise ValueError(f"rollout.tis_cap = {rollout.tis_cap}; 0 (off) or a cap ≥ 1 (TRL uses 2)")
    if rollout.mode not in MODES:
        raise ValueError(f"rollout.mode = {rollout.mode!r}; choose one of {MODES}")
    if rollout.limit_mm_per_prompt < 1:
        raise ValueError(f"rollout.limit_mm_per_prompt = {rollout.limit_mm_per_prompt}; 1 image or more")
    if not 0 <= rollout.gpu_memory_utilization < 1:
        raise ValueError(
            f"rollout.gpu_memory_utilization = {rollout.gpu_memory_utilization}; a share in [0, 1) "
            "(0: vLLM's default), leaving the rest of the GPU to training"
        )


class RolloutEngine(Protocol):
    """Samples G completions per prompt from the policy, and follows the trainer's weights."""

    def generate(
        self, prompts: Sequence[Prompt], group_size: int, labels: Sequence[str], step: int
    ) -> Rollout: ...

    def sync(self, step: int) -> float:
        """Bring the engine's weights up to the trainer's; return the seconds it took."""
        ...

    def close(self) -> None: ...


@dataclass
class HFEngine:
    """Sampling with transformers' generate on the trainer's own module: nothing to sync."""

    policy: ChatModel
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop_strings: Sequence[str] = ()
    synced_gpus: bool = False

    def generate(
        self,
        prompts: Sequence[Prompt],
        group_size: int,
        labels: Sequence[str],
        step: int,
        prompt_seeds: Sequence[int] | None = None,
    ) -> Rollout:
        return generate(
            self.policy,
            prompts,
            group_size,
            self.max_new_tokens,
            self.temperature,
            self.top_p,
            self.stop_strings,
            labels=labels,
            synced_gpus=self.synced_gpus,
            prompt_seeds=prompt_seeds,
        )

    def sync(self, step: int) -> float:
        return 0.0

    def close(self) -> None:
        pass
