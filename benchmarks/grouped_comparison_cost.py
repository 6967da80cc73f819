"""Cost of grouped comparison: batched GRM judging against a naive loop of one generate() per pair.

Generative RLHF-V judges every pair of a prompt's n candidates: n(n-1)/2 GRM generations per prompt
(n(n-1) with both orders). `GRMJudge` sends all pairs of all prompts through batched `generate`
calls; the baseline calls `generate` once per pair, as a hand-written judge loop does. Same GRM,
same pairs, same greedy decoding and length limit; both are timed in one process, alternately.

    python benchmarks/grouped_comparison_cost.py [--prompts 4] [--n 5] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time

import torch

from rlhfv.data.shapes import ShapesVQA, phrase
from rlhfv.models.base import load_model
from rlhfv.models.hf_vlm import tiny_qwen2_vl
from rlhfv.rewards.grm import GRMJudge


def candidate_pairs(prompts: int, n: int):
    """Prompts, first answers, second answers for every unordered pair of n phrased candidates."""
    import random

    data, rng = ShapesVQA(prompts, split="test"), random.Random(0)
    out_p, out_a, out_b = [], [], []
    for i in range(prompts):
        example = data[i]
        answers = [
            phrase(rng, example.task, example.label if k % 2 == 0 else "2", example.prompt.text)
            for k in range(n)
        ]
        for a, b in itertools.combinations(range(n), 2):
            out_p.append(example.prompt)
            out_a.append(answers[a])
            out_b.append(answers[b])
    return out_p, out_a, out_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grm", default="", help="a saved GRM folder (default: a tiny random Qwen2-VL)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=5, help="candidates per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.grm) if args.grm else tiny_qwen2_vl(hidden_size=96)
    batched = GRMJudge(model, max_new_tokens=args.max_new_tokens, batch_size=256, device=args.device)
    looped = GRMJudge(model, max_new_tokens=args.max_new_tokens, batch_size=1, device=args.device)
    prompts, first, second = candidate_pairs(args.prompts, args.n)
    batched(prompts[:2], first[:2], second[:2])  # warm-up
    times: dict[str, list[float]] = {"batched": [], "loop": []}
    verdicts = {}
    for _ in range(args.repeats):
        for name, judge in (("batched", batched), ("loop", looped)):
            start = time.perf_counter()
            verdicts[name] = judge(prompts, first, second)
            times[name].append(time.perf_counter() - start)
    pairs = len(prompts)
    rate = {k: pairs / statistics.median(v) for k, v in times.items()}
    agree = sum(a == b for a, b in zip(verdicts["batched"], verdicts["loop"], strict=True)) / pairs
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {args.device}"
    )
    print(
        f"{args.prompts} prompts x C({args.n},2) = {pairs} comparisons, {args.max_new_tokens} new tokens max"
    )
    print(f"batched: {rate['batched']:.2f} comparisons/s   loop: {rate['loop']:.2f} comparisons/s")
    print(f"speed-up: {rate['batched'] / rate['loop']:.2f}x   (same verdicts on {agree:.0%} of pairs)")


if __name__ == "__main__":
    main()
