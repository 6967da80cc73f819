"""Judge examples map the label through the shown order; preference files load with their images."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from rlhfv.data.formats import PreferenceData
from rlhfv.data.pairs import (
    AnsweredPairs,
    ComparisonDrill,
    JudgeTask,
    SampledPairs,
    ShapesPairs,
    short_answer,
)
from rlhfv.data.shapes import ShapesVQA, mentioned


def test_judge_task_label_follows_the_shown_order():
    pairs = ShapesPairs(40)
    task = JudgeTask(pairs, seed=1)
    labels = []
    for i in range(40):
        example = task[i]
        shown_best = int(example.label)
        preferred_text = pairs[i].responses[pairs[i].preferred]
        assert f"[Response {shown_best + 1}]\n{preferred_text.strip()}\n" in example.prompt.text
        labels.append(shown_best)
    assert set(labels) == {0, 1}  # both positions occur


def test_judge_task_target_satisfies_its_own_rule_and_a_reversed_verdict_does_not():
    task = JudgeTask(ShapesPairs(6))
    for i in range(6):
        example = task[i]
        assert task.is_correct(example.answer, example)
        reversed_scores = [8, 8]
        reversed_scores[int(example.label)] = 3
        assert not task.is_correct(f"Scores: \\boxed{{{reversed_scores[0]}, {reversed_scores[1]}}}", example)
        assert not task.is_correct("Scores: \\boxed{5, 5}", example)  # a tie is wrong
        assert not task.is_correct("no scores at all", example)


def test_preference_file_loads_images_and_skips_bad_rows(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows = [
        {"prompt": "colour?", "responses": ["red", "blue"], "preferred": 0, "images": ["ok.png"]},
        {"prompt": "colour?", "responses": ["red", "blue"], "preferred": 1, "images": ["broken.png"]},
        {"prompt": "colour?", "responses": ["red"], "preferred": 0},
        {"prompt": "text only", "responses": ["a", "b"], "preferred": 1},
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    data = PreferenceData("jsonl", str(path))
    assert len(data) == 2
    assert data[0].prompt.images[0].size == (8, 8) and data[1].preferred == 1
    fields = sorted(e.field for e in data.errors)
    assert fields == ["<json>", "images", "responses"]


def test_answered_pairs_carry_short_answers_and_a_reference_into_the_compare_task(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "ok.png")
    row = {"id": "t1-r0-r1", "prompt": "What colour is the shape?", "responses": ["It is blue.", "It is red."],
           "preferred": 1, "images": ["ok.png"], "answers": ["blue", "red"], "reference": "It is red."}  # fmt: skip
    path = tmp_path / "loop.jsonl"
    path.write_text(json.dumps(row) + "\n{not json\n")
    data = AnsweredPairs(path)
    assert len(data) == 1 and data[0].answers == ["blue", "red"] and data[0].reference == "It is red."
    item = JudgeTask(data, analysis="compare", reading="given", shuffle=False)[0]
    assert "Response 1 says blue, the image shows red: wrong." in item.answer and item.label == "1"
    assert "It is red." in item.prompt.text  # the labelled winner is shown as the reading
    path.write_text(json.dumps({**row, "answers": ["blue"]}) + "\n")
    with pytest.raises(ValueError, match=r"loop.jsonl:1: field 'answers' must list two short answers"):
        AnsweredPairs(path)


def test_shapes_judge_target_grounds_its_analysis_in_the_reference_answer():
    pairs = ShapesPairs(5, tasks=["colour"])
    example = JudgeTask(pairs)[2]
    assert f"In the image: {pairs[2].reference}" in example.answer
    assert "In the image" not in JudgeTask(pairs).target(0)  # data without a reference: plain analysis


def test_compare_analysis_quotes_each_shown_answer_next_to_the_right_one():
    pairs = ShapesPairs(30)
    task = JudgeTask(pairs, seed=1, analysis="compare")
    for i in range(30):
        pair, example = pairs[i], task[i]
        best = int(example.label)
        truth = pair.answers[pair.preferred]
        assert task.is_correct(example.answer, example)
        for shown in range(2):
            verdict = "right" if shown == best else "wrong"
            said = truth if shown == best else pair.answers[1 - pair.preferred]
            assert f"Response {shown + 1} says {said}, the image shows {truth}: {verdict}." in example.answer
            assert f"[Response {shown + 1}]" in example.prompt.text


def test_compare_analysis_needs_short_answers_and_unknown_styles_are_refused(tmp_path):
    rows = [{"prompt": "colour?", "responses": ["red", "blue"], "preferred": 0}]
    (tmp_path / "p.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="short answer"):
        JudgeTask(PreferenceData("jsonl", str(tmp_path / "p.jsonl")), analysis="compare")[0]
    with pytest.raises(ValueError, match="'verdict' or 'compare'"):
        JudgeTask(ShapesPairs(2), analysis="quote")


def test_compact_judge_prompt_keeps_request_and_responses_only():
    pairs = ShapesPairs(3)
    full, compact = JudgeTask(pairs)[0], JudgeTask(pairs, compact=True)[0]
    assert compact.prompt.text.startswith("[User request]") and "Scores:" not in compact.prompt.text
    assert full.prompt.text.endswith(compact.prompt.text) and full.answer == compact.answer
    assert compact.prompt.images == full.prompt.images


def test_non_answer_pairs_replace_only_the_worse_response_and_keep_the_rest():
    plain, mixed = ShapesPairs(40), ShapesPairs(40, non_answers=0.5)
    replaced = 0
    for i in range(40):
        a, b = plain[i], mixed[i]
        assert (a.prompt.text, a.preferred, a.responses[a.preferred]) == (
            b.prompt.text,
            b.preferred,
            b.responses[b.preferred],
        )
        if b.answers[1 - b.preferred] == "nothing":
            replaced += 1
            assert not mentioned(b.responses[1 - b.preferred], b.answers[b.preferred])  # it answers nothing
        else:
            assert a == b
    assert 5 < replaced < 35
    with pytest.raises(ValueError, match="non_answers"):
        ShapesPairs(4, non_answers=2.0)


def test_given_reading_is_shown_last_and_the_verdicts_follow_it_even_when_it_is_a_misreading():
    pairs = ShapesPairs(60, seed=2)
    task = JudgeTask(pairs, analysis="compare", reading="given", misread=0.4)
    misread = 0
    for i in range(60):
        example, pair = task[i], pairs[i]
        assert example.prompt.text.endswith("[End of your answer]") and example.prompt.reading is None
        shown = example.prompt.text.rsplit("written before you saw the responses]\n", 1)[1].split("\n")[0]
        (answer,) = mentioned(shown, pair.answers[pair.preferred])  # the reading names one answer
        right_one = int(example.label)
        assert task.is_correct(example.answer, example)
        assert f"the image shows {answer}: right" in example.answer
        if answer != pair.answers[pair.preferred]:  # a misreading: the worse response is credited
            misread += 1
            assert answer == pair.answers[1 - pair.preferred]
            assert (
                f"[Response {right_one + 1}]\n{pair.responses[1 - pair.preferred].strip()}\n"
                in example.prompt.text
            )
    assert 10 < misread < 40


def test_self_reading_leaves_a_slot_that_the_question_alone_fills_and_reading_items_are_graded_as_answers():
    from rlhfv.types import READING_SLOT

    pairs = ShapesPairs(40, seed=2)
    example = JudgeTask(pairs, analysis="compare", reading="self")[0]
    assert READING_SLOT in example.prompt.text
    assert example.prompt.reading.text == pairs[0].prompt.text  # the question alone, no responses
    assert len(example.prompt.reading.images) == 1
    task = JudgeTask(pairs, analysis="compare", reading="given", reading_items=0.5)
    readings = [task[i] for i in range(40) if task[i].task == "reading"]
    assert 8 < len(readings) < 32
    for r in readings:
        assert READING_SLOT not in r.prompt.text and "[Response" not in r.prompt.text
        assert task.is_correct(r.answer, r) and not task.is_correct("I cannot tell.", r)


def test_reading_options_refuse_what_cannot_work():
    pairs = ShapesPairs(4)
    with pytest.raises(ValueError, match="analysis='compare'"):
        JudgeTask(pairs, reading="given")
    with pytest.raises(ValueError, match="misread"):
        JudgeTask(pairs, analysis="compare", reading="self", misread=0.2)
    with pytest.raises(ValueError, match="reading must be"):
        JudgeTask(pairs, analysis="compare", reading="yes")


def test_comparison_drill_targets_say_right_exactly_when_the_two_values_are_equal():
    drill, graded = ComparisonDrill(200, seed=4), ComparisonDrill(200, seed=4, verdict_only=True)
    equal = 0
    for i in range(200):
        item, item_graded = drill[i], graded[i]
        said, shown = item.answer.split(" says ")[1].split(", the image shows ")
        shown = shown.split(":")[0]
        assert item.label == ("right" if said == shown else "wrong") and item.answer.endswith(
            f"{item.label}."
        )
        equal += said == shown
        assert (
            item_graded.prompt.prefill + item_graded.answer == item.answer
        )  # same sentence, verdict as target
        assert drill.is_correct(item_graded.answer, item_graded)
        assert not drill.is_correct(" right." if item.label == "wrong" else " wrong.", item_graded)
    assert 70 < equal < 130


class ParityGraded(ShapesVQA):
    """ShapesVQA questions graded by a rule that a random or barely trained model's answers split
    (an even number of characters passes). The flagship's tiny test uses it too, by name."""

    @staticmethod
    def is_correct(text: str, example) -> bool:
        return len(text) % 2 == 0


def test_sampled_pairs_put_an_answer_the_checker_accepts_against_one_it_rejects():
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    data = ParityGraded(12, split="test", tasks=["count"])
    sample = {"samples": 4, "max_new_tokens": 6, "temperature": 1.0, "batch_size": 5}
    policy = tiny_qwen2_vl(seed=0)
    run_state = torch.random.get_rng_state()
    pairs = SampledPairs(policy, data, **sample)
    assert torch.equal(torch.random.get_rng_state(), run_state)  # the run's own sampling is untouched
    assert 0 < len(pairs) <= len(data)
    questions = {data[i].prompt.text for i in range(len(data))}
    for pair in pairs.pairs:
        better, worse = pair.responses[pair.preferred], pair.responses[1 - pair.preferred]
        assert len(better) % 2 == 0 and len(worse) % 2 == 1
        assert pair.prompt.text in questions and pair.prompt.images
        assert len(pair.answers) == 2 and pair.source == "sampled"
    assert {p.preferred for p in pairs.pairs} <= {0, 1}
    # the same seed gives the same pairs; the judge task reads them like any pairs
    again = SampledPairs(tiny_qwen2_vl(seed=0), data, **sample)
    assert [p.responses for p in again.pairs] == [p.responses for p in pairs.pairs]
    item = JudgeTask(pairs, analysis="compare", reading="self")[0]
    assert item.label in ("0", "1")


def test_sampled_pairs_refuse_data_without_a_checker_and_say_when_nothing_splits():
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    with pytest.raises(ValueError, match="is_correct"):
        SampledPairs(tiny_qwen2_vl(seed=0), [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        SampledPairs(tiny_qwen2_vl(seed=0), ParityGraded(2), samples=1)
    never = ShapesVQA(size=3, split="test")  # a random model never names the right answer alone
    with pytest.raises(ValueError, match="none of the 3 questions"):
        SampledPairs(tiny_qwen2_vl(seed=0), never, samples=2, max_new_tokens=4)


def test_short_answer_names_what_a_response_says_in_the_labels_kind():
    assert short_answer("There are 1 shapes.", "3") == "1"
    assert short_answer("There are is blue.", "2") == "nothing"
    assert short_answer("Red, or maybe blue.", "green") == "blue or red"
