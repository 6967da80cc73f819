"""Active-learning selection strategies over a GRM's judgements, against hand-worked values."""

from __future__ import annotations

import random

from PIL import Image

from rlhfv.grm.judge import Judgement
from rlhfv.grm.selection import (
    at_random,
    diverse,
    image_hash,
    margin,
    position_inconsistency,
    ranked,
    uncertainty,
    word_overlap,
)

STORED, SWAPPED = [0, 1], [1, 0]


def judged(*samples: tuple[list[int], list[float] | None]) -> Judgement:
    """A judgement from (display order, scores in the ORIGINAL order or None) samples."""
    orders = [list(o) for o, _ in samples]
    scores = [None if s is None else [float(x) for x in s] for _, s in samples]
    k = len(samples)
    return Judgement(texts=[""] * k, orders=orders, parsed=[], scores=scores, complete=[True] * k)


SURE = judged((STORED, [8, 3]), (SWAPPED, [8, 3]), (STORED, [7, 2]), (SWAPPED, [9, 1]))
SPLIT = judged((STORED, [8, 3]), (SWAPPED, [3, 8]), (STORED, [8, 3]), (SWAPPED, [3, 8]))
ONE_OFF = judged((STORED, [8, 3]), (SWAPPED, [8, 3]), (STORED, [8, 3]), (SWAPPED, [3, 8]))
UNPARSED = judged((STORED, None), (SWAPPED, None))
RNG = random.Random(0)


def test_uncertainty_is_the_share_of_samples_that_disagree_with_the_vote():
    # SURE: all four prefer response 0 -> 0. ONE_OFF: vote (27, 17) -> 0 wins, 3 of 4 agree -> 0.25.
    # SPLIT: vote (22, 22) is a tie -> 1. UNPARSED: nothing to say -> None.
    assert uncertainty([SURE, ONE_OFF, SPLIT, UNPARSED], RNG) == [0.0, 0.25, 1.0, None]


def test_an_unparsable_sample_does_not_count_as_disagreement():
    partly = judged((STORED, [8, 3]), (SWAPPED, None), (STORED, [6, 2]))
    assert uncertainty([partly], RNG) == [0.0]


def test_position_inconsistency_counts_verdict_flips_across_the_two_orders():
    # SPLIT: every stored sample prefers 0, every swapped one 1 -> 4 of 4 cross pairs flip.
    # ONE_OFF: stored [0, 0], swapped [0, 1] -> 2 of 4 cross pairs flip.
    assert position_inconsistency([SURE, SPLIT, ONE_OFF], RNG) == [0.0, 1.0, 0.5]
    only_one_order = judged((STORED, [8, 3]), (SWAPPED, None))
    assert position_inconsistency([only_one_order, UNPARSED], RNG) == [None, None]


def test_margin_prefers_the_smallest_mean_score_gap():
    # SURE: mean gap ((8-3) + (8-3) + (7-2) + (9-1)) / 4 = 23 / 4 = 5.75. SPLIT: gap 0.
    got = margin([SURE, SPLIT, UNPARSED], RNG)
    assert got == [-5.75, 0.0, None]
    assert ranked(got, RNG) == [1, 0]


def test_random_scores_skip_only_what_no_sample_parsed_and_follow_the_seed():
    a = at_random([SURE, UNPARSED, SPLIT], random.Random(3))
    b = at_random([SURE, UNPARSED, SPLIT], random.Random(3))
    assert a == b and a[1] is None and all(0 <= v < 1 for v in (a[0], a[2]))


def test_ranked_breaks_ties_by_the_seed_and_drops_unscored_candidates():
    orders = {tuple(ranked([1.0, 0.5, 0.5, None, 0.5], random.Random(s))) for s in range(20)}
    assert all(o[0] == 0 and set(o[1:]) == {1, 2, 4} for o in orders)
    assert len(orders) > 1  # the tied three come in more than one order


def test_diverse_passes_over_the_same_question_on_the_same_image():
    red = Image.new("RGB", (32, 32), (200, 0, 0))
    red.paste((0, 0, 255), (0, 0, 16, 16))
    other = Image.new("RGB", (32, 32), (200, 0, 0))
    other.paste((0, 0, 255), (16, 16, 32, 32))
    hashes = [image_hash([red]), image_hash([red.copy()]), image_hash([red]), image_hash([other])]
    prompts = ["How many shapes are there?", "How many shapes are there?", "What colour is the square?",
               "How many shapes are there?"]  # fmt: skip
    assert hashes[0] == hashes[1] and bin(hashes[0] ^ hashes[3]).count("1") > 4
    # 1 repeats 0 (same words, same picture); 2 asks another question, 3 shows another picture.
    assert diverse([0, 1, 2, 3], prompts, hashes, m=3) == [0, 2, 3]
    assert diverse([1, 0], prompts, hashes, m=2) == [1]  # fewer than m rather than a duplicate
    assert word_overlap("How many shapes?", "how many SHAPES?") == 1.0
