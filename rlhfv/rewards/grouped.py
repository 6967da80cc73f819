"""The grouped-comparison reward (Generative RLHF-V): a pairwise judge compares the G completions of
each prompt, and an aggregator turns the verdicts into one reward per completion
(`rlhfv.algorithms.comparison` holds the maths and the choices left open by the paper).

A judge is any callable `judge(prompts, first, second) -> list[(s_first, s_second) | None]`,
batched over pairs; None means its output could not be read. A judge may also keep the raw text
of each verdict in `last_texts` (same order), which ends up in `rollouts.jsonl` for the dashboard.
All pairs of all prompts of a rollout go to the judge in one call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from rlhfv.algorithms.comparison import AGGREGATORS, comparison_pairs

if TYPE_CHECKING:
    from rlhfv.rollout import Rollout
    from rlhfv.types import Prompt

Verdict = tuple[float, float] | None


class PairwiseJudge(Protocol):
    """Scores two answers to the same prompt; batched over pairs."""

    def __call__(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> list[Verdict]: ...


class GroupedComparisonReward:
    """Each completion's reward from pairwise judgments against the rest of its group.

    Args:
        judge: The pairwise judge (a recipe node).
        both_orders: Judge each pair in both orders (cancels position bias, costs 2×); False
            reproduces the paper's appendix code (each unordered pair once, lower index first).
        aggregator: "mean_score" (the paper), "borda" or "bradley_terry".
        on_unparsable: "skip" an unreadable verdict, or count it as "zero" for both.
        uncompared: The reward of a complete completion that no usable verdict scored: the lone
            complete one of its group (nothing to compare it with), or one whose every verdict
            was unreadable under on_unparsable "skip". A number gives it that reward; the
            default 0 is what a truncated completion gets (the aggregators' own value, so
            finishing alone earns nothing over being cut off). null gives it the mean reward of
            its group's scored completions (advantage 0 against them: the judge said nothing
            about it), or 0 when none was scored. `grm/uncompared_frac` in the metrics counts
            them.
    """

    def __init__(
        self,
        judge: Any,
        both_orders: bool = False,
        aggregator: str = "mean_score",
        on_unparsable: str = "skip",
        uncompared: float | None = 0.0,
    ):
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator = {aggregator!r}; choose one of {sorted(AGGREGATORS)}")
        self.judge, self.both_orders, self.on_unparsable = judge, both_orders, on_unparsable
        self.aggregate = AGGREGATORS[aggregator]
        self.uncompared = uncompared
        self.last_metrics: dict[str, float] = {}

    def __call__(self, rollout: Rollout) -> torch.Tensor:
        g = rollout.group_size
        complete = rollout.complete.tolist()
        groups = [
            comparison_pairs(complete[b * g : (b + 1) * g], self.both_orders)
            for b in range(len(rollout.prompts))
        ]
        flat = [(b, i, j) for b, pairs in enumerate(groups) for i, j in pairs]  # every pair of every prompt
        verdicts: list[Verdict] = []
        if flat:
            verdicts = list(
                self.judge(
                    [rollout.prompts[b] for b, _, _ in flat],
                    [rollout.texts[b * g + i] for b, i, _ in flat],
                    [rollout.texts[b * g + j] for b, _, j in flat],
                )
            )
        if len(verdicts) != len(flat):
            raise ValueError(f"judge returned {len(verdicts)} verdicts for {len(flat)} pairs")
        texts = list(getattr(self.judge, "last_texts", None) or [""] * len(flat))
        rewards, rollout.judgments, k, uncompared = [], [], 0, 0
        for b, pairs in enumerate(groups):
            mine = verdicts[k : k + len(pairs)]
            reward = self.aggregate(g, pairs, mine, self.on_unparsable)  # [G]
            scored = torch.zeros(g, dtype=torch.bool)  # took part in at least one usable comparison
            for (i, j), v in zip(pairs, mine, strict=True):
                if v is not None or self.on_unparsable == "zero":
                    scored[i] = scored[j] = True
            lone = torch.tensor(complete[b * g : (b + 1) * g]) & ~scored  # [G]
            if lone.any():
                fill = self.uncompared
                if fill is None:
                    fill = float(reward[scored].mean()) if scored.any() else 0.0
                reward = torch.where(lone, torch.full_like(reward, fill), reward)
                uncompared += int(lone.sum())
            rewards.append(reward)
            rollout.judgments.append(
                [
                    {"a": i, "b": j, "text": text, "scores": list(v) if v is not None else None}
                    for (i, j), v, text in zip(pairs, mine, texts[k : k + len(pairs)], strict=True)
                ]
            )
            k += len(pairs)
        self.last_metrics = {"grm/uncompared_frac": uncompared / max(1, len(rollout.texts))}
        return torch.cat(rewards) if rewards else torch.zeros(0)


class FormatJudge:
    """A rule-based pairwise judge standing in for a generative one: it scores each answer 1–10 on
    form alone (it cannot see whether an answer is right). 10 for a single-line answer of at most
    `max_words` words; one point less per extra word, down to 1; 1 for an empty answer.

    It writes the same `Scores: \\boxed{s1, s2}` text a generative judge ends with, into
    `last_texts`, so the dashboard path is exercised too.
    """

    def __init__(self, max_words: int = 8):
        self.max_words = max_words
        self.last_texts: list[str] = []

    def score(self, text: str) -> float:
        words = re.findall(r"\S+", text)
        if not words:
            return 1.0
        lines = text.strip().count("\n")
        return float(max(1, 10 - max(0, len(words) - self.max_words) - 3 * lines))

    def __call__(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> list[Verdict]:
        verdicts = [(self.score(a), self.score(b)) for a, b in zip(first, second, strict=True)]
        self.last_texts = [f"Scores: \\boxed{{{a:g}, {b:g}}}" for a, b in verdicts]
        return list(verdicts)
