"""build_cnn_lm: a timm CNN tower pooled to a token grid + projector + causal LM; its feature cache;
and the pulled EfficientNet-Lite0 being the real ImageNet model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from rlhfv.data.shapes import ShapesScenes, ShapesVQA
from rlhfv.models.base import load_model, save_model
from rlhfv.models.clip_lm import CHATML_TEMPLATE, build_cnn_lm
from rlhfv.models.cnn_tower import FeatureCache, GridTower
from rlhfv.models.hub import model_home
from rlhfv.types import Prompt

PULLED_TOWER = model_home() / "efficientnet-lite0"
pulled = pytest.mark.skipif(
    not (PULLED_TOWER / "tower.json").is_file(),
    reason=f"{PULLED_TOWER} absent: run `rlhfv models pull efficientnet-lite0`",
)


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny chat LM folder and a tower folder holding a randomly initialised lite0 (as `pull` writes)."""
    import timm
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfv.models.tokenizer import train_tiny_tokenizer

    root = tmp_path_factory.mktemp("parts")
    tok = train_tiny_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 333)
    tok.add_special_tokens({"eos_token": "<|im_end|>"})
    tok.chat_template = CHATML_TEMPLATE
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=333, hidden_size=24, intermediate_size=46, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    torch.manual_seed(0)
    trunk = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    (root / "tower").mkdir()
    save_file(
        {k: v.contiguous() for k, v in trunk.state_dict().items()}, str(root / "tower" / "model.safetensors")
    )
    card = {"timm_model": "tf_efficientnet_lite0", "image_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3}
    (root / "tower" / "tower.json").write_text(json.dumps(card))
    return root / "lm", root / "tower"


def _images(n: int) -> list[Image.Image]:
    return [ShapesVQA(n, image_size=64)[i].prompt.images[0] for i in range(n)]


def test_grid_tokens_reach_the_lm_in_row_major_order_with_a_global_token(parts):
    lm, tower = parts
    model = build_cnn_lm(lm, tower, layer=-2, grid=2, feature="pooled+patch", feature_cache=None)
    # 64 px / 16 = a 4×4 map at lite0's fourth stage (112 channels), pooled to 2×2, plus the mean
    assert model.module.vision.width == 112 and model.module.num_image_tokens == 1 + 4
    batch = model.encoder([Prompt("How many shapes?", _images(1))])
    assert (batch["input_ids"] == model.module.image_token_id).sum() == 5
    pixels = batch["pixel_values"]
    pooled, tokens = model.module.vision(pixels)
    fmap = model.module.vision.feature_map(pixels)  # [1, 112, 4, 4]
    assert torch.allclose(tokens[0, 1], fmap[0, :, :2, 2:].mean(dim=(1, 2)), atol=1e-5)  # top right cell
    assert torch.allclose(pooled[0], fmap[0].mean(dim=(1, 2)), atol=1e-5)
    out = model.module.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]


def test_frozen_tower_is_cached_trains_nothing_and_keeps_its_batch_norm_statistics(parts, tmp_path):
    lm, tower = parts
    model = build_cnn_lm(lm, tower, grid=2, feature_cache=str(tmp_path / "cache"))
    vision = model.module.vision
    assert not any(p.requires_grad for p in vision.parameters())
    assert model.module.grid_pos.requires_grad  # the grid's positions train with the projector
    model.module.train()
    assert not vision.trunk.training  # batch norm would otherwise drift on ShapesVQA
    examples = [ShapesScenes(4, image_size=64)[i] for i in range(4)]
    batch = model.encoder([e.prompt for e in examples])
    first = model.module(**batch).logits
    assert (vision.cache.hits, vision.cache.misses) == (0, 4)
    second = model.module(**batch).logits
    assert (vision.cache.hits, vision.cache.misses) == (4, 4)
    assert torch.equal(first, second)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 4

    # A fresh cache on the same folder (another run) reads the files instead of the tower.
    vision.cache = FeatureCache(tmp_path / "cache")
    assert torch.equal(model.module(**batch).logits, first) and vision.cache.misses == 0

    # New tower weights: a new fingerprint, so nothing stale is reused.
    with torch.no_grad():
        vision.trunk.conv_stem.weight.mul_(-1.0)
    changed = model.module(**batch).logits
    assert vision.cache.misses == 4 and not torch.allclose(changed, first)
    fresh = vision.feature_map(batch["pixel_values"])
    assert torch.equal(vision.cached_feature_map(batch["pixel_values"]), fresh)


def test_a_cut_short_cache_file_is_recomputed(parts, tmp_path):
    lm, tower = parts
    model = build_cnn_lm(lm, tower, grid=2, feature_cache=str(tmp_path / "cache"))
    pixels = model.encoder([Prompt("Describe the image.", _images(1))])["pixel_values"]
    expected = model.module.vision.cached_feature_map(pixels)
    (file,) = (tmp_path / "cache").rglob("*.safetensors")
    file.write_bytes(file.read_bytes()[:50])  # a run killed mid-write of an older version
    model.module.vision.cache = FeatureCache(tmp_path / "cache")
    assert torch.equal(model.module.vision.cached_feature_map(pixels), expected)


def test_trainable_tower_bypasses_the_cache_and_gets_gradients(parts):
    lm, tower = parts
    model = build_cnn_lm(lm, tower, grid=2, freeze_vision=False)
    model.module.train()
    batch = model.encoder([Prompt("How many shapes?", _images(2)[:1])])
    model.module(**batch).logits.sum().backward()
    assert model.module.vision.trunk.conv_stem.weight.grad is not None
    model.module.eval()
    with torch.no_grad():  # generation too: the weights change every step, so nothing is cached
        model.module(**batch)
    assert model.module.vision.cache.hits + model.module.vision.cache.misses == 0


def test_save_and_load_keep_the_outputs_and_the_frozen_tower(parts, tmp_path):
    lm, tower = parts
    model = build_cnn_lm(lm, tower, layer=-2, grid=3, feature_cache=None)
    with torch.no_grad():
        model.module.grid_pos.normal_()  # as training would have left it
    save_model(model, tmp_path / "saved")
    loaded = load_model(str(tmp_path / "saved"))
    assert not any(p.requires_grad for p in loaded.module.vision.parameters())
    batch = model.encoder([Prompt("What colour is the circle?", _images(1))])
    with torch.no_grad():
        assert torch.allclose(model.module(**batch).logits, loaded.module(**batch).logits, atol=1e-5)


def test_bad_towers_layers_grids_and_weights_are_named(parts, tmp_path):
    lm, tower = parts
    with pytest.raises(ValueError, match="no model 'effnet-zero'"):
        GridTower("effnet-zero", -1, 2, 64)
    with pytest.raises(ValueError, match="layer=7.*'head' or an index"):
        build_cnn_lm(lm, tower, layer=7)
    with pytest.raises(ValueError, match="grid=5.*2×2 for 64 px.*from 1 to 2"):
        build_cnn_lm(lm, tower, grid=5)
    with pytest.raises(FileNotFoundError, match="no tower.json.*rlhfv models pull efficientnet-lite0"):
        build_cnn_lm(lm, tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tower.json").write_text((tower / "tower.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"tower weights .*broken/model.safetensors: unreadable"):
        build_cnn_lm(lm, broken, grid=2)


@pulled
@pytest.mark.slow
def test_pulled_lite0_is_the_imagenet_classifier_on_real_photos():
    """skimage's cat and espresso photos get their ImageNet classes from the pulled weights."""
    import timm
    from safetensors.torch import load_file
    from skimage import data

    card = json.loads((PULLED_TOWER / "tower.json").read_text())
    net = timm.create_model(card["timm_model"], pretrained=False)
    net.load_state_dict(load_file(str(PULLED_TOWER / "model.safetensors")))
    net.eval()
    for photo, expected in ((data.chelsea(), 285), (data.coffee(), 967)):  # Egyptian cat, espresso
        image = Image.fromarray(photo).resize((card["image_size"],) * 2, Image.BICUBIC)
        x = torch.tensor(list(image.getdata()), dtype=torch.float32).view(1, *image.size[::-1], 3)
        x = ((x.permute(0, 3, 1, 2) / 255 - torch.tensor(card["mean"]).view(1, 3, 1, 1))
             / torch.tensor(card["std"]).view(1, 3, 1, 1))  # fmt: skip
        with torch.no_grad():
            probs = net(x).softmax(-1)[0]
        assert int(probs.argmax()) == expected and probs[expected] > 0.5


@pulled
@pytest.mark.slow
@pytest.mark.skipif(
    not (model_home() / "smollm2-135m-instruct" / "rlhfv_model.json").is_file(),
    reason="smollm2-135m-instruct absent: run `rlhfv models pull smollm2-135m-instruct`",
)
def test_real_photos_go_through_the_pretrained_parts_and_generate(shared_data):
    """Photos of any size and format (three .jpg files are really WebP) reach the pulled tower at 224 px."""
    from rlhfv.data.images import load_image

    source = shared_data / "rlaifv_example_images_prompts"
    rows = [json.loads(line) for line in (source / "detail_test_30_input.jsonl").read_text().splitlines()]
    rows = rows[:2] + [r for r in rows if "Leptis_Magna" in r["image_path"]][:1]
    prompts = [
        Prompt(r["question"], [load_image(source / "imgs_detail" / Path(r["image_path"]).name)]) for r in rows
    ]
    model = build_cnn_lm(grid=4, feature_cache=None)
    batch = model.encoder(prompts)
    assert batch["pixel_values"].shape == (3, 3, 224, 224)
    out = model.module.generate(**batch, max_new_tokens=8, do_sample=False)
    texts = model.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(texts) == 3 and all(t.strip() for t in texts)  # the untrained projector still yields text
