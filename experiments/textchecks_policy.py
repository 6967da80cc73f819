"""How often a pretrained LM, as a policy, answers TextChecks questions right, per kind.

The task is useful for judge training only where the policy is in between: right sometimes and
wrong sometimes (a judge then meets both kinds of answer, and sampled pairs exist). Greedy
accuracy per kind, and with `--samples S` the share of questions whose S sampled answers
(temperature `--temperature`) the checker splits into right and wrong (`SampledPairs` keeps those).

    OMP_NUM_THREADS=1 python experiments/textchecks_policy.py --model smollm2-135m-instruct \
        --per-kind 40 --samples 4 --out results/textchecks/policy_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from rlhfv.data.textchecks import KINDS, TextChecks
from rlhfv.grm.eval_report import mean_ci
from rlhfv.grm.evaluate import build_judge
from rlhfv.rollout import generate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--per-kind", type=int, default=40)
    parser.add_argument(
        "--samples", type=int, default=0, help="sampled answers per question (0: greedy only)"
    )
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = build_judge(args.model)
    data = TextChecks(size=args.per_kind * len(KINDS), split="test", seed=args.seed)
    examples = [data[i] for i in range(len(data))]
    greedy, mixed, examples_out = defaultdict(list), defaultdict(list), []
    start = time.perf_counter()
    for lo in range(0, len(examples), args.batch_size):
        chunk = examples[lo : lo + args.batch_size]
        prompts = [e.prompt for e in chunk]
        texts = generate(model, prompts, 1, args.tokens, greedy=True).texts
        sampled = (
            generate(model, prompts, args.samples, args.tokens, temperature=args.temperature).texts
            if args.samples
            else []
        )
        for i, (e, text) in enumerate(zip(chunk, texts, strict=True)):
            greedy[e.task].append(float(data.is_correct(text, e)))
            if args.samples:
                right = [data.is_correct(t, e) for t in sampled[i * args.samples : (i + 1) * args.samples]]
                mixed[e.task].append(float(0 < sum(right) < len(right)))
            if len(examples_out) < 3 * len(KINDS):
                examples_out.append({"kind": e.task, "question": e.prompt.text, "answer": text})
        print(f"{lo + len(chunk)}/{len(examples)} questions, {time.perf_counter() - start:.0f} s", flush=True)
    rows = {
        kind: {"greedy": mean_ci(greedy[kind]), "mixed_samples": mean_ci(mixed[kind]) if mixed else None}
        for kind in KINDS
    }
    rows["all"] = {
        "greedy": mean_ci([v for k in KINDS for v in greedy[k]]),
        "mixed_samples": mean_ci([v for k in KINDS for v in mixed[k]]) if mixed else None,
    }
    print(f"{'kind':14s} {'n':>4s} {'greedy acc (95% CI)':>24s} {'mixed sampled':>14s}")
    for kind, row in rows.items():
        g, m = row["greedy"], row["mixed_samples"]
        mixed_share = "" if m is None else f"{m['mean']:.3f}"
        print(
            f"{kind:14s} {g['n']:4d} {g['mean']:.3f} ({g['ci95_low']:.2f}-{g['ci95_high']:.2f}) {mixed_share:>14s}"
        )
    if args.out:
        out = {
            "config": vars(args),
            "seconds": time.perf_counter() - start,
            "kinds": rows,
            "examples": examples_out,
        }
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
