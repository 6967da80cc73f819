"""Policy gain against the number of candidates n compared per prompt (Generative RLHF-V, Fig. 7).

Runs the `policy_rl` stage of a finished GRLHF-V recipe once per n (the group size G = n), from
the same SFT policy and with the same trained GRM, and records held-out accuracy before and after.
Each run sees the same number of prompts; larger n costs n(n-1)/2 judge calls per prompt.
Writes `n_scaling.md` (table) and `n_scaling.png` (plot) into the output folder, from every n
run there so far: several invocations with different `--ns` and the same `--out` (e.g. one per
core) add up to one table.

    python experiments/grlhfv_n_scaling.py --recipe recipes/grlhfv_shapes.yaml --ns 2 3 5 7
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from rlhfv.config import load_recipe
from rlhfv.pipelines.grpo import main as grpo_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/grlhfv_shapes.yaml")
    parser.add_argument("--ns", type=int, nargs="+", default=[2, 3, 5, 7])
    parser.add_argument("--out", default="checkpoints/grlhfv_n_scaling")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. stages.policy_rl.steps=20")
    args = parser.parse_args()
    cfg = load_recipe(args.recipe, args.overrides)
    out = Path(args.out)
    for n in args.ns:
        stage = OmegaConf.merge(
            cfg.stages.policy_rl, {"group_size": n, "run": {"dir": str(out / f"n{n}"), "resume": "auto"}}
        )
        started = time.perf_counter()
        summary = grpo_main(stage)
        row = {
            "n": n,
            "before": summary["before/accuracy"],
            "after": summary["after/accuracy"],
            "gain": summary["after/accuracy"] - summary["before/accuracy"],
            "judge_calls_per_prompt": n * (n - 1) // 2,
            "minutes": (time.perf_counter() - started) / 60,
        }
        (out / f"n{n}" / "n_scaling_row.json").write_text(json.dumps(row) + "\n")
        print(json.dumps(row))
    rows = sorted(
        (json.loads(p.read_text()) for p in out.glob("n*/n_scaling_row.json")), key=lambda r: r["n"]
    )
    table = [
        "| n | judge calls / prompt | accuracy before | after | gain | minutes |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['n']} | {r['judge_calls_per_prompt']} | {r['before']:.3f} | {r['after']:.3f} | {r['gain']:+.3f} | {r['minutes']:.1f} |"
        for r in rows
    ]
    (out / "n_scaling.md").write_text("\n".join(table) + "\n")
    (out / "n_scaling.json").write_text(json.dumps(rows, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot([r["n"] for r in rows], [r["gain"] for r in rows], marker="o")
    ax.set_xlabel("candidates compared per prompt (n)")
    ax.set_ylabel("held-out accuracy gain")
    ax.set_title("GRLHF-V on ShapesVQA: gain vs n")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "n_scaling.png", dpi=120)
    print("\n".join(table))


if __name__ == "__main__":
    main()
