"""Judgements per second: k samples in one batched generate call vs a loop of k generate calls.

A voting@k judgement needs k sampled critiques of the same item. `rlhfv.grm.judge.judge` puts all
k (each with its own response order) and several items into one `generate` call; the naive way
calls `generate` once per sample. Both paths sample exactly `--tokens` new tokens per row
(min_new_tokens = max_new_tokens), so they do the same amount of decoding.

    python benchmarks/voting_vs_loop.py --model tiny --items 4 --k 8 --tokens 64
    python benchmarks/voting_vs_loop.py --model smollm2-135m-instruct --items 2 --k 8 --tokens 32
    python benchmarks/voting_vs_loop.py --model DIR --random-weights --device cuda --dtype bfloat16
    python benchmarks/voting_vs_loop.py --model smollm2-135m-instruct --textchecks --items 4 --k 8 \
        --tokens 32 --meta-rm checkpoints/spct_textchecks/meta_rm/final

The batched path also runs with every row encoding its whole prompt (`share_prefix=False`), to
show what encoding the judge instructions once saves. `--textchecks` judges TextChecks test pairs instead of one fixed question. `--meta-rm DIR` also
times meta-RM scoring of the k judgements per item: one batched forward of all items' k
judgements against one forward per judgement; `--meta-rm untrained` puts a fresh head on the judge's
own language model (the same forward, so the same cost, with no trained meta-RM needed).

`--random-weights` builds the model in DIR from its config.json with random weights (same
architecture and cost, no weight file needed: for machines the weights cannot be copied to).
Speed does not depend on the weights because every row decodes exactly `--tokens` tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

import torch

from rlhfv.grm.evaluate import build_judge
from rlhfv.grm.judge import JudgeItem, judge

QUESTION = "Which planet is known as the red planet, and why does it look red?"
RESPONSES = [
    "Mars. Its surface is covered in iron oxide dust, which gives it a reddish colour.",
    "Jupiter, because its big storm is red.",
]


def batched(model, items, k, tokens, seed):
    judge(model, items, k=k, rng=random.Random(seed), max_new_tokens=tokens)


def loop(model, items, k, tokens, seed):
    rng = random.Random(seed)
    for item in items:
        for _ in range(k):  # one generate call per sample: the naive implementation
            judge(model, [item], k=1, rng=rng, max_new_tokens=tokens)


def meta_scoring(meta, items, k, tokens, batch_size):
    from rlhfv.grm.meta_rm import meta_rm_scores
    from rlhfv.grm.prompts import pointwise_prompt

    prompts = [pointwise_prompt(item.question, item.responses) for item in items for _ in range(k)]
    texts = ["Analysis: " + "the answer checks out " * (tokens // 4) + "Scores: \\boxed{8, 3}"] * len(prompts)
    with torch.no_grad():
        meta_rm_scores(meta, prompts, texts, batch_size=batch_size)


def load_architecture(folder: str, dtype: str):
    """A causal LM with the folder's config and tokenizer but random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rlhfv.models.base import torch_dtype
    from rlhfv.models.text_lm import wrap_text_lm

    module = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch_dtype(dtype))
    return wrap_text_lm(module, AutoTokenizer.from_pretrained(folder))


def timed(fn, *args, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*args)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument(
        "--random-weights", action="store_true", help="architecture from DIR/config.json, random weights"
    )
    parser.add_argument("--textchecks", action="store_true", help="judge TextChecks test pairs")
    parser.add_argument("--meta-rm", help="also time meta-RM scoring: a meta-RM folder, or 'untrained'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = (
        load_architecture(args.model, args.dtype)
        if args.random_weights
        else build_judge(args.model, args.dtype)
    )
    model.module.to(args.device).eval()
    model.module.generation_config.min_new_tokens = args.tokens  # equal work on both paths
    if args.textchecks:
        from rlhfv.data.textchecks import TextCheckPairs

        pairs = TextCheckPairs(args.items, "test", seed=0)
        items = [JudgeItem(p.prompt.text, list(p.responses)) for p in (pairs[i] for i in range(args.items))]
    else:
        items = [JudgeItem(QUESTION, RESPONSES) for _ in range(args.items)]
    judge(model, items[:1], k=2, rng=random.Random(0), max_new_tokens=4)  # warm-up
    t_batched = timed(batched, model, items, args.k, args.tokens, 0, repeats=args.repeats)
    t_loop = timed(loop, model, items, args.k, args.tokens, 0, repeats=args.repeats)
    import functools

    import rlhfv.rollout

    shared = rlhfv.rollout.generate  # the same batched call, each row encoding its whole prompt
    rlhfv.rollout.generate = functools.partial(shared, share_prefix=False)
    t_unshared = timed(batched, model, items, args.k, args.tokens, 0, repeats=args.repeats)
    rlhfv.rollout.generate = shared
    result = {
        "model": args.model + (" (random weights)" if args.random_weights else ""),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "dtype": args.dtype,
        "items": args.items,
        "k": args.k,
        "tokens_per_sample": args.tokens,
        "batched_judgements_per_s": args.items / t_batched,
        "loop_judgements_per_s": args.items / t_loop,
        "speedup": t_loop / t_batched,
        "batched_without_shared_prefix_judgements_per_s": args.items / t_unshared,
        "shared_prefix_speedup": t_unshared / t_batched,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}",
    }
    if args.meta_rm:
        from rlhfv.grm.meta_rm import MetaRM, load_meta_rm

        meta = MetaRM(model) if args.meta_rm == "untrained" else load_meta_rm(args.meta_rm)
        meta = meta.to(args.device).eval()
        n = args.items * args.k
        t_meta_batched = timed(meta_scoring, meta, items, args.k, args.tokens, n, repeats=args.repeats)
        t_meta_loop = timed(meta_scoring, meta, items, args.k, args.tokens, 1, repeats=args.repeats)
        result |= {
            "meta_batched_judgements_scored_per_s": n / t_meta_batched,
            "meta_loop_judgements_scored_per_s": n / t_meta_loop,
            "meta_speedup": t_meta_loop / t_meta_batched,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
