"""Training dashboard: curves by metric area, reward-hacking monitors, recent rollouts with the
GRM's judgments, and a button that sends a doubtful rollout to the label queue.

Reads a run folder written by any pipeline: `metrics.jsonl` (whatever numeric keys exist, grouped
by the part before the "/"), `rollouts.jsonl` and `summary.json`. While "Follow the run" is on,
the page re-reads the files every few seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import streamlit as st
from ui_admin import list_runs, require_admin, runs_root

from rlhfv.data.images import ImageError, load_image
from rlhfv.store.ingest import rollout_task
from rlhfv.store.store import Store, UserInfo
from rlhfv.training.metrics import read_metrics


def metric_groups(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Numeric keys grouped by area ("loss/policy" -> "loss"), monitors first."""
    keys = sorted({k for r in rows for k, v in r.items() if k != "step" and isinstance(v, int | float)
                   and not isinstance(v, bool)})  # fmt: skip
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split("/", 1)[0] if "/" in k else "other", []).append(k)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "monitor", kv[0])))


def read_rollouts(path: Path, last: int) -> list[tuple[int, dict[str, Any]]]:
    """The last rollouts with their 1-based line numbers, which name them in the label queue."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for lineno, line in enumerate(lines[-last:], start=max(len(lines) - last, 0) + 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        if isinstance(row, dict):
            rows.append((lineno, row))
    return rows


def curve_chart(long: Any, x: str) -> Any:
    """Lines with a marker at every logged value: eval metrics are logged every few steps, and a
    plain line chart draws nothing for a point with no logged neighbour."""
    import altair as alt

    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X(f"{x}:Q", title=x),
            y=alt.Y("value:Q", title=None),
            color="metric:N",
            tooltip=[x, "metric", "value"],
        )
    )


def show_curves(run: Path) -> None:
    import pandas as pd

    path = run / "metrics.jsonl"
    rows = read_metrics(path) if path.is_file() else []
    if not rows:
        st.info("No metrics yet.")
        return
    frame = pd.DataFrame(rows)
    if "step" in frame:
        frame = frame.set_index("step")
    x = frame.index.name or "index"
    st.caption(f"{len(rows)} metric rows, last step {frame.index.max()}")
    for area, keys in metric_groups(rows).items():
        st.subheader("Reward-hacking monitors" if area == "monitor" else area)
        if area == "monitor":
            cols = st.columns(len(keys))
            for col, key in zip(cols, keys, strict=True):
                series = frame[key].dropna()
                delta = float(series.iloc[-1] - series.iloc[-2]) if len(series) > 1 else None
                col.metric(
                    key.split("/", 1)[1],
                    f"{series.iloc[-1]:.4g}",
                    delta=None if delta is None else f"{delta:+.3g}",
                )
        values = frame[keys].apply(pd.to_numeric, errors="coerce").reset_index()
        # Long form without the gaps: each metric's line joins the steps it was logged at.
        long = values.melt(id_vars=x, var_name="metric", value_name="value").dropna()
        if area == "perf":  # throughput and seconds per step differ by orders of magnitude: an axis each
            for key in keys:
                st.altair_chart(curve_chart(long[long["metric"] == key], x), width="stretch")
        else:
            st.altair_chart(curve_chart(long, x), width="stretch")


def show_rollouts(store: Store, run: Path, last: int) -> None:
    rows = read_rollouts(run / "rollouts.jsonl", last)
    if not rows:
        st.info("No rollouts logged yet.")
        return
    for k, (lineno, row) in enumerate(reversed(rows)):
        # Expander labels are Markdown: escape the run's text, which may hold image syntax.
        title = re.sub(r"([\\`*_{}\[\]()#+\-.!<>|~:$])", r"\\\1", str(row.get("prompt", ""))[:100])
        with st.expander(f"step {row.get('step', '?')}: {title}", expanded=k == 0):
            for rel in row.get("images", [])[:4]:
                try:
                    st.image(load_image(rel, root=run), width=256)
                except (ImageError, TypeError) as e:
                    st.warning(f"image not shown: {e}")
            st.text(str(row.get("prompt", "")))
            completions, rewards = row.get("completions", []), row.get("rewards", [])
            cols = st.columns(max(1, min(len(completions), 4)))
            for i, text in enumerate(completions):
                reward = (
                    f" · reward {rewards[i]:.3f}"
                    if i < len(rewards) and isinstance(rewards[i], int | float)
                    else ""
                )
                with cols[i % len(cols)].container(border=True):
                    st.markdown(f"**Completion {i}**{reward}")
                    st.text(str(text))
            for j in row.get("judgments", []):
                scores = j.get("scores")
                st.text(
                    f"GRM on {j.get('a')} vs {j.get('b')}, scores {scores if scores is not None else 'unparsed'}"
                )
                st.text(str(j.get("text", "")))
            if st.button("Send to the label queue", key=f"queue-{run}-{row.get('step')}-{k}"):
                task, field, message = rollout_task(row, run, store.media_dir, line=lineno)
                if task is None:
                    st.error(f"cannot queue this rollout: field '{field}': {message}")
                else:
                    added, _ = store.add_tasks([task])  # the project's k labels
                    st.success("Queued for labelling." if added else "Already in the queue.")


def render(store: Store, user: UserInfo) -> None:
    if not require_admin(store, user):
        return
    st.header("Training dashboard")
    root = runs_root()
    runs = list_runs(root, "metrics.jsonl")
    if not runs:
        st.info(f"No run with a metrics.jsonl under {root.resolve()}.")
        return
    run = st.selectbox("Run", runs, format_func=lambda p: str(p.relative_to(root)))
    follow = st.toggle("Follow the run", value=False)
    last = st.slider("Rollouts to show", 1, 20, 3)

    @st.fragment(run_every=5 if follow else None)
    def live() -> None:
        if (run / "summary.json").is_file():
            st.success("Finished.")
            st.json(json.loads((run / "summary.json").read_text()), expanded=False)
        show_curves(run)
        st.header("Recent rollouts")
        show_rollouts(store, run, last)

    live()
