"""`rlhfv eval grm` on TextChecks through the vLLM engine against the HF path, same items, one run.

Both sides run `evaluate_grm` on the same test pairs with the same settings (k sampled judgements
per item, forced score lines, optionally the greedy two-order pass); the HF side generates
`--hf-batch-size` rows per call with the shared prompt prefix encoded once (its default), the
engine side sends `--engine-batch-size` rows per call. Items per second is items ÷ the
evaluation's wall time; the engine's start-up is timed apart (it is paid once per evaluation).

    OMP_NUM_THREADS=1 python benchmarks/textchecks_eval_engine_vs_hf.py --items 16 --k 8 \\
        --out results/textchecks/eval_engine_vs_hf.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from rlhfv.engine import RolloutConfig
from rlhfv.engine.vllm import VLLMEngine
from rlhfv.grm.evaluate import evaluate_grm, textchecks_items
from rlhfv.models.text_lm import load_text_lm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--items", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--greedy", action="store_true", help="also the greedy two-order pass")
    p.add_argument("--hf-batch-size", type=int, default=32)
    p.add_argument("--engine-batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_text_lm(args.model)
    items = textchecks_items(args.items, "test", args.seed)
    common = dict(
        ks=[k for k in (1, 2, 4, 8, 16, 32) if k <= args.k] or [args.k],
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        greedy=args.greedy,
        force=True,
        progress=False,
    )
    sides: dict[str, dict] = {}
    began = time.perf_counter()
    engine = VLLMEngine(
        model,
        RolloutConfig(engine="vllm"),
        args.max_new_tokens,
        args.temperature,
        1.0,
        [],
        "float32",
        args.seed,
    )
    start_s = time.perf_counter() - began
    try:
        evaluate_grm(model, items[:1], **{**common, "ks": [1]}, batch_size=8, engine=engine)  # warm-up
        for name, kwargs in (
            ("engine", {"batch_size": args.engine_batch_size, "engine": engine}),
            ("hf", {"batch_size": args.hf_batch_size}),
        ):
            r = evaluate_grm(model, items, **common, **kwargs)
            sides[name] = {
                "seconds": r["seconds"],
                "items_per_s": r["items_per_s"],
                "samples_per_s": len(items) * args.k / r["seconds"],
                "accuracy": {m: v["mean"] for m, v in r["metrics"]["all"].items() if m.endswith("/accuracy")},
            }
            print(name, json.dumps(sides[name]), flush=True)
    finally:
        engine.close()
    out = {
        "items": len(items),
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "greedy_pass": args.greedy,
        "engine_start_s": start_s,
        "speedup_items_per_s": sides["engine"]["items_per_s"] / sides["hf"]["items_per_s"],
        "load_average": os.getloadavg(),
        "sides": sides,
    }
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
