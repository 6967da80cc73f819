"""`rlhfv eval grm`: how well a pointwise generative judge picks the preferred response.

Reports, overall and per subset, from a greedy judgement of each item in both orders (responses
as stored and reversed):
- strict accuracy first (SPCT Eq. 10: right only when the preferred response alone scores highest;
  a tie or an unparsed judgement is wrong), then the shares of ties, unparsed and forced
  judgements (`--force-scores`, `rlhfv.grm.judge.force_scores`), position consistency (the same
  winner in both orders) and the accuracy with ties and failures as a random pick (1/n, SPCT's
  shuffle-then-argmax tie-break), and why parses failed;
- with `--k`: voting@k for each k (k sampled judgements, each in its own random order, scores
  summed), and meta-RM@k when a meta-RM is given (only the top k/2 samples by meta score vote);
- for RM-Bench, RMB and RewardBench files, the benchmark's own published scores beside these
  (`rlhfv.grm.benchmark_scores`).
Accuracies carry 95% intervals (`rlhfv.grm.eval_report`): Wilson's over independent items, and
clustered by prompt where items share one (RM-Bench's nine style pairs, best-of-N sets, several
annotated pairs of a prompt); the table names which. Subsets that are paths nest: `chat/hard`
also counts towards `chat`, and an RM-Bench difficulty (easy, normal, hard) is reported across
subsets as `level/hard`. Pairs whose gold label is a tie (the generic format's annotator votes)
are counted, not scored.

The CLI prints the table and writes the full results as strict JSON (no NaN) to `--out`; it
exits 1 when no item was usable and 2, with one line naming the culprit, on a bad format, file,
mapping or model.

    rlhfv eval grm --model smollm2-135m-instruct --format llmbar \
        --data ../shared/data/llmbar/Natural/dataset.json --out results/x.json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfv.grm.eval_report import summarize, summary_table
from rlhfv.grm.judge import JudgeItem, Judgement, judge
from rlhfv.grm.rules import preferred_truth, spct_correct
from rlhfv.grm.voting import meta_vote, pick_credit, vote

logger = logging.getLogger(__name__)


NESTED_FORMATS = ("rm-bench", "rmb-pairwise", "rmb-bon", "shapes", "textchecks")  # subsets are paths
GENERATED_FORMATS = {
    "shapes": "ShapesVQA test pairs, generated (no --data)",
    "textchecks": "TextChecks pairs (rlhfv.data.textchecks), generated: --limit items of --split (test unless train)",
}


@dataclass
class EvalItem:
    """One judged item: the judge's input, the index of the preferred response, its subset ("": none).

    `cluster` names the prompt: items with the same cluster are judged on one prompt and share an
    interval's cluster ("": the item stands alone).
    """

    item: JudgeItem
    preferred: int
    subset: str
    id: str
    cluster: str = ""


def prompt_key(prompt: str, images: Sequence[str] = ()) -> str:
    """The cluster of an item: its prompt text and image paths."""
    return "\x00".join([prompt, *images])


def items_from_rows(
    rows: Sequence[Any], path: str, load_images: bool = True
) -> tuple[list[EvalItem], list[Any]]:
    """PairwisePreference / BestOfN rows of file `path` → EvalItems with images loaded.

    Tied rows (`preferred is None`) have no right answer and are left out. A row whose image
    cannot be read is skipped and returned as a `RowError` naming its line; the others go on.
    With `load_images` False the images are neither read nor shown (`--ignore-images`).
    """
    from rlhfv.data.images import ImageError, load_image
    from rlhfv.data.preference import RowError

    items, errors = [], []
    for r in rows:
        if r.preferred is None:
            continue
        try:
            images = [load_image(p) for p in r.images] if load_images else []
        except ImageError as e:
            errors.append(RowError(path, r.line, "images", str(e)))
            continue
        item = JudgeItem(r.prompt, list(r.responses), images)
        items.append(EvalItem(item, r.preferred, r.source, r.id, prompt_key(r.prompt, r.images)))
    return items, errors


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


def textchecks_items(size: int, split: str, seed: int) -> list[EvalItem]:
    """TextChecks preference pairs (`rlhfv.data.textchecks`): a right answer against a wrong one."""
    from rlhfv.data.textchecks import TextChecks

    data = TextChecks(size=size, split=split, seed=seed)
    pairs = [data.preference_pair(i) for i in range(size)]
    return [
        EvalItem(JudgeItem(p.prompt.text, list(p.responses)), p.preferred, p.source, p.id, p.prompt.text)
        for p in pairs
    ]


def build_judge(spec: str, dtype: str = "float32") -> Any:
    """`tiny` (random tiny text LM, for tests), an rlhfv model folder, an HF folder, a pulled name
    or a Hub ID."""
    from rlhfv.models.base import MODEL_CARD, load_model
    from rlhfv.models.hub import resolve_model
    from rlhfv.models.text_lm import load_text_lm, tiny_text_lm

    if spec == "tiny":
        return tiny_text_lm(seed=0)
    spec = str(resolve_model(spec))
    if (Path(spec) / MODEL_CARD).is_file():
        return load_model(spec, dtype=dtype)
    return load_text_lm(spec, dtype=dtype)


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


BATCH_SIZE = 32  # generated rows per call; see results/eval_honest.md


def longest_first(items: Sequence[EvalItem]) -> list[int]:
    """Item indices by prompt and response length, longest first: a generate call's rows then
    have similar lengths, so little of each batch is padding (and the longest, slowest rows show
    their cost at the start of the progress bar, not the end)."""
    size = [len(e.item.question) + sum(len(r) for r in e.item.responses) for e in items]
    return sorted(range(len(items)), key=lambda i: -size[i])


def evaluate_grm(
    model: Any,
    items: Sequence[EvalItem],
    ks: Sequence[int] = (),
    temperature: float = 0.5,
    max_new_tokens: int = 256,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    meta: Any | None = None,
    principles: str | None = None,
    greedy: bool = True,
    progress: bool = True,
    force: bool = False,
    reading: bool = False,
    verdict: bool = False,
    engine: Any | None = None,
    nested: bool = True,
) -> dict[str, Any]:
    """Run the evaluation described in the module docstring; return the results dictionary.

    `ks`: voting@k values; empty (the default) samples nothing. The greedy and verdict passes
    judge items longest first (`longest_first`), `batch_size` generated rows per call.
    `nested`: subset names are paths (`chat/hard` counts in `chat`).

    `verdict`: also the LLM-as-a-judge baseline, one A/B verdict per order (`rlhfv.grm.verdict`).

    `reading`: the judge answers each question itself before it sees the responses
    (`rlhfv.grm.judge.judge(reading=True)`), for judges trained with `JudgeTask(reading=...)`.

    `engine`: a `VLLMEngine` serving `model`: the greedy and sampled judgements and their forced
    score lines go to it (`batch_size` rows per call); the one verdict and meta-RM scores stay
    in this process.
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
        "engine": engine,
    }
    order = longest_first(items)
    if greedy:  # two rows per item (stored order, reversed), batch_size rows per generate call
        step = max(1, batch_size // 2)
        bar = tqdm(total=len(items), desc="greedy", unit="item", disable=not progress)  # rate and ETA
        done: list[float] = []
        for lo in range(0, len(items), step):
            chunk = order[lo : lo + step]
            orders = [
                [list(range(len(items[i].item.responses))), list(range(len(items[i].item.responses)))[::-1]]
                for i in chunk
            ]
            judged = judge(model, [items[i].item for i in chunk], k=2, orders=orders, greedy=True, **common)
            for i, j in zip(chunk, judged, strict=True):
                rec = greedy_records(j, items[i])
                failures.update(rec["failures"])
                per_item[i]["greedy"] = rec
                done.append(rec["strict"])
            bar.update(len(chunk))
            bar.set_postfix(strict=f"{sum(done) / len(done):.3f}")
        bar.close()
    if verdict:
        from rlhfv.grm.verdict import one_verdicts

        for lo in tqdm(
            range(0, len(items), batch_size), desc="one verdict", unit="batch", disable=not progress
        ):
            chunk = order[lo : lo + batch_size]
            verdicts = one_verdicts(
                model, [items[i].item for i in chunk], [items[i].preferred for i in chunk]
            )
            for i, v in zip(chunk, verdicts, strict=True):
                per_item[i]["verdict"] = {"credit": v.credit, "consistent": v.consistent}
    k_max = max(ks) if ks else 0
    if k_max:  # k_max shuffled samples per item, all of an item's samples in the same generate call
        step = max(1, batch_size // k_max)
        bar = tqdm(total=len(items), desc=f"sampling k={k_max}", unit="item", disable=not progress)
        for lo in range(0, len(items), step):
            group = items[lo : lo + step]
            judged = judge(
                model, [e.item for e in group], k=k_max, rng=rng, temperature=temperature, **common
            )
            for i, (e, j) in enumerate(zip(group, judged, strict=True)):
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
            bar.update(len(group))
        bar.close()
    elapsed = time.perf_counter() - start
    results = summarize(items, per_item, failures, ks, elapsed, meta is not None, nested)
    results["items_per_s"] = len(items) / elapsed if elapsed > 0 else None
    return results


def start_engine(model: Any, args: argparse.Namespace) -> Any:
    """A vLLM process serving the judge (frozen: nothing to sync), in the judge's dtype."""
    from rlhfv.engine import RolloutConfig
    from rlhfv.engine.vllm import EngineError, VLLMEngine

    settings = RolloutConfig(engine="vllm", vllm_python=args.vllm_python)
    try:
        return VLLMEngine(
            model, settings, args.max_new_tokens, args.temperature, 1.0, [], args.dtype, args.seed
        )
    except EngineError as e:  # no environment, an unsupported model: one line, not a traceback
        raise ValueError(f"--engine vllm: {e}") from e


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(`rlhfv eval`'s parser, `eval grm`'s parser)."""
    from rlhfv.data.formats import describe_formats

    parser = argparse.ArgumentParser(prog="rlhfv eval", description="evaluate reward models")
    sub = parser.add_subparsers(dest="what", required=True)
    formats = {**describe_formats(), **GENERATED_FORMATS}
    p = sub.add_parser(
        "grm",
        help="pairwise / best-of-n accuracy of a pointwise generative judge",
        description=__doc__,
        epilog="data formats (--format) and the fields they read:\n"
        + "\n".join(f"  {name:13s} {text}" for name, text in formats.items()),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        help="rlhfv model folder, HF folder, pulled name (smollm2-135m-instruct) or 'tiny'",
    )
    p.add_argument("--format", default="llmbar", help="data format, listed below")
    p.add_argument("--data", help="data file (not needed for --format shapes or textchecks)")
    p.add_argument(
        "--map",
        help="generic format: key=field pairs (prompt=instruction+input,a=response1,b=response2,"
        "label=annotator1+annotator2) or a YAML file of them (rlhfv.data.mapping)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="evaluate a random subsample of this many prompts (a file row; fixed by --seed); 0: all",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --limit's subsample and of sampling")
    p.add_argument(
        "--split",
        choices=["all", "train", "test"],
        default="all",
        help="evaluate one part of the file's fixed split (rlhfv.data.formats.select_rows)",
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of the prompts in the test part")
    p.add_argument(
        "--k",
        type=int,
        nargs="*",
        default=[],
        help="voting@k values, e.g. --k 1 4 8: k sampled judgements per item (none: greedy only)",
    )
    p.add_argument("--no-greedy", action="store_true", help="skip the greedy two-order pass")
    p.add_argument(
        "--verdict",
        action="store_true",
        help="also the LLM-as-a-judge baseline: one A/B verdict per order, no critique (rlhfv.grm.verdict)",
    )
    p.add_argument("--temperature", type=float, default=0.5, help="sampling temperature of --k")
    p.add_argument("--max-new-tokens", type=int, default=256, help="length limit of a judgement")
    p.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help="generated rows per generate() call (2 per item greedy)",
    )
    p.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch threads on CPU (0: torch's default, one per core); recipes: run.cpu_threads. "
        "1 is fastest on a busy machine (rlhfv.config.RunConfig)",
    )
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
    p.add_argument(
        "--ignore-images",
        action="store_true",
        help="neither load nor show the data's images (and no warning when a text judge meets them)",
    )
    p.add_argument("--dtype", default="float32", help="the judge's weights: float32, bfloat16 or float16")
    p.add_argument(
        "--engine",
        default="hf",
        choices=["hf", "vllm"],
        help="vllm: judgements and forced score lines sampled by a vLLM process (rlhfv engine install vllm); "
        "use a large --batch-size (rows per engine call), e.g. 512",
    )
    p.add_argument(
        "--vllm-python", default="", help="the engine environment's interpreter (empty: the installed one)"
    )
    p.add_argument("--out", help="write the full results as JSON here (the table goes to stdout)")
    return parser, p


def warn_unseen_images(model: Any, items: Sequence[EvalItem]) -> None:
    """A text-only judge cannot see images: say so once, with how many items had them."""
    from rlhfv.models.text_lm import TextPromptEncoder

    with_images = sum(bool(e.item.images) for e in items)
    if with_images and isinstance(getattr(model, "encoder", None), TextPromptEncoder):
        logger.warning(
            "%d of %d items have images, which this text-only judge does not see: it judges them "
            "from the text alone (a multimodal judge gets the images; --ignore-images says that is intended)",
            with_images,
            len(items),
        )


def slice_errors(errors: list[Any], all_rows: list[Any], kept_rows: list[Any], seed: int) -> list[Any]:
    """The file's skipped rows that belong to the evaluated slice: all of them when every prompt
    is evaluated, else a seeded draw in proportion to the prompts kept (a skipped row has no
    prompt to split by)."""
    prompts = len({getattr(r, "line", 0) or id(r) for r in all_rows})
    kept = len({getattr(r, "line", 0) or id(r) for r in kept_rows})
    if kept >= prompts or not errors:
        return errors
    share = round(len(errors) * kept / max(1, prompts))
    return sorted(random.Random(seed).sample(errors, share), key=lambda e: e.line)


def load_items(args: argparse.Namespace) -> tuple[list[EvalItem], list[Any], int, int]:
    """(items, the slice's skipped rows, tied pairs, the file's skipped rows) of the CLI's data."""
    from rlhfv.data.formats import load_preference_data, select_rows
    from rlhfv.data.preference import report_row_errors

    if args.format == "shapes":
        return shapes_items(args.limit or 64, args.seed), [], 0, 0
    if args.format == "textchecks":
        return (
            textchecks_items(args.limit or 300, "train" if args.split == "train" else "test", args.seed),
            [],
            0,
            0,
        )
    rows, file_errors = load_preference_data(args.format, args.data, args.map)
    kept = select_rows(rows, args.split, args.test_fraction, args.limit, args.seed)
    errors = slice_errors(file_errors, rows, kept, args.seed)
    ties = sum(r.preferred is None for r in kept)
    items, image_errors = items_from_rows(kept, args.data, load_images=not args.ignore_images)
    report_row_errors(args.data, len(items), image_errors)
    return items, errors + image_errors, ties, len(file_errors) + len(image_errors)


def main(argv: list[str] | None = None) -> int:
    from rlhfv.data.formats import describe_formats
    from rlhfv.data.preference import row_error_lines

    parser, p = build_parser()
    args = parser.parse_args(argv)
    known = [*describe_formats(), *GENERATED_FORMATS]
    if args.format not in known:  # one line like every other bad input, exit 2
        print(f"error: unknown data format {args.format!r}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    if args.format not in GENERATED_FORMATS and not args.data:
        p.error("--data is required unless --format shapes or textchecks")
    if any(k < 1 for k in args.k):
        p.error(f"--k values must be at least 1, got {args.k}")
    if args.cpu_threads > 0:
        import torch

        torch.set_num_threads(args.cpu_threads)
    try:  # a bad format, file, mapping or model is one line, not a traceback
        items, errors, ties, file_skipped = load_items(args)
        if not items:
            first = f"; first: {errors[0]}" if errors else ""
            print(
                f"error: {args.data}: no usable item ({len(errors)} rows skipped, {ties} tied pairs){first}",
                file=sys.stderr,
            )
            return 1
        model = build_judge(args.model, args.dtype)
        if not args.ignore_images:
            warn_unseen_images(model, items)
        meta = None
        if args.meta_rm:
            from rlhfv.grm.meta_rm import load_meta_rm

            meta = load_meta_rm(args.meta_rm, args.dtype)
        engine = start_engine(model, args) if args.engine == "vllm" else None
    except (OSError, ValueError) as e:  # FileNotFoundError is an OSError
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
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
            verdict=args.verdict,
            engine=engine,
            nested=args.format in NESTED_FORMATS,
        )
    finally:
        if engine is not None:
            engine.close()
    results["skipped_rows"] = len(errors)  # of the evaluated slice
    results["skipped_rows_in_file"] = file_skipped
    results["row_errors"] = row_error_lines(errors)  # the first 20 in full, then a count
    results["tied_pairs"] = ties  # gold ties: no right answer, not scored
    results["images_ignored"] = bool(args.ignore_images)
    results["benchmark"] = published_scores(args.format, items, results)
    results["config"] = {k: v for k, v in vars(args).items() if k != "what"}
    print("\n".join(summary_table(results)))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
        print(f"full results: {args.out}")
    return 0


def published_scores(fmt: str, items: Sequence[EvalItem], results: dict[str, Any]) -> dict[str, Any] | None:
    """The benchmark's own scores from the greedy strict credits (`rlhfv.grm.benchmark_scores`)."""
    from rlhfv.grm.benchmark_scores import benchmark_scores

    per_item = results["per_item"]
    if not per_item or "greedy_strict" not in per_item[0]:
        return None
    credits = [r["greedy_strict"] for r in per_item]
    return benchmark_scores(fmt, [e.id for e in items], [e.subset for e in items], credits)
