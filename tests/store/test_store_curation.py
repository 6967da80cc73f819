"""Flagging broken tasks, and the admin's task browser: search, filter, edit, retire."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfv.store.curation import browse_tasks, edit_task, flag_task, open_flags, resolve_flags, retire_task
from rlhfv.store.export import export_snapshot
from rlhfv.store.store import NewTask, Store


def test_a_flagged_task_is_listed_for_admins_and_not_offered_to_its_flagger_again(store: Store):
    store.add_tasks([NewTask("The image is black", ["a", "b"]), NewTask("fine", ["c", "d"])], overlap=2)
    u = store.add_user("ann", "password-a").id
    view = store.next_task(u)
    with pytest.raises(ValueError, match="what is wrong"):
        flag_task(store, u, view.id, "   ")
    flag_task(store, u, view.id, "no image, only black")
    assert [(f["task_id"], f["annotator"], f["comment"]) for f in open_flags(store)] == [
        (view.id, "ann", "no image, only black")
    ]
    assert store.next_task(u).prompt == "fine"
    store.skip(u, store.next_task(u).id)
    assert store.next_task(u).prompt == "fine"  # the skipped one returns; the flagged one never
    assert browse_tasks(store, status="new")[1]["open_flags"] == 1
    resolve_flags(store, view.id)
    assert open_flags(store) == []


def test_a_retired_task_is_offered_to_nobody_and_left_out_of_exports_until_brought_back(
    store: Store, tmp_path: Path
):
    store.add_tasks([NewTask("keep", ["a", "b"]), NewTask("withdraw", ["c", "d"])], overlap=1)
    u, v = (store.add_user(n, f"password-{n}").id for n in ("u", "v"))
    for _ in range(2):
        store.submit(u, store.next_task(u).id, [0, 1])
    withdrawn = next(t["task_id"] for t in browse_tasks(store) if t["prompt"] == "withdraw")
    retire_task(store, withdrawn)
    assert {t["prompt"]: t["status"] for t in browse_tasks(store)} == {
        "keep": "complete",
        "withdraw": "retired",
    }
    snap = export_snapshot(store, tmp_path / "exports", min_labels=1)
    assert snap.pairs == 1 and snap.labels == 1
    store.add_tasks([NewTask("new", ["e", "f"])], overlap=2)
    retire_task(store, browse_tasks(store, search="new")[0]["task_id"])
    assert store.next_task(v) is None and store.user_progress(v)["available"] == 0
    retire_task(store, withdrawn, retired=False)
    assert export_snapshot(store, tmp_path / "exports", min_labels=1).pairs == 2


def test_search_and_status_filters_and_editing_only_unlabelled_tasks(store: Store):
    store.add_tasks(
        [NewTask("Count the CATS", ["two", "three"]), NewTask("Sky colour", ["blue", "grey cat"])], 2
    )
    assert [t["prompt"] for t in browse_tasks(store, search="cat")] == ["Sky colour", "Count the CATS"]
    assert [t["prompt"] for t in browse_tasks(store, search="sky")] == ["Sky colour"]
    u = store.add_user("u", "password-u").id
    view = store.next_task(u)
    store.submit(u, view.id, [0, 1])
    assert [t["task_id"] for t in browse_tasks(store, status="in progress")] == [view.id]
    with pytest.raises(ValueError, match="already labelled"):
        edit_task(store, view.id, "new text", ["x", "y"])
    other = next(t["task_id"] for t in browse_tasks(store, status="new"))
    edit_task(store, other, "Fixed prompt", ["one", "two"])
    assert browse_tasks(store, search="fixed")[0]["responses"] == ["one", "two"]
    with pytest.raises(ValueError, match="2 responses"):
        edit_task(store, other, "Fixed prompt", ["one", "two", "three"])
    with pytest.raises(ValueError, match="status"):
        browse_tasks(store, status="done")


def test_progress_leaves_out_retired_tasks_and_counts_a_flag_as_a_flag_not_a_skip(store: Store):
    store.add_tasks([NewTask(f"q{i}", ["a", "b"]) for i in range(4)], overlap=1)
    ann = store.add_user("ann", "ann-password").id
    first = store.next_task(ann)
    store.submit(ann, first.id, [0, 1])
    flag_task(store, ann, store.next_task(ann).id, "the image is blank")
    store.skip(ann, store.next_task(ann).id)
    retire_task(store, store.next_task(ann).id)  # an admin withdraws the last one
    overview = store.overview()
    # 3 tasks left of 4 (one retired), 1 complete: the total is reachable
    assert (overview["tasks"], overview["labels_wanted"], overview["complete_tasks"]) == (3, 3, 1)
    [row] = overview["annotators"]
    assert (row["labels"], row["skipped"], row["flagged"]) == (1, 1, 1)
    assert store.user_progress(ann)["skipped"] == 1  # the skip, not the flag
