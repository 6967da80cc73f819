"""Voting, meta-RM voting and the response-order shuffle (algorithms.md §7 item 2)."""

from __future__ import annotations

import random

from rlhfv.grm.voting import meta_vote, pick_credit, shown_index, shuffled_order, unshuffle_scores, vote

# SPCT Fig. 3: four samples judging two responses.
SAMPLES = [[1, 5], [5, 6], [4, 8], [7, 6]]


def test_vote_sums_the_k_samples():
    # Response 1: 1 + 5 + 4 + 7 = 17; response 2: 5 + 6 + 8 + 6 = 25.
    assert vote(SAMPLES, 2) == [17, 25]


def test_vote_skips_unparsable_samples():
    assert vote([[1, 5], None, [4, 8]], 2) == [5, 13]


def test_meta_vote_keeps_the_samples_the_meta_rm_trusts_most():
    # Meta scores rank samples #1 and #3 on top: (1 + 4, 5 + 8) = (5, 13).
    assert meta_vote(SAMPLES, [0.9, 0.1, 0.8, -2.0], k_meta=2, n=2) == [5, 13]
    # An unparsable sample is ranked last even with the best meta score.
    assert meta_vote([None, [5, 6], [4, 8]], [9.0, 0.1, 0.2], k_meta=2, n=2) == [9, 14]


def test_shuffle_then_unshuffle_restores_scores_and_moves_labels():
    rng = random.Random(3)
    for n in (1, 2, 5):
        order = shuffled_order(n, rng)
        assert sorted(order) == list(range(n))
        original = [float(10 * i + 1) for i in range(n)]
        shown = [original[i] for i in order]  # what a faithful judge would write in display order
        assert unshuffle_scores(shown, order) == original
        best = n - 1
        assert shown[shown_index(best, order)] == original[best]
    assert unshuffle_scores(None, [1, 0]) is None


def test_pick_credit_breaks_ties_at_random_in_expectation():
    assert pick_credit([17, 25], best=1) == 1.0
    assert pick_credit([17, 25], best=0) == 0.0
    assert pick_credit([7, 7], best=0) == 0.5  # a two-way tie is right half the time
    assert pick_credit([3, 7, 7], best=0) == 0.0
