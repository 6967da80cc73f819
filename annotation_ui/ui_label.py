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


def show_responses(view: TaskView) -> None:
    per_row = min(len(view.shown_order), 4)
    for start in range(0, len(view.shown_order), per_row):
        cols = st.columns(per_row)
        for k, index in enumerate(view.shown_order[start : start + per_row]):
            with cols[k].container(border=True):
                st.markdown(f"**Response {LETTERS[start + k]}**")
                st.markdown(view.responses[index])


def on_submit(store: Store, user: UserInfo, view: TaskView) -> None:
    """Runs before the page is redrawn, so the next task appears in the same rerun."""
    n, state = len(view.shown_order), st.session_state
    if n == 2:
        choice = state.get(f"choice-{view.id}")
        if choice is None:
            state["label_error"] = "Choose A, B or Tie first."
            return
        ranks = ranks_from_choice(choice, view.shown_order)
    else:
        position_ranks = [state.get(f"rank-{view.id}-{p}") for p in range(n)]
        if None in position_ranks:
            state["label_error"] = "Give every response a rank first."
            return
        ranks = ranks_from_positions([int(r) for r in position_ranks if r is not None], view.shown_order)
    seconds = time.monotonic() - state.get("shown_at", time.monotonic())
    kept = store.submit(user.id, view.id, ranks, state.get(f"why-{view.id}", ""), seconds)
    state["flash"] = "Saved." if kept else "Already saved from another tab; the first answer stands."


def on_skip(store: Store, user: UserInfo, view: TaskView) -> None:
    store.skip(user.id, view.id)
    st.session_state["flash"] = "Skipped."


def render(store: Store, user: UserInfo) -> None:
    view = store.next_task(user.id)  # claim first: the open task is then counted once, as "to go"
    progress = store.user_progress(user.id)
    done, left = progress["labelled"], progress["available"] + (view is not None)
    text = f"{done} labelled, {left} to go, {progress['skipped']} skipped"
    st.progress(done / max(done + left, 1), text=text)
    if flash := st.session_state.pop("flash", None):
        st.toast(flash)
    if view is None:
        st.success("Nothing left for you to label. Thank you!")
        return
    if guidelines := store.setting("guidelines"):
        with st.expander("Guidelines", expanded=progress["labelled"] == 0):
            st.markdown(guidelines)
    if st.session_state.get("task_id") != view.id:
        st.session_state["task_id"], st.session_state["shown_at"] = view.id, time.monotonic()
    # Images on the left, everything to read and decide on the right, so nothing scrolls away.
    image_col, work_col = st.columns([2, 3]) if view.images else (None, st.container())
    if image_col is not None:
        with image_col:
            for path in view.images:
                if path.is_file():
                    st.image(str(path), width="stretch")
                else:  # the media folder lost a file: say so instead of failing the page
                    st.warning(f"Image {path.name} is missing from the media folder; tell an admin.")
    work_col.info(view.prompt)
    with work_col:
        show_responses(view)
    n = len(view.shown_order)
    with work_col, st.form(f"label-{view.id}"):
        if n == 2:
            st.radio(
                "Which response is better?",
                ["A", "B", "Tie"],
                index=None,
                horizontal=True,
                key=f"choice-{view.id}",
            )
        else:
            st.write("Rank the responses: 1 is best; give two responses the same rank for a tie.")
            cols = st.columns(n)
            for p in range(n):
                options = list(range(1, n + 1))
                cols[p].selectbox(f"Rank of {LETTERS[p]}", options, index=None, key=f"rank-{view.id}-{p}")
        st.text_area("Why? (optional)", max_chars=5000, height=80, key=f"why-{view.id}")
        if error := st.session_state.pop("label_error", None):
            st.error(error)
        submit_col, skip_col = st.columns([1, 6])
        args = (store, user, view)
        submit_col.form_submit_button("Submit", type="primary", on_click=on_submit, args=args)
        skip_col.form_submit_button("Skip", on_click=on_skip, args=args)
