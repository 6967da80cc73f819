"""The Loop page: where an active-learning loop (`rlhfv.pipelines.active_loop`) stands.

The loop mirrors its state into the store after every phase (setting `loop:<run name>`), so this
page reads the store only, never the run folder: the round, its phase, how many labels the round
still needs, how long it has waited, and each finished round's GRM accuracy. An admin can end the
round the loop waits on: the page sets `loop:<run name>:end_round` to that round, which the loop
reads at its next look at the store; it then trains on the labels it has.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import streamlit as st
from ui_admin import plural, require_admin

from rlhfv.store.store import Store, UserInfo

PHASES = {
    "sample": "sampling the policy's answers and scoring candidate pairs with the GRM",
    "wait": "waiting for labels",
    "export": "exporting the labels",
    "train": "training the GRM on all labels so far",
    "policy": "training the policy with the refreshed GRM",
}


def loop_states(store: Store) -> dict[str, dict[str, Any]]:
    """Each loop's state by run name; other `loop:` settings (end_round requests) are left out."""
    states = {}
    for key, value in store.settings("loop:").items():
        try:
            state = json.loads(value)
        except json.JSONDecodeError:
            continue
        if isinstance(state, dict) and "round" in state and "phase" in state:
            states[key.removeprefix("loop:")] = state
    return states


def duration(seconds: float) -> str:
    """A wait as people say it: "45 s", "3 min 12 s", "2 h 5 min"."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def accuracy_text(value: Any) -> str:
    """The held-out accuracy of a round, or why there is none (a round without pairs trains nothing)."""
    if not isinstance(value, int | float) or math.isnan(value):
        return "not trained (no pairs)"
    return f"{value:.3f}"


def round_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per finished round, in words a labelling lead reads."""
    rows = []
    for rec in history:
        row = {
            "round": rec["round"],
            "labels used": rec.get("labels/used", 0),
            "preference pairs": rec.get("labels/pairs", 0),
            "candidates": rec.get("loop/candidates", ""),
            "unparsable": rec.get("loop/unparsable", ""),
            "queued": rec.get("loop/queued", ""),
            "waited": duration(rec["loop/wait_s"]) if "loop/wait_s" in rec else "",
            "GRM accuracy": accuracy_text(rec.get("grm/accuracy")),
        }
        if "policy/accuracy" in rec:
            row["policy accuracy"] = accuracy_text(rec["policy/accuracy"])
        rows.append(row)
    return rows


def labels_missing(store: Store, state: dict[str, Any]) -> tuple[int, int]:
    """(labels the current round still needs, tasks it has) from the store's own counts."""
    progress = store.task_progress(f"loop:{state['id']}:r{state['round']}:")
    return sum(max(0, p.overlap - p.labels) for p in progress.values()), len(progress)


def stopped_reason(store: Store, name: str, state: dict[str, Any]) -> str:
    """Why a loop that has not finished is no longer running ("" while it runs): the error it
    recorded when it died, or the heartbeat its process stopped writing (a kill, a lost machine)."""
    if state["phase"] == "done":
        return ""
    recorded = store.setting(f"loop:{name}:stopped")
    if recorded:
        return recorded[0].upper() + recorded[1:]
    if "heartbeat_s" not in state:  # a loop from before heartbeats: no way to tell
        return ""
    try:
        last = float(store.setting(f"loop:{name}:heartbeat") or 0)
    except ValueError:
        last = 0.0
    silent = time.time() - max(last, state.get("wait_started", 0))
    if silent <= 3 * state["heartbeat_s"]:
        return ""
    return (
        f"Stopped at round {state['round']}, phase {state['phase']}: the loop's process is gone "
        f"(no sign of life for {duration(silent)})"
    )


def show_loop(store: Store, user: UserInfo, name: str, state: dict[str, Any]) -> None:
    r, phase, history = state["round"], state["phase"], state.get("history", [])
    stopped = stopped_reason(store, name, state)
    if phase == "done":
        st.success(f"Finished after {plural(len(history), 'round')}: {state.get('stopped', '')}.")
    elif stopped:
        st.error(f"{stopped}. Rerun the loop with run.resume=auto to continue this round.")
    else:
        st.subheader(f"Round {r}: {PHASES.get(phase, phase)}")
    used = history[-1].get("labels/used", 0) if history else 0
    cols = st.columns(4)
    cols[0].metric("Round", r)
    cols[3].metric("Labels used so far", used)
    if phase == "wait" and not stopped:
        missing, tasks = labels_missing(store, state)
        cols[1].metric("Labels still needed", missing)
        cols[2].metric("Waiting for", duration(time.time() - state.get("wait_started", time.time())))
        st.caption(
            f"Round {r} has {plural(tasks, 'task')} in the queue, {plural(state['overlap'], 'label')} each."
        )
        end_round(store, user, name, r, missing)
    else:
        cols[1].metric("Labels still needed", "–")
        cols[2].metric("Waiting for", "–")
    st.subheader("Rounds")
    if not history:
        st.info("No round finished yet.")
        return
    import pandas as pd

    rows = round_rows(history)
    st.table(pd.DataFrame(rows), hide_index=True)  # a plain table: a few rows, all shown, text in the page
    trained = [(row["labels used"], rec["grm/accuracy"]) for row, rec in zip(rows, history, strict=True)
               if row["GRM accuracy"] != "not trained (no pairs)"]  # fmt: skip
    if len(trained) > 1:
        st.caption("GRM held-out accuracy against labels used")
        st.line_chart({"labels used": [x for x, _ in trained], "GRM accuracy": [y for _, y in trained]},
                      x="labels used", y="GRM accuracy")  # fmt: skip


def end_round(store: Store, user: UserInfo, name: str, r: int, missing: int) -> None:
    """The admin's button: stop waiting for round r's last labels and train on what is there."""
    key = f"loop:{name}:end_round"
    if store.setting(key) == str(r):
        st.info(f"Ending round {r} was asked; the loop stops waiting at its next look at the store.")
        return
    if st.button(f"End round {r} now", help=f"Train on the labels so far; {missing} will not be waited for"):
        if require_admin(store, user):  # the role is read again at the click, not trusted from the page
            store.set_setting(key, str(r))
            st.rerun()


def render(store: Store, user: UserInfo) -> None:
    if not require_admin(store, user):
        return
    st.header("Active-learning loop")
    states = loop_states(store)
    if not states:
        st.info(
            "No loop has run on this database. Start one with "
            "`rlhfv run recipes/active_loop_shapes.yaml annotators=app store=<this database>`."
        )
        return
    name = st.selectbox("Loop (run name)", sorted(states)) if len(states) > 1 else next(iter(states))
    st.text(f"Run {name}")  # plain text: a run name is whatever the recipe said
    follow = st.toggle("Follow the loop", value=True, help="Re-read the loop's state every 5 seconds")

    @st.fragment(run_every=5 if follow else None)
    def live() -> None:
        if not require_admin(store, user):  # each timed rerun checks the role again
            return
        state = loop_states(store).get(name)
        if state is None:
            st.warning(f"The loop {name!r} is no longer in this database.")
            return
        show_loop(store, user, name, state)

    live()
