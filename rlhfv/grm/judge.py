"""Sampling judgements from a pointwise generative judge, batched.

The k samples of one judgement are generated together: each sample shows the responses in its own
random order (SPCT's per-sample shuffle), so the k prompts differ only in order and go through one
`generate` call alongside the other items' samples; never k separate calls.

Score forcing (`force_scores`, off by default): a judge too small to have learned the output
contract (SmolLM2-135M writes "Scores: 1." and carries on) gives no parsable sample at all, so
SPCT's rejective fine-tuning has nothing to keep. Forcing appends the score line's opening,
`Scores: \\boxed{`, to every judgement without a box and lets the judge write the numbers in a
second, short generate call over just those rows, constrained to a well-formed line (n whole
numbers in the score range, then `}`; `ScoreLineGrammar`): left free after the opening, SmolLM2
copied `s1, s2` from the instructions, wrote one number or ran on (93% of forced lines unparsable
on 30 LLMBar items). The forced text is what the judge is credited with and
what RFT trains on, so the format is learned from the judge's own analyses. Evaluation reports the
forced rate so forced and free-running figures are never confused.
"""

from __future__ import annotations

import math
import random
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rlhfv.grm.parsing import ParsedScores, last_boxed, parse_scores
from rlhfv.grm.prompts import pointwise_prompt
from rlhfv.grm.voting import shown_index, shuffled_order, unshuffle_scores
from rlhfv.types import READING_SLOT, Prompt

if TYPE_CHECKING:
    import torch
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
        forced: Whether each sample's score line was forced (`force_scores`).
    """

    texts: list[str]
    orders: list[list[int]]
    parsed: list[ParsedScores]
    scores: list[list[float] | None]
    complete: list[bool]
    forced: list[bool] = field(default_factory=list)  # empty: none forced


FORCED_SCORE_LINE = "\nScores: \\boxed{"
SCORE_LINE_CHARS = set("0123456789, }")
_score_tokens: weakref.WeakKeyDictionary[Any, list[tuple[int, str]]] = weakref.WeakKeyDictionary()


class ScoreLineGrammar:
    """Constrains generation to `s_1, ..., s_n}` (whole numbers in [low, high]), then EOS.

    `rlhfv.rollout.generate`'s `allowed_tokens`: given a row and the ids it has generated, it
    returns the tokens that keep the text a prefix of a valid score line (counts[row] scores).
    The judge still chooses every number itself; only tokens that would break the line are masked.
    """

    def __init__(self, tokenizer: Any, counts: Sequence[int], low: int, high: int, eos: int):
        self.tokenizer, self.counts, self.low, self.high, self.eos = tokenizer, list(counts), low, high, eos
        if tokenizer not in _score_tokens:  # the tokens a score line can use, found once per tokenizer
            pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
            _score_tokens[tokenizer] = [
                (i, piece) for i, piece in enumerate(pieces) if piece and set(piece) <= SCORE_LINE_CHARS
            ]
        self.candidates = _score_tokens[tokenizer]

    def valid(self, text: str, n: int) -> bool:
        """Whether `text` is a prefix of (or, ending in "}", exactly) a score line for n scores."""
        complete = text.endswith("}")
        body = text[:-1] if complete else text
        if "}" in body or not re.fullmatch(r"(\d+, ?)*\d*", body):
            return False
        numbers = body.split(",")
        if len(numbers) > n or (complete and (len(numbers) != n or not numbers[-1].strip())):
            return False
        for position, number in enumerate(numbers):
            digits = number.strip()
            finished = complete or position < len(numbers) - 1
            if digits and not (self.allowed(digits) if finished else self.extendable(digits)):
                return False
        return True

    def allowed(self, digits: str) -> bool:
        return (digits == "0" or digits[0] != "0") and self.low <= int(digits) <= self.high

    def extendable(self, digits: str) -> bool:
        """Whether some allowed number is written `digits` + more digits (or `digits` itself)."""
        if digits[0] == "0":
            return self.allowed(digits)
        for extra in range(len(str(self.high)) - len(digits) + 1):
            first = int(digits) * 10**extra
            if first <= self.high and first + 10**extra - 1 >= self.low:
                return True
        return False

    def __call__(self, row: int, generated: torch.Tensor) -> list[int]:
        text = self.tokenizer.decode(generated.tolist(), skip_special_tokens=True)
        n = self.counts[row]
        if text.endswith("}") or not self.valid(text, n):
            return [self.eos]
        allowed = [i for i, piece in self.candidates if self.valid(text + piece, n)]
        return allowed or [self.eos]


def score_line_regex(n: int, low: int, high: int) -> str:
    """The lines `ScoreLineGrammar` allows, as a regular expression: n whole numbers in
    [low, high] (no leading zeros), comma-separated with an optional space, then `}`. Ranges
    wider than 1,000 allow any whole number (the parser clips)."""
    if high - low > 1000:
        number = "(0|[1-9][0-9]*)"
    else:
        number = (
            "(" + "|".join(str(v) for v in sorted(range(low, high + 1), key=lambda v: -len(str(v)))) + ")"
        )
    return number + f"(, ?{number})" * (n - 1) + r"\}"


def force_scores(
    model: ChatModel,
    prompts: Sequence[Prompt],
    texts: Sequence[str],
    counts: Sequence[int],
    greedy: bool,
    temperature: float,
    score_range: tuple[float, float] | None = (1.0, 10.0),
    engine: Any | None = None,
    seed: int = 0,
) -> tuple[list[str], list[bool]]:
    """Texts without a `\\boxed{...}` get the score line's opening appended, and the judge writes
    the scores under `ScoreLineGrammar` (counts[i] scores for row i).

    Returns the (possibly extended) texts and which of them were forced. One generate call over
    the rows that need it; rows with a box are returned unchanged. With an `engine`
    (`VLLMEngine`) the rows go to it instead, constrained by `score_line_regex` (the same lines
    as the grammar; one call per distinct count).
    """
    from rlhfv.rollout import generate

    todo = [i for i, t in enumerate(texts) if last_boxed(t) is None]
    out, forced = list(texts), [False] * len(texts)
    if not todo:
        return out, forced
    heads = [texts[i].rstrip() + FORCED_SCORE_LINE for i in todo]
    rows = [replace(prompts[i], prefill=head) for i, head in zip(todo, heads, strict=True)]
    low, high = (math.ceil(score_range[0]), math.floor(score_range[1])) if score_range else (0, 10**6)
    longest = max(counts[i] for i in todo) * (len(str(high)) + 2) + 2
    if engine is not None:
        for n in sorted({counts[i] for i in todo}):
            group = [r for r, i in enumerate(todo) if counts[i] == n]
            continued = engine.generate(
                [rows[r] for r in group],
                1,
                [""] * len(group),
                seed,
                longest,
                temperature,
                greedy,
                regex=score_line_regex(n, low, high),
            )
            for r, tail in zip(group, continued.texts, strict=True):
                tail = tail[: tail.index("}") + 1] if "}" in tail else tail  # nothing after the line
                out[todo[r]], forced[todo[r]] = heads[r] + tail, True
        return out, forced
    grammar = ScoreLineGrammar(model.tokenizer, [counts[i] for i in todo], low, high, model.eos_token_id)
    continued = generate(
        model,
        rows,
        group_size=1,
        max_new_tokens=longest,
        temperature=temperature,
        greedy=greedy,
        allowed_tokens=grammar,
    )
    for i, head, tail in zip(todo, heads, continued.texts, strict=True):
        out[i], forced[i] = head + tail, True
    return out, forced


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
    force: bool = False,
    hints: Sequence[int] | None = None,
    reading: bool = False,
    engine: Any | None = None,
    compact: bool = False,
) -> list[Judgement]:
    """Judge every item k times in ONE batched generate call (B·k rows).

    Args:
        rng: Draws each sample's display order; ignored when `orders` gives them ([B][k][n]).
            With neither, responses are shown in their original order.
        greedy: Argmax decoding (then k > 1 only makes sense with different orders).
        temperature: Sampling temperature (SPCT uses 0.5 for inference-time scaling).
        principles: The 'w/ principles' prompt variant.
        score_range, clip: Allowed scores and whether to clamp into them (DeepSeek-GRM clamps to [1, 10]).
        force: Force a score line onto samples without one (module docstring).
        hints: Hinted sampling (SPCT rejective fine-tuning): per item, the original index of the
            best response; every sample's prompt names where it is shown.
        reading: The judge first answers each item's question itself, before it sees the
            responses, and its answer is shown after them (`pointwise_prompt(reading=...)`); items
            with the same question and images share one reading when greedy.
        engine: A rollout engine serving this judge (`rlhfv.engine.vllm.VLLMEngine`): the B·k
            prompts go to it in one call instead of `generate` (readings first, when `reading`),
            and so do forced score lines.
        compact: The prompt without instructions (`pointwise_prompt(compact=True)`), for judges
            trained on `JudgeTask(compact=True)`: they learned the output contract from targets.
    """
    from rlhfv.rollout import generate

    prompts, all_orders = [], []
    readings: dict[tuple[Any, ...], Prompt] = {}
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
            hint = shown_index(hints[b], order) if hints is not None else None
            prompt = pointwise_prompt(
                item.question,
                shown,
                item.images,
                principles,
                hint,
                compact=compact,
                reading=READING_SLOT if reading else None,
            )
            if reading:
                key = (item.question, *map(id, item.images))
                prompt.reading = readings.setdefault(key, Prompt(item.question, list(item.images)))
            prompts.append(prompt)
    # the engine's sampling seed (random: seeded with the run by seed_everything); the HF path
    # draws nothing here, so its display orders stay those of earlier runs
    seed = (rng or random).randrange(2**31) if engine is not None else 0
    if engine is not None:
        rollout = engine.generate(prompts, 1, [""] * len(prompts), seed, max_new_tokens, temperature, greedy)
    else:
        rollout = generate(
            model,
            prompts,
            group_size=1,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            greedy=greedy,
        )
    texts, forced = list(rollout.texts), [False] * len(prompts)
    if force:
        counts = [len(item.responses) for item in items for _ in range(k)]
        shown = prompts  # on the engine, the score line follows each row's own reading
        if engine is not None and rollout.reading is not None:
            shown = [
                replace(p, text=p.text.replace(READING_SLOT, r.strip()), reading=None)
                for p, r in zip(prompts, rollout.reading.texts, strict=True)
            ]
        texts, forced = force_scores(
            model, shown, texts, counts, greedy, temperature, score_range, engine=engine, seed=seed + 1
        )
    low, high = score_range if score_range else (None, None)
    out = []
    for b, item in enumerate(items):
        rows = range(b * k, (b + 1) * k)
        parsed = [parse_scores(texts[r], len(item.responses), low, high, clip) for r in rows]
        out.append(
            Judgement(
                texts=[texts[r] for r in rows],
                orders=[all_orders[r] for r in rows],
                parsed=parsed,
                scores=[unshuffle_scores(p.scores, all_orders[r]) for p, r in zip(parsed, rows, strict=True)],
                complete=[bool(rollout.complete[r]) for r in rows],
                forced=[forced[r] for r in rows],
            )
        )
    return out
