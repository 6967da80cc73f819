"""16 annotators labelling at once through the store's API: 8 in processes of their own (app
servers behind a load balancer, the loop, the CLI) and 8 as threads of one process (what
Streamlit's sessions are), 120 labels each on average. Runs on SQLite and on PostgreSQL
(`database_url`)."""

from __future__ import annotations

import inspect
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from rlhfv.store.store import NewTask, Store

ROOT = Path(__file__).resolve().parents[2]


def annotate(store: Store, user: int, start: threading.Barrier | None = None) -> list[int]:
    """One annotator: label whatever the store offers until it offers nothing, double-clicking
    Submit now and then (the second submit must be refused); return the tasks whose submit the
    store accepted."""
    rng, accepted = random.Random(user), []
    if start is not None:
        start.wait()
    while (view := store.next_task(user)) is not None:
        ranks = rng.sample(range(3), 3)
        if store.submit(user, view.id, ranks, rationale=f"by {user}", seconds=1.0):
            accepted.append(view.id)
        if rng.random() < 0.1:
            assert store.submit(user, view.id, ranks) is False
    return accepted


# the same annotator in a process of its own; it starts labelling when told on stdin
PROCESS = f"""
from __future__ import annotations
import json, random, sys
from rlhfv.store.store import Store
{inspect.getsource(annotate)}
store = Store(sys.argv[1], media_dir=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(annotate(store, int(sys.argv[3]))), flush=True)
"""


@pytest.mark.slow
def test_eight_processes_and_eight_threads_label_1920_times_none_lost_none_duplicated(database_url, tmp_path):
    store = Store(database_url, media_dir=tmp_path / "media")
    overlap, n_tasks, n_users = 4, 480, 16  # 480 tasks x 4 labels = 1,920 = 16 annotators x 120
    store.add_tasks([NewTask(f"prompt {i}", [f"a{i}", f"b{i}", f"c{i}"]) for i in range(n_tasks)], overlap)
    users = [store.add_user(f"ann{i:02d}", f"password-{i}").id for i in range(n_users)]
    script = tmp_path / "annotate.py"
    script.write_text(PROCESS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), database_url, str(tmp_path / "media"), str(user)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for user in users[:8]
    ]
    for p in procs:  # each has imported the store and connected
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    accepted: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def thread(user: int) -> None:
        try:
            accepted[user] = annotate(store, user, start)
        except BaseException as e:  # surfaced below; a thread's exception would be lost otherwise
            errors.append(e)

    threads = [threading.Thread(target=thread, args=(u,)) for u in users[8:]]
    t0 = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for user, p in zip(users[:8], procs, strict=True):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        accepted[user] = json.loads(out.strip().splitlines()[-1])
    elapsed = time.perf_counter() - t0
    assert errors == []
    names = {f"ann{i:02d}": user for i, user in enumerate(users)}
    stored = [(row["task_id"], names[row["annotator"]]) for row in store.labels()]
    kept = [(task, user) for user, tasks in accepted.items() for task in tasks]
    assert len(kept) == n_tasks * overlap == 1920
    assert sorted(stored) == sorted(kept)  # none lost
    assert len(set(stored)) == len(stored)  # none duplicated
    assert set(Counter(task for task, _ in stored).values()) == {overlap}
    by_process = sum(len(accepted[u]) for u in users[:8])
    assert 0 < by_process < 1920  # both kinds of annotator labelled
    print(f"{store.url.split(':')[0]}: 1920 labels from 8 processes and 8 threads in {elapsed:.1f} s")
    store.close()
