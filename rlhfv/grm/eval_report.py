"""The figures of `rlhfv eval grm`: per-item records into overall and per-subset metrics with
Wilson intervals, and the table a person reads."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any


def mean_ci(values: Sequence[float], z: float = 1.96) -> dict[str, float | None]:
    """Mean credit with a 95% Wilson score interval over the n items.

    Credits lie in [0, 1] (a tie is a half); their spread is never wider than a Bernoulli's of
    the same mean, so Wilson's interval holds, and unlike the normal one it is not zero-width
    when every item scores the same (all right, all wrong, all ties: each tie is a coin flip).
    """
    n = len(values)
    if n == 0:
        return {"mean": None, "ci95_low": None, "ci95_high": None, "n": 0}
    mean = sum(values) / n
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"mean": mean, "ci95_low": max(0.0, centre - half), "ci95_high": min(1.0, centre + half), "n": n}


LEVELS = ("easy", "normal", "hard")  # RM-Bench's difficulties, the last part of its subsets


def subset_groups(subset: str) -> list[str]:
    """The groups an item of `subset` counts in: every prefix of its path, and its RM-Bench level.

    "chat/hard" → ["subset/chat", "subset/chat/hard", "level/hard"]; "Natural" → ["subset/Natural"];
    "" (a file without subsets) → [].
    """
    if not subset:
        return []
    parts = subset.split("/")
    names = [f"subset/{'/'.join(parts[: i + 1])}" for i in range(len(parts))]
    return names + ([f"level/{parts[-1]}"] if len(parts) > 1 and parts[-1] in LEVELS else [])


def summarize(
    items: Sequence[Any],
    per_item: list[dict[str, Any]],
    failures: Counter,
    ks: Sequence[int],
    elapsed: float,
    with_meta: bool,
) -> dict[str, Any]:
    """Overall and per-subset metrics from the per-item records."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(items):
        for name in ["all", *subset_groups(e.subset)]:
            groups[name].append(i)
    metrics: dict[str, Any] = {}
    for name, idx in sorted(groups.items(), key=lambda g: (g[0] != "all", g[0])):
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
            m["greedy/position_consistency"] = sum(consistent) / len(consistent) if consistent else None
        if all("verdict" in per_item[i] for i in idx):
            v = [per_item[i]["verdict"] for i in idx]
            m["verdict/accuracy"] = mean_ci([r["credit"] for r in v])
            m["verdict/position_consistency"] = sum(r["consistent"] for r in v) / len(v)
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
    credits = [  # per item, for paired comparisons of two ways of judging on the same items
        {
            "id": e.id,
            "subset": e.subset,
            **({"greedy": r["greedy"]["credit"]} if "greedy" in r else {}),
            **({"verdict": r["verdict"]["credit"]} if "verdict" in r else {}),
            **{k: v for k, v in r.get("sampled", {}).items() if "@" in k},
        }
        for e, r in zip(items, per_item, strict=True)
    ]
    return {
        "items": len(items),
        "per_item": credits,
        "seconds": elapsed,
        "metrics": metrics,
        "failure_reasons": dict(failures.most_common(20)),
        "examples": examples,
    }


def summary_table(results: dict[str, Any]) -> list[str]:
    """The figures a person reads first, one line per group: n, accuracy and its CI, and the
    shares of tied, unparsed and forced judgements. Accuracy is the greedy one, else voting@k."""
    overall = results["metrics"].get("all", {})
    votes = sorted((k for k in overall if k.startswith("voting@")), key=lambda k: int(k[7:].split("/")[0]))
    key = "greedy/accuracy" if "greedy/accuracy" in overall else (votes or [None])[0]
    if key is None:
        return ["no accuracy measured"]
    part = key.split("/")[0] if key.startswith("greedy") else "sampled"
    width = max(len("subset"), *(len(name) for name in results["metrics"]))

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"{key} over {results['items']} items ({results['seconds']:.0f} s); "
        f"{results.get('tied_pairs', 0)} tied pairs not scored, {results.get('skipped_rows', 0)} rows skipped",
        f"{'subset':<{width}}  {'n':>5}  {'accuracy':>8}  {'95% CI':>13}  {'ties':>5}  {'unparsed':>8}  {'forced':>6}",
    ]
    for name, m in results["metrics"].items():
        acc = m.get(key) or {"mean": None, "n": 0, "ci95_low": None, "ci95_high": None}
        ci = "-" if acc["mean"] is None else f"{acc['ci95_low']:.3f}-{acc['ci95_high']:.3f}"
        lines.append(
            f"{name:<{width}}  {acc['n']:>5}  {share(acc['mean']):>8}  {ci:>13}  "
            f"{share(m.get('greedy/tie_rate')):>5}  {share(m.get(f'{part}/parse_failure_rate')):>8}  "
            f"{share(m.get(f'{part}/forced_rate')):>6}"
        )
    return lines + per_k_lines(overall)


def per_k_lines(overall: dict[str, Any]) -> list[str]:
    """All items' accuracy (95% CI) for each way of judging: greedy, one verdict, voting@k, meta@k."""
    names = [k.split("/")[0] for k in overall if k.endswith("/accuracy")]
    if len(names) < 2:
        return []
    lines = ["", f"{'all items':<14}  {'accuracy':>8}  {'95% CI':>13}"]
    for name in names:
        acc = overall[f"{name}/accuracy"]
        lines.append(f"{name:<14}  {acc['mean']:>8.3f}  {acc['ci95_low']:.3f}-{acc['ci95_high']:.3f}")
    return lines
