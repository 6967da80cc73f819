"""Reading a judge's output: `\\boxed{s_1, ..., s_n}` scores and `[[A]]`/`[[B]]` verdicts.

Pure functions that never raise on model output: a failure comes back as a reason string, so
evaluation can report *why* parses fail (no box, wrong count, not numbers, NaN/inf, absurd values).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

BOX = "\\boxed{"
ABSURD = 1e6  # |score| beyond this is a degenerate generation, never a real judgement
VERDICT = re.compile(r"\[\[([AB])\]\]")


@dataclass
class ParsedScores:
    """Scores read from a judgement, or why there are none.

    Attributes:
        scores: One float per response, in the order shown; None when parsing failed.
        error: Empty on success, else a short reason ("no \\boxed{...}", "expected 2 scores, got 3" …).
    """

    scores: list[float] | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.scores is not None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`, with nested braces balanced; None if there is none."""
    start = text.rfind(BOX)
    if start < 0:
        return None
    depth, i = 1, start + len(BOX)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None  # an unclosed box (the generation was cut off)


def parse_scores(
    text: str,
    n: int,
    low: float | None = None,
    high: float | None = None,
    clip: bool = False,
) -> ParsedScores:
    """Parse `\\boxed{s_1, ..., s_n}` from the end of a judgement.

    Args:
        text: The judge's output.
        n: How many responses were judged; exactly n numbers are required.
        low, high: The allowed score range (SPCT: 1 and 10). Outside it the parse fails, unless
            `clip`, which clamps into the range instead (DeepSeek-GRM's model card clips to [1, 10]).
    """
    content = last_boxed(text)
    if content is None:
        return ParsedScores(None, "no \\boxed{...}" if BOX not in text else "unclosed \\boxed{")
    parts = [p.strip() for p in content.split(",") if p.strip()]
    if len(parts) != n:
        return ParsedScores(None, f"expected {n} score{'s' if n != 1 else ''}, got {len(parts)}")
    scores = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            return ParsedScores(None, f"not a number: {part[:30]!r}")
        if not math.isfinite(value):
            return ParsedScores(None, f"not finite: {part[:30]!r}")
        if abs(value) > ABSURD:
            return ParsedScores(None, f"absurd value: {part[:30]!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            if not clip:
                return ParsedScores(None, f"out of range [{low}, {high}]: {part[:30]!r}")
            value = min(max(value, low if low is not None else value), high if high is not None else value)
        scores.append(value)
    return ParsedScores(scores)


@dataclass
class ParsedVerdict:
    """A pairwise verdict ("A" or "B") and the text's shape, or why there is none."""

    verdict: str | None
    error: str = ""
    has_think_end: bool = False
    exact: bool = False  # the text after `</think>` is exactly the verdict


def parse_verdict(text: str, think_end: str = "</think>") -> ParsedVerdict:
    """The last `[[A]]`/`[[B]]` after the last `</think>` (anywhere when there is no `</think>`)."""
    has_end = think_end in text
    tail = text.rsplit(think_end, 1)[1] if has_end else text
    found = VERDICT.findall(tail)
    if not found:
        return ParsedVerdict(
            None, "no [[A]] or [[B]] verdict" + (" after </think>" if has_end else ""), has_end
        )
    verdict = found[-1]
    return ParsedVerdict(verdict, "", has_end, exact=has_end and tail.strip() == f"[[{verdict}]]")
