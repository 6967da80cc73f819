"""Numbered, self-contained snapshots of the labels, in the GRM training format and TRL's format.

`export_snapshot(store, out_root)` writes `out_root/v<N>/`:

- `preferences.jsonl`: the GRM training format (`rlhfv.data.preference`), one row per pair of
  responses of a settled task (all k labels in, or a gold answer) whose majority label is a clear winner (or whose gold answer, where a task has one,
  says so). A ranking over N responses yields all its
  implied pairs; pairs that tie or split evenly carry no signal and are left out.
- `trl.jsonl`: the same pairs in TRL's conversational preference format (`prompt`, `chosen`,
  `rejected` as message lists, `images` as paths), which `DPOTrainer` reads.
- `labels.jsonl`: every individual label with annotator, ranks, rationale and time, so nothing
  an annotator entered is lost in aggregation.
- `images/`: the images the rows refer to (paths in both files are relative to the snapshot).
- `manifest.json`: version, time, counts, schema version and the sha256 of `preferences.jsonl`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from rlhfv.data.preference import FORMAT_VERSION, PairwisePreference, write_preferences
from rlhfv.store.agreement import pair_labels
from rlhfv.store.curation import retired_tasks
from rlhfv.store.schema import SCHEMA_VERSION, Snapshot
from rlhfv.store.store import Store

logger = logging.getLogger(__name__)


@dataclass
class SnapshotInfo:
    version: int
    path: Path
    pairs: int
    labels: int
    sha256: str


def majority_pairs(
    labels: list[dict[str, Any]], min_labels: int | None = 1, gold: dict[int, list[int]] | None = None
) -> list[PairwisePreference]:
    """Aggregate label rows per task into pairwise preferences by majority over each pair.

    A task with a gold answer (a known item, or one an admin adjudicated) exports that answer
    instead of the vote. `min_labels=None` keeps only settled tasks: those with all k labels they
    asked for (the rows' `overlap`), or with a gold answer.
    """
    gold = gold or {}
    by_task: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in labels:
        by_task[row["task_id"]].append(row)
    prefs = []
    for task_id, rows in sorted(by_task.items()):
        if min_labels is None and task_id not in gold and len(rows) < rows[0]["overlap"]:
            continue  # still being labelled: a single early vote is not the crowd's answer
        if min_labels is not None and len(rows) < min_labels:
            continue
        votes: dict[tuple[int, int], Counter] = defaultdict(Counter)
        for ranks in [gold[task_id]] if task_id in gold else [row["ranks"] for row in rows]:
            for pair, label in pair_labels(ranks).items():
                votes[pair][label] += 1
        first = rows[0]
        for (i, j), counts in sorted(votes.items()):
            (top, n), *rest = counts.most_common() + [(None, 0)]
            if top == 2 or n == rest[0][1]:
                continue  # a tie won, or no clear winner
            prefs.append(
                PairwisePreference(
                    id=f"t{task_id}-r{i}-r{j}",
                    prompt=first["prompt"],
                    responses=[first["responses"][i], first["responses"][j]],
                    preferred=int(top),
                    images=[f"images/{name}" for name in first["images"]],
                    source=first["source"] or "annotate",
                )
            )
    return prefs


def trl_row(pref: PairwisePreference) -> dict[str, Any]:
    """One pair in TRL's conversational preference format (images precede the question)."""
    content = [{"type": "image"} for _ in pref.images] + [{"type": "text", "text": pref.prompt}]
    chosen, rejected = pref.responses[pref.preferred], pref.responses[1 - pref.preferred]
    return {
        "id": pref.id,
        "images": pref.images,
        "prompt": [{"role": "user", "content": content}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
    }


def export_snapshot(store: Store, out_root: str | Path, min_labels: int | None = None) -> SnapshotInfo:
    """Write the next numbered snapshot under `out_root` and record it in the store.

    By default only settled tasks are exported (k labels, or a gold answer); `min_labels=n`
    exports every task with at least n labels instead.
    """
    # absolute, so the record points at the snapshot from any working folder (the active loop
    # exports under its run folder; the app runs elsewhere and lists the store's records)
    out_root = Path(out_root).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    retired = retired_tasks(store)
    labels = [row for row in store.labels() if row["task_id"] not in retired]  # withdrawn by an admin
    prefs = majority_pairs(labels, min_labels, store.gold())
    with store.session() as s:  # holds the write lock, so two exports never share a number
        version = (s.scalar(select(func.max(Snapshot.version))) or 0) + 1
        target = out_root / f"v{version}"
        if target.exists():
            manifest = target / "manifest.json"
            if not (manifest.is_file() and json.loads(manifest.read_text()).get("version") == version):
                raise FileExistsError(
                    f"{target} exists but the store has no record of it; move it away and retry"
                )
            # A snapshot of ours the store never recorded: an export killed between renaming its
            # folder and committing (a resumed active loop meets this). Set aside, not deleted.
            aside = out_root / f".v{version}.unrecorded-{time.time_ns()}"
            target.rename(aside)
            logger.warning("%s was never recorded in the store (a killed export); moved to %s", target, aside)
        tmp = out_root / f".v{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "images").mkdir(parents=True)
        for name in sorted({n for row in labels for n in row["images"]}):
            try:  # media files never change (named by content), so snapshots can share them
                os.link(store.media_dir / name, tmp / "images" / name)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(store.media_dir / name, tmp / "images" / name)
        write_preferences(prefs, tmp / "preferences.jsonl")
        _write_jsonl(tmp / "trl.jsonl", [trl_row(p) for p in prefs])
        _write_jsonl(tmp / "labels.jsonl", labels)
        digest = hashlib.sha256((tmp / "preferences.jsonl").read_bytes()).hexdigest()
        manifest = {"version": version, "pairs": len(prefs), "labels": len(labels), "min_labels": min_labels,  # null: settled tasks
                    "tasks": len({row["task_id"] for row in labels}), "preference_format": FORMAT_VERSION,
                    "schema_version": SCHEMA_VERSION, "preferences_sha256": digest}  # fmt: skip
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.rename(target)
        s.add(
            Snapshot(
                version=version, path=str(target), pairs=len(prefs), annotations=len(labels), sha256=digest
            )
        )
    return SnapshotInfo(version, target, len(prefs), len(labels), digest)


def list_snapshots(store: Store) -> list[SnapshotInfo]:
    """Every snapshot the store recorded, newest first."""
    with store.session() as s:
        rows = s.scalars(select(Snapshot).order_by(Snapshot.version.desc())).all()
        return [SnapshotInfo(r.version, Path(r.path), r.pairs, r.annotations, r.sha256) for r in rows]


def snapshot_archive(path: str | Path) -> bytes:
    """A snapshot folder as one zip (`v<N>/...`), so the images travel with the rows that name them.

    Images are stored as they are (already compressed); the JSONL files are deflated.
    """
    path = Path(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            method = zipfile.ZIP_STORED if file.parent.name == "images" else zipfile.ZIP_DEFLATED
            archive.write(file, f"{path.name}/{file.relative_to(path)}", compress_type=method)
    return buffer.getvalue()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
