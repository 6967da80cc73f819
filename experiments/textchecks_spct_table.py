"""The SPCT table on TextChecks from `rlhfv eval grm --out` files: per judge and way of judging,
strict accuracy (a tie is wrong) and accuracy with a tie as ½, 95% Wilson intervals, and the
paired differences SPCT's hypotheses are about, on the same items.

    python experiments/textchecks_spct_table.py --out results/textchecks/spct_table.json \\
        --run untrained=results/textchecks/spct_untrained.json --run RFT=… --run "RFT+RL=…"

Paired differences (95% bootstrap over items, 2,000 resamples, both sides resampled together):
voting@8 (and @16) − voting@1 and meta@k − voting@k within each judge, and each judge against
the one listed before it at greedy (ties ½ only), voting@1, voting@8 and meta@8 (needs the same
items, which the same --limit and --seed give).
Credits per item are those the eval wrote (`per_item`: 1 right, ½ tie, 0 wrong for two responses).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from rlhfv.grm.eval_report import mean_ci


def ways(per_item: list[dict]) -> list[str]:
    """The sampled ways of judging in the items' credits: voting@k, then meta@k, by k."""
    keys = [k for k in per_item[0] if "@" in k]
    return sorted(keys, key=lambda k: (k.split("@")[0] != "voting", int(k.split("@")[1])))


def paired(a: list[float], b: list[float], seed: int = 0, rounds: int = 2000) -> dict[str, float]:
    """Mean of b − a with a 95% bootstrap interval over items (strict credits if given so)."""
    rng, n = random.Random(seed), len(a)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return {
        "diff": sum(diffs) / n,
        "ci95_low": means[int(0.025 * rounds)],
        "ci95_high": means[int(0.975 * rounds) - 1],
    }


def strict(credits: list[float]) -> list[float]:
    return [1.0 if c == 1.0 else 0.0 for c in credits]


def fmt(m: dict) -> str:
    return f"{m['mean']:.3f} ({m['ci95_low']:.2f}-{m['ci95_high']:.2f})"


def fmt_diff(d: dict) -> str:
    return f"{d['diff']:+.3f} ({d['ci95_low']:+.2f} to {d['ci95_high']:+.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="LABEL=eval.json")
    p.add_argument("--out", help="write the table's figures as JSON here")
    args = p.parse_args()
    runs = {}
    for spec in args.run:
        label, path = spec.split("=", 1)
        data = json.loads(Path(path).read_text())
        runs[label] = {
            "ids": [r["id"] for r in data["per_item"]],
            "items": data["per_item"],
            "seconds": data["seconds"],
            "metrics": data["metrics"]["all"],
        }
    table, lines = {}, []
    lines.append("| judge | way of judging | items | strict (ties wrong) | ties ½ | ties |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for label, run in runs.items():
        table[label] = {"seconds": run["seconds"], "ways": {}}
        m = run["metrics"]
        if "greedy/accuracy" in m:  # two orders per item: its credit is a mean, strict comes from the eval
            row = {
                "strict": m["greedy/strict_accuracy"],
                "half": m["greedy/accuracy"],
                "tie_share": m["greedy/tie_rate"],
            }
            table[label]["ways"]["greedy"] = row
            lines.append(
                f"| {label} | greedy, both orders | {row['half']['n']} | {fmt(row['strict'])} | {fmt(row['half'])} | {row['tie_share']:.2f} |"
            )
        for way in ways(run["items"]):
            credits = [r[way] for r in run["items"]]
            row = {
                "strict": mean_ci(strict(credits)),
                "half": mean_ci(credits),
                "tie_share": sum(c == 0.5 for c in credits) / len(credits),
            }
            table[label]["ways"][way] = row
            lines.append(
                f"| {label} | {way} | {len(credits)} | {fmt(row['strict'])} | {fmt(row['half'])} | {row['tie_share']:.2f} |"
            )
    lines += ["", "| comparison | items | strict | ties ½ |", "| --- | --- | --- | --- |"]
    comparisons = []
    labels = list(runs)
    for label in labels:
        for a, b in (
            ("voting@1", "voting@8"),
            ("voting@1", "voting@16"),
            ("voting@8", "meta@8"),
            ("voting@16", "meta@16"),
            ("voting@1", "meta@8"),
        ):
            comparisons.append((f"{label}: {b} − {a}", runs[label], a, runs[label], b))
    for before, after in zip(labels, labels[1:], strict=False):
        for way in ("greedy", "voting@1", "voting@8", "meta@8"):
            comparisons.append((f"{after} − {before}, {way}", runs[before], way, runs[after], way))
    table["paired"] = {}
    for name, ra, a, rb, b in comparisons:
        if a not in ra["items"][0] or b not in rb["items"][0]:
            continue
        if ra["ids"] != rb["ids"]:
            raise ValueError(
                f"{name}: the two evaluations judged different items; use the same --limit and --seed"
            )
        ca, cb = [r[a] for r in ra["items"]], [r[b] for r in rb["items"]]
        # a greedy credit is the mean of two orders: the eval's strict figure is not per item
        d = {
            "strict": None if a == "greedy" else paired(strict(ca), strict(cb)),
            "half": paired(ca, cb),
            "items": len(ca),
        }
        table["paired"][name] = d
        strict_cell = "n/a" if d["strict"] is None else fmt_diff(d["strict"])
        lines.append(f"| {name} | {len(ca)} | {strict_cell} | {fmt_diff(d['half'])} |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
