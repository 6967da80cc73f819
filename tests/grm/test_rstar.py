"""R* path scores and ReasonGRM filters (algorithms.md §7 item 5)."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfv.grm.rstar import best_paths, mixed_outcome, path_scores, r_star

REASONING = [0.9, 0.92, 0.88, 0.95]
ANSWER = [0.97, 0.95]


def toy_path() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logprobs = torch.tensor([REASONING + ANSWER + [0.5]]).log()  # [1, 7]; the last token is padding
    reasoning_mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    answer_mask = torch.tensor([[0, 0, 0, 0, 1, 1, 0]])
    return logprobs, reasoning_mask, answer_mask


def test_r_star_arithmetic_matches_the_spec_value():
    # Reasoning mean (0.9 + 0.92 + 0.88 + 0.95) / 4 = 0.9125; answer mean (0.97 + 0.95) / 2 = 0.96.
    # R* = 0.9125 × 0.96 = 0.876.
    assert r_star(*toy_path(), token_mean="arith").item() == pytest.approx(0.876, abs=1e-6)


def test_r_star_geometric_is_the_product_of_geometric_means():
    # (0.9·0.92·0.88·0.95)^(1/4) ≈ 0.91211 and (0.97·0.95)^(1/2) ≈ 0.95995; product ≈ 0.87558,
    # a little below the arithmetic 0.876 (AM ≥ GM).
    expected = math.prod(REASONING) ** 0.25 * math.prod(ANSWER) ** 0.5
    value = r_star(*toy_path(), token_mean="geom").item()
    assert value == pytest.approx(expected, rel=1e-6) and value < 0.876


def test_r_star_rejects_an_unknown_mean_and_gives_zero_without_reasoning():
    lp, _, answer = toy_path()
    with pytest.raises(ValueError, match="token_mean"):
        r_star(lp, answer, answer, token_mean="median")
    assert r_star(lp, torch.zeros_like(answer), answer).item() == 0.0


def test_mixed_outcome_keeps_only_sometimes_right_questions():
    assert mixed_outcome([0, 1, 3, 4], samples=4) == [False, True, True, False]


def test_best_paths_picks_the_highest_correct_path_per_question():
    questions = ["q1", "q1", "q1", "q2", "q3"]
    scores = [0.5, 0.9, 0.7, 0.4, 0.99]
    correct = [True, False, True, True, False]  # q1's 0.9 path is wrong; q3 has no correct path
    assert best_paths(questions, scores, correct) == {"q1": 2, "q2": 3}


def test_path_scores_from_a_model_rank_confident_reasoning_higher():
    from rlhfv.models.text_lm import tiny_text_lm
    from rlhfv.types import Prompt

    model = tiny_text_lm(seed=1)
    prompts = [Prompt("which answer is better?")] * 3
    scores = path_scores(model, prompts, ["red circle </think>[[A]]", "blue</think>[[B]]", "no think [[A]]"])
    assert scores.shape == (3,) and (scores[:2] > 0).all() and (scores[:2] < 1).all()
    assert scores[2] == 0  # no </think>: no reasoning part
