"""TextChecks: deterministic items, disjoint splits, a checker that accepts the right answer and
rejects the wrong one, and pairs whose two responses differ only in what they answer."""

from __future__ import annotations

import pytest

from rlhfv.data.textchecks import KINDS, TextCheckPairs, TextChecks, check, numbers_in, split_of


def test_items_are_a_pure_function_of_seed_split_and_index():
    a, b = TextChecks(30, "train", seed=3), TextChecks(30, "train", seed=3)
    assert [a.item(i)[:5] for i in range(30)] == [b.item(i)[:5] for i in range(30)]
    assert [a.item(i)[1] for i in range(30)] != [
        TextChecks(30, "train", seed=4).item(i)[1] for i in range(30)
    ]


def test_train_and_test_never_share_a_question():
    train = {TextChecks(700, "train", seed=s).item(i)[1] for s in range(2) for i in range(700)}
    test = {TextChecks(700, "test", seed=s).item(i)[1] for s in range(2) for i in range(700)}
    assert train and test and not train & test
    assert all(split_of(q) == "test" for q in test)


@pytest.mark.parametrize("kind", KINDS)
def test_the_checker_accepts_the_right_response_and_rejects_the_wrong_one(kind):
    data = TextChecks(60, "test", seed=0, kinds=[kind])
    for i in range(60):
        k, question, label, right, wrong, _ = data.item(i)
        assert k == kind
        assert check(right, kind, question, label), (question, right)
        assert not check(wrong, kind, question, label), (question, wrong)


def test_the_checker_reads_free_form_answers_as_a_model_writes_them():
    assert check("Sure! 23 + 48 = 71", "add", "What is 23 + 48?", "71")
    assert not check("23 + 48 = 61", "add", "What is 23 + 48?", "71")
    assert check("The larger number is 74, not 47.", "compare", "Which number is larger, 47 or 74?", "74")
    assert not check("47 is bigger than 74.", "compare", "Which number is larger, 47 or 74?", "74")
    assert check("There are four words.", "count_words", 'How many words are in "a b c d"?', "4")
    assert check("THE CAT SAT.", "caps", "", "THE CAT SAT.")
    assert not check("The cat sat.", "caps", "", "THE CAT SAT.")
    assert check("Calm, deep, blue.", "three_words", "", "3")
    assert not check("Calm and deep blue.", "three_words", "", "3")
    assert numbers_in("twelve eggs and 3 cups") == [12, 3]


def test_pairs_differ_only_in_the_answer_and_put_the_right_one_first_about_half_the_time():
    pairs = TextCheckPairs(280, "test", seed=1)
    firsts = 0
    for i in range(len(pairs)):
        p = pairs[i]
        right, wrong = p.responses[p.preferred], p.responses[1 - p.preferred]
        assert right != wrong and right == p.reference
        if not p.source.endswith(("caps", "three_words")):  # same template, one number changed
            assert abs(len(right) - len(wrong)) <= 1
        firsts += p.preferred == 0
    assert 0.4 < firsts / len(pairs) < 0.6


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="'dev'"):
        TextChecks(split="dev")
    with pytest.raises(ValueError, match="spelling"):
        TextChecks(kinds=["spelling"])
