"""`rlhfv eval grm`'s greedy pass before and after batched judging, on the same items.

    python benchmarks/eval_batching.py --n 20            # SmolLM2-135M, LLMBar Natural, 1 thread

before: 8 generated rows per call (4 items × 2 orders) in file order, the former default;
after: `BATCH_SIZE` rows per call, items longest first (`rlhfv.grm.evaluate.longest_first`).
Each setting runs in its own process (its peak memory is its own), back to back on the same
items, and both judge greedily with the same model, threads and length limit, so the greedy
texts must agree; the script checks that and prints the wall times, the ratio and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

LLMBAR = Path(__file__).resolve().parents[1] / "../shared/data/llmbar/Natural/dataset.json"


def run_one(setting: str, n: int, max_new_tokens: int, threads: int, data: str) -> dict:
    """Judge the first `n` prompts of the --limit draw in one setting; timings and texts."""
    import torch

    from rlhfv.data.formats import load_preference_data, select_rows
    from rlhfv.grm import evaluate

    torch.set_num_threads(threads)
    rows, _ = load_preference_data("llmbar", data)
    items, _ = evaluate.items_from_rows(select_rows(rows, limit=n, seed=0), data)
    model = evaluate.build_judge("smollm2-135m-instruct")
    batch = 8
    if setting == "before":
        evaluate.longest_first = lambda items: list(range(len(items)))  # the former file order
    else:
        batch = evaluate.BATCH_SIZE
    start = time.perf_counter()
    results = evaluate.evaluate_grm(
        model, items, max_new_tokens=max_new_tokens, batch_size=batch, progress=False
    )
    seconds = time.perf_counter() - start
    strict = results["metrics"]["all"]["greedy/strict_accuracy"]["mean"]
    return {
        "setting": setting,
        "batch_size": batch,
        "items": len(items),
        "seconds": seconds,
        "strict_accuracy": strict,
        "per_item": results["per_item"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20, help="items (LLMBar Natural prompts)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=str(LLMBAR))
    parser.add_argument("--one", choices=["before", "after"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.max_new_tokens, args.threads, args.data)))
        return
    runs = {}
    for setting in ("before", "after"):  # back to back, each in a fresh process
        cmd = [sys.executable, __file__, "--one", setting, "--n", str(args.n), "--data", args.data,
               "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs[setting] = json.loads(out.strip().splitlines()[-1])
        r = runs[setting]
        print(f"{setting:6s} batch {r['batch_size']:3d}: {r['items']} items in {r['seconds']:.1f} s, "
              f"strict {r['strict_accuracy']:.3f}, peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)  # fmt: skip
    same = [
        a["greedy"] == b["greedy"]
        for a, b in zip(runs["before"]["per_item"], runs["after"]["per_item"], strict=True)
    ]
    ratio = runs["before"]["seconds"] / runs["after"]["seconds"]
    print(f"before/after: {ratio:.2f}x faster; same greedy credit on {sum(same)} of {len(same)} items")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"ratio": ratio, "same_credit": sum(same), **runs}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
