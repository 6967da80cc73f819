"""The labelling page: one task at a time, images and prompt on top, responses side by side.

Responses are shown in an order shuffled per annotator and labelled A, B, C… by position; the
page maps the choice back to the task's own response indices before it is stored, so the label
means the same thing whatever order a person saw.

Imported text (prompts, responses) is shown as plain text, never as Markdown or HTML: a remote
image in a prompt would otherwise load in every annotator's browser (a tracking pixel, or a leak
of their address). The guidelines, written by an admin, keep Markdown but lose their images.

Nothing is claimed until the annotator presses "Start labelling": a page opened and left alone
holds none of a task's k slots. From then on each submit or skip claims the next task at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st
from PIL import Image

from rlhfv.store.curation import flag_task
from rlhfv.store.store import Store, TaskView, UserInfo

LETTERS = "ABCDEFGH"
SHORTCUTS = "Keys: 1 or A, 2 or B, 3 or T choose · Enter submits · S skips"
# Keyboard shortcuts, installed once per browser tab. They act only while the labelling form is
# on the page (its Submit button), and never while the cursor is in a text field.
KEYS_SCRIPT = """<script>
if (!window.rlhfvKeys) {
  window.rlhfvKeys = true;
  const button = (text) => [...document.querySelectorAll('[data-testid="stForm"] button')]
    .find((b) => b.innerText.trim() === text);
  document.addEventListener("keydown", (e) => {
    const t = e.target, submit = button("Submit");
    const typing = t.isContentEditable || t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio");
    if (!submit || typing || e.ctrlKey || e.metaKey || e.altKey) return;
    const choice = {"1": "A", a: "A", "2": "B", b: "B", "3": "Tie", t: "Tie"}[e.key.toLowerCase()];
    const form = submit.closest('[data-testid="stForm"]');
    const radio = choice && [...form.querySelectorAll('[role="radiogroup"] label')]
      .find((l) => l.innerText.trim() === choice);
    // Enter belongs to the focused control (a button, an expander's header, a link); it submits
    // only with nothing focused or with focus on the form's own A/B/Tie choice
    const free = t === document.body || t === document.documentElement || (t.type === "radio" && form.contains(t));
    if (e.key === "Enter" && !free) return;
    const target = radio || (e.key === "Enter" ? submit : e.key.toLowerCase() === "s" ? button("Skip") : null);
    if (target) { e.preventDefault(); e.stopPropagation(); target.click(); }
  }, true);  // the capture phase: before a focused widget can swallow the key
}
</script>"""


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
                st.text(view.responses[index])


def crisp(path: Path, at_least: int = 384) -> Image.Image | None:
    """A small image (synthetic tasks are 96 px) enlarged by a whole factor with nearest-neighbour,
    so every pixel stays sharp; None for an image large enough to show as it is. The browser's
    smooth scaling would blur a 96 px image stretched across a column."""
    with Image.open(path) as im:
        if im.width * 2 > at_least:
            return None
        factor = at_least // im.width
        return im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST)


def without_images(markdown: str) -> str:
    """Markdown whose images (inline or by reference) became links, which load nothing until clicked."""
    return markdown.replace("![", "[")


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
    st.session_state["flash"] = "Skipped: it comes back once, after the other tasks."


def show_recent(store: Store, user: UserInfo) -> None:
    """Let the annotator change a recent label until a snapshot exports it."""
    recent = [r for r in store.recent_labels(user.id) if r["editable"]]
    if not recent:
        return
    with st.expander("Change one of your last labels"):
        by_id = {r["task_id"]: r for r in recent}
        task_id = st.selectbox("Label", by_id, format_func=lambda t: by_id[t]["prompt"][:80], key="edit-pick")
        row, order = by_id[task_id], by_id[task_id]["shown_order"]
        st.text(row["prompt"])
        for position, index in enumerate(order):
            st.text(f"{LETTERS[position]}: {row['responses'][index]}")
        with st.form(f"edit-{task_id}"):
            if len(order) == 2:
                ranks = row["ranks"]
                current = "Tie" if ranks[0] == ranks[1] else LETTERS[order.index(ranks.index(0))]
                choice = st.radio("Better response", ["A", "B", "Tie"], index=["A", "B", "Tie"].index(current),
                                  horizontal=True, key=f"edit-choice-{task_id}")  # fmt: skip
            else:
                cols = st.columns(len(order))
                position_ranks = [cols[p].selectbox(f"New rank of {LETTERS[p]}", range(1, len(order) + 1),
                                                    index=row["ranks"][order[p]], key=f"edit-rank-{task_id}-{p}")
                                  for p in range(len(order))]  # fmt: skip
            # Labels unlike the labelling form's, so neither people nor screen readers mix the two up.
            why = st.text_area(
                "Reason (optional)", row["rationale"], max_chars=5000, key=f"edit-why-{task_id}"
            )
            if st.form_submit_button("Save the change"):
                new = (
                    ranks_from_choice(choice, order)
                    if len(order) == 2
                    else ranks_from_positions(position_ranks, order)
                )
                try:
                    store.edit_label(user.id, task_id, new, why)
                    st.success("Changed.")
                except ValueError as e:
                    st.error(str(e))


def render(store: Store, user: UserInfo) -> None:
    progress = store.user_progress(user.id)  # counts the open task, if any, as "to go"
    done, left = progress["labelled"], progress["available"]
    text = f"{done} labelled, {left} to go, {progress['skipped']} skipped"
    st.progress(done / max(done + left, 1), text=text)
    if flash := st.session_state.pop("flash", None):
        st.toast(flash)
    if guidelines := store.setting("guidelines"):
        with st.expander("Guidelines", expanded=progress["labelled"] == 0):
            st.markdown(without_images(guidelines))  # raw HTML stays off (Streamlit's default)
    if left and not st.session_state.get("labelling"):
        st.button(
            "Start labelling", type="primary", on_click=st.session_state.update, args=({"labelling": True},)
        )
        return
    view = store.next_task(user.id) if left else None
    if view is None:
        st.success("Nothing left for you to label. Thank you!")
        show_recent(store, user)
        return
    if st.session_state.get("task_id") != view.id:
        st.session_state["task_id"], st.session_state["shown_at"] = view.id, time.monotonic()
    # Images on the left, everything to read and decide on the right, so nothing scrolls away.
    image_col, work_col = st.columns([2, 3]) if view.images else (None, st.container())
    if image_col is not None:
        with image_col:
            for path in view.images:
                if not path.is_file():  # the media folder lost a file: say so instead of failing the page
                    st.warning(f"Image {path.name} is missing from the media folder; tell an admin.")
                elif (small := crisp(path)) is not None:
                    st.image(small, width="content")
                else:
                    st.image(str(path), width="stretch")
    with work_col:
        with st.container(border=True):
            st.text(view.prompt)
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
                cols[p].selectbox(
                    f"Rank of {LETTERS[p]}",
                    options,
                    index=None,
                    placeholder="rank",
                    key=f"rank-{view.id}-{p}",
                )
        st.text_area("Why? (optional)", max_chars=5000, height=80, key=f"why-{view.id}")
        if error := st.session_state.pop("label_error", None):
            st.error(error)
        # A row of buttons as wide as their text: fixed columns cut "Submit" to "Sub…" when narrow.
        with st.container(horizontal=True):
            args = (store, user, view)
            st.form_submit_button("Submit", type="primary", on_click=on_submit, args=args)
            st.form_submit_button("Skip", on_click=on_skip, args=args)
    # keyed by task: the next task's report form opens closed, whatever the last one's was
    with work_col.expander("Report this task as broken", key=f"flag-open-{view.id}"):
        with st.form(f"flag-{view.id}", clear_on_submit=True):
            comment = st.text_input("What is wrong?", max_chars=2000, key=f"flag-comment-{view.id}")
            if st.form_submit_button("Flag as broken"):
                try:
                    flag_task(store, user.id, view.id, comment)
                    st.session_state["flash"] = "Flagged for an admin; here is the next task."
                    st.rerun()
                except ValueError as e:
                    st.error(str(e))
    work_col.caption(SHORTCUTS if n == 2 else SHORTCUTS.replace("1 or A, 2 or B, 3 or T choose · ", ""))
    st.html(KEYS_SCRIPT, unsafe_allow_javascript=True)
    show_recent(store, user)
