"""Data sets through `datasets.load_dataset`: the common schemas, lazy images, bad rows, recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from rlhfv.cli import main as cli
from rlhfv.data.hub_data import HubExamples, HubPairs
from rlhfv.data.schemas import from_messages, from_trl_preference, from_vlfeedback


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """datasets writes its Arrow cache under the test's folder, never the user's."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", Path(tmp_path / "datasets-cache"))


def picture(colour: str, size: int = 40) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def write_parquet(path: Path, n: int, broken: set[int] = frozenset()) -> Path:
    """n image+text rows; rows in `broken` hold bytes that are no image."""
    import io

    import datasets

    rows = {"image": [], "question": [], "answer": []}
    for i in range(n):
        buffer = io.BytesIO()
        picture(("red", "blue")[i % 2]).save(buffer, format="PNG")
        data = b"not a png" if i in broken else buffer.getvalue()
        rows["image"].append({"bytes": data, "path": None})
        rows["question"].append("What colour is the picture?")
        rows["answer"].append(("red", "blue")[i % 2])
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
    )
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


def test_parquet_rows_come_back_as_examples_with_their_images(tmp_path):
    data = HubExamples(str(write_parquet(tmp_path / "rows.parquet", 4)))
    assert len(data) == 4
    example = data[1]
    assert example.prompt.text == "What colour is the picture?" and example.answer == "blue"
    assert example.prompt.images[0].getpixel((0, 0)) == (0, 0, 255)


def test_an_undecodable_image_names_the_row_and_the_field(tmp_path):
    data = HubExamples(str(write_parquet(tmp_path / "rows.parquet", 3, broken={1})))
    with pytest.raises(ValueError, match=r"rows\.parquet.*row 1, field 'images': not a readable image"):
        data[1]


def test_skip_bad_rows_reads_the_next_good_row_and_counts_the_bad_one(tmp_path):
    data = HubExamples(str(write_parquet(tmp_path / "rows.parquet", 3, broken={1})), skip_bad_rows=True)
    assert data[1].answer == "red"  # row 2 stood in for row 1
    assert data[1].answer == "red" and data.bad_rows == 1  # counted once


def test_a_column_the_schema_needs_is_named_with_the_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"pairs\.jsonl.*column 'rejected' is needed by the 'rlaif-v'"):
        HubPairs(str(path), schema="rlaif-v")
    (tmp_path / "text.jsonl").write_text(json.dumps({"text": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"text\.jsonl.*no schema fits the columns \['text'\]"):
        HubExamples(str(tmp_path / "text.jsonl"))


def test_trl_conversational_rows_with_image_parts_give_prompt_system_and_answer():
    row = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
        ],
        "images": ["img"],
    }
    parts = from_messages(row)
    assert (parts.system, parts.text, parts.answer, parts.images) == ("Be brief.", "Colour?", "Red.", ["img"])


def test_llava_and_sharegpt_conversations_drop_the_image_marker():
    llava = {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                                 {"from": "gpt", "value": "A cat."}]}  # fmt: skip
    parts = from_messages(llava, "conversations")
    assert (parts.text, parts.answer, parts.images) == ("What is it?", "A cat.", ["a.png"])
    sharegpt = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                  {"from": "human", "value": "Bye?"}, {"from": "gpt", "value": "Bye."}]}  # fmt: skip
    parts = from_messages(sharegpt, "conversations")
    assert parts.text == "User: Hi\n\nAssistant: Hello\n\nUser: Bye?" and parts.answer == "Bye."


def test_trl_preference_without_a_prompt_takes_the_shared_leading_messages():
    user = {"role": "user", "content": "Which is larger, 3 or 5?"}
    row = {"chosen": [user, {"role": "assistant", "content": "5"}],
           "rejected": [user, {"role": "assistant", "content": "3"}]}  # fmt: skip
    parts = from_trl_preference(row)
    assert (parts.text, parts.responses, parts.preferred) == ("Which is larger, 3 or 5?", ["5", "3"], 0)


def test_vlfeedback_pairs_the_best_rated_completion_against_the_worst():
    def rated(text, *ratings):
        return {"response": text, "annotations": {f"a{i}": {"Rating": str(r)} for i, r in enumerate(ratings)}}

    row = {
        "prompt": "Describe.",
        "completions": [rated("ok", 3, 3), rated("great", 5, "N/A"), rated("bad", 1, 2)],
    }
    assert from_vlfeedback(row).responses == ["great", "bad"]


def test_rlaif_v_rows_and_a_generic_mapping_read_the_same_pairs(tmp_path):
    path = tmp_path / "rlaifv.jsonl"
    rows = [{"question": "Colour?", "chosen": "red", "rejected": "blue", "idx": 7, "ds_name": "shapes"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pair = HubPairs(str(path))[0]
    assert (pair.prompt.text, pair.responses, pair.id, pair.source) == (
        "Colour?",
        ["red", "blue"],
        "7",
        "shapes",
    )
    mapped = HubPairs(
        str(path), mapping={"prompt": "question", "a": "rejected", "b": "chosen", "label": "b_won"}
    )
    with pytest.raises(ValueError, match="row 0, field 'b_won'"):
        mapped[0]
    mapped = HubPairs(str(path), mapping={"prompt": "question", "chosen": "chosen", "rejected": "rejected"})
    assert mapped[0].responses == ["red", "blue"]


def test_a_streamed_set_keeps_its_first_limit_rows(tmp_path):
    path = write_parquet(tmp_path / "rows.parquet", 6)
    with pytest.raises(ValueError, match="needs `limit`"):
        HubExamples(str(path), streaming=True)
    data = HubExamples(str(path), streaming=True, limit=3)
    assert len(data) == 3 and [data[i].answer for i in range(3)] == ["red", "blue", "red"]


def write_recipe(path: Path, pipeline: str, train_data: str, run_dir: Path) -> Path:
    path.write_text(
        f"pipeline: {pipeline}\n"
        f"run: {{name: t, dir: {run_dir}, seed: 0}}\n"
        "policy: {_component_: rlhfv.models.hf_vlm.tiny_qwen2_vl, hidden_size: 36}\n"
        f"train_data: {train_data}\n"
        "optimizer: {_component_: torch.optim.AdamW, lr: 0.001}\n"
        "steps: 2\nbatch_size: 2\nlog_every: 1\neval_every: 0\n"
    )
    return path


@pytest.mark.slow
def test_sft_trains_two_steps_on_a_local_parquet_of_image_rows(tmp_path):
    data = write_parquet(tmp_path / "rows.parquet", 8)
    node = f"{{_component_: rlhfv.data.hub_data.HubExamples, path: {data}, split: train}}"
    recipe = write_recipe(tmp_path / "sft.yaml", "rlhfv.pipelines.sft.main", node, tmp_path / "run")
    assert cli(["run", str(recipe)]) == 0
    assert (tmp_path / "run" / "final" / "rlhfv_model.json").is_file()


@pytest.mark.slow
def test_sft_trains_on_a_llava_json_file_with_images_beside_it(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for i, colour in enumerate(["red", "blue", "green", "red"]):
        picture(colour).save(tmp_path / "img" / f"{i}.png")
        rows.append({"id": str(i), "image": f"img/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": colour}]})  # fmt: skip
    (tmp_path / "llava.json").write_text(json.dumps(rows))
    node = f"{{_component_: rlhfv.data.hub_data.HubExamples, path: {tmp_path / 'llava.json'}}}"
    recipe = write_recipe(tmp_path / "sft.yaml", "rlhfv.pipelines.sft.main", node, tmp_path / "run")
    assert cli(["run", str(recipe)]) == 0
    assert (tmp_path / "run" / "final" / "rlhfv_model.json").is_file()


@pytest.mark.slow
def test_dpo_trains_on_a_trl_preference_set_with_images(tmp_path):
    import datasets

    def said(role, text):
        return [{"role": role, "content": [{"type": "text", "text": text}]}]

    rows = {
        "images": [[picture(c)] for c in ("red", "blue", "green", "red")],
        "prompt": [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]]
        * 4,
        "chosen": [said("assistant", c) for c in ("red", "blue", "green", "red")],
        "rejected": [said("assistant", "purple")] * 4,
    }
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "pairs.parquet"))
    node = f"{{_component_: rlhfv.data.hub_data.HubPairs, path: {tmp_path / 'pairs.parquet'}}}"
    recipe = write_recipe(tmp_path / "dpo.yaml", "rlhfv.pipelines.dpo.main", node, tmp_path / "run")
    assert cli(["run", str(recipe)]) == 0
    assert (tmp_path / "run" / "final" / "rlhfv_model.json").is_file()
