"""clip_lm: open_clip tower + projector + causal LM behaves like the other ChatModels and trains."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rlhfv.data.shapes import ShapesVQA
from rlhfv.models.base import load_model, save_model
from rlhfv.models.clip_lm import CHATML_TEMPLATE, build_clip_lm, load_clip_lm, tiny_clip_lm
from rlhfv.types import Prompt


def _prompts() -> list[Prompt]:
    return [
        Prompt("How many shapes are there?", [Image.new("RGB", (96, 96), (220, 40, 40))]),
        Prompt(
            "What colour is the circle in the picture?",
            [Image.new("RGB", (64, 80), (40, 80, 220))],
            "Be brief.",
        ),
    ]


def _append(batch: dict[str, torch.Tensor], completion: torch.Tensor) -> dict[str, torch.Tensor]:
    ones = torch.ones_like(completion)
    return {
        **batch,
        "input_ids": torch.cat([batch["input_ids"], completion], dim=1),  # [B, P+T]
        "attention_mask": torch.cat([batch["attention_mask"], ones], dim=1),
    }


@pytest.fixture(scope="module")
def model():
    return tiny_clip_lm(seed=0)


def test_encoder_writes_one_placeholder_per_visual_token_and_pads_left(model):
    batch = model.encoder(_prompts())
    assert batch["pixel_values"].shape == (2, 3, 64, 64)  # every image resized to the tower's size
    counts = (batch["input_ids"] == model.module.image_token_id).sum(dim=1)
    assert counts.tolist() == [16, 16]  # (64 / 16)² patches
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][0, 0]


def test_generation_sees_the_image_and_matches_the_training_forward(model):
    batch = model.encoder(_prompts())
    out = model.module.generate(
        **batch, max_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    P = batch["input_ids"].shape[1]
    assert torch.equal(out.sequences[:, :P], batch["input_ids"])  # prompt first, like HF models
    completion = out.sequences[:, P:]  # [B, T]
    assert not (completion == model.module.image_token_id).any()
    with torch.no_grad():
        logits = model.module(**_append(batch, completion)).logits  # [B, P+T, V]
    assert logits.shape == (2, P + completion.shape[1], len(model.tokenizer))
    scores = torch.stack(out.scores, dim=1)  # [B, T, V]
    finite = scores.isfinite()
    torch.testing.assert_close(logits[:, P - 1 : -1][finite], scores[finite], rtol=1e-4, atol=1e-4)
    other = {**batch, "pixel_values": torch.flip(batch["pixel_values"], dims=[0])}  # swap the images
    with torch.no_grad():
        swapped = model.module(**other).logits[:, -1]
    assert (swapped - logits[:, P - 1]).abs().max() > 1e-4


def test_placeholder_count_mismatch_is_reported(model):
    batch = model.encoder(_prompts()[:1])
    with pytest.raises(ValueError, match="16 image placeholder tokens for 2 images"):
        model.module(**{**batch, "pixel_values": batch["pixel_values"].repeat(2, 1, 1, 1)})


@pytest.mark.parametrize("feature", ["patch", "pooled+patch"])
def test_save_and_load_give_identical_logits(feature, tmp_path):
    model = tiny_clip_lm(seed=3, feature=feature)
    batch = _append(model.encoder(_prompts()), torch.randint(60, 200, (2, 4)))
    save_model(model, tmp_path)
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))  # no pickle
    loaded = load_model(str(tmp_path))
    for key, value in model.encoder(_prompts()).items():
        assert torch.equal(loaded.encoder(_prompts())[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.module(**batch).logits, model.module(**batch).logits, rtol=0, atol=0
        )


def test_lora_with_frozen_tower_trains_only_adapters_and_projector_and_saves_merged(tmp_path):
    model = tiny_clip_lm(freeze_vision=True, lora={"r": 4})
    trainable = {n for n, p in model.module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("projector.") for n in trainable)
    assert any(n.startswith("projector.") for n in trainable) and any("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in model.module.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)  # adapters start as a no-op; make merging matter
    batch = model.encoder(_prompts())
    save_model(model, tmp_path)
    loaded = load_clip_lm(str(tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.module(**batch).logits, model.module(**batch).logits, rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize(
    ("freeze_vision", "freeze_lm", "changed"),
    [(True, False, {"projector", "lm"}), (False, True, {"projector", "vision"}), (True, True, {"projector"})],
)
def test_freezing_switches_decide_which_parts_one_update_changes(freeze_vision, freeze_lm, changed):
    model = tiny_clip_lm(freeze_vision=freeze_vision, freeze_lm=freeze_lm)
    module = model.module.train()
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    batch = model.encoder(_prompts())
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    module(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    moved = {n.split(".")[0] for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert moved == changed


def _sft_batch(model, examples) -> dict[str, torch.Tensor]:
    """Prompt (left-padded) + answer and eos (right-padded); only answer tokens carry labels."""
    prompt = model.encoder([e.prompt for e in examples])
    answers = model.tokenizer(
        [e.answer + model.tokenizer.eos_token for e in examples],
        add_special_tokens=False,
        padding=True,
        padding_side="right",
        return_tensors="pt",
    )
    batch = _append(prompt, answers["input_ids"])
    batch["attention_mask"][:, prompt["input_ids"].shape[1] :] = answers["attention_mask"]
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, : prompt["input_ids"].shape[1]] = -100
    return {**batch, "labels": labels}


def test_supervised_loss_falls_on_shapes_vqa():
    torch.manual_seed(0)
    model = tiny_clip_lm(seed=0, image_size=64)
    data = ShapesVQA(size=32, image_size=64, seed=0)
    batches = [_sft_batch(model, [data[i] for i in range(s, s + 8)]) for s in range(0, 32, 8)]
    module = model.module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss = module(**batches[step % len(batches)]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # ln(515) ≈ 6.2 at random init; answers are short templated phrases, so 40 steps fit them well.
    assert losses[0] > 5.0
    assert sum(losses[-4:]) / 4 < 0.5 * losses[0]


def test_missing_folders_and_unknown_towers_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not-saved"):
        load_clip_lm(str(tmp_path / "not-saved"))
    with pytest.raises(FileNotFoundError, match="no-lm-here"):
        build_clip_lm(lm=str(tmp_path / "no-lm-here"))
    with pytest.raises(ValueError, match="feature='pooled'"):
        tiny_clip_lm(feature="pooled")


def test_builds_from_a_local_lm_folder_and_a_named_tower_with_local_weights(tmp_path):
    """An LM folder without an image token gets one; tower weights come from an open_clip file."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfv.models.tokenizer import train_tiny_tokenizer

    tok = train_tiny_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 333)
    tok.add_special_tokens({"eos_token": "<|im_end|>"})
    tok.chat_template = CHATML_TEMPLATE
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=333, hidden_size=24, intermediate_size=46, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="ViT-Q-99"):
        build_clip_lm(lm=str(tmp_path / "lm"), clip_model="ViT-Q-99")

    donor = build_clip_lm(lm=str(tmp_path / "lm"), clip_model="ViT-S-32", seed=1)
    checkpoint = {f"visual.{k}": v.contiguous() for k, v in donor.module.vision.state_dict().items()}
    save_file(checkpoint, str(tmp_path / "tower.safetensors"))
    model = build_clip_lm(
        lm=str(tmp_path / "lm"), clip_model="ViT-S-32", clip_pretrained=str(tmp_path / "tower.safetensors")
    )
    for name, value in model.module.vision.state_dict().items():
        assert torch.equal(value, donor.module.vision.state_dict()[name]), name
    assert not any(p.requires_grad for p in model.module.vision.parameters())  # frozen by default
    assert len(model.tokenizer) == 334  # "<image>" was added and the embeddings grew with it
    batch = model.encoder(_prompts()[:1])
    assert (batch["input_ids"] == model.module.image_token_id).sum() == 49  # (224 / 32)²
    out = model.module.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]
