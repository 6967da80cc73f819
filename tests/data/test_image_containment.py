"""Preference loaders open images only inside their data file's folder, and name the real line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from rlhfv.data.formats import PreferenceData, load_preference_data

OPENED: list[str] | None = None  # paths opened while a test watches; None: nobody watches


def _watch(event: str, args: tuple) -> None:
    if OPENED is not None and event == "open" and isinstance(args[0], (str, Path)):
        OPENED.append(str(Path(args[0]).resolve()))


sys.addaudithook(_watch)  # audit hooks cannot be removed; this one does nothing unless OPENED is set


@pytest.fixture
def opened():
    global OPENED
    OPENED = []
    yield OPENED
    OPENED = None


@pytest.fixture
def hostile(tmp_path):
    """A data folder with one good image, beside a secret image that rows try to reach."""
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside)
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(data / "ok.png")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return data, outside


def opened_near(data: Path, opened: list[str]) -> list[str]:
    """The opened files in or beside `data` (Python also opens its own modules meanwhile)."""
    return [p for p in opened if Path(p).is_relative_to(data.parent)]


def pref_row(image: str) -> dict:
    return {"prompt": "What colour?", "responses": ["red", "blue"], "preferred": 0, "images": [image]}


def test_a_preference_file_with_escaping_image_paths_reads_nothing_outside_its_folder(hostile, opened):
    data, outside = hostile
    rows = [pref_row("ok.png"), pref_row("../secret.png"), pref_row(str(outside)), pref_row("broken.png")]
    (data / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = PreferenceData("jsonl", data / "prefs.jsonl")
    assert [p.prompt.images[0].getpixel((0, 0)) for p in pairs] == [(200, 0, 0)]
    assert [(e.line, e.field) for e in pairs.errors] == [(2, "images[0]"), (3, "images[0]"), (4, "images")]
    assert (
        "escapes its folder" in pairs.errors[0].message and "not a readable image" in pairs.errors[2].message
    )
    assert set(opened_near(data, opened)) == {str(data / n) for n in ("prefs.jsonl", "ok.png", "broken.png")}


def test_generic_and_rlaifv_rows_with_escaping_images_are_refused_by_line(hostile, opened):
    data, outside = hostile
    rows = [{"q": "p", "c": "x", "r": "y", "img": p} for p in ("ok.png", "../secret.png", str(outside))]
    (data / "any.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept, errors = load_preference_data(
        "generic", data / "any.jsonl", "prompt=q,chosen=c,rejected=r,images=img"
    )
    assert len(kept) == 1 and [(e.line, e.field) for e in errors] == [(2, "img"), (3, "img")]

    def message(url: str) -> list[dict]:
        return [
            {
                "role": "user",
                "content": [{"type": "text", "text": "t"}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ]

    chat = [
        {"prompt": message(u), "chosen": message("a"), "rejected": message("b")}
        for u in ("ok.png", "../secret.png", str(outside))
    ]
    (data / "rlaif.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    kept, errors = load_preference_data("rlaifv", data / "rlaif.jsonl")
    assert len(kept) == 1 and [(e.line, e.field) for e in errors] == [
        (2, "prompt.image_url"),
        (3, "prompt.image_url"),
    ]
    assert all(Path(p).is_relative_to(data) for p in opened_near(data, opened)), opened


def test_eval_items_skip_a_row_whose_image_is_unreadable_and_name_its_line(hostile):
    from rlhfv.grm.evaluate import items_from_rows

    data, _ = hostile
    rows = [pref_row("ok.png"), pref_row("broken.png"), pref_row("ok.png")]
    (data / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded, _ = load_preference_data("jsonl", data / "prefs.jsonl")
    items, errors = items_from_rows(loaded, str(data / "prefs.jsonl"))
    assert [i.id for i in items] == ["prefs-1", "prefs-3"]
    assert [(e.line, e.field) for e in errors] == [(2, "images")]
