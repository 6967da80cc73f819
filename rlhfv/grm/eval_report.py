"""The figures of `rlhfv eval grm`: per-item records into overall and per-subset metrics with
intervals that respect the data's structure, and the table a person reads.

The headline is strict accuracy: a judgement is right only when the preferred response alone
gets the top score, so a tie or an unparsed judgement counts as wrong, and a judge that parses
nothing scores 0, never a chance-looking 0.5. Beside it: ties, unparsed, forced, position
consistency and the accuracy with ties as ½ (SPCT's random tie-break), each in its own column.

Intervals. Items that share a prompt (RM-Bench's nine style pairs, best-of-N sets drawn from one
conversation, several annotated pairs of one prompt) are not independent: a judge that misreads
the prompt misjudges all of them. Items are grouped into clusters by prompt; where every cluster
is one item the interval is Wilson's score interval over the n items. Otherwise the design effect
DEFF is the cluster-robust variance of the mean (sum over clusters of the squared residual totals,
times G/(G−1)) over the variance of independent items, and the interval is Wilson's at Kish's
effective sample size n/DEFF (Korn and Graubard's construction for clustered proportions). DEFF is
at least 1; when every item scores the same it is n/G, as if each prompt were one item.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from typing import Any


def wilson(mean: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% score interval for a share `mean` of n (n may be an effective, fractional n)."""
    centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def design_effect(values: Sequence[float], clusters: Sequence[Hashable]) -> float:
    """Cluster-robust variance of the mean over the independent-items variance (module docstring).

    20 prompts × 9 pairs where each prompt's pairs are all right or all wrong (p = 0.5):
    cluster variance 20/19 · 20·4.5² / 180² = 0.013158, independent 0.25/180 = 0.0013889,
    DEFF = 9.47 (= 9 · 20/19), effective n = 19.
    """
    n = len(values)
    totals: dict[Hashable, list[float]] = defaultdict(lambda: [0.0, 0.0])  # cluster → [sum, size]
    for v, c in zip(values, clusters, strict=True):
        totals[c][0] += v
        totals[c][1] += 1
    g = len(totals)
    if g == n:
        return 1.0
    if g == 1:
        return float(n)  # one prompt: one observation
    mean = sum(values) / n
    naive = sum((v - mean) ** 2 for v in values) / n / n
    if naive == 0.0:
        return n / g
    robust = g / (g - 1) * sum((s - size * mean) ** 2 for s, size in totals.values()) / (n * n)
    return max(1.0, robust / naive)


def mean_ci(values: Sequence[float], clusters: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Mean credit with a 95% interval: Wilson over independent items, or clustered (module docstring).

    Credits lie in [0, 1] (a tie is a half); their spread is never wider than a Bernoulli's of
    the same mean, so Wilson's interval holds, and unlike the normal one it is not zero-width
    when every item scores the same (all right, all wrong, all ties: each tie is a coin flip).
    """
    n = len(values)
    if n == 0:
        return {"mean": None, "ci95_low": None, "ci95_high": None, "n": 0, "interval": None}
    clusters = list(clusters) if clusters is not None else list(range(n))
    mean = sum(values) / n
    g = len(set(clusters))
    deff = design_effect(values, clusters)
    low, high = wilson(mean, n / deff)
    out: dict[str, Any] = {"mean": mean, "ci95_low": low, "ci95_high": high, "n": n}
    out |= {"clusters": g, "design_effect": deff}
    out["interval"] = "wilson" if g == n else "clustered"
    return out


LEVELS = ("easy", "normal", "hard")  # RM-Bench's difficulties, the last part of its subsets


def subset_groups(subset: str, nested: bool = True) -> list[str]:
    """The groups an item of `subset` counts in: every prefix of its path, and its RM-Bench level.

    "chat/hard" → ["subset/chat", "subset/chat/hard", "level/hard"]; "Natural" → ["subset/Natural"];
    "" (a file without subsets) → []. With `nested` False the name is one subset even where it
    holds a "/" (a data set's name such as "bigcode/humanevalpack").
    """
    if not subset:
        return []
    if not nested:
        return [f"subset/{subset}"]
    parts = subset.split("/")
    names = [f"subset/{'/'.join(parts[: i + 1])}" for i in range(len(parts))]
    return names + ([f"level/{parts[-1]}"] if len(parts) > 1 and parts[-1] in LEVELS else [])


def item_groups(items: Sequence[Any], nested: bool) -> dict[str, list[int]]:
    """Group name → item indices, "all" first. A path prefix that holds exactly the items of one
    deeper group (a chain such as `Pairwise_set/Harmlessness` with one child), or a top-level one
    that holds every item and has children, says nothing new and is left out."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(items):
        for name in ["all", *subset_groups(e.subset, nested)]:
            groups[name].append(i)

    def redundant(name: str) -> bool:
        children = [g for g in groups if g.startswith(name + "/")]
        if any(groups[g] == groups[name] for g in children):
            return True
        return bool(children) and name.count("/") == 1 and groups[name] == groups["all"]

    kept = {k: v for k, v in groups.items() if not (k.startswith("subset/") and redundant(k))}
    return dict(sorted(kept.items(), key=lambda g: (g[0] != "all", g[0])))


def greedy_metrics(g: list[dict[str, Any]], clusters: list[Hashable]) -> dict[str, Any]:
    consistent = [r["consistent"] for r in g if r["consistent"] is not None]
    return {
        "greedy/strict_accuracy": mean_ci([r["strict"] for r in g], clusters),
        "greedy/accuracy": mean_ci([r["credit"] for r in g], clusters),  # ties and failures ½
        "greedy/parse_failure_rate": sum(len(r["failures"]) for r in g) / (2 * len(g)),  # 2 per item
        "greedy/forced_rate": sum(r["forced"] for r in g) / (2 * len(g)),
        "greedy/tie_rate": sum(r["ties"] for r in g) / max(1, sum(r["parsed"] for r in g)),
        "greedy/position_consistency": sum(consistent) / len(consistent) if consistent else None,
    }


def summarize(
    items: Sequence[Any],
    per_item: list[dict[str, Any]],
    failures: Counter,
    ks: Sequence[int],
    elapsed: float,
    with_meta: bool,
    nested: bool = True,
) -> dict[str, Any]:
    """Overall and per-subset metrics from the per-item records; `nested`: subsets are paths."""
    metrics: dict[str, Any] = {}
    for name, idx in item_groups(items, nested).items():
        clusters = [items[i].cluster or items[i].id or i for i in idx]
        m: dict[str, Any] = {}
        if all("greedy" in per_item[i] for i in idx):
            m |= greedy_metrics([per_item[i]["greedy"] for i in idx], clusters)
        if all("verdict" in per_item[i] for i in idx):
            v = [per_item[i]["verdict"] for i in idx]
            m["verdict/strict_accuracy"] = mean_ci([r["credit"] for r in v], clusters)  # a verdict never ties
            m["verdict/accuracy"] = m["verdict/strict_accuracy"]
            m["verdict/position_consistency"] = sum(r["consistent"] for r in v) / len(v)
        if all("sampled" in per_item[i] for i in idx) and ks:
            s = [per_item[i]["sampled"] for i in idx]
            for k in ks:
                m[f"voting@{k}/strict_accuracy"] = mean_ci(
                    [float(r[f"voting@{k}"] == 1.0) for r in s], clusters
                )
                m[f"voting@{k}/accuracy"] = mean_ci([r[f"voting@{k}"] for r in s], clusters)
                if with_meta:
                    m[f"meta@{k}/accuracy"] = mean_ci([r[f"meta@{k}"] for r in s], clusters)
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
            **(
                {"greedy": r["greedy"]["credit"], "greedy_strict": r["greedy"]["strict"]}
                if "greedy" in r
                else {}
            ),
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


COLUMNS = (  # header, width, what it is (the legend under the table)
    ("strict", 6, "strict accuracy: right only when the preferred response alone scores highest"),
    ("95% CI", 11, "of strict accuracy"),
    ("interval", 14, "wilson: independent items; N prompts: clustered by prompt (design effect)"),
    ("ties", 5, "share of parsed judgements whose top score is shared"),
    ("unparsed", 8, "share of judgements without a readable score line"),
    ("forced", 6, "share of judgements whose score line was forced (--force-scores)"),
    ("consistent", 10, "position consistency: the same winner in both orders"),
    ("ties=1/2", 8, "accuracy with ties and unparsed judgements counted as a coin flip"),
)


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def interval_name(acc: dict[str, Any]) -> str:
    if acc.get("interval") != "clustered":
        return "wilson"
    return f"{acc['clusters']} prompts"


def summary_table(results: dict[str, Any]) -> list[str]:
    """The figures a person reads first, one line per group (COLUMNS), strict accuracy first; the
    greedy pass's, else the smallest voting@k's."""
    overall = results["metrics"].get("all", {})
    votes = sorted(
        (k for k in overall if k.startswith("voting@") and k.endswith("/strict_accuracy")),
        key=lambda k: int(k[7:].split("/")[0]),
    )
    key = "greedy/strict_accuracy" if "greedy/strict_accuracy" in overall else (votes or [None])[0]
    if key is None:
        return ["no accuracy measured"]
    way = key.split("/")[0]
    part = "greedy" if way == "greedy" else "sampled"
    width = max(len("subset"), *(len(name) for name in results["metrics"]))
    head = "  ".join(f"{h:>{w}}" for h, w, _ in COLUMNS)
    lines = [
        f"{way} strict accuracy over {results['items']} items ({results['seconds']:.0f} s); "
        f"{results.get('tied_pairs', 0)} tied pairs not scored, {results.get('skipped_rows', 0)} rows skipped",
        f"{'subset':<{width}}  {'n':>5}  {head}",
    ]
    empty = {"mean": None, "n": 0, "ci95_low": None, "ci95_high": None}
    for name, m in results["metrics"].items():
        acc = m.get(key) or empty
        half = m.get(f"{way}/accuracy") or empty
        ci = "-" if acc["mean"] is None else f"{acc['ci95_low']:.3f}-{acc['ci95_high']:.3f}"
        cells = [
            share(acc["mean"]),
            ci,
            interval_name(acc),
            share(m.get("greedy/tie_rate") if part == "greedy" else None),
            share(m.get(f"{part}/parse_failure_rate")),
            share(m.get(f"{part}/forced_rate")),
            share(m.get("greedy/position_consistency") if part == "greedy" else None),
            share(half["mean"]),
        ]
        row = "  ".join(f"{c:>{w}}" for c, (_, w, _) in zip(cells, COLUMNS, strict=True))
        lines.append(f"{name:<{width}}  {acc['n']:>5}  {row}")
    lines += ["", *(f"  {h:<10} {text}" for h, _, text in COLUMNS)]
    return lines + per_k_lines(overall) + benchmark_lines(results.get("benchmark"))


def per_k_lines(overall: dict[str, Any]) -> list[str]:
    """All items' accuracy (95% CI) for each way of judging: greedy, one verdict, voting@k, meta@k."""
    names = [k.split("/")[0] for k in overall if k.endswith("/accuracy")]
    if len(names) < 2:
        return []
    lines = ["", f"{'all items':<14}  {'strict':>6}  {'ties=1/2':>8}  {'95% CI (ties=1/2)':>17}"]
    for name in names:
        acc, strict = overall[f"{name}/accuracy"], overall.get(f"{name}/strict_accuracy")
        lines.append(
            f"{name:<14}  {share(strict and strict['mean']):>6}  {acc['mean']:>8.3f}  "
            f"{acc['ci95_low']:.3f}-{acc['ci95_high']:.3f}"
        )
    return lines


def benchmark_lines(bench: dict[str, Any] | None) -> list[str]:
    """The benchmark's own published scores (`rlhfv.grm.benchmark_scores`), one line each."""
    if not bench:
        return []
    lines = ["", f"{bench['benchmark']} scores, as the benchmark computes them ({bench['note']}):"]
    width = max(len(name) for name in bench["scores"])
    for name, value in bench["scores"].items():
        lines.append(f"  {name:<{width}}  {share(value)}")
    return lines
