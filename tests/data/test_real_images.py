"""Real photos and prompts (../shared/data) flow through the same example and batch types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhfv.data.jsonl import JsonlExamples
from rlhfv.rollout import generate
from rlhfv.training.batching import sft_loss


@pytest.mark.slow
def test_real_photos_train_and_generate_with_a_tiny_vlm(shared_data, tmp_path):
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    source = shared_data / "rlaifv_example_images_prompts"
    rows = [json.loads(line) for line in (source / "detail_test_30_input.jsonl").read_text().splitlines()[:4]]
    # the three .jpg files that are really WebP are among the 30; pick them too if present
    webp = [
        r
        for r in map(json.loads, (source / "detail_test_30_input.jsonl").read_text().splitlines())
        if "Leptis_Magna" in r["image_path"]
    ]
    path = tmp_path / "real.jsonl"
    with path.open("w") as f:
        for r in rows + webp:
            image = Path("imgs_detail") / Path(r["image_path"]).name
            f.write(
                json.dumps({"prompt": r["question"], "answer": "A photo.", "images": [str(image)]}) + "\n"
            )
    data = JsonlExamples(str(path), image_root=str(source))
    assert len(data) == len(rows) + len(webp) and not data.errors
    model = tiny_qwen2_vl()
    examples = [data[i] for i in range(len(data))]
    loss, tokens = sft_loss(model, examples, torch.device("cpu"))
    assert torch.isfinite(loss) and tokens > 0
    loss.backward()
    assert len(generate(model, [e.prompt for e in examples[:2]], 1, max_new_tokens=4, greedy=True).texts) == 2


def test_rows_with_escaping_missing_or_corrupt_images_are_reported_and_skipped(tmp_path):
    from PIL import Image

    Image.new("RGB", (6, 6)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    rows = [
        {"prompt": "p", "answer": "a", "images": ["ok.png"]},
        {"prompt": "p", "answer": "a", "images": ["../../etc/passwd"]},
        {"prompt": "p", "answer": "a", "images": ["missing.png"]},
        {"prompt": "p", "answer": "a", "images": ["bad.png"]},
        {"prompt": "", "answer": "a"},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = JsonlExamples(str(path))
    assert len(data) == 1
    messages = [str(e) for e in data.errors]
    assert any("escapes" in m for m in messages) and any("not found" in m for m in messages)
    assert any("not a readable image" in m for m in messages) and any("'prompt'" in m for m in messages)
    assert all(":" in m and "d.jsonl" in m for m in messages)  # file:line: field: message
