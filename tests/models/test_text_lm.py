"""The text causal-LM builder: tiny model from config, chat-template encoding, save/load round trip."""

from __future__ import annotations

import pytest
import torch

from rlhfv.models.base import load_model, save_model
from rlhfv.models.text_lm import load_text_lm, tiny_text_lm
from rlhfv.types import Prompt


@pytest.fixture(scope="module")
def tiny():
    return tiny_text_lm(seed=0)


def test_encoder_left_pads_and_applies_the_chat_template(tiny):
    batch = tiny.encoder(
        [Prompt("red circle"), Prompt("which response is better, one or two?", system="judge")]
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]  # [2, P]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()  # the short prompt is padded on the left
    text = tiny.tokenizer.decode(ids[1])
    assert text.startswith("<|im_start|>system\njudge") and text.endswith("<|im_start|>assistant\n")


def test_tiny_text_lm_generates_and_round_trips_through_save_model(tiny, tmp_path):
    prompts = [Prompt("red circle"), Prompt("blue square on the left")]
    batch = tiny.encoder(prompts)
    out = tiny.module.generate(**batch, max_new_tokens=4, do_sample=False)  # [2, P + ≤4]
    assert out.shape[1] > batch["input_ids"].shape[1]
    save_model(tiny, tmp_path / "m")
    again = load_model(str(tmp_path / "m"))
    assert again.loader == "rlhfv.models.text_lm.load_text_lm"
    out2 = again.module.generate(**again.encoder(prompts), max_new_tokens=4, do_sample=False)
    assert torch.equal(out, out2)


def test_load_text_lm_names_a_missing_model_and_how_to_pull_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHFV_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="rlhfv models pull smollm2-135m-instruct"):
        load_text_lm("smollm2-135m-instruct")
    with pytest.raises(FileNotFoundError, match="'no-such-model' not found.*pull one of efficientnet-lite0, gemma3-270m, smollm2"):
        load_text_lm("no-such-model")  # a name nobody can pull is not told to pull it


def test_load_text_lm_with_lora_trains_only_adapters(tiny, tmp_path):
    save_model(tiny, tmp_path / "m")
    model = load_text_lm(str(tmp_path / "m"), lora={"r": 2, "target_modules": ["q_proj", "v_proj"]})
    trainable = [n for n, p in model.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)


@pytest.mark.parametrize(
    "builder",
    [
        "rlhfv.models.text_lm.tiny_text_lm",
        "rlhfv.models.hf_vlm.tiny_qwen2_vl",
        "rlhfv.models.clip_lm.tiny_clip_lm",
    ],
)
def test_a_tiny_builder_leaves_the_run_random_stream_alone_and_depends_on_its_seed_only(builder):
    """The run seeds torch with run.seed and then builds its models: a builder that reseeded the
    global generator with its model seed made every later draw (sampling, shuffles) ignore run.seed."""
    from rlhfv.config import resolve_target

    build = resolve_target(builder)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    a = build(seed=0)
    assert torch.equal(torch.rand(4), expected)
    b, c = build(seed=0), build(seed=1)
    same, other = b.module.state_dict(), c.module.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in a.module.state_dict().items())
    assert not all(torch.equal(v, other[k]) for k, v in a.module.state_dict().items())
