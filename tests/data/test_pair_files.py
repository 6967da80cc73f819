"""PairFile: rlhfv and TRL preference rows, an annotation export folder, and bad rows named by
file, line and field."""

from __future__ import annotations

import json

import pytest

from rlhfv.data.pair_files import PairFile
from rlhfv.data.preference import PairwisePreference
from rlhfv.data.shapes import ShapesVQA
from rlhfv.store.export import trl_row


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reads_rlhfv_rows_with_the_chosen_response_first(tmp_path):
    ShapesVQA(1)[0].prompt.images[0].save(tmp_path / "a.png")
    rows = [
        {"prompt": "Colour?", "images": ["a.png"], "responses": ["blue", "red"], "preferred": 1, "id": "x"}
    ]
    pair = PairFile(write(tmp_path / "p.jsonl", rows))[0]
    assert pair.responses == ["red", "blue"] and pair.preferred == 0 and pair.id == "x"
    assert pair.prompt.text == "Colour?" and pair.prompt.images[0].size == (96, 96)


def test_reads_trl_standard_and_conversational_rows(tmp_path):
    rows = [
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count."}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Three."}]}],
            "rejected": [{"role": "assistant", "content": "Two."}],
        },
    ]
    data = PairFile(write(tmp_path / "t.jsonl", rows))
    assert len(data) == 2 and data[0].responses == ["Hi!", "No."]
    assert data[1].prompt.system == "Be brief." and data[1].prompt.text == "Count."
    assert data[1].responses == ["Three.", "Two."]


def test_a_dialogue_prompt_keeps_every_turn_named_by_its_role(tmp_path):
    turns = [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Count."},
    ]
    pair = PairFile(write(tmp_path / "d.jsonl", [{"prompt": turns, "chosen": "3", "rejected": "2"}]))[0]
    assert pair.prompt.text == "user: Hi.\nassistant: Hello.\nuser: Count."


def test_reads_an_annotation_export_folder(tmp_path):
    """The export's trl.jsonl as `rlhfv.store.export` writes it, images under images/."""
    (tmp_path / "images").mkdir()
    ShapesVQA(1)[0].prompt.images[0].save(tmp_path / "images" / "m1.png")
    pref = PairwisePreference(
        "t1-r0-r1", "How many shapes?", ["Two.", "Three."], 1, ["images/m1.png"], "annotate"
    )
    write(tmp_path / "trl.jsonl", [trl_row(pref)])
    pair = PairFile(tmp_path)[0]
    assert pair.responses == ["Three.", "Two."] and len(pair.prompt.images) == 1
    assert pair.prompt.text == "How many shapes?" and pair.id == "t1-r0-r1"


@pytest.mark.parametrize(
    "row, field, why",
    [
        ({"prompt": "Q", "chosen": "  ", "rejected": "b"}, "chosen", "is empty"),
        ({"prompt": "Q", "chosen": "a", "rejected": ""}, "rejected", "is empty"),
        (
            {"prompt": "Q", "responses": ["same", "same "], "preferred": 0},
            r"responses\[1\]",
            "equals the chosen",
        ),
        (
            {"prompt": "Q", "chosen": "a", "rejected": "b", "images": ["gone.png"]},
            r"images\[0\]",
            "not found",
        ),
        (
            {
                "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}],
                "chosen": "a",
                "rejected": "b",
            },
            "images",
            "1 image placeholders but the row lists 0",
        ),  # fmt: skip
        ({"prompt": "Q", "responses": ["a", "b"], "preferred": 2}, "preferred", "must be 0 or 1"),
    ],
)
def test_a_bad_row_is_an_error_naming_file_line_and_field(tmp_path, row, field, why):
    path = write(tmp_path / "bad.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(ValueError, match=rf"bad.jsonl:2: field '{field}': .*{why}.*skip_bad_rows"):
        PairFile(path)


def test_skip_bad_rows_skips_and_counts_them(tmp_path):
    rows = [
        {"prompt": "Q", "chosen": "a", "rejected": "b"},
        {"prompt": "Q", "chosen": "a", "rejected": "a"},
        "not an object",
        {"prompt": "Q", "chosen": "c", "rejected": "d"},
    ]
    path = write(tmp_path / "mixed.jsonl", rows)
    with path.open("a") as f:
        f.write("{broken json\n")
    data = PairFile(path, skip_bad_rows=True)
    assert len(data) == 2 and data.skipped == 3
    assert [(e.line, e.field) for e in data.errors] == [(2, "rejected"), (3, "<row>"), (5, "<json>")]
    with pytest.raises(ValueError, match="no usable preference pairs"):
        PairFile(write(tmp_path / "none.jsonl", rows[1:3]), skip_bad_rows=True)
