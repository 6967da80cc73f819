"""Is model B more accurate than model A on held-out ShapesVQA, beyond evaluation noise?

Both models answer the same test questions greedily; the difference in accuracy gets a paired
bootstrap 95% interval (resampling questions, both models together) and an exact two-sided
McNemar p-value (only the questions the two models disagree on count), overall and per family.

    python experiments/paired_accuracy.py --before <run>/policy_sft/final --after <run>/final --size 600

`--judge` compares two judges instead: held-out ShapesPairs (test split, seed 3 as in the recipes)
judged with the "compare" analysis, each judge writing its own answer first (`reading: self`); an
item counts as right when the preferred response gets the strictly higher score.

    python experiments/paired_accuracy.py --judge --before <run>/grm_sft/final --after <run>/grm_rl/final

With `--sampled-from <policy>` the judges meet that policy's own answers instead (test questions,
one answer the checker accepts against one it rejects: `rlhfv.data.pairs.SampledPairs`), as in
grouped comparison. `--tasks count,colour` keeps those question families only.

`--verdict` compares two ReasonGRM judges (`recipes/reasongrm_textchecks.yaml`): held-out
TextChecks pairs (test split) as A/B verdict prompts in a seeded random order, answered greedily
within `--max-new-tokens`; an item counts as right when the last verdict after `</think>` names the
right answer. `--pairs-format hh-rlhf --data <file>` (or llmbar) shows them the file's test pairs
instead, to see whether what they learned on TextChecks transfers.

    python experiments/paired_accuracy.py --verdict --before <run>/random_sft/final --after <run>/rstar_sft/final --size 300

For the pretrained MLLM (`recipes/grlhfv_vlm.yaml`): `--image-size 224` draws the images at the
tower's input size as its training data were, `--dtype bfloat16` answers under bf16 autocast as the
recipes train, and `--compact` shows judges the prompt without instructions they were trained on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
from pathlib import Path

import torch


def held_out_items(
    size: int,
    seed: int,
    judge: bool,
    tasks: list[str] | None,
    sampled_from: str | None,
    image_size: int = 96,
    compact: bool = False,
    verdict: bool = False,
    pairs_format: str = "textchecks",
    data: str | None = None,
) -> tuple[object, int]:
    """The held-out items both models are graded on, and the tokens an answer may take."""
    from rlhfv.data.pairs import JudgeTask, SampledPairs, ShapesPairs
    from rlhfv.data.shapes import ShapesVQA
    from rlhfv.models.base import load_model

    if verdict:
        from rlhfv.data.formats import PreferenceData
        from rlhfv.data.textchecks import TextCheckPairs
        from rlhfv.pipelines.reasongrm import VerdictTask

        if pairs_format == "textchecks":
            compared: object = TextCheckPairs(size=size, split="test", seed=seed)
        else:
            compared = PreferenceData(pairs_format, data, limit=size, seed=seed, split="test")
        return VerdictTask(compared, seed=seed), 64  # reasongrm_textchecks.yaml's max_new_tokens
    if not judge:
        return ShapesVQA(size=size, split="test", seed=seed, tasks=tasks, image_size=image_size), 24
    if sampled_from:
        questions = ShapesVQA(size=size, split="test", seed=seed, tasks=tasks, image_size=image_size)
        pairs: object = SampledPairs(load_model(sampled_from), questions, seed=seed)
    else:
        pairs = ShapesPairs(size=size, split="test", seed=seed, tasks=tasks, image_size=image_size)
    return JudgeTask(pairs, analysis="compare", reading="self", compact=compact), 80


def answers_right(
    path: str, data: object, tokens: int, batch_size: int = 50, cache: Path | None = None
) -> tuple[list[str], list[bool]]:
    """Each item's family and whether the model at `path` answered it right (greedy). With `cache`
    (a JSON file) a model already graded on the same items is read back instead of asked again."""
    from rlhfv.models.base import load_model
    from rlhfv.training.evaluation import graded_answers

    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        return saved["tasks"], saved["right"]
    graded = graded_answers(load_model(path), data, batch_size, tokens)
    tasks, right = [task for task, _, _ in graded], [ok for _, _, ok in graded]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"tasks": tasks, "right": right, "texts": [t for _, t, _ in graded]}))
    return tasks, right


def cache_file(folder: str | None, model: str, args: argparse.Namespace) -> Path | None:
    """Where one model's graded answers on these exact items are kept: its folder (and its
    weights' modification time, so a retrained model is asked again) and every argument that picks
    the items or the answers are part of the name."""
    if not folder:
        return None
    weights = [p.stat().st_mtime_ns for p in sorted(Path(model).glob("*.safetensors"))]
    key = json.dumps(
        [str(Path(model).resolve()), weights, args.size, args.seed, args.judge, args.tasks, args.sampled_from,
         args.image_size, args.dtype, args.compact]
        + ([args.max_new_tokens, args.pairs_format, args.data] if args.verdict else []),
    )  # fmt: skip
    return Path(folder) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided binomial test of `gained` vs `lost` discordant questions (p = 1/2)."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(a: list[bool], b: list[bool], draws: int = 2000, seed: int = 0) -> dict[str, float]:
    n = len(a)
    rng = random.Random(seed)
    diffs = []
    for _ in range(draws):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(sum(b[i] - a[i] for i in idx) / n)
    diffs.sort()
    gained = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    lost = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    return {
        "n": n,
        "before": sum(a) / n,
        "after": sum(b) / n,
        "diff": (sum(b) - sum(a)) / n,
        "ci_low": diffs[int(0.025 * draws)],
        "ci_high": diffs[int(0.975 * draws) - 1],
        "gained": gained,
        "lost": lost,
        "mcnemar_p": mcnemar_p(gained, lost),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="model folder (a run's final/)")
    parser.add_argument("--after", required=True)
    parser.add_argument("--size", type=int, default=600, help="test questions")
    parser.add_argument("--seed", type=int, help="test data seed (default 0; with --judge 3)")
    parser.add_argument("--judge", action="store_true", help="compare two judges on preference pairs")
    parser.add_argument(
        "--verdict", action="store_true", help="compare two ReasonGRM judges on TextChecks A/B verdicts"
    )
    parser.add_argument(
        "--pairs-format",
        default="textchecks",
        help="with --verdict: textchecks, or a file format (hh-rlhf, llmbar)",
    )
    parser.add_argument("--data", help="with --pairs-format other than textchecks: the preference file")
    parser.add_argument("--max-new-tokens", type=int, help="tokens an answer may take (default: the mode's)")
    parser.add_argument(
        "--sampled-from", help="with --judge: pairs of this policy's own answers (its model folder)"
    )
    parser.add_argument("--tasks", help="question families to keep, comma-separated (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--image-size", type=int, default=96, help="side of the drawn images (224 for the MLLM)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    parser.add_argument(
        "--compact", action="store_true", help="with --judge: the judge prompt without instructions"
    )
    parser.add_argument("--batch-size", type=int, default=50, help="items per generate call")
    parser.add_argument(
        "--cache",
        help="folder: keep each model's graded answers, reused when the same model meets the same items",
    )
    args = parser.parse_args()
    if args.sampled_from and not args.judge:
        parser.error("--sampled-from needs --judge")
    if args.verdict and (args.judge or args.tasks):
        parser.error("--verdict takes neither --judge nor --tasks")
    if args.verdict and args.pairs_format != "textchecks" and not args.data:
        parser.error(f"--pairs-format {args.pairs_format} needs --data <file>")
    torch.set_num_threads(args.threads)
    if args.seed is None:
        args.seed = 3 if args.judge else 0
    tasks_kept = args.tasks.split(",") if args.tasks else None
    autocast = torch.autocast("cpu", dtype=getattr(torch, args.dtype), enabled=args.dtype != "float32")
    with autocast:  # the policy samples its pairs' answers at the same precision the judges answer
        data, tokens = held_out_items(
            args.size, args.seed, args.judge, tasks_kept, args.sampled_from, args.image_size, args.compact,
            args.verdict, args.pairs_format, args.data,
        )  # fmt: skip
        tokens = args.max_new_tokens or tokens
        tasks, a = answers_right(
            args.before, data, tokens, args.batch_size, cache_file(args.cache, args.before, args)
        )
        _, b = answers_right(
            args.after, data, tokens, args.batch_size, cache_file(args.cache, args.after, args)
        )
    rows = {"all": compare(a, b)}
    for task in sorted(set(tasks)) if len(set(tasks)) > 1 else []:
        keep = [i for i, t in enumerate(tasks) if t == task]
        rows[task] = compare([a[i] for i in keep], [b[i] for i in keep])
    print(f"{'':9} {'n':>4} {'before':>7} {'after':>7} {'diff':>7}  95% CI           McNemar p")
    for name, r in rows.items():
        print(
            f"{name:9} {r['n']:>4} {r['before']:7.3f} {r['after']:7.3f} {r['diff']:+7.3f}  "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]  {r['mcnemar_p']:.2g}"
        )
    print(
        json.dumps(
            {
                "before": args.before, "after": args.after, "seed": args.seed, "tasks": args.tasks,
                "image_size": args.image_size, "dtype": args.dtype, "rows": rows,
            }
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
