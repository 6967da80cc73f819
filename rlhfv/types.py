"""Plain data types shared by data sets, models, rollouts and reward models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class Prompt:
    """One user turn: text plus the images shown before it.

    Attributes:
        text: The user's question or instruction.
        images: Images placed before the text, in order (may be empty for text-only models).
        system: Optional system message.
        prefill: Text the assistant's reply starts with; generation continues it (used to force
            a judge's score line, `rlhfv.grm.judge.force_scores`).
        reading: A prompt the model answers first, on its own; its answer replaces `READING_SLOT`
            in `text` before the model sees `text` (`rlhfv.rollout.generate`). A judge thus reads
            the image before the responses are shown to it (`rlhfv.grm.prompts.pointwise_prompt`).
    """

    text: str
    images: list[Image.Image] = field(default_factory=list)
    system: str | None = None
    prefill: str = ""
    reading: Prompt | None = None


READING_SLOT = "\x00reading\x00"  # where a prompt's `reading` answer goes (`Prompt.reading`)


@dataclass
class Example:
    """A prompt with a reference answer (SFT target, or the checkable answer for rule rewards).

    Attributes:
        prompt: What the model sees.
        answer: The target completion text used for SFT.
        label: The canonical short answer a reward rule checks against ("3", "red", "left").
        task: Which question family the example comes from (for per-task metrics).
    """

    prompt: Prompt
    answer: str
    label: str = ""
    task: str = ""


@dataclass
class PreferencePair:
    """Two responses to one prompt (images loaded), and which one is better.

    The in-memory form of `rlhfv.data.preference.PairwisePreference` (whose images are paths).

    Attributes:
        prompt: What both responses answer.
        responses: The two responses, in the order stored.
        preferred: Index (0 or 1) of the better response.
        id: Stable identifier of the pair.
        source: Where the pair came from ("shapes", a file name, "annotate" …).
        reference: A reference answer, where the data has one (ShapesVQA does); judge targets
            for cold-start SFT then ground their analysis in it.
        answers: The short answer each response gives ("3", "red"), in the stored order, where the
            data knows them (ShapesVQA does); `JudgeTask(analysis="compare")` quotes them.
    """

    prompt: Prompt
    responses: list[str]
    preferred: int
    id: str = ""
    source: str = ""
    reference: str = ""
    answers: list[str] = field(default_factory=list)
