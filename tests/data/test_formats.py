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
    assert (
        rows[0].responses == ["I can't help", "Sure"] and rows[0].source == "Pairwise_set/Harmlessness/S1/x"
    )  # the whole category path
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


def rm_bench_row(uid: int, subset: str) -> dict:
    styles = ("concise", "detailed", "markdown")
    return {
        "id": uid,
        "subset": subset,
        "prompt": f"question {uid}",
        "chosen": [f"right, {s}" for s in styles],
        "rejected": [f"wrong, {s}" for s in styles],
    }


def test_rm_bench_names_the_subset_from_its_subset_field_and_a_level_for_each_style_pair(tmp_path):
    path = write_jsonl(tmp_path / "total_dataset.jsonl", [rm_bench_row(1, "safety-refuse")])
    rows, errors = load_preference_data("rm-bench", path)
    assert not errors and len(rows) == 9
    # chosen style i against rejected style j: hard when the chosen one is plainer (i < j).
    levels = {r.id: r.source for r in rows}
    assert levels["1-01"] == "safety-refuse/hard" and levels["1-11"] == "safety-refuse/normal"
    assert levels["1-20"] == "safety-refuse/easy"
    assert sorted(r.source.split("/")[1] for r in rows).count("hard") == 3


def test_limit_counts_prompts_so_each_rm_bench_prompt_keeps_its_nine_pairs(tmp_path):
    from rlhfv.data.formats import select_rows

    subsets = ["chat", "code", "math", "safety-refuse", "safety-response"]
    path = write_jsonl(tmp_path / "rm.jsonl", [rm_bench_row(i, subsets[i % 5]) for i in range(20)])
    rows, _ = load_preference_data("rm-bench", path)
    picked = select_rows(rows, limit=4, seed=3)
    assert len(picked) == 36 and len({r.prompt for r in picked}) == 4
    assert [r.source.split("/")[1] for r in picked].count("hard") == 12  # a third of the pairs each
    train, test = select_rows(rows, "train"), select_rows(rows, "test")
    assert len(test) == 4 * 9 and not {r.prompt for r in train} & {r.prompt for r in test}


def test_llmbar_ids_carry_the_subset_so_two_subsets_never_share_one(tmp_path):
    row = {"input": "q", "output_1": "a", "output_2": "b", "label": 1}
    ids = []
    for subset in ("Natural", "Adversarial"):
        (tmp_path / subset).mkdir()
        (tmp_path / subset / "dataset.json").write_text(json.dumps([row, row]))
        rows, _ = load_preference_data("llmbar", tmp_path / subset / "dataset.json")
        ids += [r.id for r in rows]
    assert ids == ["Natural/dataset-1", "Natural/dataset-2", "Adversarial/dataset-1", "Adversarial/dataset-2"]


def test_llmbar_shared_subsets_have_disjoint_ids(shared_data):
    ids = []
    for folder in ("Natural", "Processed/FairEval", "Processed/MT-Bench"):
        rows, _ = load_preference_data("llmbar", shared_data / "llmbar" / folder / "dataset.json")
        ids += [r.id for r in rows]
    assert len(ids) == len(set(ids)) > 100


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_every_reader_reports_the_first_twenty_row_errors_then_a_count(tmp_path, caplog, suffix):
    bad = [{"input": "q", "output_1": "a", "output_2": "b", "label": 9}] * 25
    good = [{"input": "q", "output_1": "a", "output_2": "b", "label": 1}]
    path = tmp_path / f"dataset{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(good + bad))
    else:
        write_jsonl(path, good + bad)
    with caplog.at_level("WARNING"):
        rows, errors = load_preference_data("llmbar", path)
    messages = [r.getMessage() for r in caplog.records]
    assert len(rows) == 1 and len(errors) == 25
    assert len(messages) == 22 and messages[0].startswith(f"skipped {path}:2: field 'label'")
    assert messages[20] == "skipped ... and 5 more skipped rows"
    assert messages[21] == f"{path}: kept 1 rows, skipped 25 malformed rows"


def test_the_training_jsonl_reader_reports_row_errors_the_same_way(tmp_path, caplog):
    from rlhfv.data.jsonl import JsonlExamples

    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "p", "answer": "a"}] + [{"prompt": "p"}] * 21)
    with caplog.at_level("WARNING"):
        JsonlExamples(path)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 22 and messages[20] == "skipped ... and 1 more skipped rows"
