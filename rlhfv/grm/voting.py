"""Inference-time scaling for pointwise judges (SPCT, Liu et al. 2025, arXiv 2504.02495).

Each of k samples judges the responses in its own random order (against position bias); scores
are mapped back to the original order and summed (Eq. 14). Meta-RM guided voting sums only the
k_meta samples the meta-RM trusts most. Failed parses contribute nothing to a vote.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def shuffled_order(n: int, rng: random.Random) -> list[int]:
    """A random display order: position p shows original response `order[p]`."""
    order = list(range(n))
    rng.shuffle(order)
    return order


def unshuffle_scores(shown_scores: Sequence[float] | None, order: Sequence[int]) -> list[float] | None:
    """Scores given in display order → scores in the original order (None stays None)."""
    if shown_scores is None:
        return None
    original = [0.0] * len(order)
    for position, response in enumerate(order):
        original[response] = shown_scores[position]
    return original


def shown_index(original: int, order: Sequence[int]) -> int:
    """Where original response `original` is displayed (to move a label into display order)."""
    return list(order).index(original)


def vote(samples: Sequence[Sequence[float] | None], n: int) -> list[float]:
    """Sum each response's scores over the samples that parsed (Eq. 14). Shape: [n]."""
    totals = [0.0] * n
    for scores in samples:
        if scores is not None:
            for i, s in enumerate(scores):
                totals[i] += s
    return totals


def meta_vote(
    samples: Sequence[Sequence[float] | None], meta_scores: Sequence[float], k_meta: int, n: int
) -> list[float]:
    """Meta-RM guided voting: sum only the `k_meta` samples with the highest meta-RM score.

    Unparsable samples are ranked last, whatever the meta-RM says (they carry no scores).
    """
    if len(samples) != len(meta_scores):
        raise ValueError(f"{len(samples)} samples but {len(meta_scores)} meta scores")
    ranked = sorted(range(len(samples)), key=lambda j: (samples[j] is not None, meta_scores[j]), reverse=True)
    return vote([samples[j] for j in ranked[:k_meta]], n)


def pick_credit(totals: Sequence[float], best: int) -> float:
    """Expected accuracy of picking argmax(totals) with random tie-breaking (SPCT's evaluation):
    1 if `best` alone has the top total, 1/m if it shares the top with m−1 others, else 0."""
    top = max(totals)
    tied = [i for i, t in enumerate(totals) if t == top]
    return 1.0 / len(tied) if best in tied else 0.0
