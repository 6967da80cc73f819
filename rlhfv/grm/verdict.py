"""The LLM-as-a-judge baseline: the judge asked for one verdict, A or B, with no critique.

Peers (MT-Bench's pairwise judge, AlpacaEval) ask a model which of two answers is better and read
one letter. Here the reply is prefilled with `[[` and the judge's next token is restricted to the
letters `A` and `B`, so greedy decoding picks the likelier letter: no parse failure, no tie, one
forward pass per row. Each pair is judged in both orders, which exposes position bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhfv.grm.prompts import one_verdict_prompt

if TYPE_CHECKING:
    from rlhfv.grm.judge import JudgeItem
    from rlhfv.models.base import ChatModel


@dataclass
class OneVerdict:
    """An item's two verdicts: the response index picked with the stored order shown as (A, B),
    then with it reversed; `credit` is the share of the two that pick `preferred`."""

    picks: list[int]
    credit: float
    consistent: bool


def letter_ids(tokenizer: object) -> list[int]:
    """The token ids of "A" and "B" as they follow "[[" (one token each in byte-level BPEs)."""
    ids = [tokenizer.encode(letter, add_special_tokens=False) for letter in "AB"]  # type: ignore[attr-defined]
    if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
        raise ValueError(f"the judge's tokenizer does not spell A and B as one token each: {ids}")
    return [ids[0][0], ids[1][0]]


def one_verdicts(model: ChatModel, items: Sequence[JudgeItem], preferred: Sequence[int]) -> list[OneVerdict]:
    """Judge every two-response item in both orders, in one batched call of 2·B rows of one token."""
    from rlhfv.rollout import generate

    if any(len(item.responses) != 2 for item in items):
        raise ValueError("the one-verdict baseline compares exactly two responses per item")
    prompts = []
    for item in items:
        a, b = item.responses
        prompts += [
            one_verdict_prompt(item.question, a, b, item.images),
            one_verdict_prompt(item.question, b, a, item.images),
        ]
    letters = letter_ids(model.tokenizer)
    rollout = generate(
        model, prompts, group_size=1, max_new_tokens=1, greedy=True, allowed_tokens=lambda row, done: letters
    )
    out = []
    for b, best in enumerate(preferred):
        said = [t.strip()[:1] for t in rollout.texts[2 * b : 2 * b + 2]]  # "A" or "B"
        picks = [0 if said[0] == "A" else 1, 1 if said[1] == "A" else 0]  # back to stored indices
        out.append(OneVerdict(picks, sum(p == best for p in picks) / 2, picks[0] == picks[1]))
    return out
