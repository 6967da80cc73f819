"""Sampling judgements from a pointwise generative judge, batched.

The k samples of one judgement are generated together: each sample shows the responses in its own
random order (SPCT's per-sample shuffle), so the k prompts differ only in order and go through one
`generate` call alongside the other items' samples; never k separate calls.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rlhfv.grm.parsing import ParsedScores, parse_scores
from rlhfv.grm.prompts import pointwise_prompt
from rlhfv.grm.voting import shuffled_order, unshuffle_scores

if TYPE_CHECKING:
    from PIL import Image

    from rlhfv.models.base import ChatModel


@dataclass
class JudgeItem:
    """What a judge sees: the question, its images, and n ≥ 1 responses in their original order."""

    question: str
    responses: list[str]
    images: list[Image.Image] = field(default_factory=list)


@dataclass
class Judgement:
    """The k sampled judgements of one item.

    Attributes:
        texts: Raw outputs [k]. orders: Display order of each sample ([k][n]; position p showed
            original response orders[j][p]). parsed: Parse result per sample, in display order.
        scores: Per sample, the scores in the ORIGINAL response order, or None when unparsable.
        complete: Whether each sample ended by itself (not cut by the length limit).
    """

    texts: list[str]
    orders: list[list[int]]
    parsed: list[ParsedScores]
    scores: list[list[float] | None]
    complete: list[bool]


def judge(
    model: ChatModel,
    items: Sequence[JudgeItem],
    k: int = 1,
    rng: random.Random | None = None,
    orders: Sequence[Sequence[Sequence[int]]] | None = None,
    greedy: bool = False,
    temperature: float = 0.5,
    max_new_tokens: int = 256,
    principles: str | None = None,
    score_range: tuple[float, float] | None = (1.0, 10.0),
    clip: bool = True,
) -> list[Judgement]:
    """Judge every item k times in ONE batched generate call (B·k rows).

    Args:
        rng: Draws each sample's display order; ignored when `orders` gives them ([B][k][n]).
            With neither, responses are shown in their original order.
        greedy: Argmax decoding (then k > 1 only makes sense with different orders).
        temperature: Sampling temperature (SPCT uses 0.5 for inference-time scaling).
        principles: The 'w/ principles' prompt variant.
        score_range, clip: Allowed scores and whether to clamp into them (DeepSeek-GRM clamps to [1, 10]).
    """
    from rlhfv.rollout import generate

    prompts, all_orders = [], []
    for b, item in enumerate(items):
        n = len(item.responses)
        for j in range(k):
            order = (
                list(orders[b][j])
                if orders is not None
                else shuffled_order(n, rng)
                if rng
                else list(range(n))
            )
            all_orders.append(order)
            shown = [item.responses[i] for i in order]
            prompts.append(pointwise_prompt(item.question, shown, item.images, principles))
    rollout = generate(
        model, prompts, group_size=1, max_new_tokens=max_new_tokens, temperature=temperature, greedy=greedy
    )
    low, high = score_range if score_range else (None, None)
    out = []
    for b, item in enumerate(items):
        rows = range(b * k, (b + 1) * k)
        parsed = [parse_scores(rollout.texts[r], len(item.responses), low, high, clip) for r in rows]
        out.append(
            Judgement(
                texts=[rollout.texts[r] for r in rows],
                orders=[all_orders[r] for r in rows],
                parsed=parsed,
                scores=[unshuffle_scores(p.scores, all_orders[r]) for p, r in zip(parsed, rows, strict=True)],
                complete=[bool(rollout.complete[r]) for r in rows],
            )
        )
    return out
