"""The judge on the vLLM engine against the batched HF path: grouped comparison (every pair of
every prompt's G answers) and SPCT voting (k sampled judgements per item), wall time per call.

    python benchmarks/judge_engine_vs_hf.py                          # SmolLM2-135M as the judge
    python benchmarks/judge_engine_vs_hf.py --rounds 3 --k 8

HF and the engine take turns on the same inputs, round after round (the machine is shared; the
median round is reported). Both judge with the same model in the same precision; the HF path
generates all rows in one batched call too (GRMJudge's batch_size above the number of pairs), so
the difference is the engine's scheduling, kernels and prefix caching, not batching.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import torch

from rlhfv.grm.judge import JudgeItem, judge
from rlhfv.models.text_lm import load_text_lm
from rlhfv.rewards.grm import GRMJudge
from rlhfv.types import Prompt

QUESTIONS = [
    "Why is the sky blue?",
    "How do plants make food?",
    "What causes the seasons?",
    "Why do we need sleep?",
]
ANSWERS = [
    "Sunlight scatters off air molecules, and blue light scatters the most.",
    "Because the sky reflects the ocean.",
    "Plants use sunlight, water and carbon dioxide to make sugar in their leaves.",
    "They absorb food from the soil through their roots.",
]


def timed(fn):
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=2, help="B prompts of the rollout")
    p.add_argument("--group-size", type=int, default=4, help="G answers per prompt: G(G-1)/2 pairs each")
    p.add_argument("--k", type=int, default=8, help="voting: judgements per item")
    p.add_argument("--items", type=int, default=4, help="voting: items")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_text_lm(args.model)
    hf = GRMJudge(model, args.max_new_tokens, greedy=True, batch_size=10_000, device="cpu")
    engine = GRMJudge(model, args.max_new_tokens, greedy=True, device="cpu", engine="vllm")
    g = args.group_size
    prompts, first, second = [], [], []
    for b in range(args.prompts):
        answers = [ANSWERS[(b + i) % len(ANSWERS)] + f" ({i})" for i in range(g)]
        for i in range(g):
            for j in range(i + 1, g):
                prompts.append(Prompt(QUESTIONS[b % len(QUESTIONS)]))
                first.append(answers[i])
                second.append(answers[j])
    items = [JudgeItem(QUESTIONS[i % len(QUESTIONS)], ANSWERS[:2]) for i in range(args.items)]
    engine((prompts[:1]), first[:1], second[:1])  # warm-up
    times: dict[str, list[float]] = {"pairs_hf": [], "pairs_vllm": [], "voting_hf": [], "voting_vllm": []}
    agree = []
    for r in range(args.rounds):
        t, a = timed(lambda: hf(prompts, first, second))
        times["pairs_hf"].append(t)
        t, b = timed(lambda: engine(prompts, first, second))
        times["pairs_vllm"].append(t)
        agree.append(sum(x == y for x, y in zip(a, b, strict=True)) / len(a))
        for kind, eng in (("voting_hf", None), ("voting_vllm", engine.engine)):
            rng = random.Random(r)
            t, _ = timed(
                lambda eng=eng, rng=rng: judge(
                    model,
                    items,
                    k=args.k,
                    rng=rng,
                    temperature=0.5,
                    max_new_tokens=args.max_new_tokens,
                    engine=eng,
                )
            )
            times[kind].append(t)
    engine.engine.close()
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    report = {
        "pairs": len(prompts),
        "voting_rows": args.items * args.k,
        "median_s": median,
        "pairs_speedup": median["pairs_hf"] / median["pairs_vllm"],
        "voting_speedup": median["voting_hf"] / median["voting_vllm"],
        "greedy_verdict_agreement": sum(agree) / len(agree),
        "all_s": times,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))
    print(
        f"grouped comparison, {len(prompts)} pairs: HF {median['pairs_hf']:.1f} s, vLLM {median['pairs_vllm']:.1f} s "
        f"({report['pairs_speedup']:.2f}x); voting, {args.items}×{args.k}: HF {median['voting_hf']:.1f} s, "
        f"vLLM {median['voting_vllm']:.1f} s ({report['voting_speedup']:.2f}x)"
    )


if __name__ == "__main__":
    main()
