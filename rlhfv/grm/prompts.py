"""Judge prompts for generative reward models, in our own wording.

Two output contracts:
- pointwise (SPCT, arXiv 2504.02495; GRLHF-V, arXiv 2505.18531): the judge writes its own
  `Specific Criteria:` (weighted), an `Analysis:` of every response, and a last line
  `Scores: \\boxed{s_1, ..., s_n}` with one 1-10 score per response, in the order shown;
- pairwise verdict (ReasonGRM, arXiv 2506.16712): reasoning that ends with `</think>`, then
  `[[A]]` or `[[B]]`.
Images (multimodal judges) travel in `Prompt.images`, which models place before the text.
Responses are shown in the order given; callers shuffle (see `rlhfv.grm.voting.shuffled_order`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rlhfv.types import Prompt

if TYPE_CHECKING:
    from PIL import Image

POINTWISE_INSTRUCTIONS = (
    "You are a careful reviewer. Below is a request from a user{image_note} and {n} candidate "
    "response{plural}. Judge how well each response serves the user.\n"
    "Work in three parts:\n"
    "1. 'Specific Criteria:' list the qualities that matter most for this particular request and "
    "give each a weight (the weights sum to 100%).\n"
    "2. 'Analysis:' check every response against those criteria, pointing to concrete strengths "
    "and mistakes.\n"
    "3. Finish with a single line of the form 'Scores: \\boxed{{{slots}}}' holding one whole number "
    "from 1 (useless or harmful) to 10 (excellent) per response, in the order the responses appear."
)
READING_BLOCK = "\n[Your own answer, written before you saw the responses]\n{reading}\n[End of your answer]"
PRINCIPLES_NOTE = "\nWhen you choose your criteria, follow these principles:\n{principles}"
HINT_NOTE = "\nThe best response is: Response {best}"

VERDICT_INSTRUCTIONS = (
    "Act as an impartial judge. Read the user's question{image_note} and the two answers, A and B. "
    "Decide which answer follows the user's instructions and answers the question better. Neither "
    "the order of the answers, their length nor any names may sway you. Reason step by step, close "
    "your reasoning with </think>, and then write only your verdict: [[A]] if answer A is better, "
    "[[B]] if answer B is better."
)


ONE_VERDICT_INSTRUCTIONS = (
    "Please act as a fair judge and decide which of two AI assistants answered the user's question "
    "better{image_note}. Check whether each answer is correct and does what the user asked. Do not let "
    "the order of the answers or their length decide. Give only your final verdict: [[A]] if "
    "assistant A is better, [[B]] if assistant B is better."
)


def pointwise_prompt(
    question: str,
    responses: Sequence[str],
    images: Sequence[Image.Image] = (),
    principles: str | None = None,
    hint_best: int | None = None,
    compact: bool = False,
    reading: str | None = None,
) -> Prompt:
    """The pointwise judge prompt for n ≥ 1 responses.

    Args:
        question: The user's request (for dialogues, the whole conversation so far).
        responses: The n candidate responses, in the order to show them.
        images: Images the question refers to (multimodal judge); placed before the text.
        principles: The 'w/ principles' variant: annotation principles the criteria must follow.
        hint_best: Hinted sampling (SPCT rejective fine-tuning): the 0-based index, in the order
            shown, of the best response, told to the judge.
        compact: Leave out the instructions (and principles): only the request and the responses.
            A curriculum stage for small judges, which learn to compare faster in a short context
            (`JudgeTask(compact=True)`); the output contract is then taught by the targets alone.
        reading: The judge's own answer to the request, shown after the responses (last, next to
            where the judgement starts). Pass `rlhfv.types.READING_SLOT` and set the returned
            prompt's `reading` to have the judge write it itself, before it sees the responses
            (`judge(..., reading=True)`): a judge that reads the image with the responses in view
            tends to read it as they do (agreement 0.56 on the policy's own answers; results/grlhfv_shapes.md).
    """
    n = len(responses)
    if n < 1:
        raise ValueError("pointwise_prompt needs at least one response")
    text = (
        ""
        if compact
        else POINTWISE_INSTRUCTIONS.format(
            image_note=" (with the image(s) shown above)" if images else "",
            n=n,
            plural="" if n == 1 else "s",
            slots=", ".join(f"s{i + 1}" for i in range(n)),
        )
    )
    if principles and not compact:
        text += PRINCIPLES_NOTE.format(principles=principles.strip())
    parts = [text, f"\n[User request]\n{question.strip()}\n[End of user request]"]
    for i, response in enumerate(responses, start=1):
        parts.append(f"\n[Response {i}]\n{response.strip()}\n[End of Response {i}]")
    if reading is not None:
        parts.append(READING_BLOCK.format(reading=reading.strip()))
    if hint_best is not None:
        parts.append(HINT_NOTE.format(best=hint_best + 1))
    return Prompt(text="\n".join(parts).lstrip("\n"), images=list(images))


def verdict_prompt(question: str, answer_a: str, answer_b: str, images: Sequence[Image.Image] = ()) -> Prompt:
    """The ReasonGRM-style pairwise prompt: reasoning, `</think>`, then `[[A]]` or `[[B]]`."""
    text = VERDICT_INSTRUCTIONS.format(image_note=" (about the image(s) shown above)" if images else "")
    text += (
        f"\n\n[Question]\n{question.strip()}\n[End of question]"
        f"\n\n[Answer A]\n{answer_a.strip()}\n[End of answer A]"
        f"\n\n[Answer B]\n{answer_b.strip()}\n[End of answer B]"
    )
    return Prompt(text=text, images=list(images))


def one_verdict_prompt(
    question: str, answer_a: str, answer_b: str, images: Sequence[Image.Image] = ()
) -> Prompt:
    """The LLM-as-a-judge baseline (MT-Bench's pairwise judge, no reasoning): the reply starts
    `[[` and the judge writes one letter (`rlhfv.grm.verdict.one_verdicts`)."""
    text = ONE_VERDICT_INSTRUCTIONS.format(image_note=" (about the image(s) shown above)" if images else "")
    text += (
        f"\n\n[User Question]\n{question.strip()}\n\n[The Start of Assistant A's Answer]\n{answer_a.strip()}"
        f"\n[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b.strip()}"
        "\n[The End of Assistant B's Answer]"
    )
    return Prompt(text=text, images=list(images), prefill="[[")
