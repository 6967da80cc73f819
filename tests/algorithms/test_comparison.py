import pytest
import torch

from rlhfv.algorithms.comparison import borda, bradley_terry, comparison_pairs, mean_score

# Spec §7 item 4: n = 3, verdicts (1,2): (6,8), (1,3): (7,5), (2,3): (9,4) (1-based)
VERDICTS = {(0, 1): (6.0, 8.0), (0, 2): (7.0, 5.0), (1, 2): (9.0, 4.0)}


def judged(complete, both_orders=False):
    pairs = comparison_pairs(complete, both_orders)
    return pairs, [VERDICTS[p] if p in VERDICTS else VERDICTS[p[::-1]][::-1] for p in pairs]


def test_unordered_pairs_cover_each_pair_once_lower_index_first():
    assert comparison_pairs([True] * 3, both_orders=False) == [(0, 1), (0, 2), (1, 2)]


def test_both_orders_judges_every_pair_twice():
    assert sorted(comparison_pairs([True] * 3, both_orders=True)) == [
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 2),
        (2, 0),
        (2, 1),
    ]


def test_mean_score_matches_the_hand_worked_example():
    # S1 = (6 + 7)/2 = 6.5, S2 = (8 + 9)/2 = 8.5, S3 = (5 + 4)/2 = 4.5
    assert mean_score(3, *judged([True] * 3)).tolist() == [6.5, 8.5, 4.5]


def test_an_incomplete_completion_gets_zero_and_is_left_out_of_the_others_means():
    # 3 incomplete: only (1,2) is judged → S1 = 6, S2 = 8, S3 = 0
    pairs, verdicts = judged([True, True, False])
    assert pairs == [(0, 1)]
    assert mean_score(3, pairs, verdicts).tolist() == [6.0, 8.0, 0.0]


def test_both_orders_with_a_symmetric_judge_gives_the_same_means():
    assert mean_score(3, *judged([True] * 3, both_orders=True)).tolist() == [6.5, 8.5, 4.5]


def test_unparsable_verdicts_are_skipped_or_count_as_zero():
    pairs = [(0, 1), (0, 2), (1, 2)]
    verdicts = [(6.0, 8.0), None, (9.0, 4.0)]
    assert mean_score(3, pairs, verdicts, "skip").tolist() == [6.0, 8.5, 4.0]
    # zero: S1 = (6 + 0)/2 = 3, S3 = (0 + 4)/2 = 2
    assert mean_score(3, pairs, verdicts, "zero").tolist() == [3.0, 8.5, 2.0]
    with pytest.raises(ValueError, match="skip"):
        mean_score(3, pairs, verdicts, "drop")


def test_borda_counts_the_share_of_comparisons_won():
    # 1 beats 3 (1 of 2), 2 beats 1 and 3 (2 of 2), 3 wins none
    assert borda(3, *judged([True] * 3)).tolist() == [0.5, 1.0, 0.0]
    assert borda(3, *judged([True, True, False])).tolist() == [0.0, 1.0, 0.0]


def test_a_tie_is_half_a_win():
    assert borda(2, [(0, 1)], [(5.0, 5.0)]).tolist() == [0.5, 0.5]


def test_bradley_terry_orders_completions_like_their_wins_and_zeroes_the_incomplete():
    bt = bradley_terry(4, *judged([True, True, True, False]))
    assert bt[1] > bt[0] > bt[2] > 0
    assert bt[3] == 0
    # win rates against each other of a 3-way fit average to 1/2
    assert bt[:3].mean().item() == pytest.approx(0.5, abs=1e-5)


def test_bradley_terry_of_an_even_contest_is_one_half_each():
    bt = bradley_terry(2, [(0, 1), (1, 0)], [(7.0, 3.0), (7.0, 3.0)])  # each wins when shown first
    assert torch.allclose(bt, torch.tensor([0.5, 0.5]), atol=1e-6)
