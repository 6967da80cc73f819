"""Label efficiency of the active loop: GRM held-out accuracy against labels used, per strategy.

Every strategy runs `recipes/active_loop_shapes.yaml` with the same seeds (so the same pool of
questions each round), scripted labellers at `--error-rate` (10% by default) and the same number
of rounds; the table gives each round's mean labels and accuracy (min-max over seeds), and the
label share: how many labels each strategy needed to reach `at_random`'s final mean accuracy, as a
share of `at_random`'s labels (the goal for `uncertainty`: at most 60%). Runs go seed by
seed (every strategy on a seed, then the next seed), and the table and plot are rewritten after
each, so a stopped benchmark leaves the seeds it finished; a rerun continues (run.resume=auto).

The GRM starts from the flagship's grm_refine and the pairs are its SFT policy's answers, so from
a fresh clone first run the flagship, which writes both checkpoints (about 2 hours on 2 cores):

    rlhfv run recipes/grlhfv_shapes.yaml
    python experiments/active_learning.py --seeds 0 1 2 --out results/active_learning \
        --policy checkpoints/grlhfv_shapes/policy_sft/final --grm checkpoints/grlhfv_shapes/grm_refine/final
    # the tiny setting: random tiny models and a parity checker; checks the script, measures nothing
    python experiments/active_learning.py --tiny --seeds 0 1 2 --out /tmp/active_learning_tiny
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "active_loop_shapes.yaml"


def tiny_overrides(models: Path) -> list[str]:
    """Seconds per round: a random tiny Qwen2-VL as policy and GRM, a checker its answers split."""
    from rlhfv.models.base import save_model
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    if not (models / "tiny").is_dir():
        save_model(tiny_qwen2_vl(seed=0), models / "tiny")
    parity = "tests.data.test_pairs.ParityGraded"
    return [
        f"policy.path={models / 'tiny'}", f"grm.path={models / 'tiny'}", f"pool._component_={parity}",
        "pool.size=12", "pool.tasks=[count]", "samples=3", "max_new_tokens=6", "judge_samples=2",
        "judge_max_new_tokens=6", "judge_force=true", "per_round=3", "rounds=3", "overlap=1",
        "simulated.count=1", "grm_train.steps=4", "grm_train.batch_size=2", "grm_train.warmup_steps=0",
        "grm_train.max_new_tokens=8", f"grm_train.eval_data.pairs.data._component_={parity}",
        "grm_train.eval_data.pairs.data.size=8", "grm_train.eval_data.pairs.data.tasks=[count]",
        "grm_train.eval_data.pairs.max_new_tokens=6", "grm_train.eval_data.pairs.samples=3",
        "retrain.validation=0.5", "retrain.min_steps=1",
    ]  # fmt: skip


def run_loop(out: Path, strategy: str, seed: int, error_rate: float, extra: list[str]) -> dict:
    """One loop run; its summary, with the starting GRM's accuracy (0 labels) as `accuracy_before`."""
    from rlhfv.config import load_recipe
    from rlhfv.pipelines.active_loop import main

    overrides = [
        f"run.dir={out / strategy / f'seed{seed}'}", "run.resume=auto", f"run.seed={seed}",
        f"simulated.seed={seed}", f"simulated.error_rate={error_rate}",
        f"selection=rlhfv.grm.selection.{strategy}", *extra,
    ]  # fmt: skip
    main(load_recipe(RECIPE, overrides))
    return finished_run(out / strategy / f"seed{seed}")


def finished_run(run_dir: Path) -> dict | None:
    """A run's curve from its loop state (None: not finished): accuracy and labels by round, the
    starting GRM's accuracy (0 labels) and the number of held-out pairs."""
    path = run_dir / "loop_state.json"
    state = json.loads(path.read_text()) if path.is_file() else {}
    if state.get("phase") != "done":
        return None
    history = state["history"]
    return {
        "run_dir": str(run_dir),
        "accuracy_by_round": [h["grm/accuracy"] for h in history],
        "labels_by_round": [h["labels/used"] for h in history],
        # the first round that trained scored the starting GRM (a round kept early did not)
        "accuracy_before": next(
            (h["grm/accuracy_before"] for h in history if "grm/accuracy_before" in h), None
        ),
        "held_out": history[-1].get("grm/held_out", 0),
        # each round's decision: a new GRM served ("replaced") or the served one kept, and why
        "decisions": [f"{h.get('grm/decision', '?')}: {h.get('grm/reason', '')}" for h in history],
    }


def label_share(curves: dict[str, list[dict]], strategy: str) -> float | None:
    """Labels `strategy` needed to reach at_random's final mean accuracy, over at_random's labels
    (None: not reached, or at_random never rose above its start, so there is nothing to reach)."""
    target = curves["at_random"][-1]["accuracy"]
    if target <= curves["at_random"][0]["accuracy"]:
        return None
    for point in curves[strategy]:
        if point["accuracy"] >= target:
            return point["labels"] / curves["at_random"][-1]["labels"]
    return None


def curves_of(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Per strategy: the starting GRM (round 0, no labels) and each round, mean and min-max over seeds."""
    curves: dict[str, list[dict]] = {}
    for strategy, summaries in runs.items():
        if not summaries:
            continue
        rounds = min(len(s["accuracy_by_round"]) for s in summaries)
        before = [s["accuracy_before"] for s in summaries if s["accuracy_before"] is not None]
        start = [{"round": 0, "labels": 0, "accuracy": statistics.mean(before), "min": min(before),
                  "max": max(before)}] if before else []  # fmt: skip
        curves[strategy] = start + [
            {
                "round": r + 1,
                "labels": statistics.mean(s["labels_by_round"][r] for s in summaries),
                "accuracy": statistics.mean(s["accuracy_by_round"][r] for s in summaries),
                "min": min(s["accuracy_by_round"][r] for s in summaries),
                "max": max(s["accuracy_by_round"][r] for s in summaries),
            }
            for r in range(rounds)
        ]
    return curves


def report(runs: dict[str, list[dict]], args: argparse.Namespace, held_out: int) -> str:
    """Write the table (markdown), the data (JSON) and the plot (PNG) of the runs so far."""
    curves = curves_of(runs)
    seeds = {s: len(v) for s, v in runs.items()}
    final = curves["at_random"][-1]["accuracy"] if curves.get("at_random") else 0.5
    noise = 1.96 * math.sqrt(final * (1 - final) / held_out) if held_out else float("nan")
    lines = [
        f"GRM held-out accuracy by round, mean (min-max) over seeds (runs per strategy: {seeds}), labeller "
        f"error rate {args.error_rate}{' (tiny setting: random tiny models, measures nothing)' if args.tiny else ''}. "
        f"Round 0 is the starting GRM. {held_out} held-out pairs: one accuracy's 95% interval is "
        f"about ±{noise:.3f} (binomial, at at_random's final accuracy).",
        "",
        "| strategy | round | labels | accuracy |",
        "| --- | --- | --- | --- |",
    ]
    for strategy, points in curves.items():
        lines += [
            f"| {strategy} | {pt['round']} | {pt['labels']:.0f} | {pt['accuracy']:.3f} ({pt['min']:.3f}-{pt['max']:.3f}) |"
            for pt in points
        ]
    lines.append("")
    for strategy in curves:
        if strategy != "at_random" and "at_random" in curves:
            share = label_share(curves, strategy)
            reached = (
                f"{share:.0%} of at_random's labels"
                if share is not None
                else "not reached (or at_random did not improve on its start)"
            )
            lines.append(f"- {strategy} reaches at_random's final accuracy with: {reached} (goal: ≤ 60%)")
    lines += [
        "",
        "Each round's decision (validation pairs of the labels; the served GRM is never replaced by a worse one):",
        "",
    ]
    for strategy, summaries in runs.items():
        for summary in summaries:
            for r, decision in enumerate(summary.get("decisions", []), 1):
                lines.append(f"- {strategy}, {Path(summary['run_dir']).name}, round {r}: {decision}")
    table = "\n".join(lines) + "\n"
    (args.out / "active_learning.md").write_text(table)
    (args.out / "active_learning.json").write_text(json.dumps({"curves": curves, "runs": runs}, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for strategy, points in curves.items():
        xs = [pt["labels"] for pt in points]
        ax.plot(
            xs, [pt["accuracy"] for pt in points], marker="o", label=f"{strategy} ({seeds[strategy]} seeds)"
        )
        ax.fill_between(xs, [pt["min"] for pt in points], [pt["max"] for pt in points], alpha=0.2)
    ax.set_xlabel("labels used")
    ax.set_ylabel("GRM held-out accuracy")
    ax.set_title(f"active loop, {args.error_rate:.0%} label noise, {held_out} held-out pairs", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "active_learning.png", dpi=120)
    plt.close(fig)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["at_random", "uncertainty"])
    p.add_argument("--error-rate", type=float, default=0.1)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "active_learning")
    p.add_argument(
        "--policy",
        type=Path,
        default=Path("checkpoints/grlhfv_shapes/policy_sft/final"),
        help="the policy whose answers are paired: the flagship's policy_sft (rlhfv run recipes/grlhfv_shapes.yaml)",
    )
    p.add_argument("--grm", type=Path, default=Path("checkpoints/grlhfv_shapes/grm_refine/final"),
                   help="the starting GRM: the flagship's grm_refine (or grm_sft)")  # fmt: skip
    p.add_argument("--tiny", action="store_true", help="random tiny models: checks the script in ~2 minutes")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the table and plot from the finished runs in --out",
    )
    p.add_argument("overrides", nargs="*", help="recipe overrides for every run (key=value)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if "at_random" not in args.strategies:
        p.error("--strategies must include at_random, the control the label share is measured against")
    if not args.tiny and not args.report_only:
        for flag, path in (("--policy", args.policy), ("--grm", args.grm)):
            if not (path / "config.json").is_file():
                p.error(
                    f"{flag} {path}: no checkpoint there; run `rlhfv run recipes/grlhfv_shapes.yaml` first"
                )
    args.out.mkdir(parents=True, exist_ok=True)
    models = [] if args.tiny else [f"policy.path={args.policy.resolve()}", f"grm.path={args.grm.resolve()}"]
    extra = (tiny_overrides(Path(tempfile.mkdtemp())) if args.tiny else models) + args.overrides

    runs: dict[str, list[dict]] = {s: [] for s in args.strategies}
    table = ""
    for seed in args.seeds:
        for strategy in args.strategies:
            if args.report_only:
                done = finished_run(args.out / strategy / f"seed{seed}")
            else:
                done = run_loop(args.out, strategy, seed, args.error_rate, extra)
            if done is not None:
                runs[strategy].append(done)
                table = report(runs, args, done["held_out"])
    print(table)


if __name__ == "__main__":
    main()
