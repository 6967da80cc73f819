"""ShapesVQA is deterministic, its splits differ, and its answer rule is strict."""

from __future__ import annotations

import pytest

from rlhfv.data.shapes import ShapesVQA, answer_matches


def test_same_index_gives_the_same_example():
    a, b = ShapesVQA(20, seed=3)[7], ShapesVQA(20, seed=3)[7]
    assert a.prompt.text == b.prompt.text and a.label == b.label
    assert a.prompt.images[0].tobytes() == b.prompt.images[0].tobytes()


def test_train_and_test_splits_differ():
    train = {ShapesVQA(50, "train")[i].prompt.images[0].tobytes() for i in range(50)}
    test = {ShapesVQA(50, "test")[i].prompt.images[0].tobytes() for i in range(50)}
    assert not train & test


def test_all_three_tasks_appear_and_answers_match_their_labels():
    data = ShapesVQA(30)
    assert {data[i].task for i in range(30)} == {"count", "colour", "position"}
    assert all(answer_matches(data[i].answer, data[i].label) for i in range(30))


@pytest.mark.parametrize(
    "text,label,ok",
    [
        ("There are 3 shapes.", "3", True),
        ("I count three shapes", "3", True),
        ("There are 3 or 4 shapes.", "3", False),  # hedging between answers is wrong
        ("The circle is red.", "red", True),
        ("It is red or blue.", "red", False),
        ("It is to the left.", "left", True),
        ("", "left", False),
    ],
)
def test_answer_rule(text, label, ok):
    assert answer_matches(text, label) is ok


def test_preference_pairs_prefer_the_correct_answer_in_both_positions():
    data = ShapesVQA(40)
    pairs = [data.preference_pair(i) for i in range(40)]
    assert {p.preferred for p in pairs} == {0, 1}
    for i, p in enumerate(pairs):
        label = data[i].label
        assert answer_matches(p.responses[p.preferred], label)
        assert not answer_matches(p.responses[1 - p.preferred], label)


def test_length_does_not_give_the_answer_away():
    data = ShapesVQA(300)
    pairs = [data.preference_pair(i) for i in range(300)]
    longer_wins = sum(len(p.responses[p.preferred]) > len(p.responses[1 - p.preferred]) for p in pairs)
    assert 0.3 < longer_wins / 300 < 0.7


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split"):
        ShapesVQA(split="dev")
    with pytest.raises(ValueError, match="tasks"):
        ShapesVQA(tasks=["shape"])
