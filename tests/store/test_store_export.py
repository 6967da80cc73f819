"""Snapshots: majority pairs in the GRM format (read back by rlhfv.data.preference) and TRL's format."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from PIL import Image

from rlhfv.data.preference import read_preferences
from rlhfv.store.export import export_snapshot, list_snapshots, majority_pairs, snapshot_archive
from rlhfv.store.ingest import import_jsonl
from rlhfv.store.store import NewTask, Store


def label_all(store: Store, votes: dict[str, list[list[int]]]) -> None:
    """votes[prompt] = ranks given by the 1st, 2nd, ... annotator."""
    n = max(len(v) for v in votes.values())
    users = [store.add_user(f"ann{i}", f"password-{i}").id for i in range(n)]
    for k, user in enumerate(users):
        while (view := store.next_task(user)) is not None:
            ranks = votes[view.prompt][k] if k < len(votes[view.prompt]) else None
            if ranks is None:
                store.skip(user, view.id)
            else:
                store.submit(user, view.id, ranks, rationale=f"reason {k}")


def test_majority_keeps_clear_winners_and_drops_ties_and_even_splits():
    base = {"prompt": "p", "responses": ["r0", "r1", "r2"], "images": [], "source": ""}
    rows = [
        {**base, "task_id": 1, "ranks": [0, 1, 2]},
        {**base, "task_id": 1, "ranks": [0, 2, 1]},
        {**base, "task_id": 1, "ranks": [1, 1, 0]},
    ]
    prefs = {p.id: p for p in majority_pairs(rows)}
    # pair (0,1): 0, 0, tie -> 0 wins; (0,2): 0, 0, 2 wins -> 0; (1,2): 1, 2, 2 -> 2 wins
    assert prefs["t1-r0-r1"].responses == ["r0", "r1"] and prefs["t1-r0-r1"].preferred == 0
    assert prefs["t1-r0-r2"].preferred == 0
    assert prefs["t1-r1-r2"].preferred == 1
    tied = [{**base, "task_id": 2, "ranks": [0, 0, 0]}, {**base, "task_id": 2, "ranks": [0, 0, 0]}]
    split = [{**base, "task_id": 3, "ranks": [0, 1, 2]}, {**base, "task_id": 3, "ranks": [1, 0, 2]}]
    assert [p.id for p in majority_pairs(tied + split)] == ["t3-r0-r2", "t3-r1-r2"]
    assert majority_pairs(rows, min_labels=4) == []


def test_snapshot_is_read_by_the_grm_reader_with_images_and_matches_trl_rows(store: Store, tmp_path: Path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (20, 20), (250, 0, 0)).save(tmp_path / "img" / "red.png")
    rows = [
        {"prompt": "Colour?", "images": ["red.png"], "responses": ["It is red.", "It is blue."]},
        {"prompt": "Rank", "images": [], "responses": ["x", "y", "z"]},
        {"prompt": "Tie", "images": [], "responses": ["same", "also same"]},
    ]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_jsonl(store, tmp_path / "tasks.jsonl", tmp_path / "img", overlap=3)
    label_all(store, {
        "Colour?": [[0, 1], [0, 1], [1, 0]],   # A wins 2:1
        "Rank": [[2, 1, 0], [2, 1, 0]],        # z > y > x; third annotator skips
        "Tie": [[0, 0], [0, 0], [0, 1]],       # tie wins
    })  # fmt: skip
    snap = export_snapshot(store, tmp_path / "exports", min_labels=1)
    assert (snap.version, snap.pairs, snap.labels) == (1, 4, 8)
    prefs, errors = read_preferences(snap.path / "preferences.jsonl")
    assert errors == [] and len(prefs) == 4
    colour = next(p for p in prefs if p.prompt == "Colour?")
    assert colour.responses[colour.preferred] == "It is red."
    assert Path(colour.images[0]).is_file() and Path(colour.images[0]).is_relative_to(snap.path)
    winners = {(p.responses[p.preferred], p.responses[1 - p.preferred]) for p in prefs if p.prompt == "Rank"}
    assert winners == {("y", "x"), ("z", "x"), ("z", "y")}
    trl = [json.loads(line) for line in (snap.path / "trl.jsonl").read_text().splitlines()]
    by_id = {p.id: p for p in prefs}
    for row in trl:
        pref = by_id[row["id"]]
        assert row["chosen"][0]["content"][0]["text"] == pref.responses[pref.preferred]
        assert row["rejected"][0]["content"][0]["text"] == pref.responses[1 - pref.preferred]
        assert sum(c["type"] == "image" for c in row["prompt"][0]["content"]) == len(row["images"])
    raw = [json.loads(line) for line in (snap.path / "labels.jsonl").read_text().splitlines()]
    assert len(raw) == 8 and {r["rationale"] for r in raw} == {"reason 0", "reason 1", "reason 2"}
    manifest = json.loads((snap.path / "manifest.json").read_text())
    assert manifest["pairs"] == 4 and manifest["preferences_sha256"] == snap.sha256
    again = export_snapshot(store, tmp_path / "exports", min_labels=1)
    assert again.version == 2 and again.sha256 == snap.sha256  # same labels, same content


def test_a_gold_answer_overrides_the_vote_in_the_export():
    base = {"prompt": "p", "responses": ["r0", "r1"], "images": [], "source": ""}
    rows = [{**base, "task_id": 4, "ranks": [0, 1]}, {**base, "task_id": 4, "ranks": [0, 1]}]
    assert majority_pairs(rows)[0].preferred == 0
    assert majority_pairs(rows, gold={4: [1, 0]})[0].preferred == 1  # adjudicated against the majority
    assert majority_pairs(rows, gold={4: [0, 0]}) == []  # settled as a tie: no training signal


def test_by_default_a_snapshot_holds_only_settled_tasks(store: Store, tmp_path: Path):
    store.add_tasks([NewTask("one vote of three", ["a", "b"]), NewTask("adjudicated", ["c", "d"])], overlap=3)
    store.add_tasks([NewTask("all votes in", ["e", "f"])], overlap=1)
    users = [store.add_user(f"u{i}", f"password-{i}").id for i in range(2)]
    for uid in users:
        while (view := store.next_task(uid)) is not None:
            if view.prompt != "one vote of three" or uid == users[0]:
                store.submit(uid, view.id, [0, 1])
            else:
                store.skip(uid, view.id)
    adjudicated = next(r["task_id"] for r in store.labels() if r["prompt"] == "adjudicated")
    store.set_gold(adjudicated, [1, 0])
    settled = {p.prompt for p in majority_pairs(store.labels(), None, store.gold())}
    assert settled == {"adjudicated", "all votes in"}  # 1 of 3 labels is not the crowd's answer
    snap = export_snapshot(store, tmp_path / "exports")
    assert snap.pairs == 2
    assert snap.labels == 4  # labels.jsonl still keeps every label given
    assert export_snapshot(store, tmp_path / "exports", min_labels=1).pairs == 3


def test_the_archive_holds_the_snapshot_with_its_images_and_snapshots_are_listed(
    store: Store, tmp_path: Path
):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), (0, 200, 0)).save(tmp_path / "img" / "green.png")
    rows = [{"prompt": "Colour?", "images": ["green.png"], "responses": ["green", "red"]}]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import_jsonl(store, tmp_path / "tasks.jsonl", tmp_path / "img", overlap=1)
    uid = store.add_user("u", "password-u").id
    store.submit(uid, store.next_task(uid).id, [0, 1])
    first = export_snapshot(store, tmp_path / "exports")
    second = export_snapshot(store, tmp_path / "exports")
    assert [s.version for s in list_snapshots(store)] == [2, 1]
    assert list_snapshots(store)[1] == first
    with zipfile.ZipFile(io.BytesIO(snapshot_archive(second.path))) as archive:
        names = set(archive.namelist())
        pref = json.loads(archive.read("v2/preferences.jsonl").decode().splitlines()[0])
        image = pref["images"][0]
        assert f"v2/{image}" in names  # the row's image path resolves inside the archive
        assert archive.read(f"v2/{image}") == (tmp_path / "img" / "green.png").read_bytes()
    assert {"v2/manifest.json", "v2/trl.jsonl", "v2/labels.jsonl"} <= names


def test_an_export_killed_before_its_record_is_set_aside_and_written_again(store: Store, tmp_path: Path):
    import pytest

    from rlhfv.store.ingest import import_shapes

    import_shapes(store, n=2, overlap=1)
    ann = store.add_user("ann", "ann-password").id
    while (view := store.next_task(ann)) is not None:
        store.submit(ann, view.id, [0, 1])
    first = export_snapshot(store, tmp_path / "exports")
    # what a kill between the folder's rename and the store's commit leaves: v2 on disk, no record
    killed = tmp_path / "exports" / "v2"
    killed.mkdir()
    (killed / "manifest.json").write_text(json.dumps({"version": 2}))
    second = export_snapshot(store, tmp_path / "exports")
    assert second.version == 2 and second.pairs == first.pairs == 2
    assert json.loads((second.path / "manifest.json").read_text())["labels"] == 2
    assert len(list((tmp_path / "exports").glob(".v2.unrecorded-*"))) == 1
    # a folder that is not a snapshot of ours is never moved
    (tmp_path / "exports" / "v3").mkdir()
    with pytest.raises(FileExistsError, match="v3 exists but the store has no record of it"):
        export_snapshot(store, tmp_path / "exports")


def test_a_snapshot_exported_from_another_working_folder_is_listed_where_it_is(
    store: Store, tmp_path: Path, monkeypatch
):
    from rlhfv.store.export import list_snapshots

    (tmp_path / "loop").mkdir()
    (tmp_path / "app").mkdir()
    monkeypatch.chdir(tmp_path / "loop")  # the active loop exports under its own (relative) run folder
    export_snapshot(store, Path("checkpoints") / "run" / "exports")
    monkeypatch.chdir(tmp_path / "app")  # the app runs from another folder and lists the records
    [snap] = list_snapshots(store)
    assert snap.path == tmp_path / "loop" / "checkpoints" / "run" / "exports" / "v1" and snap.path.is_dir()
