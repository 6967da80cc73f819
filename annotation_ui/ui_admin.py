"""Admin pages: import tasks, progress and agreement, export snapshots, users.

Each page calls `require_admin` first, so even a session that reaches the function some other
way sees nothing unless the stored role is admin.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import streamlit as st

from rlhfv.store import curation, ingest
from rlhfv.store.agreement import (
    agreement_report,
    annotator_disagreements,
    disputed_tasks,
    gold_accuracy,
    units_from_labels,
)
from rlhfv.store.export import export_snapshot, list_snapshots, snapshot_archive
from rlhfv.store.store import ROLES, Store, UserInfo


def require_admin(store: Store, user: UserInfo) -> bool:
    current = store.user(user.id)
    if current is None or current.role != "admin":
        st.error("This page is for admins only.")
        return False
    return True


def max_upload_bytes() -> int:
    return int(os.environ.get("RLHFV_MAX_UPLOAD_MB", "50")) * 2**20


def runs_root() -> Path:
    return Path(os.environ.get("RLHFV_RUNS", "checkpoints"))


def list_runs(root: Path, marker: str) -> list[Path]:
    """Run folders under `root` (at most three levels down) that hold `marker`."""
    found = [p.parent for depth in ("*/", "*/*/", "*/*/*/") for p in root.glob(f"{depth}{marker}")]
    return sorted(set(found))


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def show_report(report: ingest.ImportReport) -> None:
    st.success(f"Added {plural(report.added, 'task')}; {plural(report.duplicates, 'task')} already there.")
    if report.errors:
        st.warning(f"Skipped {plural(len(report.errors), 'bad row')}; everything else was imported.")
        st.dataframe(
            [{"line": e.line, "field": e.field, "problem": e.message} for e in report.errors],
            width="stretch",
        )


def safe_upload_name(name: str) -> str | None:
    base = Path(name).name
    return base if re.fullmatch(r"[\w.\- ]{1,200}", base) and base not in (".", "..") else None


def import_uploads(store: Store, task_file, image_files, overlap: int) -> None:
    """Write the uploads to a private folder and import from there; oversized files are refused."""
    limit = max_upload_bytes()
    # an image is also held to the import's own limit, so only one limit is ever quoted for it
    image_limit = min(limit, ingest.MAX_IMAGE_BYTES)
    for f, cap in [(task_file, limit), *((f, image_limit) for f in image_files)]:
        if f.size > cap:
            which = "upload limit" if cap == limit else "limit for an image"
            st.error(
                f"{f.name} is {f.size / 2**20:.1f} MiB, over the {cap / 2**20:.0f} MiB {which}; not used."
            )
    if task_file.size > limit:
        return
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp, "images")
        images.mkdir()
        for f in image_files:
            name = safe_upload_name(f.name)
            if name is None:
                st.error(f"{f.name!r} is not a plain file name; not used.")
            elif f.size <= image_limit:
                (images / name).write_bytes(f.getvalue())
        # Named as uploaded, so tasks' source is the admin's file name rather than a fixed one.
        tasks = Path(tmp, safe_upload_name(task_file.name) or "tasks.jsonl")
        tasks.write_bytes(task_file.getvalue())
        report = ingest.import_jsonl(store, tasks, images, overlap=overlap, max_bytes=limit)
    for e in report.errors:  # name the upload, never the private folder it was written to
        e.file = task_file.name
        for folder in (str(images.resolve()), str(images)):
            e.message = e.message.replace(folder + os.sep, "").replace(
                f"its folder {folder}", "the folder of the uploaded images"
            )
            e.message = e.message.replace(folder, "the uploaded images")
    show_report(report)


def render_import(store: Store, user: UserInfo) -> None:
    if not require_admin(store, user):
        return
    st.header("Guidelines for annotators")
    with st.form("guidelines"):
        text = st.text_area("Shown above every task (Markdown)", store.setting("guidelines"), height=120)
        if st.form_submit_button("Save guidelines"):
            store.set_setting("guidelines", text.strip())
            st.success("Saved.")
    st.header("Labels per task")
    with st.form("overlap"):
        k = int(
            st.number_input(
                "Labels per task (k): new imports ask for this many",
                min_value=1,
                max_value=20,
                value=store.default_overlap(),
            )
        )
        apply = st.checkbox("Also ask this many of every existing task")
        if st.form_submit_button("Save k"):
            store.set_setting("overlap", str(k))
            changed = store.set_overlap(k) if apply else 0
            st.success(f"New tasks get k = {k}; {plural(changed, 'existing task')} changed.")
    st.header("Import tasks")
    overlap = store.default_overlap()
    st.caption(f"Each imported task asks for k = {overlap} labels.")
    jsonl_tab, runs_tab, shapes_tab = st.tabs(["JSONL + images", "Policy rollouts", "ShapesVQA"])
    with jsonl_tab:
        st.caption(
            'One task per line: {"prompt": …, "images": ["a.jpg"], "responses": [≥2], "gold": 0 (optional)}'
        )
        task_file = st.file_uploader("Task file (.jsonl)", type=["jsonl", "json"])
        image_files = st.file_uploader(
            "Images", type=["png", "jpg", "jpeg", "webp", "gif", "bmp"], accept_multiple_files=True
        )
        if st.button("Import file", disabled=task_file is None):
            import_uploads(store, task_file, image_files or [], overlap)
    with runs_tab:
        runs = list_runs(runs_root(), "rollouts.jsonl")
        if not runs:
            st.info(f"No run under {runs_root()} has a rollouts.jsonl yet.")
        else:
            run = st.selectbox("Run", runs, format_func=lambda p: str(p.relative_to(runs_root())))
            min_step = st.number_input("From step", min_value=0, value=0)
            if st.button("Import rollouts"):
                show_report(ingest.import_rollouts(store, run, overlap=overlap, min_step=int(min_step)))
    with shapes_tab:
        n = st.number_input("Pairs", min_value=1, max_value=5000, value=20)
        seed = st.number_input("Seed", min_value=0, value=0)
        if st.button("Import ShapesVQA gold items"):
            show_report(ingest.import_shapes(store, n=int(n), seed=int(seed), overlap=overlap))


def shown(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def render_progress(store: Store, user: UserInfo) -> None:
    if not require_admin(store, user):
        return
    st.header("Progress")
    ov = store.overview()
    cols = st.columns(4)
    cols[0].metric("Tasks", ov["tasks"])
    cols[1].metric("Complete tasks", ov["complete_tasks"])
    cols[2].metric("Labels", f"{ov['labels']} / {ov['labels_wanted']}")
    cols[3].metric("Annotators", len(ov["annotators"]))
    if ov["annotators"]:
        st.dataframe(ov["annotators"], width="stretch")
    else:  # an empty table draws as a bare grey bar
        st.caption("No labels yet.")
    labels = store.labels()
    units = units_from_labels(labels)
    report = agreement_report(units)
    st.header("Agreement")
    st.caption("Over pairwise units (task, response i, response j) labelled i better / j better / tie.")
    stat_cols = st.columns(4)
    stat_cols[0].metric("Units with 2+ labels", report["units"])
    raw = report["agreement"]
    stat_cols[1].metric("Raw agreement", "n/a" if math.isnan(raw) else f"{raw:.0%}")
    stat_cols[2].metric("Fleiss' κ", shown(report["fleiss_kappa"]))
    stat_cols[3].metric("Krippendorff's α", shown(report["krippendorff_alpha"]))
    st.caption("n/a: too few labels, or every label in one category (chance agreement is then 1).")
    if report["pairs"]:
        st.subheader("Cohen's κ per annotator pair")
        st.dataframe(
            [
                {**p, "agreement": f"{p['agreement']:.0%}", "cohen_kappa": shown(p["cohen_kappa"])}
                for p in report["pairs"]
            ],
            width="stretch",  # fmt: skip
        )
        st.subheader("One annotator's disagreements")
        names = sorted({name for votes in units.values() for name in votes})
        who = st.selectbox("Annotator", names, key="drill-annotator")
        prompts = {r["task_id"]: r["prompt"] for r in labels}
        rows = [{"prompt": prompts[r["task_id"]][:80], **r} for r in annotator_disagreements(units, who)]
        st.caption(f"{who} left the others' most common label on {plural(len(rows), 'pairwise unit')}.")
        if rows:
            st.dataframe(rows, width="stretch")
    st.subheader("Accuracy on gold items")
    accuracy = gold_accuracy(units, store.gold())
    st.dataframe(accuracy, width="stretch") if accuracy else st.caption("No gold item labelled yet.")
    split = disputed_tasks(units, store.gold())  # adjudicated tasks are settled: not listed
    st.subheader(f"Tasks with disagreement ({len(split)})")
    if split:
        st.caption(
            "ranks: one number per response, in the task's order (response 0, 1, …); 0 is the best, equal numbers are a tie."
        )
        rows = [r for r in labels if r["task_id"] in set(split[:200])]
        st.dataframe([{k: r[k] for k in ("task_id", "annotator", "ranks", "rationale")} for r in rows],
                     width="stretch")  # fmt: skip
        adjudicate(store, split, labels)


def adjudicate(store: Store, split: list[int], labels: list[dict]) -> None:
    """Settle a disputed task: the answer becomes gold, so the export uses it and annotators are scored on it.

    Every rank starts empty and must be chosen: a default would store an untouched form as an answer.
    """
    st.subheader("Adjudicate")
    first = {r["task_id"]: r for r in reversed(labels)}  # one label row per task, for its text
    task_id = st.selectbox(
        "Task", split, format_func=lambda t: f"{first[t]['prompt'][:80]} (task {t})", key="adjudicate-task"
    )
    row = first[task_id]
    for name in row["images"]:
        path = store.media_dir / name
        st.image(str(path), width=256) if path.is_file() else st.warning(f"Image {name} is missing.")
    with st.container(border=True):
        st.text(row["prompt"])
    responses = row["responses"]
    n = len(responses)
    import pandas as pd

    votes = [  # each annotator's vote on this task, in the ranks the form below asks for (1 = best)
        {"annotator": r["annotator"], **{f"Response {i}": rank + 1 for i, rank in enumerate(r["ranks"])},
         "rationale": r["rationale"]}
        for r in labels if r["task_id"] == task_id
    ]  # fmt: skip
    st.caption("The votes (rank per response, 1 = best):")
    st.table(pd.DataFrame(votes), hide_index=True)  # a plain table: its text stays in the page
    with st.form(f"adjudicate-{task_id}"):
        cols = st.columns(n)
        for i, text in enumerate(responses):
            cols[i].markdown(f"**Response {i}**")
            cols[i].text(text)
        ranks = [
            cols[i].selectbox("Rank (1 = best)", range(1, n + 1), index=None, key=f"adj-{task_id}-{i}")
            for i in range(n)
        ]
        if st.form_submit_button("Save as the answer"):
            if None in ranks:
                st.error("Give every response a rank first.")
            else:
                store.set_gold(int(task_id), [r - 1 for r in ranks if r is not None])
                st.success(f"Task {task_id} now has a gold answer; exports use it.")


def render_tasks(store: Store, user: UserInfo) -> None:
    """Flagged tasks first, then every task: search, filter, and edit, retire or bring one back."""
    if not require_admin(store, user):
        return
    flags = curation.open_flags(store)
    st.header(f"Flagged as broken ({len(flags)})")
    if flags:
        st.dataframe(flags, width="stretch")
    else:
        st.caption("No open flags.")
    st.header("Tasks")
    cols = st.columns([3, 2, 2])
    search = cols[0].text_input("Search prompts and responses", key="task-search")
    status = cols[1].selectbox("Status", ["any", *curation.STATUSES], key="task-status")
    split_only = cols[2].checkbox("Only tasks with disagreement", key="task-split")
    rows = curation.browse_tasks(store, search, None if status == "any" else status)
    if split_only:
        split = set(disputed_tasks(units_from_labels(store.labels()), store.gold()))
        rows = [r for r in rows if r["task_id"] in split]
    if not rows:
        st.caption("No task matches.")
        return
    st.dataframe([{k: v for k, v in r.items() if k != "responses"} for r in rows], width="stretch")
    by_id = {r["task_id"]: r for r in rows}
    task_id = st.selectbox(
        "Task", by_id, format_func=lambda t: f"{by_id[t]['prompt'][:80]} (task {t})", key="task-pick"
    )
    task = by_id[task_id]
    retired = task["status"] == "retired"
    if st.button(
        "Bring back" if retired else "Retire (offer to nobody, leave out of exports)", key="task-retire"
    ):
        curation.retire_task(store, task_id, retired=not retired)
        st.rerun()
    if task["open_flags"] and st.button("Mark its flags resolved", key="task-resolve"):
        curation.resolve_flags(store, task_id)
        st.rerun()
    with st.form(f"edit-task-{task_id}"):
        st.caption("Text can change only while nobody has labelled the task.")
        prompt = st.text_area("Prompt", task["prompt"])
        responses = [st.text_area(f"Response {i}", text) for i, text in enumerate(task["responses"])]
        if st.form_submit_button("Save the task", disabled=task["labels"] > 0):
            try:
                curation.edit_task(store, task_id, prompt, responses)
                st.success(f"Task {task_id} saved.")
            except ValueError as e:
                st.error(str(e))


def exports_root(store: Store) -> Path:
    return Path(os.environ.get("RLHFV_EXPORTS") or store.media_dir.parent / "exports")


def render_export(store: Store, user: UserInfo) -> None:
    if not require_admin(store, user):
        return
    st.header("Export a training snapshot")
    st.caption(
        f"Snapshots go to {exports_root(store)}/v<N>/: preferences.jsonl (GRM format), trl.jsonl, labels.jsonl"
    )
    min_labels = st.number_input(
        "Only tasks with at least this many labels (empty: settled tasks, with all k labels or a gold answer)",
        min_value=1,
        value=None,
    )
    if st.button("Export snapshot", type="primary"):
        snap = export_snapshot(
            store, exports_root(store), min_labels=None if min_labels is None else int(min_labels)
        )
        st.success(f"Snapshot v{snap.version}: {snap.pairs} pairs from {snap.labels} labels in {snap.path}")
        st.session_state["export-version"] = snap.version  # offer the new one for download
    snapshots = {s.version: s for s in list_snapshots(store) if s.path.is_dir()}
    if not snapshots:
        return
    st.subheader("Snapshots")
    st.dataframe(
        [
            {"version": s.version, "pairs": s.pairs, "labels": s.labels, "folder": str(s.path)}
            for s in snapshots.values()
        ],
        width="stretch",
    )
    snap = snapshots[st.selectbox("Snapshot", snapshots, format_func=lambda v: f"v{v}", key="export-version")]
    # One archive holds the rows and the images they point to; built only when clicked.
    st.download_button(
        f"Download v{snap.version} (.zip with images)",
        lambda: snapshot_archive(snap.path),
        file_name=f"rlhfv-labels-v{snap.version}.zip",
        mime="application/zip",
        key="dl-archive",
    )
    for name in ("preferences.jsonl", "trl.jsonl", "labels.jsonl"):
        path = snap.path / name
        st.download_button(
            f"Download {name}", lambda path=path: path.read_bytes(), file_name=name, key=f"dl-{name}"
        )


def render_users(store: Store, user: UserInfo) -> None:
    if not require_admin(store, user):
        return
    st.header("Users")
    table = st.empty()  # filled after the forms below, so it shows what they just changed
    with st.form("add-user", clear_on_submit=True):
        st.subheader("Add a user")
        name = st.text_input("Name")
        role = st.selectbox("Role", ROLES, index=1)
        password = st.text_input("Password (8+ characters)", type="password")
        if st.form_submit_button("Add"):
            try:
                store.add_user(name, password, role)
                st.success(f"Added {name}.")
            except ValueError as e:
                st.error(str(e))
    with st.form("change-user", clear_on_submit=True):
        st.subheader("Change a user")
        names = [u.name for u in store.users()]
        name = st.selectbox("User", names)
        role = st.selectbox("New role", ["(keep)", *ROLES])
        password = st.text_input("New password (leave empty to keep)", type="password")
        state = st.selectbox("Account", ["(keep)", "active", "disabled"])
        if st.form_submit_button("Save"):
            if name == user.name and (state == "disabled" or role == "annotator"):
                st.error("You cannot disable or demote your own account.")
            else:
                try:
                    store.update_user(name, password=password or None, role=None if role == "(keep)" else role,
                                      active=None if state == "(keep)" else state == "active")  # fmt: skip
                    st.success(f"Saved {name}.")
                except ValueError as e:
                    st.error(str(e))
    locked = {u.name: store.login_retry_after(u.name) for u in store.users()}
    with st.form("unlock-user"):
        st.subheader("Unlock an account")
        st.caption(
            "Five failed logins within 15 minutes lock an account; unlocking lets its owner try again now."
        )
        name = st.selectbox(
            "Locked account", [n for n, wait in locked.items() if wait > 0], key="unlock-name"
        )
        if st.form_submit_button("Unlock") and name:
            store.unlock_account(name)
            locked[name] = 0
            st.success(f"Unlocked {name}.")
    table.dataframe(
        [{"name": u.name, "role": u.role, "active": u.active,
          "locked": f"for {math.ceil(locked[u.name] / 60)} min" if locked[u.name] > 0 else ""}
         for u in store.users()],
        width="stretch",
    )  # fmt: skip
    st.subheader("Refused logins")
    refused = [
        {**a, "at": f"{a['at']:%Y-%m-%d %H:%M:%S} UTC"}
        for a in store.login_attempts(500)
        if a["outcome"] in ("failed", "locked")
    ]
    st.dataframe(refused, width="stretch") if refused else st.caption("None recently.")
