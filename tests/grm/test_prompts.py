"""Judge prompts keep the output contract, carry images, and place principles and hints."""

from __future__ import annotations

import pytest
from PIL import Image

from rlhfv.grm.prompts import pointwise_prompt, verdict_prompt


def test_pointwise_prompt_lists_n_responses_in_order_and_asks_for_n_scores():
    prompt = pointwise_prompt("Name a prime.", ["7", "9", "11"])
    text = prompt.text
    assert text.index("[Response 1]\n7") < text.index("[Response 2]\n9") < text.index("[Response 3]\n11")
    assert "Scores: \\boxed{s1, s2, s3}" in text and "Specific Criteria:" in text and "Analysis:" in text
    assert prompt.images == [] and "image" not in text.split("[User request]")[0]
    assert "\\boxed{s1}" in pointwise_prompt("q", ["only one"]).text
    with pytest.raises(ValueError, match="at least one response"):
        pointwise_prompt("q", [])


def test_multimodal_prompt_carries_images_and_principles_and_hint_variants():
    image = Image.new("RGB", (5, 7), "red")
    prompt = pointwise_prompt(
        "What colour?", ["red", "blue"], [image], principles="Be faithful to the image.", hint_best=1
    )
    assert prompt.images == [image] and "image(s) shown above" in prompt.text
    assert "follow these principles:\nBe faithful to the image." in prompt.text
    assert prompt.text.endswith("The best response is: Response 2")  # hint_best is 0-based


def test_verdict_prompt_asks_for_think_end_then_a_bracketed_letter():
    text = verdict_prompt("q", "first", "second").text
    assert "</think>" in text and "[[A]]" in text and "[[B]]" in text
    assert text.index("[Answer A]\nfirst") < text.index("[Answer B]\nsecond")
