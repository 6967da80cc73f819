"""Pairwise accuracy of a score-only reward model on the preference files `rlhfv eval grm` reads.

The same reader (`rlhfv.data.formats.PreferenceData`: format, file, fixed train/test split,
subsample), so a scalar RM and a generative judge are graded on the same items. A pair is right
when the preferred response scores strictly higher; accuracy carries a 95% Wilson interval
(`rlhfv.grm.eval_report.mean_ci`), overall and per subset (LLMBar's, RM-Bench's …).

    python experiments/scalar_rm_eval.py --model checkpoints/rm_hh/final --format llmbar \\
        --data ../shared/data/llmbar/Natural/dataset.json --max-prompt-tokens 64 --max-response-tokens 64

Use the token caps the reward model was trained with (its recipe's max_prompt_tokens and
max_response_tokens).
"""

from __future__ import annotations

import argparse
import json

import torch
from tqdm import tqdm


def graded_pairs(model: str, data: object, batch_size: int, caps: tuple[int, int]) -> list[tuple[str, bool]]:
    """(subset, chosen scored strictly higher) for every pair of `data`, in order."""
    from rlhfv.models.reward_head import load_reward_model
    from rlhfv.pipelines.reward_model import pair_scores

    chat, rm = load_reward_model(model)
    rm.eval()
    pairs = list(data.pairs)  # type: ignore[attr-defined]
    out: list[tuple[str, bool]] = []
    with torch.no_grad():
        for start in tqdm(range(0, len(pairs), batch_size), desc="scoring pairs", unit="batch"):
            batch = pairs[start : start + batch_size]
            chosen, rejected = pair_scores(chat, rm, batch, torch.device("cpu"), caps)  # [B] each
            out += [(p.source or "", bool(c > r)) for p, c, r in zip(batch, chosen, rejected, strict=True)]
    return out


def summary(graded: list[tuple[str, bool]]) -> dict[str, dict[str, float | None]]:
    from rlhfv.grm.eval_report import mean_ci

    rows = {"all": mean_ci([float(right) for _, right in graded])}
    subsets = sorted({s for s, _ in graded if s})
    for subset in subsets if len(subsets) > 1 else []:
        rows[subset] = mean_ci([float(right) for s, right in graded if s == subset])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a reward model folder (rlhfv.pipelines.reward_model)")
    parser.add_argument("--format", required=True, help="a preference format, as for rlhfv eval grm")
    parser.add_argument("--data", required=True, help="the data file")
    parser.add_argument("--split", default="all", choices=["all", "train", "test"])
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=0, help="a fixed random subsample of this many prompts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-prompt-tokens", type=int, default=0)
    parser.add_argument("--max-response-tokens", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from rlhfv.data.formats import PreferenceData

    data = PreferenceData(args.format, args.data, args.limit, args.seed, args.split, args.test_fraction)
    graded = graded_pairs(
        args.model, data, args.batch_size, (args.max_prompt_tokens, args.max_response_tokens)
    )
    rows = summary(graded)
    print(f"{'subset':24} {'n':>5} {'accuracy':>8}  95% CI (Wilson)")
    for name, r in rows.items():
        print(f"{name:24} {r['n']:>5} {r['mean']:8.3f}  [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]")
    result = {
        "model": args.model,
        "format": args.format,
        "data": args.data,
        "split": args.split,
        "rows": rows,
    }
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
