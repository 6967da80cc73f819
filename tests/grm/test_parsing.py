"""Judge output parsing never raises and says why it failed."""

from __future__ import annotations

import pytest

from rlhfv.grm.parsing import parse_scores, parse_verdict


def test_parse_scores_reads_the_last_box_with_n_numbers():
    text = "Specific Criteria: accuracy (60%)... \\boxed{1, 1} is a bad example.\nScores: \\boxed{3, 7.5}"
    assert parse_scores(text, 2).scores == [3.0, 7.5]
    assert parse_scores("Scores: \\boxed{8}", 1).scores == [8.0]


@pytest.mark.parametrize(
    ("text", "n", "reason"),
    [
        ("Scores: 3, 7", 2, "no \\boxed"),
        ("Scores: \\boxed{3, 7", 2, "unclosed"),
        ("\\boxed{6}", 2, "expected 2 scores, got 1"),
        ("\\boxed{6, 8, 9}", 2, "expected 2 scores, got 3"),
        ("\\boxed{six, 8}", 2, "not a number: 'six'"),
        ("\\boxed{nan, 8}", 2, "not finite"),
        ("\\boxed{inf, 8}", 2, "not finite"),
        ("\\boxed{1e300, 8}", 2, "absurd"),
        ("", 3, "no \\boxed"),
    ],
)
def test_parse_scores_reports_why_it_failed(text, n, reason):
    parsed = parse_scores(text, n)
    assert parsed.scores is None and not parsed.ok
    assert reason in parsed.error


def test_parse_scores_range_fails_or_clips():
    assert "out of range" in parse_scores("\\boxed{0, 11}", 2, low=1, high=10).error
    assert parse_scores("\\boxed{0, 11}", 2, low=1, high=10, clip=True).scores == [1.0, 10.0]


def test_parse_scores_survives_garbage_of_any_kind():
    for garbage in ["\\boxed{", "}}}{{{", "\\boxed{\\boxed{}}", "\\boxed{,,,}", "\x00\\boxed{1,}"]:
        assert parse_scores(garbage, 2).scores is None


def test_parse_verdict_takes_the_last_verdict_after_think_end():
    parsed = parse_verdict("maybe [[B]]? no...</think>[[A]]")
    assert parsed.verdict == "A" and parsed.exact and parsed.has_think_end
    extra = parse_verdict("reasoning</think>So the answer is [[A]], then [[B]].")
    assert extra.verdict == "B" and not extra.exact
    assert "no [[A]] or [[B]] verdict after </think>" in parse_verdict("x [[A]] </think> none").error
    assert parse_verdict("no think but [[B]]").verdict == "B"
