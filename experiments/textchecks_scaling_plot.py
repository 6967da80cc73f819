"""Accuracy against k for each judge on TextChecks: voting@k and meta-RM@k curves, with the
judge's greedy and one-verdict (LLM-as-a-judge) accuracies as flat lines, 95% CIs as bands.

Reads the JSON files `rlhfv eval grm --out` wrote; each `--run LABEL=FILE[,FILE…]` is one judge.

    python experiments/textchecks_scaling_plot.py --out results/textchecks_scaling.png \\
        --run "SmolLM2-135M=results/textchecks/smollm2_untrained_k8.json,results/textchecks/smollm2_untrained_greedy.json" \\
        --run "Gemma-3-270M=results/textchecks/gemma270m_untrained.json"
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curves(metrics: dict) -> dict[str, list[tuple[int, float, float, float]]]:
    """{"voting": [(k, mean, low, high), …], "meta": …} from an eval's overall metrics."""
    out: dict[str, list[tuple[int, float, float, float]]] = {}
    for key, value in metrics.items():
        name, _, what = key.partition("/")
        if what == "accuracy" and "@" in name:
            kind, k = name.split("@")
            out.setdefault(kind, []).append((int(k), value["mean"], value["ci95_low"], value["ci95_high"]))
    return {kind: sorted(points) for kind, points in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", required=True, help="LABEL=results.json")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, spec in zip(colours, args.run, strict=False):
        label, paths = spec.split("=", 1)
        metrics = {}  # one judge's figures may come from several runs (greedy in one, voting in another)
        for path in paths.split(","):
            metrics |= json.load(open(path))["metrics"]["all"]
        for kind, style in (("voting", "-o"), ("meta", "--s")):
            points = curves(metrics).get(kind)
            if points:
                ks, mean, low, high = zip(*points, strict=True)
                ax.plot(ks, mean, style, color=colour, label=f"{label} {kind}@k")
                ax.fill_between(ks, low, high, color=colour, alpha=0.12)
        for key, style in (("greedy/accuracy", ":"), ("verdict/accuracy", "-.")):
            if key in metrics:
                ax.axhline(metrics[key]["mean"], ls=style, color=colour, lw=1,
                           label=f"{label} {key.split('/')[0]} ({metrics[key]['mean']:.2f})")  # fmt: skip
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 4, 8, 16], labels=["1", "2", "4", "8", "16"])
    ax.set_xlabel("k (sampled judgements per pair)")
    ax.set_ylabel("pairwise accuracy (ties ½)")
    ax.set_title("TextChecks test pairs: judge accuracy against k")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
