"""Where a tiny ShapesVQA judge fails: teacher-forced probabilities of its judgement's tokens.

A pairwise judge's target (`rlhfv.data.pairs.JudgeTask`) mixes three kinds of tokens:
- *reading*: what the image shows ("In the image: There are 4 shapes."), the policy's skill;
- *decision*: which response agrees with that reading (the first response number, or the verdict
  word in the variants below), the only tokens that need a comparison;
- *consistency*: everything that follows from the decision (the other response's number, the
  boxed scores).
This script feeds a trained judge its own targets (teacher forcing) on training pairs and prints the
mean probability it gives each kind, so a judge at 0.50 pairwise accuracy shows which skill is
missing. Two alternative target styles, usable as recipe data components with
`PYTHONPATH=benchmarks` (e.g. `train_data._component_=tiny_judge_probe.QuotingJudgeTask`):
- `QuotingJudgeTask`: "Response 1 says 3: wrong." after the reading (quote, then verdict);
- `ComparingJudgeTask`: "Response 1 says 3, the image shows 4: wrong." (the two values to compare
  are a few tokens apart).

    python benchmarks/tiny_judge_probe.py /tmp/grm_sft/final --style verdict --pairs 64
"""

from __future__ import annotations

import argparse
import random
import re

import torch

from rlhfv.data.pairs import JudgeTask, ShapesPairs
from rlhfv.grm.prompts import pointwise_prompt
from rlhfv.types import Example

CRITERIA = "Specific Criteria: the answer agrees with the image (80%); it is clear and direct (20%).\n"


class _LabelledJudgeTask(JudgeTask):
    """JudgeTask whose target names each shown response's answer (needs ShapesPairs)."""

    def __getitem__(self, index: int) -> Example:
        _, _, label, answer, wrong, _, _ = self.pairs.vqa._draw_item(index)  # type: ignore[attr-defined]
        pair = self.pairs[index]  # type: ignore[index]
        swap = self.shuffle and random.Random(self.seed * 1_000_003 + index).random() < 0.5
        shown = pair.responses[::-1] if swap else list(pair.responses)
        best = 1 - pair.preferred if swap else pair.preferred
        said = [label if i == best else wrong for i in range(2)]
        scores = [self.high if i == best else self.low for i in range(2)]
        analysis = self.analysis(answer, label, said, best)
        target = f"{CRITERIA}Analysis: {analysis}\nScores: \\boxed{{{scores[0]}, {scores[1]}}}"
        prompt = pointwise_prompt(pair.prompt.text, shown, pair.prompt.images, self.principles)
        return Example(prompt=prompt, answer=target, label=str(best), task="judge")

    def analysis(self, answer: str, label: str, said: list[str], best: int) -> str:
        raise NotImplementedError


class QuotingJudgeTask(_LabelledJudgeTask):
    def analysis(self, answer: str, label: str, said: list[str], best: int) -> str:
        verdicts = " ".join(
            f"Response {i + 1} says {s}: {'right' if i == best else 'wrong'}." for i, s in enumerate(said)
        )
        return f"In the image: {answer} {verdicts}"


class ComparingJudgeTask(_LabelledJudgeTask):
    def analysis(self, answer: str, label: str, said: list[str], best: int) -> str:
        return " ".join(
            f"Response {i + 1} says {s}, the image shows {label}: {'right' if i == best else 'wrong'}."
            for i, s in enumerate(said)
        )


STYLES = {"verdict": JudgeTask, "quote": QuotingJudgeTask, "compare": ComparingJudgeTask}


SPANS = {  # style -> [(kind, regex, which matches)]: the first match of a decision, all others
    "verdict": [
        ("reading", r"In the image: (.*?) Response", "all"),
        ("decision", r"Response (\d) agrees", "all"),
        ("consistency", r"Response (\d) does not", "all"),
    ],
    "quote": [
        ("reading", r"In the image: (.*?) Response 1 says", "all"),
        ("quote", r"says (\w+):", "all"),
        ("decision", r": (right|wrong)\.", "first"),
        ("consistency", r": (right|wrong)\.", "rest"),
    ],
    "compare": [
        ("reading", r"shows (\w+):", "all"),
        ("quote", r"says (\w+),", "all"),
        ("decision", r": (right|wrong)\.", "first"),
        ("consistency", r": (right|wrong)\.", "rest"),
    ],
}


def token_kinds(pieces: list[str], style: str) -> list[str]:
    """Label each token of a reading, and the first token of each quote / decision / consistency
    span (the later tokens of a word, "ng" after " wro", follow from its first); the rest is fixed."""
    text = "".join(pieces)
    starts: dict[int, str] = {}  # a span's first character -> its kind; only that token is counted
    rules = [*SPANS[style], ("consistency", r"\\boxed\{(\d+), (\d+)\}", "all")]
    for kind, pattern, which in rules:
        found = list(re.finditer(pattern, text))
        found = found[:1] if which == "first" else found[1:] if which == "rest" else found
        for match in found:
            for g in range(1, (match.lastindex or 0) + 1):  # a reading counts every token
                chars = range(match.start(g), match.end(g)) if kind == "reading" else [match.start(g)]
                starts.update(dict.fromkeys(chars, kind))
    kinds, at = [], 0
    for piece in pieces:
        first = at + len(piece) - len(piece.lstrip())
        kinds.append(starts.get(first, "fixed"))
        at += len(piece)
    return kinds


def main() -> None:
    from rlhfv.models.base import load_model
    from rlhfv.rollout import sequence_logprobs
    from rlhfv.training.batching import tokenize_completions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a trained judge (rlhfv model folder)")
    parser.add_argument("--style", choices=sorted(STYLES), default="verdict")
    parser.add_argument("--pairs", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    judge = load_model(args.model)
    judge.module.eval()
    task = STYLES[args.style](ShapesPairs(size=args.pairs, split="train", seed=2))
    examples = [task[i] for i in range(args.pairs)]
    sums: dict[str, list[float]] = {}
    for lo in range(0, args.pairs, 16):
        chunk = examples[lo : lo + 16]
        ids, mask = tokenize_completions(judge, [e.answer for e in chunk])
        with torch.no_grad():
            probs = sequence_logprobs(judge, judge.encoder([e.prompt for e in chunk]), ids, mask).exp()
        for row in range(len(chunk)):
            n = int(mask[row].sum()) - 1  # the EOS is not a target word
            pieces = [judge.tokenizer.decode([t]) for t in ids[row, :n].tolist()]
            for kind, p in zip(token_kinds(pieces, args.style), probs[row, :n].tolist(), strict=True):
                sums.setdefault(kind, []).append(p)
    print(f"{args.model} ({args.style} targets, {args.pairs} training pairs, teacher-forced):")
    for kind in ("reading", "quote", "decision", "consistency", "fixed"):
        if kind in sums:
            values = sums[kind]
            print(f"  {kind:12s} mean p = {sum(values) / len(values):.3f} over {len(values)} tokens")


if __name__ == "__main__":
    main()
