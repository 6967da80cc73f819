"""Why a "compare"-style ShapesVQA judge is wrong when it is: its reading, its quotes, or its verdicts.

Greedy judgements of held-out pairs (`JudgeTask(analysis="compare")`, `ShapesPairs(split="test",
seed=3)`), split into what each sentence "Response i says X, the image shows Y: right|wrong." gets
right: the reading Y (what the image shows), the quote X (the response's answer), and whether the
verdict agrees with the judge's own X and Y (consistency).

    python benchmarks/judge_reading_probe.py <judge>/final [--compact] [--pairs 60]
"""

from __future__ import annotations

import argparse
import re

import torch

from rlhfv.data.pairs import JudgeTask, ShapesPairs
from rlhfv.models.base import load_model
from rlhfv.training.evaluation import graded_answers

SENTENCE = re.compile(r"says (\w+), the image shows (\w+): (right|wrong)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--compact", action="store_true", help="prompts without the judge instructions")
    parser.add_argument("--pairs", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    judge = load_model(args.model)
    task = JudgeTask(
        ShapesPairs(size=args.pairs, split="test", seed=3), analysis="compare", compact=args.compact
    )
    examples = [task[i] for i in range(args.pairs)]
    graded = graded_answers(judge, task, batch_size=20, max_new_tokens=80)
    right = reading = quotes = consistent = sentences = 0
    for example, (_, text, correct) in zip(examples, graded, strict=True):
        right += correct
        want, got = SENTENCE.findall(example.answer), SENTENCE.findall(text)
        if len(got) != 2:
            continue
        reading += got[0][1] == want[0][1]
        quotes += sum(g[0] == w[0] for g, w in zip(got, want, strict=True))
        for said, seen, verdict in got:
            sentences += 1
            consistent += (verdict == "right") == (said == seen)
    n = len(examples)
    print(
        f"{args.model}: accuracy {right / n:.3f}, reading {reading / n:.3f}, quotes {quotes / (2 * n):.3f}, "
        f"verdicts consistent with own values {consistent / max(1, sentences):.3f} ({sentences} sentences)"
    )


if __name__ == "__main__":
    main()
