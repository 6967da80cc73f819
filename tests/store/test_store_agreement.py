"""Agreement statistics against published, hand-worked examples."""

from __future__ import annotations

import math

import pytest

from rlhfv.store.agreement import (
    agreement_report,
    annotator_disagreements,
    cohen_kappa,
    disputed_tasks,
    fleiss_kappa,
    gold_accuracy,
    krippendorff_alpha,
    pair_labels,
    units_from_labels,
)
from rlhfv.store.store import NewTask


def test_pair_labels_turn_a_ranking_into_all_implied_pairs_with_ties():
    # ranks: response 2 best, 0 and 1 tied behind it.
    assert pair_labels([1, 1, 0]) == {(0, 1): 2, (0, 2): 1, (1, 2): 1}
    assert pair_labels([0, 1]) == {(0, 1): 0}


def test_cohen_kappa_matches_the_textbook_two_by_two_table():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # p_o = 35/50 = 0.7; rater a says yes 25/50, b says yes 30/50 -> p_e = .5*.6 + .5*.4 = 0.5
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_fleiss_kappa_matches_fleiss_worked_example():
    # The 10 subjects x 14 raters x 5 categories example (Fleiss 1971, as on Wikipedia): kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    units = [[c for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(units) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_matches_krippendorffs_nominal_example_with_missing_values():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, some
    # values missing; nominal alpha = 0.743.
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[c[u] for c in coders if c[u] is not None] for u in range(12)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)


def test_perfect_agreement_scores_one_and_undefined_chance_gives_nan():
    assert krippendorff_alpha([[0, 0], [1, 1], [2, 2]]) == pytest.approx(1.0)
    assert fleiss_kappa([[0, 0, 0], [1, 1, 1]]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))


def test_report_scores_each_annotator_pair_on_shared_units_and_gold_accuracy_per_annotator():
    units = {
        (1, 0, 1): {"ann": 0, "bob": 0, "cat": 1},
        (2, 0, 1): {"ann": 1, "bob": 1},
        (3, 0, 1): {"ann": 0, "cat": 0},
    }
    report = agreement_report(units)
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert pairs["ann", "bob"]["units"] == 2 and pairs["ann", "bob"]["cohen_kappa"] == pytest.approx(1.0)
    assert pairs["bob", "cat"]["units"] == 1
    assert report["units"] == 3
    # cat: kappa with ann over units 1 and 3 is (0.5 - 0.5) / (1 - 0.5) = 0; with bob, one unit where
    # both are certain of different labels: p_o = 0, p_e = 0 -> kappa 0.
    cat = next(r for r in report["annotators"] if r["annotator"] == "cat")
    assert cat["partners"] == 2 and cat["mean_cohen_kappa"] == pytest.approx(0.0)
    accuracy = {r["annotator"]: r for r in gold_accuracy(units, {1: [0, 1]})}
    assert accuracy["ann"]["accuracy"] == 1.0 and accuracy["cat"]["accuracy"] == 0.0
    assert "bob" in accuracy and accuracy["bob"]["gold_units"] == 1


def test_a_task_leaves_the_disputed_list_once_it_has_a_gold_answer(store):
    store.add_tasks([NewTask("split", ["a", "b"]), NewTask("agreed", ["c", "d"])], overlap=2)
    users = [store.add_user(f"u{i}", f"password-{i}").id for i in range(2)]
    for uid, split_ranks in zip(users, ([0, 1], [1, 0]), strict=True):
        for _ in range(2):
            view = store.next_task(uid)
            store.submit(uid, view.id, split_ranks if view.prompt == "split" else [0, 1])
    split_id = next(r["task_id"] for r in store.labels() if r["prompt"] == "split")
    units = units_from_labels(store.labels())
    assert disputed_tasks(units, store.gold()) == [split_id]
    store.set_gold(split_id, [1, 0])
    assert disputed_tasks(units, store.gold()) == []


def test_an_annotators_disagreements_are_the_units_where_she_left_the_others_majority():
    units = {
        (1, 0, 1): {"ann": 0, "bob": 1, "cy": 1},  # ann alone: listed
        (1, 0, 2): {"ann": 0, "bob": 0, "cy": 1},  # ann with the majority
        (2, 0, 1): {"ann": 2, "bob": 0, "cy": 1},  # the others split 1:1, ann ties: listed
        (3, 0, 1): {"ann": 1, "bob": 0, "cy": 1},  # others split, ann sides with cy: not listed
        (4, 0, 1): {"ann": 0},  # nobody to disagree with
    }
    rows = annotator_disagreements(units, "ann")
    assert [(r["task_id"], r["pair"]) for r in rows] == [(1, "0 vs 1"), (2, "0 vs 1")]
    assert rows[0]["own"] == "response 0 better"
    assert rows[0]["others"] == "bob: response 1 better; cy: response 1 better"
    assert rows[1]["own"] == "tie"
    # bob: task 1 (both pairs) ties with one of the others' labels; tasks 2 and 3 match nobody.
    assert [(r["task_id"], r["pair"]) for r in annotator_disagreements(units, "bob")] == [
        (2, "0 vs 1"),
        (3, "0 vs 1"),
    ]


def test_the_report_gives_the_raw_agreement_beside_kappa():
    units = {
        (1, 0, 1): {"ann": 0, "bob": 0, "cat": 1},  # label pairs: ann-bob agree, ann-cat and bob-cat do not
        (2, 0, 1): {"ann": 1, "bob": 1},  # agree
        (3, 0, 1): {"ann": 0, "cat": 0},  # agree
    }
    report = agreement_report(units)
    assert report["agreement"] == pytest.approx(3 / 5)  # 3 of the 5 label pairs agree
    pairs = {(p["a"], p["b"]): p["agreement"] for p in report["pairs"]}
    assert pairs == {("ann", "bob"): 1.0, ("ann", "cat"): 0.5, ("bob", "cat"): 0.0}
