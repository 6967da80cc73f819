"""A vision-language judge served over HTTP sees the request's image: base64 or a path under the
image root give the in-process judge's verdict on that image."""

from __future__ import annotations

import base64

import httpx
import pytest

from rlhfv.rewards.grm import GRMJudge
from rlhfv.types import Prompt
from tests.serve.judges import grm_server


@pytest.mark.slow
def test_a_served_vlm_judge_judges_the_image_sent_as_base64_or_path(tmp_path):
    import torch
    from PIL import Image

    from rlhfv.models.base import load_model, save_model, seeded
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    vlm = tiny_qwen2_vl(seed=0)
    with seeded(1), torch.no_grad():  # weights at std 0.3: what it writes depends on the image
        for weight in vlm.module.parameters():
            if weight.dim() >= 2:
                weight.normal_(0, 0.3)
    save_model(vlm, tmp_path / "vlm")
    model = load_model(str(tmp_path / "vlm"))
    root = tmp_path / "images"
    root.mkdir()
    Image.effect_noise((28, 28), 120).convert("RGB").save(root / "noise.png")
    image = Image.open(root / "noise.png").convert("RGB")
    question, a, b = "How many shapes are there?", "There are 2 shapes.", "There are 3 shapes."
    judge = GRMJudge(model, max_new_tokens=6, device="cpu", force=True)
    [with_image] = judge([Prompt(question, [image])], [a], [b])
    text_with_image = judge.last_texts[0]
    judge([Prompt(question)], [a], [b])
    assert judge.last_texts[0] != text_with_image  # the image changes what this judge writes
    data = base64.b64encode((root / "noise.png").read_bytes()).decode()
    with grm_server(tmp_path / "vlm", "--max-new-tokens", "6", "--image-root", str(root)) as url:
        for ref in ({"data": data}, {"path": "noise.png"}):
            got = httpx.post(
                url + "/v1/pairwise",
                json={"question": question, "a": a, "b": b, "images": [ref]},
                timeout=120,
            )
            assert got.status_code == 200, got.text
            assert got.json()["text"] == text_with_image
            assert got.json()["scores"] == (list(with_image) if with_image else None)
