"""Sampling alone: tokens/s of transformers' generate against the vLLM engine, and both against
the memory-bandwidth limit of decoding.

    python benchmarks/sampling_hf_vs_vllm.py                       # SmolLM2-135M, B=1 and B=8, G=8
    python benchmarks/sampling_hf_vs_vllm.py --rounds 5 --max-new-tokens 48

One process holds the HF model (on `--threads` torch threads) and one vLLM engine, and they take
turns on the same prompts, round after round, so that load from other programs on the machine
hits both alike; the median round is reported. Decoding a batch reads every weight once per
step, so with W weight bytes and a memory bandwidth of M bytes/s a step takes at least W / M
seconds and a batch of N rows can make at most N · M / W tokens/s. M is measured here with a
large tensor copy (bytes read + bytes written over the time). Needs `rlhfv engine install vllm`
and `rlhfv models pull smollm2-135m-instruct`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from grpo_vs_trl import QUESTIONS  # the same prompts as the GRPO comparison (benchmarks/ is on sys.path)

from rlhfv.engine import RolloutConfig
from rlhfv.engine.vllm import VLLMEngine
from rlhfv.models.text_lm import load_text_lm
from rlhfv.rollout import generate
from rlhfv.types import Prompt


def memory_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Bytes/s of a large copy (read + write), the best of a few."""
    src = torch.empty(mib * 2**20 // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - began)
    return 2 * src.numel() * 4 / best


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", default="1,8", help="comma list of B")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the HF side")
    p.add_argument(
        "--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="sampling precision, both"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_text_lm(args.model)
    policy.module.eval()
    bandwidth = memory_bandwidth()
    weight_bytes = sum(p.numel() for p in policy.module.parameters()) * (2 if args.dtype == "bfloat16" else 4)
    print(
        f"{args.model}: {weight_bytes / 1e6:.0f} MB of {args.dtype} weights; copy bandwidth {bandwidth / 1e9:.1f} GB/s; "
        f"HF on {args.threads} thread(s); load average {load_average()}",
        flush=True,
    )
    settings = RolloutConfig(engine="vllm", logprob_gap_warn=0.0)
    engine = VLLMEngine(policy, settings, args.max_new_tokens, 1.0, 1.0, [], args.dtype, 0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    results = {}
    try:
        for b in (int(x) for x in args.prompts.split(",")):
            prompts = [Prompt(QUESTIONS[i % len(QUESTIONS)]) for i in range(b)]
            n = b * args.group_size
            engine.generate(prompts, args.group_size, [""] * b, step=0)  # warm-up
            rounds: dict[str, list[tuple[float, int, int]]] = {"hf": [], "vllm": []}
            for r in range(args.rounds):
                for kind in ("hf", "vllm"):
                    began = time.perf_counter()
                    if kind == "hf":
                        with autocast:
                            rollout = generate(policy, prompts, args.group_size, args.max_new_tokens)
                    else:
                        rollout = engine.generate(prompts, args.group_size, [""] * b, step=r + 1)
                    seconds = time.perf_counter() - began
                    tokens = int(rollout.completion_mask.sum())
                    rounds[kind].append((seconds, tokens, rollout.completion_ids.shape[1]))
            row = {"load_average": load_average()}
            for kind, runs in rounds.items():
                seconds, tokens, steps = sorted(runs)[len(runs) // 2]  # the median round
                limit = n * bandwidth / weight_bytes  # tokens/s when every step only reads weights
                row[kind] = {
                    "seconds": seconds,
                    "tokens": tokens,
                    "tokens_per_s": tokens / seconds,
                    "decode_steps": steps,
                    "limit_tokens_per_s": limit,
                    "share_of_limit": tokens / seconds / limit,
                    "all_seconds": [round(x[0], 2) for x in runs],
                }
            row["ratio"] = row["vllm"]["tokens_per_s"] / row["hf"]["tokens_per_s"]
            results[f"B={b} G={args.group_size}"] = row
            print(
                f"B={b} G={args.group_size}: HF {row['hf']['tokens_per_s']:.0f} tok/s "
                f"({row['hf']['share_of_limit']:.1%} of the bandwidth limit), vLLM {row['vllm']['tokens_per_s']:.0f} tok/s "
                f"({row['vllm']['share_of_limit']:.1%}); vLLM/HF {row['ratio']:.2f}x; limit {row['hf']['limit_tokens_per_s']:.0f} tok/s; "
                f"load {row['load_average']}",
                flush=True,
            )
    finally:
        engine.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
