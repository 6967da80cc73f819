"""16 annotators labelling at once through the store's API (what the app's threads call).

Runs on the default SQLite file, and on PostgreSQL too when RLHFV_TEST_POSTGRES_URL names an
empty database (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/rlhfv_test; its tables are
dropped first).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

import pytest

from rlhfv.store.store import NewTask, Store

POSTGRES = os.environ.get("RLHFV_TEST_POSTGRES_URL")


def fresh_store(kind: str, tmp_path) -> Store:
    if kind == "sqlite":
        return Store(tmp_path / "store.db")
    if not POSTGRES:
        pytest.skip("set RLHFV_TEST_POSTGRES_URL to an empty PostgreSQL database to run this")
    from sqlalchemy import create_engine

    from rlhfv.store.schema import Base

    engine = create_engine(POSTGRES)
    Base.metadata.drop_all(engine)
    engine.dispose()
    return Store(POSTGRES, media_dir=tmp_path / "media")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sixteen_concurrent_sessions_submit_2000_labels_none_lost_none_duplicated(tmp_path, kind):
    store = fresh_store(kind, tmp_path)
    overlap, n_tasks, n_users = 4, 500, 16  # 500 tasks x 4 labels = 2,000 labels
    store.add_tasks([NewTask(f"prompt {i}", [f"a{i}", f"b{i}", f"c{i}"]) for i in range(n_tasks)], overlap)
    users = [store.add_user(f"ann{i:02d}", f"password-{i}").id for i in range(n_users)]
    accepted: list[tuple[int, int]] = []  # (task, user) of every submit the store said it kept
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(n_users)

    def annotate(user: int) -> None:
        rng = random.Random(user)
        try:
            start.wait()
            while (view := store.next_task(user)) is not None:
                ranks = rng.sample(range(3), 3)
                kept = store.submit(user, view.id, ranks, rationale=f"by {user}", seconds=1.0)
                if rng.random() < 0.1:  # a double click: must not add a second label
                    assert store.submit(user, view.id, ranks) is False
                if kept:
                    with lock:
                        accepted.append((view.id, user))
        except BaseException as e:  # surfaced below; a thread's exception would be lost otherwise
            errors.append(e)

    threads = [threading.Thread(target=annotate, args=(u,)) for u in users]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert errors == []
    labels = store.labels()
    stored = [(row["task_id"], users[int(row["annotator"][3:])]) for row in labels]
    assert len(accepted) == n_tasks * overlap == 2000
    assert sorted(stored) == sorted(accepted)  # none lost
    assert len(set(stored)) == len(stored)  # none duplicated
    per_task = Counter(task for task, _ in stored)
    assert set(per_task.values()) == {overlap}
    assert sum(Counter(user for _, user in stored).values()) == 2000
    print(f"{kind}: 2000 labels from {n_users} threads in {elapsed:.1f} s")
    store.close()
