"""Preference pairs with their images loaded, and the judge task built from them.

- `ShapesPairs`: ShapesVQA's correct-vs-wrong answer pairs (the embedded default).
- Files (the annotation app's export, RLAIF-V, HH-RLHF …) come through
  `rlhfv.data.formats.PreferenceData`.
- `JudgeTask`: turns pairs into examples for training a pointwise generative judge (GRLHF-V
  §3.1): the prompt shows the image, the question and the two responses in a per-item random order;
  `label` is the 0-based shown position of the preferred response; `answer` is a short judgement in
  the output contract (criteria, analysis, `Scores: \\boxed{s1, s2}`) for cold-start SFT.
"""

from __future__ import annotations

import random

from rlhfv.data.shapes import ShapesVQA
from rlhfv.types import Example, PreferencePair


class ShapesPairs:
    """ShapesVQA preference pairs (arguments as for `ShapesVQA`)."""

    def __init__(
        self,
        size: int = 2000,
        split: str = "train",
        seed: int = 0,
        image_size: int = 96,
        max_shapes: int = 4,
        tasks: list[str] | None = None,
    ):
        self.vqa = ShapesVQA(
            size=size, split=split, seed=seed, image_size=image_size, max_shapes=max_shapes, tasks=tasks
        )

    def __len__(self) -> int:
        return len(self.vqa)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.vqa.preference_pair(index)


class JudgeTask:
    """Examples that teach a pointwise judge to score two responses (see module docstring).

    Args:
        pairs: A data set of `PreferencePair`s (recipe node).
        seed: Seeds each item's response order; the order is fixed per item and seed.
        shuffle: Show the responses in random order (True) or as stored.
        principles: Optional annotation principles for the 'w/ principles' prompt variant.
        high / low: Scores of the preferred / other response in the SFT target.
    """

    def __init__(
        self,
        pairs: object,
        seed: int = 0,
        shuffle: bool = True,
        principles: str | None = None,
        high: int = 8,
        low: int = 3,
    ):
        self.pairs, self.seed, self.shuffle, self.principles = pairs, seed, shuffle, principles
        self.high, self.low = high, low

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Example:
        from rlhfv.grm.prompts import pointwise_prompt

        pair: PreferencePair = self.pairs[index]  # type: ignore[index]
        swap = self.shuffle and random.Random(self.seed * 1_000_003 + index).random() < 0.5
        shown = pair.responses[::-1] if swap else list(pair.responses)
        best = 1 - pair.preferred if swap else pair.preferred  # shown position of the preferred one
        prompt = pointwise_prompt(pair.prompt.text, shown, pair.prompt.images, self.principles)
        return Example(prompt=prompt, answer=self.target(best, pair.reference), label=str(best), task="judge")

    def target(self, best: int, reference: str = "") -> str:
        """A short judgement in the output contract whose scores rank `best` first.

        With a reference answer the analysis first says what the image shows (the judge's own
        reading, which a VLM that answers the question can produce), then compares.
        """
        scores = [self.low, self.low]
        scores[best] = self.high
        seen = f"In the image: {reference.strip()} " if reference else ""
        return (
            "Specific Criteria: the answer agrees with the image (80%); it is clear and direct (20%).\n"
            f"Analysis: {seen}Response {best + 1} agrees with the image. Response {2 - best} does not.\n"
            f"Scores: \\boxed{{{scores[0]}, {scores[1]}}}"
        )

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        """GRLHF-V's rule: the preferred response gets the strictly higher of exactly two scores."""
        from rlhfv.grm.rules import grlhfv_reward

        return grlhfv_reward(text, int(example.label)) == 1.0
