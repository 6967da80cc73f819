"""Grouped comparison: turn pairwise judge verdicts among the G completions of one prompt into one
reward per completion (Generative RLHF-V, Zhou et al. 2025, arXiv 2505.18531, Sec. 3 and the
appendix code).

A judge reads (prompt, y_a, y_b) and gives two scores (s_a, s_b). The paper's reward is each
completion's mean score over all comparisons that include it:

    S(y_i) = 1/|C_i| Σ_{c ∈ C_i} s(y_i | c)

Incomplete completions (cut by the length limit) are never compared and get 0. A complete
completion that no usable verdict scored gets 0 here too; `GroupedComparisonReward(uncompared=…)`
chooses its reward instead. The appendix code
compares each unordered pair once, the earlier completion shown first; its overhead section counts
both orders, which cancels the judge's position bias at twice the cost: `comparison_pairs` offers
both. Verdicts the judge's text did not yield (None) are dropped ("skip") or count as a score of 0
for both completions ("zero"); the paper does not say which it did.

Two rank-based alternatives from the paper's social-choice ablation (Table 4) are here too, with
our definitions since the paper's appendix text was not available: a Borda count (share of
comparisons won, a tie half) and a Bradley–Terry fit (expected win rate against the other complete
completions under the fitted strengths). Both lie in [0, 1], so 0 for an incomplete completion is
the worst reward, as in the mean-score case.
"""

from __future__ import annotations

import torch

Verdict = tuple[float, float] | None
UNPARSABLE = ("skip", "zero")


def comparison_pairs(complete: list[bool], both_orders: bool) -> list[tuple[int, int]]:
    """Ordered (first, second) index pairs to judge among the complete completions of one group."""
    idx = [i for i, ok in enumerate(complete) if ok]
    pairs = [(a, b) for k, a in enumerate(idx) for b in idx[k + 1 :]]
    return pairs + [(b, a) for a, b in pairs] if both_orders else pairs


def _scores_by_completion(
    n: int, pairs: list[tuple[int, int]], verdicts: list[Verdict], on_unparsable: str
) -> list[list[float]]:
    if on_unparsable not in UNPARSABLE:
        raise ValueError(f"on_unparsable = {on_unparsable!r}; choose one of {UNPARSABLE}")
    if len(pairs) != len(verdicts):
        raise ValueError(f"{len(pairs)} pairs but {len(verdicts)} verdicts")
    scores: list[list[float]] = [[] for _ in range(n)]
    for (a, b), verdict in zip(pairs, verdicts, strict=True):
        if verdict is None:
            if on_unparsable == "zero":
                scores[a].append(0.0)
                scores[b].append(0.0)
            continue
        scores[a].append(float(verdict[0]))
        scores[b].append(float(verdict[1]))
    return scores


def mean_score(
    n: int, pairs: list[tuple[int, int]], verdicts: list[Verdict], on_unparsable: str = "skip"
) -> torch.Tensor:
    """The paper's reward: each completion's mean score over its comparisons. Shape [n].

    A completion with no usable comparison (incomplete, or every verdict unparsable under
    "skip") gets 0.
    """
    scores = _scores_by_completion(n, pairs, verdicts, on_unparsable)
    return torch.tensor([sum(s) / len(s) if s else 0.0 for s in scores])


def win_counts(
    n: int, pairs: list[tuple[int, int]], verdicts: list[Verdict], on_unparsable: str = "skip"
) -> torch.Tensor:
    """wins[i, j]: how often i beat j (a tie gives each 0.5; "zero" counts an unparsable verdict
    as a tie). Shape [n, n]."""
    if on_unparsable not in UNPARSABLE:
        raise ValueError(f"on_unparsable = {on_unparsable!r}; choose one of {UNPARSABLE}")
    wins = torch.zeros(n, n, dtype=torch.float64)
    for (a, b), verdict in zip(pairs, verdicts, strict=True):
        if verdict is None:
            if on_unparsable == "skip":
                continue
            verdict = (0.0, 0.0)
        sa, sb = verdict
        wins[a, b] += 1.0 if sa > sb else 0.5 if sa == sb else 0.0
        wins[b, a] += 1.0 if sb > sa else 0.5 if sa == sb else 0.0
    return wins


def borda(
    n: int, pairs: list[tuple[int, int]], verdicts: list[Verdict], on_unparsable: str = "skip"
) -> torch.Tensor:
    """Share of its comparisons each completion won (ties half). Shape [n], values in [0, 1]."""
    wins = win_counts(n, pairs, verdicts, on_unparsable)  # [n, n]
    played = wins + wins.T
    total = played.sum(dim=1)
    return torch.where(total > 0, wins.sum(dim=1) / total.clamp(min=1e-12), 0.0).float()


def bradley_terry(
    n: int,
    pairs: list[tuple[int, int]],
    verdicts: list[Verdict],
    on_unparsable: str = "skip",
    prior: float = 0.5,
    iters: int = 100,
) -> torch.Tensor:
    """Expected win rate of each completion against the others under a Bradley–Terry fit.

    Strengths π are fitted with Hunter's (2004) minorise-maximise updates
    π_i ← W_i / Σ_j n_ij / (π_i + π_j). `prior` adds that many virtual ties against every other
    compared completion, so a completion that won (or lost) everything keeps a finite strength.

    Returns:
        mean_j π_i / (π_i + π_j) over the other completions that took part; 0 for those that
        did not. Shape [n].
    """
    wins = win_counts(n, pairs, verdicts, on_unparsable)  # [n, n]
    played = wins + wins.T
    active = played.sum(dim=1) > 0  # [n]
    m = int(active.sum())
    out = torch.zeros(n)
    if m < 2:
        return out
    w = wins[active][:, active] + prior * (1 - torch.eye(m, dtype=wins.dtype)) / 2  # [m, m]
    games = w + w.T
    strength = torch.ones(m, dtype=wins.dtype)
    for _ in range(iters):
        denom = (games / (strength[:, None] + strength[None, :])).sum(dim=1)
        strength = w.sum(dim=1) / denom
        strength = strength / strength.sum()
    p = strength[:, None] / (strength[:, None] + strength[None, :])  # [m, m] P(i beats j)
    out[active] = ((p.sum(dim=1) - 0.5) / (m - 1)).float()  # drop the diagonal's 0.5
    return out


AGGREGATORS = {"mean_score": mean_score, "borda": borda, "bradley_terry": bradley_terry}
