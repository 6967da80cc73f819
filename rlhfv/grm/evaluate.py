"""`rlhfv eval grm`: how well a pointwise generative judge picks the preferred response.

Reports, overall and per subset:
- greedy accuracy, judged twice per item (responses as stored and reversed), with ties and parse
  failures credited as a random pick (1/n, SPCT's shuffle-then-argmax tie-break); the strict
  Eq.-10 accuracy (ties and failures wrong); position consistency (same winner in both orders);
  parse-failure and tie rates, and why parses failed; with `--force-scores`
  (`rlhfv.grm.judge.force_scores`), the share of judgements whose score line was forced;
- voting@k for each k (k sampled judgements, each in its own random order, scores summed);
- meta-RM@k when a meta-RM is given (only the top k/2 samples by meta score vote).
Accuracies carry 95% normal-approximation confidence intervals. Results go to a JSON file.

    rlhfv eval grm --model smollm2-135m-instruct --format llmbar \
        --data ../shared/data/llmbar/Natural/dataset.json --k 1 4 8 --out results/x.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfv.grm.judge import JudgeItem, Judgement, judge
from rlhfv.grm.rules import preferred_truth, spct_correct
from rlhfv.grm.voting import meta_vote, pick_credit, vote

logger = logging.getLogger(__name__)


@dataclass
class EvalItem:
    """One judged item: the judge's input, the index of the preferred response, its subset."""

    item: JudgeItem
    preferred: int
    subset: str
    id: str


def items_from_rows(rows: Sequence[Any]) -> list[EvalItem]:
    """PairwisePreference / BestOfN rows (images as paths) → EvalItems with images loaded."""
    from rlhfv.data.images import load_image

    return [
        EvalItem(
            JudgeItem(r.prompt, list(r.responses), [load_image(p) for p in r.images]),
            r.preferred,
            r.source or "all",
            r.id,
        )
        for r in rows
    ]


def shapes_items(size: int, seed: int) -> list[EvalItem]:
    """ShapesVQA test-split preference pairs (a correct answer against a wrong one, with the image)."""
    from rlhfv.data.shapes import ShapesVQA

    data = ShapesVQA(size=size, split="test", seed=seed)
    pairs = [data.preference_pair(i) for i in range(size)]
    tasks = [data[i].task for i in range(size)]
    return [
        EvalItem(
            JudgeItem(p.prompt.text, list(p.responses), list(p.prompt.images)),
            p.preferred,
            f"shapes/{t}",
            p.id,
        )
        for p, t in zip(pairs, tasks, strict=True)
    ]


def build_judge(spec: str, dtype: str = "float32") -> Any:
    """`tiny` (random tiny text LM, for tests), an rlhfv model folder, an HF folder or a pulled name."""
    from rlhfv.models.base import MODEL_CARD, load_model
    from rlhfv.models.text_lm import load_text_lm, tiny_text_lm

    if spec == "tiny":
        return tiny_text_lm(seed=0)
    if (Path(spec) / MODEL_CARD).is_file():
        return load_model(spec, dtype=dtype)
    return load_text_lm(spec, dtype=dtype)


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean with a 95% normal-approximation confidence interval."""
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan"), "n": 0}
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    half = 1.96 * math.sqrt(var / n)
    return {"mean": mean, "ci95_low": max(0.0, mean - half), "ci95_high": min(1.0, mean + half), "n": n}


def credit(scores: list[float] | None, n: int, best: int) -> float:
    """Accuracy credit of one judgement: a failed parse is a random pick (1/n)."""
    return 1.0 / n if scores is None else pick_credit(scores, best)


def winner(scores: list[float] | None) -> int | None:
    """The unique top-scored response, or None (failed parse or a tie at the top)."""
    if scores is None or sum(s == max(scores) for s in scores) > 1:
        return None
    return scores.index(max(scores))


def greedy_records(j: Judgement, e: EvalItem) -> dict[str, Any]:
    """Per-item greedy figures from its two judgements (stored order, reversed order)."""
    n, truth = len(e.item.responses), preferred_truth(len(e.item.responses), e.preferred)
    parsed = [s for s in j.scores if s is not None]
    winners = [winner(s) for s in j.scores]
    return {
        "credit": sum(credit(s, n, e.preferred) for s in j.scores) / len(j.scores),
        "strict": sum(spct_correct(s, truth) for s in j.scores) / len(j.scores),
        "failures": [p.error for p in j.parsed if not p.ok],
        "ties": sum(winner(s) is None for s in parsed),
        "parsed": len(parsed),
        "consistent": None if len(parsed) < 2 else float(winners[0] is not None and winners[0] == winners[1]),
        "forced": sum(j.forced),
        "texts": j.texts,
    }


def evaluate_grm(
    model: Any,
    items: Sequence[EvalItem],
    ks: Sequence[int] = (1, 4, 8),
    temperature: float = 0.5,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int = 0,
    meta: Any | None = None,
    principles: str | None = None,
    greedy: bool = True,
    progress: bool = True,
    force: bool = False,
    reading: bool = False,
) -> dict[str, Any]:
    """Run the evaluation described in the module docstring; return the results dictionary.

    `reading`: the judge answers each question itself before it sees the responses
    (`rlhfv.grm.judge.judge(reading=True)`), for judges trained with `JudgeTask(reading=...)`.
    """
    from tqdm import tqdm

    rng = random.Random(seed)
    per_item: list[dict[str, Any]] = [{} for _ in items]
    failures: Counter[str] = Counter()
    start = time.perf_counter()
    common: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "principles": principles,
        "force": force,
        "reading": reading,
    }
    if greedy:  # two rows per item (stored order, reversed), batch_size rows per generate call
        step = max(1, batch_size // 2)
        bar = tqdm(range(0, len(items), step), desc="greedy", disable=not progress)
        for lo in bar:
            chunk = items[lo : lo + step]
            orders = [
                [list(range(len(e.item.responses))), list(range(len(e.item.responses)))[::-1]] for e in chunk
            ]
            for i, j in enumerate(
                judge(model, [e.item for e in chunk], k=2, orders=orders, greedy=True, **common)
            ):
                rec = greedy_records(j, chunk[i])
                failures.update(rec["failures"])
                per_item[lo + i]["greedy"] = rec
            bar.set_postfix(
                acc=f"{sum(r['greedy']['credit'] for r in per_item[: lo + len(chunk)]) / (lo + len(chunk)):.3f}"
            )
    k_max = max(ks) if ks else 0
    if k_max:  # k_max shuffled samples per item, all of an item's samples in the same generate call
        step = max(1, batch_size // k_max)
        bar = tqdm(range(0, len(items), step), desc=f"sampling k={k_max}", disable=not progress)
        for lo in bar:
            chunk = items[lo : lo + step]
            judged = judge(
                model, [e.item for e in chunk], k=k_max, rng=rng, temperature=temperature, **common
            )
            for i, (e, j) in enumerate(zip(chunk, judged, strict=True)):
                n = len(e.item.responses)
                failures.update(f"sampled: {p.error}" for p in j.parsed if not p.ok)
                rec = {f"voting@{k}": pick_credit(vote(j.scores[:k], n), e.preferred) for k in ks}
                rec["sample_failures"] = sum(not p.ok for p in j.parsed)
                rec["sample_forced"] = sum(j.forced)
                if meta is not None:
                    from rlhfv.grm.meta_rm import meta_rm_scores
                    from rlhfv.grm.prompts import pointwise_prompt

                    shown = [
                        pointwise_prompt(
                            e.item.question, [e.item.responses[o] for o in order], e.item.images, principles
                        )
                        for order in j.orders
                    ]
                    ms = meta_rm_scores(meta, shown, j.texts)
                    rec.update(
                        {
                            f"meta@{k}": pick_credit(
                                meta_vote(j.scores[:k], ms[:k], max(1, k // 2), n), e.preferred
                            )
                            for k in ks
                        }
                    )
                per_item[lo + i]["sampled"] = rec
    elapsed = time.perf_counter() - start
    return summarize(items, per_item, failures, ks, elapsed, meta is not None)


def summarize(
    items: Sequence[EvalItem],
    per_item: list[dict[str, Any]],
    failures: Counter,
    ks: Sequence[int],
    elapsed: float,
    with_meta: bool,
) -> dict[str, Any]:
    """Overall and per-subset metrics from the per-item records."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(items):
        groups["all"].append(i)
        groups[f"subset/{e.subset}"].append(i)
    metrics: dict[str, Any] = {}
    for name, idx in groups.items():
        m: dict[str, Any] = {}
        if all("greedy" in per_item[i] for i in idx):
            g = [per_item[i]["greedy"] for i in idx]
            consistent = [r["consistent"] for r in g if r["consistent"] is not None]
            m["greedy/accuracy"] = mean_ci([r["credit"] for r in g])
            m["greedy/strict_accuracy"] = mean_ci([r["strict"] for r in g])
            m["greedy/parse_failure_rate"] = sum(len(r["failures"]) for r in g) / (
                2 * len(g)
            )  # two judgements per item
            m["greedy/forced_rate"] = sum(r["forced"] for r in g) / (2 * len(g))
            m["greedy/tie_rate"] = sum(r["ties"] for r in g) / max(1, sum(r["parsed"] for r in g))
            m["greedy/position_consistency"] = (
                sum(consistent) / len(consistent) if consistent else float("nan")
            )
        if all("sampled" in per_item[i] for i in idx) and ks:
            s = [per_item[i]["sampled"] for i in idx]
            for k in ks:
                m[f"voting@{k}/accuracy"] = mean_ci([r[f"voting@{k}"] for r in s])
                if with_meta:
                    m[f"meta@{k}/accuracy"] = mean_ci([r[f"meta@{k}"] for r in s])
            m["sampled/parse_failure_rate"] = sum(r["sample_failures"] for r in s) / (len(s) * max(ks))
            m["sampled/forced_rate"] = sum(r["sample_forced"] for r in s) / (len(s) * max(ks))
        metrics[name] = m
    examples = [  # a few raw judgements, to see what the judge actually writes
        {"id": e.id, "preferred": e.preferred, "greedy_texts": r["greedy"]["texts"]}
        for e, r in zip(items[:3], per_item[:3], strict=True)
        if "greedy" in r
    ]
    return {
        "items": len(items),
        "seconds": elapsed,
        "metrics": metrics,
        "failure_reasons": dict(failures.most_common(20)),
        "examples": examples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhfv eval", description="evaluate reward models")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("grm", help="pairwise / best-of-n accuracy of a pointwise generative judge")
    p.add_argument(
        "--model",
        required=True,
        help="rlhfv model folder, HF folder, pulled name (smollm2-135m-instruct) or 'tiny'",
    )
    p.add_argument(
        "--format",
        default="llmbar",
        help="data format (rlhfv.data.formats: hh-rlhf, llmbar, rm-bench, rmb-pairwise, rmb-bon, rewardbench, rlaifv, jsonl) or 'shapes'",
    )
    p.add_argument("--data", help="data file (not needed for --format shapes)")
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="evaluate a random subsample of this many items (fixed by --seed)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "test"],
        help="evaluate one part of the file's fixed split (rlhfv.data.formats.select_rows)",
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of the rows in the test part")
    p.add_argument(
        "--k", type=int, nargs="*", default=[1, 4, 8], help="voting@k values; none to skip sampling"
    )
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy two-order pass")
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8, help="generated rows per generate() call")
    p.add_argument("--meta-rm", help="meta-RM folder (rlhfv.grm.meta_rm.save_meta_rm) for meta@k")
    p.add_argument("--principles", help="the 'w/ principles' prompt variant: principles text")
    p.add_argument(
        "--force-scores",
        action="store_true",
        help="append 'Scores: \\boxed{' to judgements without a box; the judge writes the scores under a grammar (rlhfv.grm.judge)",
    )
    p.add_argument(
        "--reading",
        action="store_true",
        help="the judge answers each question itself before it sees the responses (judges trained with JudgeTask(reading=...))",
    )
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args(argv)

    if args.format == "shapes":
        items = shapes_items(args.limit or 64, args.seed)
    else:
        if not args.data:
            parser.error("--data is required unless --format shapes")
        from rlhfv.data.formats import load_preference_data, select_rows

        rows, errors = load_preference_data(args.format, args.data)
        if errors:
            logger.warning("%s: skipped %d malformed rows (first: %s)", args.data, len(errors), errors[0])
        items = items_from_rows(select_rows(rows, args.split, args.test_fraction, args.limit, args.seed))
    model = build_judge(args.model, args.dtype)
    meta = None
    if args.meta_rm:
        from rlhfv.grm.meta_rm import load_meta_rm

        meta = load_meta_rm(args.meta_rm, args.dtype)
    results = evaluate_grm(
        model,
        items,
        args.k,
        args.temperature,
        args.max_new_tokens,
        args.batch_size,
        args.seed,
        meta,
        args.principles,
        greedy=not args.no_greedy,
        force=args.force_scores,
        reading=args.reading,
    )
    results["config"] = {k: v for k, v in vars(args).items() if k != "what"}
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0
