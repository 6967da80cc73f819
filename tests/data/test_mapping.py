"""The generic format: any preference file through a field mapping, with label fields and votes."""

from __future__ import annotations

import json

import pytest

from rlhfv.data.formats import PreferenceData, load_preference_data
from rlhfv.data.mapping import label_side, parse_mapping, vote_outcome

VOTES = "prompt=instruction,a=response1,b=response2,label=annotator1+annotator2+annotator3"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def annotated(votes: tuple) -> dict:
    """A row shaped like a multi-annotator pairwise set: 1 = response1, 2 = response2, 0 = tie."""
    return {
        "instruction": f"q{votes}",
        "response1": "first answer",
        "response2": "second answer",
        **{f"annotator{i + 1}": v for i, v in enumerate(votes)},
    }


@pytest.fixture
def multi_annotator(tmp_path):
    rows = [(1, 1, 2), (2, 2, 0), (1, 2, 0), (0, 0, 1), (2, 2, 2), (1, 0, 0)]
    return write_jsonl(tmp_path / "pairs.jsonl", [annotated(v) for v in rows])


def test_a_multi_annotator_file_loads_through_the_mapping_with_ties_kept_as_ties(multi_annotator):
    rows, errors = load_preference_data("generic", multi_annotator, VOTES)
    assert not errors and [r.responses for r in rows[:1]] == [["first answer", "second answer"]]
    # Majority of the three votes cast (tie votes count): 1,1,2 → first; 2,2,0 → second;
    # 1,2,0 → no side has two → tie; 0,0,1 → tie; 2,2,2 → second; 1,0,0 → tie.
    assert [r.preferred for r in rows] == [0, 1, None, None, 1, None]
    rows, _ = load_preference_data("generic", multi_annotator, VOTES + ",vote=plurality")
    # Plurality: tie votes abstain; 1,2,0 is still a tie (one each), 0,0,1 and 1,0,0 go to the first.
    assert [r.preferred for r in rows] == [0, 1, None, 0, 1, 0]


def test_votes_combine_by_majority_or_plurality_and_an_even_split_is_a_tie():
    assert vote_outcome(["a", "a", "b"]) == 0 and vote_outcome(["b", "b", "tie"]) == 1
    assert vote_outcome(["a", "b"]) is None and vote_outcome(["a", "tie"]) is None  # 1 of 2 is no majority
    assert vote_outcome(["a", "tie"], "plurality") == 0 and vote_outcome(["a", "b"], "plurality") is None
    assert vote_outcome(["tie"]) is None


def test_a_label_names_a_side_by_number_letter_arena_name_or_text_and_refuses_anything_else():
    texts = ["yes", "no"]
    assert [label_side(v, texts) for v in (1, "2", "A", "b", "model_b", 0, "tie", 1.0, "no", None, " ")] == [
        "a", "b", "a", "b", "b", "tie", "tie", "a", "b", None, None,
    ]  # fmt: skip
    assert label_side(float("nan"), texts) is None  # a spreadsheet's empty cell: this vote abstains
    for bad in (3, "maybe", True):
        with pytest.raises(ValueError, match="names no response|must be 1/2"):
            label_side(bad, texts)


def test_a_single_label_column_and_a_bad_vote_are_read_per_row(tmp_path):
    path = write_jsonl(
        tmp_path / "one.jsonl",
        [
            {"q": "p", "x": "alpha", "y": "beta", "winner": "B"},
            {"q": "p", "x": "alpha", "y": "beta", "winner": "alpha"},
            {"q": "p", "x": "alpha", "y": "beta", "winner": 7},
            {"q": "p", "x": "alpha", "y": "beta"},
        ],
    )
    rows, errors = load_preference_data("generic", path, "prompt=q,a=x,b=y,label=winner")
    assert [r.preferred for r in rows] == [1, 0]
    assert [(e.line, e.field) for e in errors] == [(3, "winner"), (4, "winner")]
    assert "got '7'" in errors[0].message and "every label field is empty" in errors[1].message


def test_a_mapping_that_matches_no_row_names_the_missing_field(multi_annotator):
    with pytest.raises(
        ValueError, match=r"matches no row: field 'question' is bad in 6 of 6 rows.*'instruction'"
    ):
        load_preference_data("generic", multi_annotator, VOTES.replace("=instruction", "=question"))


def test_mappings_are_checked_before_any_row_is_read():
    with pytest.raises(ValueError, match=r"unknown mapping key 'lable'; did you mean 'label'"):
        parse_mapping("a=x,b=y,lable=z")
    with pytest.raises(ValueError, match="a and b need a label field; missing label"):
        parse_mapping("a=x,b=y")
    with pytest.raises(ValueError, match="either a, b and label, or chosen and rejected"):
        parse_mapping("a=x,b=y,label=z,chosen=c")
    with pytest.raises(ValueError, match="vote must be one of"):
        parse_mapping("a=x,b=y,label=z,vote=consensus")
    with pytest.raises(ValueError, match="each part must be key=field"):
        parse_mapping("a=x,b")
    assert parse_mapping({})["chosen"] == "chosen"  # the rewardbench-like default


def test_a_yaml_mapping_file_and_a_recipe_data_node_read_the_same_pairs(multi_annotator, tmp_path):
    from omegaconf import OmegaConf

    from rlhfv.config import instantiate

    yaml_file = tmp_path / "map.yaml"
    yaml_file.write_text(
        "prompt: instruction\na: response1\nb: response2\nlabel: [annotator1, annotator2, annotator3]\n"
    )
    from_yaml, _ = load_preference_data("generic", multi_annotator, str(yaml_file))
    from_cli, _ = load_preference_data("generic", multi_annotator, VOTES)
    assert from_yaml == from_cli
    node = OmegaConf.create(
        {
            "_component_": "rlhfv.data.formats.PreferenceData",
            "format": "generic",
            "path": str(multi_annotator),
            "mapping": {"prompt": "instruction", "a": "response1", "b": "response2", "label": "annotator1"},
        }
    )
    data = instantiate(node)
    # annotator1 alone: 1,2,1,0,2,1 → one tie, left out of training and counted.
    assert isinstance(data, PreferenceData) and data.ties == 1
    assert [p.preferred for p in data] == [0, 1, 0, 1, 0]


def test_a_mapping_given_to_a_built_in_format_is_refused(multi_annotator):
    with pytest.raises(ValueError, match="only applies to the 'generic' format, not 'llmbar'"):
        load_preference_data("llmbar", multi_annotator, VOTES)


def test_a_prompt_joins_instruction_and_input_and_an_empty_response_is_kept(tmp_path, caplog):
    rows = [
        {"instruction": "Summarise this.", "input": "The cat sat on the mat all day.", "r1": "", "r2": "A cat sat.", "v": 2},
        {"instruction": "Say hi.", "input": "", "r1": "hi", "r2": True, "v": 1},  # no input: the instruction alone
        {"instruction": "Count.", "r1": 3, "r2": "three", "v": "tie"},
        {"instruction": "Lost.", "r1": "kept", "v": 1},  # r2 absent: a response may be empty, not missing
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "instruct.jsonl", rows)
    with caplog.at_level("WARNING"):
        loaded, errors = load_preference_data("generic", path, "prompt=instruction+input,a=r1,b=r2,label=v")
    assert loaded[0].prompt == "Summarise this.\n\nThe cat sat on the mat all day."  # JOIN is a blank line
    assert loaded[0].responses == ["", "A cat sat."] and loaded[0].preferred == 1
    assert loaded[1].prompt == "Say hi." and loaded[1].responses == ["hi", "true"]  # JSON true as its text
    assert loaded[2].responses == ["3", "three"] and loaded[2].preferred is None
    assert [(e.line, e.field) for e in errors] == [(4, "r2")]
    assert "kept 1 empty and 2 non-string responses" in caplog.text


def test_a_nan_or_missing_vote_abstains_and_the_others_decide(tmp_path):
    nan = float("nan")
    rows = [annotated((1, 1, nan)), annotated((2, None, 2)), {**annotated((1, 1)), "annotator3": None}]
    path = tmp_path / "nan.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes NaN, as pandas exports do
    loaded, errors = load_preference_data("generic", path, VOTES)
    assert not errors and [r.preferred for r in loaded] == [0, 1, 0]  # 2 of 2 votes cast: a majority


def test_unanimous_needs_every_vote_cast(multi_annotator):
    rows, _ = load_preference_data("generic", multi_annotator, VOTES + ",vote=unanimous")
    # 1,1,2 → tie; 2,2,0 → tie (a tie vote breaks unanimity); 2,2,2 → second; the rest tie.
    assert [r.preferred for r in rows] == [None, None, None, None, 1, None]
