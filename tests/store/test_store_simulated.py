"""The simulated annotator labels through the store's own API, from the data's checker."""

from __future__ import annotations

import pytest

from rlhfv.store.simulated import SimulatedAnnotator
from rlhfv.store.store import NewTask
from rlhfv.types import Example, Prompt


def parity(text: str, example: Example) -> bool:
    return len(text) % 2 == 0


def add_pairs(store, n: int, overlap: int = 1) -> dict[str, Example]:
    """n tasks whose right answer (even length) is first in even tasks, second in odd ones."""
    tasks, examples = [], {}
    for i in range(n):
        responses = ["ab", "abc"] if i % 2 == 0 else ["abc", "abcd"]
        tasks.append(NewTask(prompt=f"q{i}", responses=responses, external_id=f"x{i}"))
        examples[f"x{i}"] = Example(Prompt(f"q{i}"), "")
    store.add_tasks(tasks, overlap)
    return examples


def test_a_careful_simulated_annotator_ranks_by_the_checker_and_labels_each_task_once(store):
    examples = add_pairs(store, 6)
    ann = SimulatedAnnotator(store, "sim-0", error_rate=0.0, seed=1)
    assert ann.label(examples, parity) == 6
    rows = {r["external_id"]: r for r in store.labels()}
    assert {k: r["ranks"] for k, r in rows.items()} == {
        f"x{i}": [0, 1] if i % 2 == 0 else [1, 0] for i in range(6)
    }
    assert all(r["annotator"] == "sim-0" for r in rows.values())
    assert ann.label(examples, parity) == 0  # nothing left for this user
    assert SimulatedAnnotator(store, "sim-0").user_id == ann.user_id  # the same user again


def test_the_error_rate_reverses_about_that_share_and_the_seed_fixes_which(store):
    examples = add_pairs(store, 200, overlap=2)
    for name in ("a", "b"):
        SimulatedAnnotator(store, name, error_rate=0.3, seed=7).label(examples, parity)
    by = {(r["annotator"], r["external_id"]): r["ranks"] for r in store.labels()}
    errors = {
        a: {i for i in range(200) if by[(a, f"x{i}")] != ([0, 1] if i % 2 == 0 else [1, 0])} for a in "ab"
    }
    assert all(35 <= len(e) <= 85 for e in errors.values()), errors  # 60 expected of 200 (sd ~6.5)
    assert errors["a"] != errors["b"]  # each annotator draws its own coins


def test_a_restarted_annotator_gives_the_same_answers(tmp_path):
    from rlhfv.store.store import Store

    answers = []
    for run in range(2):
        store = Store(tmp_path / f"s{run}.db")
        examples = add_pairs(store, 40)
        SimulatedAnnotator(store, "sim", error_rate=0.5, seed=3).label(examples, parity)
        answers.append({r["external_id"]: r["ranks"] for r in store.labels()})
        store.close()
    assert answers[0] == answers[1]


def test_tasks_it_cannot_check_are_given_back_and_a_bad_rate_is_refused(store):
    examples = add_pairs(store, 3)
    del examples["x1"]
    ann = SimulatedAnnotator(store, "sim")
    assert ann.label(examples, parity) == 2
    assert store.user_progress(ann.user_id) == {"labelled": 2, "skipped": 1, "available": 0}
    with pytest.raises(ValueError, match="error_rate is a probability in \\[0, 1\\], got 1.5"):
        SimulatedAnnotator(store, "bad", error_rate=1.5)


def test_task_progress_counts_labels_of_tasks_by_external_id_prefix(store):
    examples = add_pairs(store, 3, overlap=2)
    store.add_tasks([NewTask(prompt="other", responses=["a", "b"], external_id="y_0")])
    SimulatedAnnotator(store, "sim").label({"x0": examples["x0"]}, parity)
    progress = store.task_progress("x")
    assert sorted(progress) == ["x0", "x1", "x2"]
    assert [(p.labels, p.overlap) for p in progress.values()] == [(1, 2), (0, 2), (0, 2)]
    assert list(store.task_progress("y_")) == ["y_0"] and store.task_progress("y%") == {}  # no wildcards
