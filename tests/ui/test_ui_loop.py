"""The Loop page through Streamlit's AppTest: the loop's state as the pipeline mirrors it into the
store, and the admin-only button that ends a round early."""

from __future__ import annotations

import json
import math
import re
import time

from streamlit.testing.v1 import AppTest

from rlhfv.store.store import NewTask, Store
from tests.ui.test_ui_app import APP, logged_in

END = "loop:shapes_loop:end_round"


def loop_page(store: Store) -> AppTest:
    at = logged_in("boss", "boss-password")
    at.radio(key="page").set_value("Loop").run()
    assert not at.exception, at.exception
    return at


def waiting_loop(store: Store, waited_s: float) -> None:
    """A loop in round 2's wait, as `rlhfv.pipelines.active_loop` leaves it: round 1's tasks
    labelled and trained on, round 2's two tasks (k = 2) holding one label between them."""
    tasks = [NewTask(f"q{i}", ["a", "b"], external_id=f"loop:beef:r{1 + i // 2}:q{i}") for i in range(4)]
    store.add_tasks(tasks, overlap=2)
    bob = store.authenticate("bob", "bob-password").id
    view = store.next_task(bob)
    while not view.external_id.startswith("loop:beef:r2:"):
        store.skip(bob, view.id)
        view = store.next_task(bob)
    store.submit(bob, view.id, [0, 1])
    round_1 = {"round": 1, "labels/used": 4, "labels/pairs": 3, "loop/candidates": 5, "loop/unparsable": 1,
               "loop/queued": 2, "loop/wait_s": 61.0, "grm/accuracy": 0.625, "grm/accuracy_before": 0.5}  # fmt: skip
    state = {"id": "beef", "round": 2, "phase": "wait", "overlap": 2, "history": [round_1], "stopped": "",
             "wait_started": time.time() - waited_s}  # fmt: skip
    store.set_setting("loop:shapes_loop", json.dumps(state))


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_the_loop_page_shows_round_labels_needed_time_waiting_and_each_rounds_accuracy(store: Store):
    waiting_loop(store, waited_s=125)
    started = time.time()
    at = loop_page(store)
    late = time.time() - started  # logging in and opening the page take a few seconds
    assert [s.value for s in at.subheader][0] == "Round 2: waiting for labels"
    shown = metrics(at)
    assert shown["Round"] == "2" and shown["Labels still needed"] == "3"  # 2 tasks × k 2, minus bob's
    minutes, seconds = re.fullmatch(r"(\d+) min (\d+) s", shown["Waiting for"]).groups()
    assert 125 <= 60 * int(minutes) + int(seconds) <= 125 + late + 1
    assert shown["Labels used so far"] == "4"
    assert "Round 2 has 2 tasks in the queue, 2 labels each." in [c.value for c in at.caption]
    table = at.table[0].value
    assert table.to_dict("records") == [
        {"round": 1, "labels used": 4, "preference pairs": 3, "candidates": 5, "unparsable": 1, "queued": 2,
         "waited": "1 min 1 s", "GRM accuracy": "0.625"}
    ]  # fmt: skip


def test_an_admin_ends_the_round_the_loop_waits_on_and_the_page_says_so(store: Store):
    waiting_loop(store, waited_s=5)
    at = loop_page(store)
    next(b for b in at.button if b.label == "End round 2 now").click().run()
    assert not at.exception, at.exception
    assert store.setting(END) == "2"  # what the loop polls for (tests/pipelines/test_active_loop.py)
    assert [i.value for i in at.info] == [
        "Ending round 2 was asked; the loop stops waiting at its next look at the store."
    ]
    assert not [b for b in at.button if b.label.startswith("End round")]


def test_annotators_have_no_loop_page_and_a_forged_role_cannot_end_a_round(store: Store):
    waiting_loop(store, waited_s=5)
    assert "Loop" not in logged_in("ann", "ann-password").radio(key="page").options
    ann = store.authenticate("ann", "ann-password")
    script = f"""
import sys
sys.path.insert(0, {str(APP.parent)!r})
import ui_loop
from rlhfv.store.store import Store, UserInfo
ui_loop.render(Store({store.url!r}), UserInfo({ann.id}, "ann", "admin"))  # a forged role
"""
    at = AppTest.from_string(script, default_timeout=30).run()
    assert [e.value for e in at.error] == ["This page is for admins only."]
    assert not at.button and not at.metric and not at.table
    assert store.setting(END) == ""


def test_a_finished_loop_shows_why_it_stopped_and_a_round_that_trained_nothing(store: Store):
    history = [{"round": 1, "labels/used": 0, "labels/pairs": 0, "grm/accuracy": math.nan},
               {"round": 2, "labels/used": 6, "labels/pairs": 5, "grm/accuracy": 0.7, "policy/accuracy": 0.4}]  # fmt: skip
    state = {"id": "beef", "round": 2, "phase": "done", "overlap": 3, "history": history,
             "stopped": "all 2 rounds done"}  # fmt: skip
    store.set_setting("loop:shapes_loop", json.dumps(state))  # NaN, as json.dumps writes it
    store.set_setting(END, "1")  # an old request: not a loop, not listed
    at = loop_page(store)
    assert [s.value for s in at.success] == ["Finished after 2 rounds: all 2 rounds done."]
    assert metrics(at)["Labels still needed"] == "–" and metrics(at)["Labels used so far"] == "6"
    rows = at.table[0].value.to_dict("records")
    assert [r["GRM accuracy"] for r in rows] == ["not trained (no pairs)", "0.700"]
    assert rows[1]["policy accuracy"] == "0.400"
    assert not at.selectbox and not [b for b in at.button if b.label.startswith("End round")]


def test_without_a_loop_the_page_says_how_to_start_one(store: Store):
    at = loop_page(store)
    assert "No loop has run on this database" in at.info[0].value


def with_state(store: Store, **changes) -> None:
    state = json.loads(store.setting("loop:shapes_loop"))
    store.set_setting("loop:shapes_loop", json.dumps({**state, **changes}))


def test_a_loop_whose_process_is_gone_shows_as_stopped_with_no_end_round_button(store: Store):
    waiting_loop(store, waited_s=600)
    with_state(store, heartbeat_s=30)
    store.set_setting("loop:shapes_loop:heartbeat", f"{time.time() - 200:.0f}")  # killed 200 s ago
    at = loop_page(store)
    [error] = [e.value for e in at.error]
    assert re.fullmatch(
        r"Stopped at round 2, phase wait: the loop's process is gone \(no sign of life for 3 min 2\d s\)\. "
        r"Rerun the loop with run.resume=auto to continue this round\.",
        error,
    )
    assert not [b for b in at.button if b.label.startswith("End round")]
    # alive: a heartbeat within 3 × heartbeat_s
    store.set_setting("loop:shapes_loop:heartbeat", f"{time.time():.0f}")
    at = loop_page(store)
    assert not at.error and [s.value for s in at.subheader][0] == "Round 2: waiting for labels"


def test_a_loop_that_died_on_an_error_shows_where_and_why(store: Store):
    waiting_loop(store, waited_s=5)
    with_state(store, heartbeat_s=30, phase="train")
    store.set_setting("loop:shapes_loop:heartbeat", f"{time.time():.0f}")
    store.set_setting(
        "loop:shapes_loop:stopped",
        "stopped at round 2, phase train: ValueError: JudgeTask.misread applies to ...",
    )
    at = loop_page(store)
    assert [e.value for e in at.error] == [
        "Stopped at round 2, phase train: ValueError: JudgeTask.misread applies to .... "
        "Rerun the loop with run.resume=auto to continue this round."
    ]
