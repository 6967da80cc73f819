"""Reward rules for training and evaluating judges: pure functions of parsed outputs and labels.

- SPCT (DeepSeek-GRM, arXiv 2504.02495) Eq. 10 correctness and the Eq. 11 ±1 reward;
- GRLHF-V (arXiv 2505.18531, §3.3) {0, 1} accuracy reward for a two-response judge;
- ReasonGRM (arXiv 2506.16712) tiered outcome reward for `[[A]]`/`[[B]]` verdicts. The paper's
  exact RL reward is not public; the tiers below follow the authors' released reward function and
  are configurable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlhfv.grm.parsing import parse_scores, parse_verdict


def spct_correct(scores: Sequence[float] | None, truth: Sequence[float]) -> bool:
    """SPCT Eq. 10: do the predicted scores agree with the ground-truth rewards?

    n ≥ 2: the response with the highest true reward must get a strictly higher score than every
    other (ties are wrong). n = 1: the score must equal the true reward (binary 0/1 questions).
    Unparsable output (`scores is None`) or the wrong count is never correct.
    """
    if scores is None or len(scores) != len(truth) or not truth:
        return False
    if len(truth) == 1:
        return scores[0] == truth[0]
    best = max(range(len(truth)), key=lambda i: truth[i])
    if sum(t == truth[best] for t in truth) != 1:
        raise ValueError(f"ground truth must have a unique best response, got {list(truth)}")
    return all(scores[best] > s for i, s in enumerate(scores) if i != best)


def spct_reward(scores: Sequence[float] | None, truth: Sequence[float]) -> float:
    """SPCT Eq. 11: +1 for a correct judgement (Eq. 10), −1 otherwise, unparsable included."""
    return 1.0 if spct_correct(scores, truth) else -1.0


def preferred_truth(n: int, preferred: int) -> list[float]:
    """Ground-truth rewards of a preference: 1 for the preferred response, 0 for the others."""
    return [1.0 if i == preferred else 0.0 for i in range(n)]


def grlhfv_reward(text: str, preferred: int) -> float:
    """GRLHF-V's judge reward: 1 if `\\boxed{s_1, s_2}` ranks the preferred response strictly
    higher, else 0 (no box, not exactly two floats, a tie or the wrong order).

    Args:
        text: The judge's output.
        preferred: 0-based index of the human-preferred response (the paper's gt is 1-based).
    """
    parsed = parse_scores(text, 2)
    if not parsed.ok:
        return 0.0
    s = parsed.scores
    return 1.0 if s[preferred] > s[1 - preferred] else 0.0


@dataclass
class VerdictRewardTiers:
    """Rewards of the ReasonGRM outcome rule, from best to worst output.

    Attributes:
        exact: After `</think>` there is exactly the right verdict.
        correct_with_extra: The last verdict after `</think>` is right but other text surrounds it.
        wrong: Any other finished output (wrong verdict, or none).
        unfinished: The output never ended (no eos) or has no `</think>`.
    """

    exact: float = 1.0
    correct_with_extra: float = 0.1
    wrong: float = -0.9
    unfinished: float = -1.0


def verdict_reward(text: str, target: str, finished: bool, tiers: VerdictRewardTiers | None = None) -> float:
    """ReasonGRM tiered outcome reward for a verdict output; `target` is "A" or "B"."""
    tiers = tiers or VerdictRewardTiers()
    parsed = parse_verdict(text)
    if not finished or not parsed.has_think_end:
        return tiers.unfinished
    if parsed.verdict != target:
        return tiers.wrong
    return tiers.exact if parsed.exact else tiers.correct_with_extra
