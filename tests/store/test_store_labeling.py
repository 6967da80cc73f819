"""Users, assignment with overlap, labels, and the versioned schema."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from rlhfv.store.schema import SCHEMA_VERSION, SchemaError, migrate
from rlhfv.store.store import NewTask, Store


def annotators(store: Store, n: int) -> list[int]:
    return [store.add_user(f"ann{i}", f"password-{i}").id for i in range(n)]


def test_passwords_are_stored_as_salted_scrypt_hashes_and_checked(store, stored_bytes):
    store.add_user("alice", "correct horse", "admin")
    store.add_user("bob", "correct horse")
    assert store.authenticate("alice", "correct horse").role == "admin"
    assert store.authenticate("alice", "wrong horse") is None
    assert store.authenticate("nobody", "correct horse") is None
    with store.engine.connect() as conn:
        hashes = conn.execute(text("select password_hash from users order by id")).scalars().all()
    assert all(h.startswith("scrypt$") and "correct horse" not in h for h in hashes)
    assert hashes[0] != hashes[1]  # same password, different salts
    raw = stored_bytes()
    assert b"alice" in raw and b"correct horse" not in raw


def test_short_passwords_duplicate_names_and_unknown_roles_are_refused(store):
    with pytest.raises(ValueError, match="at least 8"):
        store.add_user("alice", "short")
    store.add_user("alice", "long enough")
    with pytest.raises(ValueError, match="already exists"):
        store.add_user("alice", "long enough")
    with pytest.raises(ValueError, match="role"):
        store.add_user("carol", "long enough", role="root")


def test_disabled_users_cannot_log_in_and_lose_their_session(store):
    uid = store.add_user("alice", "long enough").id
    store.update_user("alice", active=False)
    assert store.authenticate("alice", "long enough") is None
    assert store.user(uid) is None


def test_each_task_gets_k_labels_from_distinct_people_and_nobody_sees_a_task_twice(store):
    store.add_tasks([NewTask(f"p{i}", ["a", "b"]) for i in range(4)], overlap=2)
    users = annotators(store, 3)
    seen: dict[int, list[int]] = {u: [] for u in users}
    for _ in range(10):
        for u in users:
            view = store.next_task(u)
            if view is not None:
                seen[u].append(view.id)
                assert store.submit(u, view.id, [0, 1])
    assert all(len(ids) == len(set(ids)) for ids in seen.values())
    labels = store.labels()
    assert len(labels) == 8  # 4 tasks x overlap 2
    per_task = {}
    for row in labels:
        per_task.setdefault(row["task_id"], set()).add(row["annotator"])
    assert all(len(names) == 2 for names in per_task.values())
    assert store.overview()["complete_tasks"] == 4


def test_an_open_task_is_offered_again_until_answered_and_a_double_submit_is_ignored(store):
    store.add_tasks([NewTask("p", ["a", "b"]), NewTask("q", ["c", "d"])], overlap=1)
    (u,) = annotators(store, 1)
    first = store.next_task(u)
    assert store.next_task(u).id == first.id  # a reload shows the same task
    assert store.submit(u, first.id, [1, 0]) is True
    assert store.submit(u, first.id, [0, 1]) is False
    assert [r["ranks"] for r in store.labels()] == [[1, 0]]


def test_a_skipped_task_goes_to_others_and_comes_back_only_while_it_has_room(store):
    store.add_tasks([NewTask("p", ["a", "b"])], overlap=1)
    u, v = annotators(store, 2)
    view = store.next_task(u)
    store.skip(u, view.id)
    assert store.next_task(v).id == view.id  # the skip freed the slot
    assert store.next_task(u) is None  # v holds the only slot
    assert store.user_progress(u) == {"labelled": 0, "skipped": 1, "available": 0}


def test_skipped_tasks_come_back_once_after_every_other_task(store):
    store.add_tasks([NewTask(p, ["a", "b"]) for p in ("first", "second", "third")], overlap=2)
    (u,) = annotators(store, 1)
    assert store.next_task(u).prompt == "first"
    store.skip(u, store.next_task(u).id)
    store.skip(u, store.next_task(u).id)  # "second"
    assert store.user_progress(u) == {"labelled": 0, "skipped": 2, "available": 3}
    third = store.next_task(u)
    assert third.prompt == "third"
    store.submit(u, third.id, [0, 1])
    back = store.next_task(u)
    assert back.prompt == "first" and store.next_task(u).id == back.id  # oldest skip first, held
    assert store.submit(u, back.id, [1, 0])
    again = store.next_task(u)
    assert again.prompt == "second"
    store.skip(u, again.id)  # skipped twice: passed for good
    assert store.next_task(u) is None
    assert store.user_progress(u) == {"labelled": 2, "skipped": 1, "available": 0}
    assert store.overview()["annotators"][0]["skipped"] == 1


def test_a_user_cannot_label_a_task_not_given_to_them_or_give_bad_ranks(store):
    store.add_tasks([NewTask("p", ["a", "b", "c"])], overlap=2)
    u, v = annotators(store, 2)
    view = store.next_task(u)
    with pytest.raises(PermissionError):
        store.submit(v, view.id, [0, 1, 2])
    with pytest.raises(ValueError, match="3 integers"):
        store.submit(u, view.id, [0, 1])
    with pytest.raises(ValueError, match="3 integers"):
        store.submit(u, view.id, [0, 1, 7])
    assert store.labels() == []


def test_a_stale_claim_frees_its_slot_after_the_lease(tmp_path):
    store = Store(tmp_path / "s.db", lease_minutes=0)  # every claim is stale at once
    store.add_tasks([NewTask("p", ["a", "b"])], overlap=1)
    u, v = annotators(store, 2)
    assert store.next_task(u) is not None
    assert store.next_task(v) is not None  # u walked away; the slot went to v


def test_display_order_is_shuffled_per_person_and_covers_every_response(store):
    store.add_tasks([NewTask("p", ["a", "b", "c", "d"])], overlap=8)
    orders = {tuple(store.next_task(u).shown_order) for u in annotators(store, 8)}
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert len(orders) > 1


def test_reimporting_the_same_tasks_adds_nothing_and_gold_is_kept(store):
    tasks = [NewTask("p", ["a", "b"], gold=[1, 0]), NewTask("q", ["c", "d"])]
    assert store.add_tasks(tasks) == (2, 0)
    assert store.add_tasks(tasks) == (0, 2)
    assert list(store.gold().values()) == [[1, 0]]
    with pytest.raises(ValueError, match="two responses"):
        store.add_tasks([NewTask("r", ["only one"])])


def test_an_old_database_is_migrated_and_a_newer_one_is_refused(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        assert migrate(conn, target=1) == [1]  # a database written by schema version 1
    engine.dispose()
    store = Store(tmp_path / "old.db")  # opening it applies the later steps
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("select value from meta").scalar() == str(SCHEMA_VERSION)
        assert conn.exec_driver_sql("select count(*) from snapshots").scalar() == 0
        mode = conn.exec_driver_sql("pragma journal_mode").scalar()
        fk = conn.exec_driver_sql("pragma foreign_keys").scalar()
    assert (mode, fk) == ("wal", 1)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("update meta set value = '99' where key = 'schema_version'")
    store.close()
    with pytest.raises(SchemaError, match="schema version 99"):
        Store(tmp_path / "old.db")


def test_someone_back_after_the_lease_keeps_a_task_with_room_and_moves_on_from_a_full_one(tmp_path):
    store = Store(tmp_path / "s.db", lease_minutes=0)
    store.add_tasks([NewTask("p", ["a", "b"]), NewTask("q", ["c", "d"])], overlap=1)
    u, v = annotators(store, 2)
    first = store.next_task(u)
    assert store.next_task(u).id == first.id  # lapsed, but nobody else took it
    taken = store.next_task(v)
    assert taken.id == first.id  # u's lapsed claim no longer holds the slot
    store.submit(v, taken.id, [0, 1])
    assert store.next_task(u).id != first.id  # full now: u moves on instead of over-filling it


def test_settings_round_trip_and_cannot_touch_the_schema_version(store):
    assert store.setting("guidelines") == ""
    store.set_setting("guidelines", "Prefer faithful answers.")
    store.set_setting("guidelines", "Prefer faithful, short answers.")
    assert store.setting("guidelines") == "Prefer faithful, short answers."
    with pytest.raises(ValueError, match="migrations only"):
        store.set_setting("schema_version", "1")


def test_settings_by_prefix_match_the_prefix_literally(store):
    for key in ("loop:a", "loop:a:end_round", "loop_b", "loopxc", "guidelines"):
        store.set_setting(key, key.upper())
    # "_" and "%" are SQL LIKE wildcards: a prefix must not match them loosely
    assert store.settings("loop:") == {"loop:a": "LOOP:A", "loop:a:end_round": "LOOP:A:END_ROUND"}
    assert store.settings("loop_") == {"loop_b": "LOOP_B"}


def test_to_go_leaves_out_tasks_whose_every_slot_is_claimed_by_others(tmp_path):
    store = Store(tmp_path / "s.db", lease_minutes=30)
    store.add_tasks([NewTask("p", ["a", "b"]), NewTask("q", ["c", "d"])], overlap=1)
    u, v = annotators(store, 2)
    claimed = store.next_task(u)
    assert store.user_progress(u)["available"] == 2  # u's own open task still counts for u
    assert store.user_progress(v)["available"] == 1  # only the unclaimed task is left for v
    assert store.next_task(v).id != claimed.id
    assert store.user_progress(v)["available"] == 1  # v's own claim
    stale = Store(tmp_path / "s.db", lease_minutes=0)  # the same database once every claim lapsed
    w = stale.add_user("walker", "password-w").id
    assert stale.user_progress(w)["available"] == 2


def test_new_tasks_take_the_projects_k_and_an_admin_can_change_k_of_existing_tasks(store):
    store.add_tasks([NewTask("early", ["a", "b"])])
    assert store.labels() == [] and store.overview()["labels_wanted"] == 3  # k is 3 until set
    store.set_setting("overlap", "2")
    store.add_tasks([NewTask("later", ["c", "d"])])
    assert store.overview()["labels_wanted"] == 3 + 2
    assert store.set_overlap(1) == 2 and store.overview()["labels_wanted"] == 2
    u, v = annotators(store, 2)
    store.submit(u, store.next_task(u).id, [0, 1])
    store.submit(u, store.next_task(u).id, [0, 1])
    assert store.next_task(v) is None  # k = 1 now: both tasks are complete
    with pytest.raises(ValueError, match="at least 1"):
        store.set_overlap(0)


def test_an_annotator_changes_recent_labels_until_a_snapshot_exports_them(store, tmp_path):
    from rlhfv.store.export import export_snapshot

    store.add_tasks([NewTask(p, ["a", "b"]) for p in ("p", "q", "r")], overlap=1)
    (u,) = annotators(store, 1)
    for _ in range(2):
        store.submit(u, store.next_task(u).id, [0, 1], rationale="first thought")
    first, second = store.recent_labels(u)[::-1]
    assert (first["prompt"], second["prompt"]) == ("p", "q") and first["editable"]
    assert sorted(first["shown_order"]) == [0, 1]
    store.edit_label(u, first["task_id"], [1, 0], "on reflection")
    assert [(r["ranks"], r["rationale"]) for r in store.labels()][0] == ([1, 0], "on reflection")
    with pytest.raises(ValueError, match="3 integers|2 integers"):
        store.edit_label(u, first["task_id"], [0, 1, 2])
    export_snapshot(store, tmp_path / "exports", min_labels=1)
    store.submit(u, store.next_task(u).id, [0, 0])  # labelled after the export
    assert [r["editable"] for r in store.recent_labels(u)] == [True, False, False]
    with pytest.raises(ValueError, match="exported"):
        store.edit_label(u, first["task_id"], [0, 1])
    with pytest.raises(PermissionError):
        store.edit_label(store.add_user("v", "password-v").id, first["task_id"], [0, 1])
    assert store.labels()[0]["ranks"] == [1, 0]
