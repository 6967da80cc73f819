"""Generative RLHF-V's Table 2 in kind: six ways to turn one preference set into a better policy.

From ONE policy SFT checkpoint and ONE preference set (pairs of that policy's own ShapesVQA
answers, one the answer key accepts against one it rejects: `rlhfv.data.pairs.SampledPairs`, the
pairs `recipes/grlhfv_shapes.yaml`'s grm_rl stage trains on), it trains:

    row            what improves the policy
    dpo            DPO with RPO's NLL term, the dpo_shapes.yaml settings (dpo_plain: without it)
    rm_grpo        GRPO with a score-only reward model (Bradley-Terry head, `rlhfv.rewards.ScalarRM`)
    grm_untrained  GRPO, grouped comparison, with the GRM before it is trained to judge (below)
    grm_sft        GRPO, grouped comparison, with the SFT-only GRM (grm_refine)
    grm_rl         GRPO, grouped comparison, with the GRM after RL on the preference set (grm_rl)
    exact          GRPO with the exact-answer reward: a perfect judge, the ceiling
    grm_rl_paper   grm_rl with the paper's Table 5 policy settings: kl_coef 0.02, temperature 1.0
    rm_grpo_eos    rm_grpo with 5 taken off the score of every answer cut at max_new_tokens (the
                   policy of rm_grpo learned to repeat "4 4 4 …" to the limit, which the RM liked)

The paper's untrained GRM is an instruct MLLM asked to judge. A tiny random-weight model cannot
write a judgement at all until the cold start teaches it, so the untrained row's judge is the GRM
after the cold start's first two stages (`--untrained grm_warmup`): the equality drill and judging
on short prompts without instructions. It has never seen the full judge prompt that grouped
comparison uses, nor the preference set; on the held-out pairs it is right 0.36 of the time (most
of its judgements under the full prompt do not parse), against 0.64 after grm_sft.

Rows after dpo are grlhfv_shapes.yaml's policy_rl stage with only the reward changed: the same
steps, prompts, group size and learning rate. Each row is trained once per seed and graded against
the SFT start on 600 held-out images (paired bootstrap CI, McNemar p:
`experiments/paired_accuracy.py`). Every reward model is also graded on the same held-out pairs of
the policy's answers (test questions): the GRMs by their verdicts, the score-only RM by its
scores, DPO by its implicit reward.

    python experiments/grlhfv_table2.py --out checkpoints/table2 --seeds 0 1 2

The shared stages (the quickstart's stages up to grm_rl, then the score-only RM) run once; every
finished run (a `summary.json`) and every grade (`paired.json`) is reused, so a stopped job resumes
where it was. `--table-only` prints the table from what is there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLAGSHIP = ROOT / "recipes/grlhfv_shapes.yaml"
GRM_STAGES = ["policy_sft", "grm_drill", "grm_warmup", "grm_sft", "grm_refine", "grm_rl"]
ROWS = [
    "dpo",
    "rm_grpo",
    "grm_untrained",
    "grm_sft",
    "grm_rl",
    "exact",
    "grm_rl_paper",
    "dpo_plain",
    "rm_grpo_eos",
]
LABELS = {
    "dpo": "DPO (+NLL, dpo_shapes settings)",
    "dpo_plain": "plain DPO (nll_coef 0, lr 2e-5)",
    "rm_grpo": "GRPO, score-only RM",
    "grm_untrained": "GRPO, untrained GRM",
    "grm_sft": "GRPO, GRM+SFT",
    "grm_rl": "GRPO, GRM+RL",
    "exact": "GRPO, exact answer (ceiling)",
    "grm_rl_paper": "GRPO, GRM+RL, KL 0.02 T 1.0",
    "rm_grpo_eos": "GRPO, score-only RM, missing-EOS penalty 5",
}
TEST_IMAGES = 600
sys.path.insert(0, str(HERE))


def load_yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def model_node(path: Path) -> dict[str, Any]:
    return {"_component_": "rlhfv.models.base.load_model", "path": str(path)}


def preference_nodes(sft: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The preference set (train) and the held-out pairs, exactly grm_rl's nodes with the SFT path
    filled in: SampledPairs are sampled from a seed, so every run that builds them gets the same pairs."""
    grm_rl = load_yaml(FLAGSHIP)["stages"]["grm_rl"]
    train, held_out = grm_rl["train_data"]["pairs"], grm_rl["eval_data"]["pairs"]
    train["policy"], held_out["policy"] = model_node(sft), model_node(sft)
    return train, held_out


def row_recipe(row: str, shared: Path, untrained: str) -> dict[str, Any]:
    """A single-stage recipe for one row, built from the flagship's and the baselines' recipes."""
    sft = shared / "policy_sft/final"
    train_pairs, held_out = preference_nodes(sft)
    run = {"name": row, "seed": 0, "resume": "auto", "save_every": 50, "cpu_threads": 1}
    if row in ("dpo", "dpo_plain"):
        stage = load_yaml(ROOT / "recipes/dpo_shapes.yaml")["stages"]["dpo"]
        stage.update(policy=model_node(sft), train_data=train_pairs, eval_pairs=held_out, eval_every=0)
        if row == "dpo_plain":  # the plain variant dpo_shapes.yaml measured: no NLL term, lr 2e-5
            stage["nll_coef"] = 0.0
            stage["optimizer"]["lr"] = 2e-5
        return {"run": run, **stage}
    if row == "rm":
        stage = load_yaml(ROOT / "recipes/rm_shapes.yaml")["stages"]["rm"]
        stage.update(model=model_node(sft), train_data=train_pairs, eval_pairs=held_out, eval_every=0)
        return {"run": run, **stage}
    stage = load_yaml(FLAGSHIP)["stages"]["policy_rl"]
    stage["policy"] = model_node(sft)
    judge = stage["reward"]["reward"]["judge"]
    grm = {"grm_untrained": untrained, "grm_sft": "grm_refine"}.get(row, "grm_rl")
    judge["model"] = model_node(shared / grm / "final")
    if row.startswith("rm_grpo"):
        stage["reward"] = {
            "_component_": "rlhfv.rewards.ScalarRM",
            "path": str(shared / "rm/final"),
            "normalize": True,
        }
        if (
            row == "rm_grpo_eos"
        ):  # 5: far beyond the RM's spread on the policy's answers (std 0.35 at the start)
            stage["reward"]["missing_eos_penalty"] = 5.0
    elif row == "exact":
        stage["reward"] = {"_component_": "rlhfv.rewards.rules.ExactAnswerReward"}
    elif row == "grm_rl_paper":
        stage.update(kl_coef=0.02, temperature=1.0)
    return {"run": run, **stage}


def run_recipe(recipe: dict[str, Any], path: Path, run_dir: Path, seed: int, log: Path) -> None:
    """Train one run in a child process (`rlhfv run`), unless it has finished before."""
    from omegaconf import OmegaConf

    if (run_dir / "summary.json").exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(recipe), path)
    command = [sys.executable, "-m", "rlhfv.cli", "run", str(path), f"run.dir={run_dir}", f"run.seed={seed}"]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(command[2:])}  (log {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, env=child_env())


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def shared_stages(out: Path) -> Path:
    """The quickstart's stages up to grm_rl, then the score-only RM on the same pairs."""
    shared = out / "shared"
    missing = [s for s in GRM_STAGES if not (shared / s / "summary.json").exists()]
    if missing:  # a stage that finished before is not run again (its successors may be)
        command = [sys.executable, "-m", "rlhfv.cli", "run", str(FLAGSHIP), "--stages", ",".join(missing)]
        command += [f"run.dir={shared}", "run.cpu_threads=1"]
        print(f"[{time.strftime('%H:%M:%S')}] {' '.join(command[2:])}", flush=True)
        with (out / "shared.log").open("a") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=child_env())
    return shared


def sft_answers(out: Path, shared: Path) -> tuple[list[str], list[bool]]:
    """The SFT start's graded answers on the held-out images, computed once."""
    from paired_accuracy import answers_right

    from rlhfv.data.shapes import ShapesVQA

    cache = out / "sft_answers.json"
    if not cache.exists():
        tasks, right = answers_right(
            str(shared / "policy_sft/final"), ShapesVQA(size=TEST_IMAGES, split="test", seed=0), 24
        )
        cache.write_text(json.dumps({"tasks": tasks, "right": right}))
    saved = json.loads(cache.read_text())
    return saved["tasks"], saved["right"]


def grade_policy(run_dir: Path, start: tuple[list[str], list[bool]]) -> dict[str, Any]:
    """Paired accuracy of a finished run against the SFT start: all questions and per family."""
    from paired_accuracy import answers_right, compare

    from rlhfv.data.shapes import ShapesVQA

    cache = run_dir / "paired.json"
    if not cache.exists():
        tasks, before = start
        _, after = answers_right(
            str(run_dir / "final"), ShapesVQA(size=TEST_IMAGES, split="test", seed=0), 24
        )
        rows = {"all": compare(before, after)}
        for task in sorted(set(tasks)):
            keep = [i for i, t in enumerate(tasks) if t == task]
            rows[task] = compare([before[i] for i in keep], [after[i] for i in keep])
        cache.write_text(json.dumps(rows, indent=1))
    return json.loads(cache.read_text())


def judge_accuracies(out: Path, shared: Path, untrained: str) -> dict[str, float]:
    """Each reward model's accuracy on the held-out pairs of the policy's answers (one item set)."""
    cache = out / "judge_accuracy.json"
    found: dict[str, float] = json.loads(cache.read_text()) if cache.exists() else {}
    for grm in (untrained, "grm_refine", "grm_rl"):
        if grm not in found:
            from paired_accuracy import answers_right

            from rlhfv.config import instantiate
            from rlhfv.data.pairs import JudgeTask

            _, held_out = preference_nodes(shared / "policy_sft/final")
            items = JudgeTask(instantiate(held_out), analysis="compare", reading="self")
            _, right = answers_right(str(shared / grm / "final"), items, 80)
            found[grm] = sum(right) / len(right)
            found[f"{grm}/pairs"] = len(right)
            cache.write_text(json.dumps(found, indent=1))
    rm = json.loads((shared / "rm/summary.json").read_text())
    found["rm"] = rm["after/pairwise_accuracy"]
    found["rm/before"] = rm.get("before/pairwise_accuracy", float("nan"))
    return found


def preference_set_size(out: Path, shared: Path) -> dict[str, Any]:
    """How many pairs the preference set holds, and a digest of them: every run rebuilds the set
    from the same seeded node, so every run that reads it saw these pairs."""
    import hashlib

    from rlhfv.config import instantiate

    cache = out / "preference_set.json"
    if not cache.exists():
        train, _ = preference_nodes(shared / "policy_sft/final")
        pairs = instantiate(train)
        digest = hashlib.sha256()
        for p in pairs:
            digest.update(json.dumps([p.prompt.text, p.responses, p.preferred]).encode())
        cache.write_text(json.dumps({"pairs": len(pairs), "sha256": digest.hexdigest()[:16]}))
    return json.loads(cache.read_text())


def table(out: Path, seeds: list[int], rows: list[str], untrained: str) -> list[str]:
    shared = out / "shared"
    judged = judge_accuracies(out, shared, untrained) if (shared / "rm/summary.json").exists() else {}
    own = {
        "rm_grpo": judged.get("rm"),
        "rm_grpo_eos": judged.get("rm"),
        "grm_untrained": judged.get(untrained),
        "grm_sft": judged.get("grm_refine"),
        "grm_rl": judged.get("grm_rl"),
        "grm_rl_paper": judged.get("grm_rl"),
        "exact": 1.0,
    }
    lines = [
        f"held-out accuracy, paired against the SFT start on {TEST_IMAGES} test images: diff [95% CI] McNemar p",
        "| row | method | RM's held-out pair acc. | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean diff (count) |",
        "| --- | --- | --- | " + " | ".join("---" for _ in seeds) + " | --- |",
    ]
    for row in rows:
        cells, diffs, counts = [], [], []
        for seed in seeds:
            graded = out / row / f"seed{seed}" / "paired.json"
            if not graded.exists():
                cells.append("")
                continue
            r = json.loads(graded.read_text())
            a = r["all"]
            cells.append(f"{a['diff']:+.3f} [{a['ci_low']:+.3f}, {a['ci_high']:+.3f}] p={a['mcnemar_p']:.2g}")
            diffs.append(a["diff"])
            counts.append(r["count"]["diff"])
        if row.startswith("dpo"):
            summaries = [out / row / f"seed{s}" / "summary.json" for s in seeds]
            implicit = [
                json.loads(p.read_text()).get("after/reward_accuracy") for p in summaries if p.exists()
            ]
            acc = f"{sum(implicit) / len(implicit):.3f} (implicit)" if implicit else ""
        else:
            acc = "" if own.get(row) is None else f"{own[row]:.3f}"
        mean = f"{sum(diffs) / len(diffs):+.3f} ({sum(counts) / len(counts):+.3f})" if diffs else ""
        lines.append(
            f"| {ROWS.index(row) + 1 if row in ROWS[:6] else '-'} | {LABELS[row]} | {acc} | {' | '.join(cells)} | {mean} |"
        )
    if (out / "preference_set.json").exists():
        lines.append(f"preference set: {json.loads((out / 'preference_set.json').read_text())}")
    if judged:
        lines.append(
            f"held-out pairs: {judged.get('grm_rl/pairs')}; score-only RM before training {judged['rm/before']:.3f}; "
            f"SFT start accuracy {json.loads((out / 'sft_answers.json').read_text())['right'].count(True) / TEST_IMAGES:.3f}"
            if (out / "sft_answers.json").exists()
            else f"held-out pairs: {judged.get('grm_rl/pairs')}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for every run (reused when present)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=ROWS[:6], choices=ROWS)
    parser.add_argument(
        "--untrained",
        default="grm_warmup",
        choices=GRM_STAGES[1:4],
        help="the flagship stage whose GRM is the 'untrained' row (default grm_warmup: see the top)",
    )
    parser.add_argument("--table-only", action="store_true", help="print the table from finished runs")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        import torch

        torch.set_num_threads(1)
        shared = shared_stages(out)
        run_recipe(
            row_recipe("rm", shared, args.untrained),
            out / "recipes/rm.yaml",
            shared / "rm",
            0,
            out / "rm.log",
        )
        start = sft_answers(out, shared)
        preference_set_size(out, shared)
        for seed in args.seeds:  # every row at one seed before the next seed: a partial table is balanced
            for row in args.rows:
                run_dir = out / row / f"seed{seed}"
                recipe = row_recipe(row, shared, args.untrained)
                run_recipe(recipe, out / f"recipes/{row}.yaml", run_dir, seed, out / row / f"seed{seed}.log")
                grade_policy(run_dir, start)
    print("\n".join(table(out, args.seeds, args.rows, args.untrained)))


if __name__ == "__main__":
    main()
