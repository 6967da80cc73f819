"""Importing tasks: bad rows and hostile images are reported and skipped, the rest imported."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from rlhfv.store import ingest
from rlhfv.store.store import Store


def png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG that declares width x height pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(folder / "red.png")
    Image.new("RGB", (16, 16), (10, 10, 200)).save(folder / "blue.jpg")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image" * 10)
    good = (folder / "blue.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    png_header_only(folder / "bomb.png", 30000, 30000)
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    return folder


def test_good_rows_are_imported_with_images_kept_by_content_hash(store: Store, images: Path, tmp_path: Path):
    path = tmp_path / "tasks.jsonl"
    write_jsonl(path, [
        {"prompt": "Colour?", "images": ["red.png"], "responses": ["red", "blue"], "id": "a", "gold": 0},
        {"prompt": "Rank them", "images": ["red.png", "blue.jpg"], "responses": ["x", "y", "z"]},
    ])  # fmt: skip
    report = ingest.import_jsonl(store, path, images, overlap=2)
    assert (report.added, report.duplicates, report.errors) == (2, 0, [])
    media = sorted(p.name for p in store.media_dir.iterdir())
    assert len(media) == 2 and all(len(name.split(".")[0]) == 64 for name in media)  # red.png stored once
    assert store.gold() == {1: [0, 1]}
    assert ingest.import_jsonl(store, path, images).duplicates == 2


def test_bad_rows_and_hostile_images_are_reported_by_line_and_field_and_the_rest_imported(
    store: Store, images: Path, tmp_path: Path
):
    path = tmp_path / "tasks.jsonl"
    ok = {"prompt": "p", "responses": ["a", "b"]}
    write_jsonl(path, [
        {**ok, "prompt": "fine", "images": ["red.png"]},          # 1 ok
        '{"prompt": "broken json", ',                              # 2
        {**ok, "prompt": ""},                                      # 3
        {**ok, "responses": ["only one"]},                         # 4
        {**ok, "images": ["corrupt.png"]},                         # 5
        {**ok, "images": ["truncated.jpg"]},                       # 6
        {**ok, "images": ["bomb.png"]},                            # 7
        {**ok, "images": ["../outside.png"]},                      # 8
        {**ok, "images": ["/etc/passwd"]},                         # 9
        {**ok, "images": ["missing.png"]},                         # 10
        {**ok, "gold": 5},                                         # 11
        [1, 2, 3],                                                 # 12
        {**ok, "prompt": "also fine", "responses": ["c", "d"]},   # 13 ok
    ])  # fmt: skip
    report = ingest.import_jsonl(store, path, images)
    assert report.added == 2
    by_line = {e.line: e for e in report.errors}
    assert sorted(by_line) == list(range(2, 13))
    assert by_line[2].field == "<json>"
    assert by_line[3].field == "prompt" and by_line[4].field == "responses"
    assert by_line[5].field == "images[0]" and "not a readable image" in by_line[5].message
    assert "not a readable image" in by_line[6].message
    assert "bomb" in by_line[7].message.lower() or "pixels" in by_line[7].message
    assert "escapes" in by_line[8].message and "escapes" in by_line[9].message
    assert "not found" in by_line[10].message
    assert by_line[11].field == "gold" and by_line[12].field == "<row>"
    assert all(str(path) in str(e) for e in report.errors)
    assert len(list(store.media_dir.iterdir())) == 1  # nothing from a refused image was kept


def test_pixel_and_byte_limits_are_configurable(store: Store, images: Path, tmp_path: Path):
    path = tmp_path / "tasks.jsonl"
    write_jsonl(path, [{"prompt": "p", "images": ["red.png"], "responses": ["a", "b"]}])
    report = ingest.import_jsonl(store, path, images, max_pixels=100)
    assert report.added == 0 and "32x24 pixels" in report.errors[0].message
    with pytest.raises(ValueError, match="over the .* limit for a task file"):
        ingest.import_jsonl(store, path, images, max_bytes=10)
    big = images / "big.png"
    big.write_bytes((images / "red.png").read_bytes() + b"\0" * 2048)
    with pytest.raises(ingest.ImageRejected, match="MiB limit"):
        ingest.store_image("big.png", images, store.media_dir, max_bytes=1024)


def test_rollouts_of_a_run_become_tasks_with_distinct_completions(store: Store, tmp_path: Path):
    run = tmp_path / "checkpoints" / "grpo-tiny"
    (run / "samples").mkdir(parents=True)
    Image.new("RGB", (12, 12), (0, 200, 0)).save(run / "samples" / "s0.png")
    judgments = [{"a": 0, "b": 1, "text": "A is right. \\boxed{8, 3}", "scores": [8, 3]}]
    write_jsonl(run / "rollouts.jsonl", [
        {"step": 2, "prompt": "Colour?", "images": ["samples/s0.png"], "completions": ["green", "red"],
         "rewards": [1.0, 0.0], "judgments": judgments},
        {"step": 4, "prompt": "Count?", "images": [], "completions": ["3", "3", "3"], "rewards": [0, 0, 0],
         "judgments": []},
        {"step": 6, "prompt": "Shape?", "images": [], "completions": ["a", "b", "a", "c", "d", "e"],
         "rewards": [0] * 6, "judgments": []},
    ])  # fmt: skip
    report = ingest.import_rollouts(store, run, overlap=1)
    assert report.added == 2
    assert report.errors[0].line == 2 and report.errors[0].field == "completions"
    u = store.add_user("ann", "long enough").id
    first = store.next_task(u)
    assert first.responses == ["green", "red"] and first.images[0].is_file()
    store.submit(u, first.id, [0, 1])
    assert store.next_task(u).responses == ["a", "b", "c", "d"]  # duplicates merged, first four kept
    assert store.labels()[0]["source"] == "rollout:grpo-tiny"
    assert ingest.import_rollouts(store, run, min_step=5).added == 0  # step 6 is already there


def test_shapes_pairs_are_imported_as_gold_items_with_images(store: Store):
    report = ingest.import_shapes(store, n=4, seed=1, overlap=1)
    assert report.added == 4
    gold = store.gold()
    assert len(gold) == 4 and all(sorted(r) == [0, 1] for r in gold.values())
    assert len(list(store.media_dir.glob("*.png"))) == 4


def test_a_mixed_import_file_imports_exactly_the_good_rows_and_names_each_bad_key(
    store: Store, images: Path, tmp_path: Path
):
    path = tmp_path / "tasks.jsonl"
    ok = {"prompt": "p", "responses": ["a", "b"]}
    write_jsonl(path, [
        {**ok, "prompt": "good one", "gold": 1},                   # 1 ok, a gold item
        {**ok, "prompt": "label under another name", "preferred": 0},  # 2: would lose its label
        '{"prompt": "nan gold", "responses": ["a", "b"], "gold": NaN}',  # 3
        {**ok, "prompt": "typo", "respones": ["x", "y"]},           # 4
        {**ok, "prompt": "good two", "source": "pilot", "id": "g2"},  # 5 ok
        {**ok, "prompt": "image key", "image": "red.png"},         # 6
    ])  # fmt: skip
    report = ingest.import_jsonl(store, path, images)
    assert report.added == 2 and store.gold() == {1: [1, 0]}  # the good rows, with the gold label
    assert [(e.line, e.field) for e in report.errors] == [
        (2, "preferred"), (3, "gold"), (4, "respones"), (6, "image"),
    ]  # fmt: skip
    by_line = {e.line: e.message for e in report.errors}
    assert "unknown task key 'preferred'; did you mean 'gold'?" in by_line[2]
    assert "got nan" in by_line[3] and "did you mean 'responses'?" in by_line[4]
    assert "did you mean 'images'?" in by_line[6]
    lines = str(report).splitlines()
    assert len(lines) == 5 and lines[1].startswith(f"  {path}:2: field 'preferred': unknown task key")


def test_an_oversized_image_outside_the_folder_is_refused_as_escaping_not_measured(
    store: Store, images: Path
):
    (images.parent / "big.bin").write_bytes(b"\0" * 2048)
    with pytest.raises(ingest.ImageRejected, match="escapes its folder") as caught:
        ingest.store_image("../big.bin", images, store.media_dir, max_bytes=1024)
    assert "MiB" not in str(caught.value)  # an outside file's size is not reported
