"""Tiny Hugging Face VLMs: the ChatModel contract for every family, LoRA, save/load, bad input."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rlhfv.models import hf_vlm
from rlhfv.models.base import load_model, save_model
from rlhfv.rollout import generate
from rlhfv.types import Prompt

FAMILIES = ["tiny_qwen2_vl", "tiny_qwen2_5_vl", "tiny_llava", "tiny_idefics3", "tiny_gemma3"]


def _prompts() -> list[Prompt]:
    # Different sizes and lengths: one image is not square, the second prompt is longer (padding).
    return [
        Prompt("How many shapes are there?", [Image.new("RGB", (96, 96), (220, 40, 40))]),
        Prompt(
            "What colour is the circle in the picture?",
            [Image.new("RGB", (64, 80), (40, 80, 220))],
            "Be brief.",
        ),
    ]


def _append(batch: dict[str, torch.Tensor], completion: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rlhfv training convention: completion tokens [B, T] appended right of the prompt."""
    mask = torch.ones_like(completion)
    return {
        **batch,
        "input_ids": torch.cat([batch["input_ids"], completion], dim=1),
        "attention_mask": torch.cat([batch["attention_mask"], mask], dim=1),
    }


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param, getattr(hf_vlm, request.param)(seed=0)


def test_encoder_left_pads_and_expands_each_image_into_placeholder_tokens(family):
    name, model = family
    batch = model.encoder(_prompts())
    mask = batch["attention_mask"]  # [B, P]
    assert mask[:, -1].all() and not mask[0, 0], "the shorter prompt must be padded on the left"
    image_id = model.module.config.image_token_id  # Gemma-3's processor gives its image-start token here
    counts = (batch["input_ids"] == image_id).sum(dim=1).tolist()
    # 96×96 gives 16 tokens in every family; Qwen keeps the 64×80 aspect ratio (a 4×5 merged grid).
    assert counts == ([16, 20] if "qwen" in name else [16, 16])


def test_generation_with_images_never_samples_an_image_placeholder(family):
    _, model = family
    assert model.encoder.processor.image_token_id in model.suppressed_tokens
    torch.manual_seed(0)
    out = generate(model, _prompts(), group_size=4, max_new_tokens=8, temperature=2.0)
    completion = out.completion_ids[out.completion_mask.bool()]  # sampled tokens of all 8 rows
    assert not torch.isin(completion, torch.tensor(model.suppressed_tokens)).any()


def test_forward_with_appended_completion_keeps_prompt_logits_and_covers_every_token(family):
    _, model = family
    batch = model.encoder(_prompts())
    completion = torch.randint(60, 200, (2, 5))  # ordinary text tokens, [B, T]
    with torch.no_grad():
        prompt_logits = model.module(**batch).logits  # [B, P, V]
        full_logits = model.module(**_append(batch, completion)).logits  # [B, P+T, V]
    P = batch["input_ids"].shape[1]
    assert full_logits.shape == (2, P + 5, len(model.tokenizer))
    # Causal attention: appending tokens on the right must not change any prompt position.
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(full_logits[:, :P][real], prompt_logits[real], rtol=1e-4, atol=1e-4)


def test_training_forward_reproduces_the_scores_seen_while_generating(family):
    """Left-padded rows included: rollout log-probabilities must match what was sampled."""
    _, model = family
    batch = model.encoder(_prompts())
    out = model.module.generate(
        **batch, max_new_tokens=4, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    P = batch["input_ids"].shape[1]
    scores = torch.stack(out.scores, dim=1)  # [B, T, V]
    with torch.no_grad():
        logits = model.module(**_append(batch, out.sequences[:, P:])).logits[:, P - 1 : -1]  # [B, T, V]
    finite = scores.isfinite()
    torch.testing.assert_close(logits[finite], scores[finite], rtol=1e-4, atol=1e-4)


def test_the_image_changes_the_logits(family):
    _, model = family
    red, blue = (
        _prompts()[0],
        Prompt("How many shapes are there?", [Image.new("RGB", (96, 96), (40, 80, 220))]),
    )
    with torch.no_grad():
        a = model.module(**model.encoder([red])).logits[0, -1]
        b = model.module(**model.encoder([blue])).logits[0, -1]
    assert (a - b).abs().max() > 1e-4


def test_save_and_load_give_identical_logits(family, tmp_path):
    _, model = family
    save_model(model, tmp_path)
    loaded = load_model(str(tmp_path))
    batch, again = model.encoder(_prompts()), loaded.encoder(_prompts())
    assert batch.keys() == again.keys()
    for key in batch:
        assert torch.equal(batch[key], again[key]), key
    inputs = _append(batch, torch.randint(60, 200, (2, 3)))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.module(**inputs).logits, model.module(**inputs).logits, rtol=0, atol=0
        )
    assert loaded.suppressed_tokens == model.suppressed_tokens and model.suppressed_tokens


@pytest.mark.parametrize("name", ["tiny_qwen2_vl", "tiny_idefics3"])
def test_lora_trains_only_language_model_adapters_and_saves_merged(name, tmp_path):
    model = getattr(hf_vlm, name)(lora={"r": 4, "alpha": 8})
    trainable = [n for n, p in model.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision" in n or "visual" in n for n in trainable)
    with torch.no_grad():  # adapters start as a no-op (B = 0); move them so merging matters
        for n, p in model.module.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    batch = model.encoder(_prompts())
    save_model(model, tmp_path)  # merges the adapters into the base weights
    loaded = load_model(str(tmp_path))
    assert not hasattr(loaded.module, "peft_config")
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.module(**batch).logits, model.module(**batch).logits, rtol=1e-4, atol=1e-4
        )


def test_bf16_model_takes_bf16_pixels():
    model = hf_vlm.tiny_llava(dtype="bfloat16")
    batch = model.encoder(_prompts())
    assert batch["pixel_values"].dtype == torch.bfloat16
    assert model.module(**batch).logits.dtype == torch.bfloat16


def test_load_hf_vlm_names_a_missing_folder_and_a_text_only_model(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.raises(FileNotFoundError, match="no-such-model"):
        hf_vlm.load_hf_vlm(str(tmp_path / "no-such-model"))
    config = LlamaConfig(
        vocab_size=51, hidden_size=8, intermediate_size=14, num_hidden_layers=1, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "text-lm")
    with pytest.raises(ValueError, match="text-lm does not hold an image-text-to-text model"):
        hf_vlm.load_hf_vlm(str(tmp_path / "text-lm"))


def test_bad_builder_arguments_are_named():
    with pytest.raises(ValueError, match="image_size=100"):
        hf_vlm.tiny_llava(image_size=100)
    with pytest.raises(ValueError, match="rank"):
        hf_vlm.tiny_llava(lora={"rank": 4})


def test_prefill_starts_the_assistant_turn_after_the_images(family):
    name, model = family
    prompts = _prompts()
    plain = model.encoder(prompts)["input_ids"]
    prompts[0].prefill = prompts[1].prefill = "Scores: \\boxed{"
    filled = model.encoder(prompts)["input_ids"]
    tokenizer = model.encoder.processor.tokenizer
    assert tokenizer.decode(filled[0]).endswith("Scores: \\boxed{")
    assert filled.shape[1] > plain.shape[1]


@pytest.mark.parametrize("name", ["tiny_qwen2_vl", "tiny_qwen2_5_vl"])
def test_qwen_kv_heads_sets_how_many_heads_have_their_own_keys(name):
    model = getattr(hf_vlm, name)(seed=0, kv_heads=3)
    assert model.module.config.text_config.num_key_value_heads == 3
    out = model.module.generate(**model.encoder(_prompts()), max_new_tokens=2, do_sample=False)
    assert out.shape[0] == 2


def test_processor_options_reach_each_familys_processor(tmp_path):
    from rlhfv.models.base import save_model

    save_model(hf_vlm.tiny_qwen2_vl(), tmp_path / "qwen")
    budget = {"shortest_edge": 48 * 48, "longest_edge": 48 * 48}  # pixels per image
    qwen = hf_vlm.load_hf_vlm(str(tmp_path / "qwen"), processor={"size": budget})
    assert qwen.encoder(_prompts())["image_grid_thw"][0].tolist() == [1, 4, 4]  # 96×96 scaled to 48×48
    save_model(hf_vlm.tiny_idefics3(), tmp_path / "idefics3")
    idefics = hf_vlm.load_hf_vlm(str(tmp_path / "idefics3"), processor={"do_image_splitting": True})
    assert idefics.encoder.processor.image_processor.do_image_splitting is True
