"""HF sampling and a GRPO-sized training step on 1 against 2 (or more) torch threads, taking turns.

    python benchmarks/threads_hf.py                        # SmolLM2-135M, B=1 × G=8, 48 tokens
    python benchmarks/threads_hf.py --threads 1,2 --rounds 3

The two settings alternate round after round in one process, so load from other programs on the
machine hits both alike; the load average is printed with each round. The training step is one
forward and backward pass of `sequence_logprobs` over the sampled batch plus an AdamW step, as
GRPO does with one update per batch. What this measures sets `run.cpu_threads`' advice.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from rlhfv.models.text_lm import load_text_lm
from rlhfv.rollout import generate, sequence_logprobs
from rlhfv.types import Prompt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    args = p.parse_args()
    policy = load_text_lm(args.model)
    optimizer = torch.optim.AdamW(policy.module.parameters(), lr=1e-7)
    prompt = [Prompt("Explain in a few sentences why the sky is blue.")]
    counts = [int(t) for t in args.threads.split(",")]
    times: dict[int, dict[str, list[float]]] = {n: {"sample_s": [], "train_s": []} for n in counts}
    for r in range(args.rounds):
        for n in counts:
            torch.set_num_threads(n)
            torch.manual_seed(r)
            policy.module.eval()
            began = time.perf_counter()
            rollout = generate(policy, prompt, args.group_size, args.max_new_tokens)
            times[n]["sample_s"].append(time.perf_counter() - began)
            policy.module.train()
            began = time.perf_counter()
            lp = sequence_logprobs(
                policy, rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask, 1.0, args.group_size
            )
            (-(lp * rollout.completion_mask).sum() / rollout.completion_mask.sum()).backward()
            optimizer.step()
            optimizer.zero_grad()
            times[n]["train_s"].append(time.perf_counter() - began)
            print(
                f"round {r} threads {n}: sample {times[n]['sample_s'][-1]:.2f} s, train {times[n]['train_s'][-1]:.2f} s, "
                f"load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    median = {n: {k: sorted(v)[len(v) // 2] for k, v in t.items()} for n, t in times.items()}
    print(json.dumps({"median": median, "all": times, "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
