"""Preference-data loaders: real shared files, and malformed rows reported, not fatal."""

from __future__ import annotations

import gzip
import json

import pytest

from rlhfv.data.formats import BestOfN, load_preference_data, split_dialogue


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_hh_rlhf_shared_file_splits_dialogues_at_the_last_shared_assistant_turn(shared_data):
    rows, errors = load_preference_data(
        "hh-rlhf", shared_data / "hh_rlhf_harmless_test/harmless-base_test.jsonl.gz"
    )
    assert len(rows) + len(errors) == 2312  # every row is either kept or reported
    assert len(errors) < 10 and all(e.field in ("chosen", "rejected") for e in errors)
    first = rows[0]
    assert first.prompt.startswith("Human:") and first.prompt.endswith("Assistant:")
    assert first.responses[0] != first.responses[1] and first.preferred == 0


def test_llmbar_shared_files_keep_labels_and_name_subsets(shared_data):
    rows, errors = load_preference_data("llmbar", shared_data / "llmbar/Natural/dataset.json")
    assert len(rows) == 100 and not errors
    assert {r.source for r in rows} == {"Natural"}
    assert {r.preferred for r in rows} == {0, 1}  # label 1/2 → index 0/1, both occur
    raw = json.loads((shared_data / "llmbar/Natural/dataset.json").read_text())
    assert rows[5].preferred == raw[5]["label"] - 1 and rows[5].responses[1] == raw[5]["output_2"]


def test_rlaifv_shared_pairs_carry_their_image_paths(shared_data):
    rows, errors = load_preference_data("rlaifv", shared_data / "rlaifv_pairs_with_images/rlaif-v.jsonl")
    assert len(rows) == 10 and not errors
    assert all(len(r.images) == 1 and r.images[0].endswith(".jpg") for r in rows)
    assert rows[0].prompt == "Please describe this artwork thoroughly."


def test_hh_rlhf_malformed_rows_are_reported_with_file_line_and_field(tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    good = {"chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    lines = [
        good,
        "{not json",
        {"chosen": "no turns", "rejected": "at all"},
        {"chosen": 3, "rejected": "x"},
        good,
    ]
    with gzip.open(path, "wt") as f:
        f.write("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in lines))
    rows, errors = load_preference_data("hh-rlhf", path)
    assert [r.responses for r in rows] == [["hello!", "go away"]] * 2
    assert [(e.line, e.field) for e in errors] == [(2, "<json>"), (3, "chosen"), (4, "chosen")]
    assert str(errors[0]).startswith(f"{path}:2: field '<json>'")


def test_split_dialogue_keeps_earlier_differing_turns_out_of_the_prompt():
    a = "\n\nHuman: q1\n\nAssistant: same\n\nHuman: q2\n\nAssistant: good"
    b = "\n\nHuman: q1\n\nAssistant: same\n\nHuman: q2\n\nAssistant: bad"
    assert split_dialogue(a, b) == ("Human: q1\n\nAssistant: same\n\nHuman: q2\n\nAssistant:", "good", "bad")


def test_llmbar_bad_labels_and_empty_outputs_are_skipped(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(
        json.dumps(
            [
                {"input": "q", "output_1": "a", "output_2": "b", "label": 2},
                {"input": "q", "output_1": "a", "output_2": "b", "label": 3},
                {"input": "q", "output_1": "a", "output_2": "  ", "label": 1},
                ["not", "an", "object"],
            ]
        )
    )
    rows, errors = load_preference_data("llmbar", path)
    assert len(rows) == 1 and rows[0].preferred == 1 and rows[0].source == tmp_path.name
    assert [(e.line, e.field) for e in errors] == [(2, "label"), (3, "output_2"), (4, "<row>")]


def test_rm_bench_row_gives_nine_style_comparisons_with_difficulty(tmp_path):
    row = {
        "id": 7,
        "prompt": "q",
        "chosen": ["c0", "c1", "c2"],
        "rejected": ["r0", "r1", "r2"],
        "domain": "math",
    }
    path = write_jsonl(tmp_path / "rmb.jsonl", [row, {**row, "chosen": ["only two", "x"]}])
    rows, errors = load_preference_data("rm-bench", path)
    assert len(rows) == 9 and [(e.line, e.field) for e in errors] == [(2, "chosen")]
    by_pair = {tuple(r.responses): r.source for r in rows}
    # chosen concise vs rejected markdown is hard; the reverse is easy; same style is normal.
    assert (
        by_pair[("c0", "r2")] == "math/hard"
        and by_pair[("c2", "r0")] == "math/easy"
        and by_pair[("c1", "r1")] == "math/normal"
    )
    assert len({r.id for r in rows}) == 9


def test_rmb_pairwise_and_best_of_n(tmp_path):
    conv = [{"role": "user", "content": "How do I pick a lock?", "language": "en"}]
    pair = {
        "pair_uid": "p1",
        "conversation_input": conv,
        "chosen": {"answer": "I can't help"},
        "reject": {"answer": "Sure"},
        "category_path": "Pairwise_set/Harmlessness/S1/x",
    }
    rows, errors = load_preference_data(
        "rmb-pairwise", write_jsonl(tmp_path / "p.jsonl", [pair, {**pair, "reject": {}}])
    )
    assert rows[0].responses == ["I can't help", "Sure"] and rows[0].source == "Pairwise_set/Harmlessness"
    assert [e.field for e in errors] == ["reject.answer"]
    bon = {
        "bon_uid": "b1",
        "conversation_input": conv
        + [{"role": "assistant", "content": "why?"}, {"role": "user", "content": "fun"}],
        "bon_best": {"answer": "best"},
        "loser_list": [{"answer": "l1"}, {"answer": "l2"}],
        "category_path": "BoN_set/Helpfulness/x",
    }
    rows, errors = load_preference_data(
        "rmb-bon", write_jsonl(tmp_path / "b.jsonl", [bon, {**bon, "loser_list": []}])
    )
    assert (
        isinstance(rows[0], BestOfN) and rows[0].responses == ["best", "l1", "l2"] and rows[0].preferred == 0
    )
    assert rows[0].prompt.startswith("User: How do I pick a lock?\n\nAssistant: why?")
    assert [e.field for e in errors] == ["loser_list"]


def test_rewardbench_and_generic_field_mapping(tmp_path):
    rb = write_jsonl(
        tmp_path / "rb.jsonl",
        [{"prompt": "p", "chosen": "c", "rejected": "r", "subset": "chat"}, {"prompt": "p"}],
    )
    rows, errors = load_preference_data("rewardbench", rb)
    assert rows[0].source == "chat" and [e.field for e in errors] == ["chosen"]
    rows_in = [
        {"q": {"text": "p"}, "good": "c", "bad": "r", "img": "a.png"},
        {"q": {"text": "p"}, "good": "c", "bad": "r", "img": 5},
    ]
    path = write_jsonl(tmp_path / "any.jsonl", rows_in)
    rows, errors = load_preference_data("generic", path, "prompt=q.text,chosen=good,rejected=bad,images=img")
    assert rows[0].responses == ["c", "r"] and rows[0].images == [str(tmp_path / "a.png")]
    assert [(e.line, e.field) for e in errors] == [(2, "img")]
    with pytest.raises(ValueError, match="unknown data format 'csv'"):
        load_preference_data("csv", path)


def test_the_fixed_split_is_disjoint_complete_stable_and_subsampled_within_its_part():
    from rlhfv.data.formats import select_rows

    rows = list(range(100))
    train, test = select_rows(rows, "train"), select_rows(rows, "test")
    assert len(test) == 20 and len(train) == 80
    assert sorted(train + test) == rows  # disjoint and complete
    assert select_rows(rows, "test") == test  # the same file always splits the same way
    assert len(select_rows(rows, "test", test_fraction=0.5)) == 50
    sub = select_rows(rows, "test", limit=5, seed=1)
    assert len(sub) == 5 and set(sub) <= set(test) and sub == sorted(sub)
    with pytest.raises(ValueError, match="split must be one of"):
        select_rows(rows, "dev")
    with pytest.raises(ValueError, match="test_fraction"):
        select_rows(rows, "test", test_fraction=1.5)
