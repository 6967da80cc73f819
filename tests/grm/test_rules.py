"""Reward rules against the spec's hand-worked values (algorithms.md §7 items 1 and 3)."""

from __future__ import annotations

import pytest

from rlhfv.grm.parsing import parse_scores
from rlhfv.grm.rules import (
    VerdictRewardTiers,
    grlhfv_reward,
    preferred_truth,
    spct_correct,
    spct_reward,
    verdict_reward,
)


def test_spct_reward_matches_the_spec_examples():
    truth = preferred_truth(2, preferred=1)  # label j = 2 (1-based) → truth [0, 1]
    assert spct_reward([3, 7], truth) == 1.0  # 7 > 3 and response 2 is the best
    assert spct_reward([7, 7], truth) == -1.0  # a tie is wrong (strict >)
    assert spct_reward(parse_scores("I like both", 2).scores, truth) == -1.0  # unparsable → −1
    assert spct_reward([7, 3], truth) == -1.0
    assert spct_reward([1], [1]) == 1.0 and spct_reward([0], [1]) == -1.0  # n = 1 binary: S_1 = r_1


def test_spct_correct_needs_the_best_strictly_above_every_other_of_n():
    truth = [0.2, 0.9, 0.5]
    assert spct_correct([4, 9, 8], truth)
    assert not spct_correct([4, 9, 9], truth)  # tied with the third response
    assert not spct_correct([4, 9], truth)  # wrong count
    with pytest.raises(ValueError, match="unique best"):
        spct_correct([1, 2], [1, 1])


def test_grlhfv_reward_matches_the_spec_examples():
    # The spec's gt is 1-based; ours is the 0-based `preferred` index of PairwisePreference.
    assert grlhfv_reward("\\boxed{6, 8}", preferred=1) == 1.0  # gt = 2, 8 > 6
    assert grlhfv_reward("\\boxed{6, 8}", preferred=0) == 0.0  # gt = 1
    assert grlhfv_reward("\\boxed{6}", preferred=1) == 0.0
    assert grlhfv_reward("\\boxed{6,8,9}", preferred=1) == 0.0
    assert grlhfv_reward("6, 8", preferred=1) == 0.0  # no box
    assert grlhfv_reward("\\boxed{7, 7}", preferred=1) == 0.0  # tie


def test_verdict_reward_tiers_and_custom_values():
    assert verdict_reward("think</think>[[A]]", "A", finished=True) == 1.0
    assert verdict_reward("think</think>Verdict: [[A]]", "A", finished=True) == 0.1
    assert verdict_reward("think</think>[[B]]", "A", finished=True) == -0.9
    assert verdict_reward("think</think>nothing", "A", finished=True) == -0.9
    assert verdict_reward("think</think>[[A]]", "A", finished=False) == -1.0  # cut off by the length limit
    assert verdict_reward("[[A]]", "A", finished=True) == -1.0  # no </think>
    tiers = VerdictRewardTiers(exact=2.0, correct_with_extra=1.0, wrong=0.0, unfinished=-5.0)
    assert verdict_reward("t</think>so [[B]]", "B", True, tiers) == 1.0
