"""Preference pairs with their images loaded, and the judge task built from them.

- `ShapesPairs`: ShapesVQA's correct-vs-wrong answer pairs (the embedded default).
- `PreferenceFile`: any JSONL in the `rlhfv.data.preference` format, the annotation app's export
  included; rows with missing, corrupt or oversized images are reported and skipped.
- `JudgeTask`: turns pairs into examples for training a pointwise generative judge (GRLHF-V
  §3.1): the prompt shows the image, the question and the two responses in a per-item random order;
  `label` is the 0-based shown position of the preferred response; `answer` is a short judgement in
  the output contract (criteria, analysis, `Scores: \\boxed{s1, s2}`) for cold-start SFT.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from rlhfv.config import ExistingPath
from rlhfv.data.images import ImageError, load_image
from rlhfv.data.preference import RowError, read_preferences
from rlhfv.data.shapes import ShapesVQA
from rlhfv.types import Example, PreferencePair, Prompt

logger = logging.getLogger(__name__)


class ShapesPairs:
    """ShapesVQA preference pairs (arguments as for `ShapesVQA`)."""

    def __init__(self, size: int = 2000, split: str = "train", seed: int = 0, image_size: int = 96, max_shapes: int = 4,
                 tasks: list[str] | None = None):
        self.vqa = ShapesVQA(size=size, split=split, seed=seed, image_size=image_size, max_shapes=max_shapes, tasks=tasks)

    def __len__(self) -> int:
        return len(self.vqa)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.vqa.preference_pair(index)


class PreferenceFile:
    """Pairs from a preference JSONL file (see `rlhfv.data.preference`), images loaded safely.

    Args:
        path: The JSONL file; image paths are relative to its folder.
        limit: Keep at most this many pairs (0: all).
    """

    def __init__(self, path: ExistingPath, limit: int = 0):
        rows, self.errors = read_preferences(path)
        self.pairs: list[PreferencePair] = []
        for row in rows:
            try:
                images = [load_image(p) for p in row.images]
            except ImageError as e:
                self.errors.append(RowError(str(path), 0, "images", f"pair {row.id}: {e}"))
                continue
            prompt = Prompt(text=row.prompt, images=images)
            self.pairs.append(PreferencePair(prompt, list(row.responses), row.preferred, row.id, row.source))
            if limit and len(self.pairs) >= limit:
                break
        if not self.pairs:
            raise ValueError(f"{path}: no usable preference pairs ({len(self.errors)} rows skipped)")
        logger.info("%s: %d pairs, %d skipped", Path(path).name, len(self.pairs), len(self.errors))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PreferencePair:
        return self.pairs[index]


class JudgeTask:
    """Examples that teach a pointwise judge to score two responses (see module docstring).

    Args:
        pairs: A data set of `PreferencePair`s (recipe node).
        seed: Seeds each item's response order; the order is fixed per item and seed.
        shuffle: Show the responses in random order (True) or as stored.
        principles: Optional annotation principles for the 'w/ principles' prompt variant.
        high / low: Scores of the preferred / other response in the SFT target.
    """

    def __init__(self, pairs: object, seed: int = 0, shuffle: bool = True, principles: str | None = None,
                 high: int = 8, low: int = 3):
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
