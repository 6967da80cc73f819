"""The labelling page: one task at a time, images and prompt on top, responses side by side.

Responses are shown in an order shuffled per annotator and labelled A, B, C… by position; the
page maps the choice back to the task's own response indices before it is stored, so the label
means the same thing whatever order a person saw.
"""

from __future__ import annotations

import time

import streamlit as st

from rlhfv.store.store import Store, TaskView, UserInfo

LETTERS = "ABCDEFGH"


def ranks_from_choice(choice: str, shown_order: list[int]) -> list[int]:
    """A / B / Tie over the two shown responses -> ranks in the task's own order."""
    ranks = [0, 0]
    if choice != "Tie":
        winner = shown_order[LETTERS.index(choice)]
        ranks[1 - winner] = 1
    return ranks


def ranks_from_positions(position_ranks: list[int], shown_order: list[int]) -> list[int]:
    """Ranks given per shown position (1 = best) -> 0-based ranks in the task's own order."""
    ranks = [0] * len(shown_order)
    for position, rank in enumerate(position_ranks):
        ranks[shown_order[position]] = rank - 1
    return ranks


def show_task(view: TaskView) -> None:
    if view.images:
        cols = st.columns(min(len(view.images), 3))
        for k, path in enumerate(view.images):
            cols[k % len(cols)].image(str(path), use_container_width=True)
    st.markdown("**Prompt**")
    st.info(view.prompt)
    per_row = 2 if len(view.shown_order) <= 2 else min(len(view.shown_order), 4)
    for start in range(0, len(view.shown_order), per_row):
        cols = st.columns(per_row)
        for k, index in enumerate(view.shown_order[start : start + per_row]):
            with cols[k].container(border=True):
                st.markdown(f"**Response {LETTERS[start + k]}**")
                st.markdown(view.responses[index])


def render(store: Store, user: UserInfo) -> None:
    view = store.next_task(user.id)  # claim first: the open task is then counted once, as "to go"
    progress = store.user_progress(user.id)
    done, left = progress["labelled"], progress["available"] + (view is not None)
    st.progress(
        done / max(done + left, 1), text=f"{done} labelled, {left} to go, {progress['skipped']} skipped"
    )
    if flash := st.session_state.pop("flash", None):
        st.toast(flash)
    if view is None:
        st.success("Nothing left for you to label. Thank you!")
        return
    if st.session_state.get("task_id") != view.id:
        st.session_state["task_id"], st.session_state["shown_at"] = view.id, time.monotonic()
    show_task(view)
    n = len(view.shown_order)
    with st.form(f"label-{view.id}"):
        if n == 2:
            choice = st.radio("Which response is better?", ["A", "B", "Tie"], index=None, horizontal=True)
        else:
            st.write("Rank the responses: 1 is best; give two responses the same rank for a tie.")
            cols = st.columns(n)
            position_ranks = [
                cols[p].selectbox(
                    f"Rank of {LETTERS[p]}", list(range(1, n + 1)), index=None, key=f"rank-{view.id}-{p}"
                )
                for p in range(n)
            ]
        rationale = st.text_area("Why? (optional)", max_chars=5000)
        submit_col, skip_col = st.columns([1, 6])
        submitted = submit_col.form_submit_button("Submit", type="primary")
        skipped = skip_col.form_submit_button("Skip")
    if skipped:
        store.skip(user.id, view.id)
        st.session_state["flash"] = "Skipped."
        st.rerun()
    if submitted:
        if n == 2 and choice is None:
            st.error("Choose A, B or Tie first.")
            return
        if n > 2 and None in position_ranks:
            st.error("Give every response a rank first.")
            return
        ranks = (
            ranks_from_choice(choice, view.shown_order)
            if n == 2
            else ranks_from_positions(position_ranks, view.shown_order)
        )
        seconds = time.monotonic() - st.session_state.get("shown_at", time.monotonic())
        store.submit(user.id, view.id, ranks, rationale, seconds)
        st.session_state["flash"] = "Saved."
        st.rerun()
