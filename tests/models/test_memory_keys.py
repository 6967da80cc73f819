"""The builders' memory keys: gradient checkpointing, attention kernel, Qwen-VL pixel budget, and
which weights stay float32 under bf16 training."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rlhfv.config import RecipeError, load_recipe
from rlhfv.models import hf_vlm
from rlhfv.models.base import checkpointing_active, load_model, save_model
from rlhfv.models.clip_lm import tiny_clip_lm
from rlhfv.models.text_lm import tiny_text_lm
from rlhfv.rollout import generate, sequence_logprobs
from rlhfv.types import Prompt


def _image_prompts(size: int = 96) -> list[Prompt]:
    return [
        Prompt("How many shapes?", [Image.new("RGB", (size, size), (220, 40, 40))]),
        Prompt(
            "What colour is the circle in the picture?", [Image.new("RGB", (size, size - 16), (40, 80, 220))]
        ),
    ]


BUILDERS = {
    "tiny_qwen2_5_vl": lambda gc: hf_vlm.tiny_qwen2_5_vl(seed=3, gradient_checkpointing=gc),
    "tiny_llava": lambda gc: hf_vlm.tiny_llava(seed=3, gradient_checkpointing=gc),
    "tiny_clip_lm": lambda gc: tiny_clip_lm(seed=3, image_size=64, gradient_checkpointing=gc),
    "tiny_text_lm": lambda gc: tiny_text_lm(seed=3, gradient_checkpointing=gc),
    "tiny_qwen2_vl+lora": lambda gc: hf_vlm.tiny_qwen2_vl(seed=3, lora={"r": 4}, gradient_checkpointing=gc),
}


def _loss_grads_and_saved_bytes(model, batch, ids, mask):
    """One training forward/backward of a log-prob objective; returns (loss, {name: grad}, bytes
    that autograd saved for backward)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    module = model.module.train()
    module.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp = sequence_logprobs(model, batch, ids, mask)  # [N, T]
        loss = (lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), grads, saved[0]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_gradient_checkpointing_gives_the_same_loss_and_gradients_and_saves_fewer_activations(name):
    plain, checkpointed = BUILDERS[name](False), BUILDERS[name](True)
    prompts = _image_prompts(64 if "clip" in name else 96)
    torch.manual_seed(0)
    rollout = generate(plain, prompts, group_size=2, max_new_tokens=5)
    args = (rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask)
    loss_a, grads_a, saved_a = _loss_grads_and_saved_bytes(plain, *args)
    loss_b, grads_b, saved_b = _loss_grads_and_saved_bytes(checkpointed, *args)
    assert not checkpointing_active(plain.module)
    assert checkpointing_active(checkpointed.module)  # training mode, gradients on
    assert torch.allclose(loss_a, loss_b, atol=1e-6, rtol=0)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], atol=1e-6, rtol=1e-5), n
    # each layer keeps only its input: well under the activations of the plain forward
    assert saved_b < 0.7 * saved_a, (saved_a, saved_b)


def test_checkpointing_is_inactive_for_sampling_which_keeps_its_kv_cache():
    policy = tiny_text_lm(seed=4, gradient_checkpointing=True)
    module = policy.module.train()  # the GRPO loop samples from a module in training mode
    lengths: list[int] = []
    hook = module.model.register_forward_pre_hook(
        lambda m, a, kw: lengths.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    out = generate(policy, [Prompt("Red or blue?")], group_size=2, max_new_tokens=6, greedy=True)
    hook.remove()
    plain = tiny_text_lm(seed=4)
    ref = generate(plain, [Prompt("Red or blue?")], group_size=2, max_new_tokens=6, greedy=True)
    assert torch.equal(out.completion_ids, ref.completion_ids)
    assert lengths[0] > 1 and set(lengths[1:]) == {1}  # after the prompt, one new token per step: cached
    with torch.no_grad():
        assert not checkpointing_active(module)


def test_loaders_checkpoint_by_default_and_the_key_turns_it_off(tmp_path):
    save_model(hf_vlm.tiny_qwen2_vl(seed=1), tmp_path / "m")
    on = load_model(str(tmp_path / "m")).module.train()  # load_hf_vlm, TRL's default
    off = hf_vlm.load_hf_vlm(str(tmp_path / "m"), gradient_checkpointing=False).module.train()
    assert checkpointing_active(on) and not checkpointing_active(off)


def test_attn_implementation_reaches_language_model_and_vision_tower_and_keeps_the_logits(tmp_path):
    sdpa = hf_vlm.tiny_qwen2_5_vl(seed=2)
    eager = hf_vlm.tiny_qwen2_5_vl(seed=2, attn_implementation="eager")
    for model, impl in ((sdpa, "sdpa"), (eager, "eager")):
        inner = model.module.model
        assert inner.language_model.config._attn_implementation == impl
        assert inner.visual.config._attn_implementation == impl
    batch = sdpa.encoder(_image_prompts())
    with torch.no_grad():
        a, b = sdpa.module(**batch).logits, eager.module(**batch).logits
    real = batch["attention_mask"].bool()  # left-padding positions attend to nothing: kernels differ there
    assert torch.allclose(a[real], b[real], atol=1e-5)
    save_model(sdpa, tmp_path / "m")
    loaded = hf_vlm.load_hf_vlm(str(tmp_path / "m"), attn_implementation="eager")
    assert loaded.module.config.text_config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="nonsense"):
        hf_vlm.tiny_qwen2_vl(attn_implementation="nonsense")


def test_min_and_max_pixels_reach_the_qwen_image_processor_and_set_the_image_token_count(tmp_path):
    # 96×96 at patch 12 and 2×2 merging: (96/24)² = 16 image tokens; at most 48×48 pixels: (48/24)² = 4
    small = hf_vlm.tiny_qwen2_vl(min_pixels=24 * 24, max_pixels=48 * 48)
    size = small.encoder.processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (24 * 24, 48 * 48)
    image_token = small.encoder.processor.image_token_id
    count = lambda m: int((m.encoder(_image_prompts()[:1])["input_ids"] == image_token).sum())  # noqa: E731
    assert count(hf_vlm.tiny_qwen2_vl()) == 16 and count(small) == 4
    save_model(hf_vlm.tiny_qwen2_5_vl(), tmp_path / "m")
    loaded = hf_vlm.load_hf_vlm(str(tmp_path / "m"), min_pixels=24 * 24, max_pixels=48 * 48)
    assert loaded.encoder.processor.image_processor.size["longest_edge"] == 48 * 48
    assert count(loaded) == 4
    with pytest.raises(ValueError, match="min_pixels <= max_pixels"):
        hf_vlm.tiny_qwen2_vl(min_pixels=4096, max_pixels=1024)


def test_pixel_budget_on_a_non_qwen_processor_is_refused(tmp_path):
    save_model(hf_vlm.tiny_llava(), tmp_path / "m")
    with pytest.raises(ValueError, match="Qwen-VL image processors.*CLIPImageProcessor"):
        hf_vlm.load_hf_vlm(str(tmp_path / "m"), max_pixels=48 * 48)


def test_recipe_keys_for_memory_are_checked_against_the_builder(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "pipeline: rlhfv.pipelines.sft.main\nrun: {name: t}\n"
        "train_data: {_component_: rlhfv.data.shapes.ShapesVQA, size: 8}\n"
        "policy: {_component_: rlhfv.models.hf_vlm.tiny_qwen2_vl, min_pixels: 576, max_pixels: 2304,"
        " attn_implementation: eager, gradient_checkpointing: true}\n"
    )
    assert load_recipe(recipe).policy.max_pixels == 2304
    with pytest.raises(RecipeError, match=r"unknown key 'policy.max_pixel'.*'max_pixels'"):
        load_recipe(recipe, ["policy.max_pixel=1"])
    with pytest.raises(RecipeError, match=r"policy.min_pixels = 'lots': expected int"):
        load_recipe(recipe, ["policy.min_pixels=lots"])


def test_bf16_autocast_training_keeps_float32_weights_gradients_and_adam_state():
    # run.dtype: bfloat16 with a float32 builder: autocast computes in bf16, the weights are the
    # float32 master copy and AdamW's moments are float32 too.
    policy = hf_vlm.tiny_qwen2_vl(seed=5)
    module = policy.module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    torch.manual_seed(0)
    r = generate(policy, _image_prompts(), group_size=2, max_new_tokens=4)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = module(**r.prompt_batch).logits
        lp = sequence_logprobs(policy, r.prompt_batch, r.completion_ids, r.completion_mask)
    assert logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    (-lp.sum()).backward()
    opt.step()
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert all(p.grad.dtype == torch.float32 for p in module.parameters() if p.grad is not None)
    moments = [s["exp_avg"] for s in opt.state.values()]
    assert moments and all(m.dtype == torch.float32 for m in moments)
    lm_q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[lm_q], module.get_parameter(lm_q))


def test_a_bf16_lora_model_trains_float32_adapters_over_bf16_base_weights():
    policy = hf_vlm.tiny_qwen2_vl(seed=5, dtype="bfloat16", lora={"r": 4})
    module = policy.module.train()
    trained = [p for p in module.parameters() if p.requires_grad]
    frozen = [p for p in module.parameters() if not p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)  # peft's float32 adapters
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    torch.manual_seed(0)
    r = generate(policy, _image_prompts(), group_size=2, max_new_tokens=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = sequence_logprobs(policy, r.prompt_batch, r.completion_ids, r.completion_mask)
    (-lp.sum()).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained)
