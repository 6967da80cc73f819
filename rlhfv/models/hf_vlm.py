"""Hugging Face image-text-to-text models as `ChatModel`s: any local folder, or a tiny one built here.

`load_hf_vlm` loads whatever `AutoModelForImageTextToText` knows (Qwen2-VL, Qwen2.5-VL, LLaVA,
Idefics3/SmolVLM …) from a local folder, optionally with LoRA adapters on the language model.
The `tiny_*` builders make the same architectures with random weights, a few layers of width ~36,
an offline-trained tokenizer (rlhfv.models.tokenizer) and a processor whose chat template and image
tokens match the family, so tests and demos run on CPU in seconds. At the default `image_size=96`
each image becomes 16 image tokens in every family.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhfv.models.base import ChatModel, checkpoint_activations, seeded, torch_dtype
from rlhfv.types import Prompt

log = logging.getLogger(__name__)

LOADER = "rlhfv.models.hf_vlm.load_hf_vlm"
# LoRA goes on the language model's projections only: "language_model" (Qwen2-VL, LLaVA) or
# "text_model" (Idefics3); the vision towers also have q_proj … layers, which this leaves alone.
LM_LORA_TARGETS = (
    r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
)
LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}
# Processor attributes naming placeholder tokens a model must never generate.
PLACEHOLDER_ATTRS = ("image_token_id", "video_token_id", "fake_image_token_id", "global_image_token_id")

# Short chat templates in each family's format. Message content is a string or a list of
# {"type": "image"} / {"type": "text", "text": …} parts; the processor expands each image marker.
QWEN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_TEMPLATE = (  # transformers renders with trim_blocks, so newlines after a tag are written as {{ '\n' }}
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['content'] is string %}{% set parts = [{'type': 'text', 'text': m['content']}] %}"
    "{% else %}{% set parts = m['content'] %}{% endif %}"
    "{% if m['role'] == 'system' %}{% for c in parts %}{{ c['text'] }}{% endfor %}{{ '\\n\\n' }}"
    "{% else %}{{ m['role'] | upper }}: {% for c in parts %}"
    "{% if c['type'] == 'image' %}<image>{{ '\\n' }}{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% if m['content'] is string %} {{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %} {{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


class HFPromptEncoder:
    """Prompts → left-padded processor batch, through the processor's own chat template."""

    def __init__(self, processor: Any, dtype: torch.dtype = torch.float32):
        self.processor = processor
        self.dtype = dtype  # floating vision tensors (pixel values) are cast to the model's dtype

    def texts(self, prompts: Sequence[Prompt]) -> list[str]:
        """The chat-templated prompt texts, one image marker per image (not yet expanded)."""
        conversations = []
        for p in prompts:
            messages = (
                [{"role": "system", "content": [{"type": "text", "text": p.system}]}] if p.system else []
            )
            content = [{"type": "image"} for _ in p.images] + [{"type": "text", "text": p.text}]
            conversations.append(messages + [{"role": "user", "content": content}])
        texts = self.processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
        return [t + p.prefill for t, p in zip(texts, prompts, strict=True)]

    def __call__(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        texts = self.texts(prompts)
        has_images = any(p.images for p in prompts)
        batch = self.processor(
            text=texts,
            images=[list(p.images) for p in prompts] if has_images else None,
            padding=True,
            padding_side="left",  # prompts end where generation starts: [B, P]
            return_tensors="pt",
        )
        return {
            k: v.to(self.dtype) if v.is_floating_point() else v
            for k, v in batch.items()
            if isinstance(v, torch.Tensor)
        }

    def save_pretrained(self, path: str | Path) -> None:
        self.processor.save_pretrained(str(path))


def _pad_token_types(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: extend per-token type ids over completion tokens appended on the right.

    Qwen2-VL's processor returns `mm_token_type_ids` [B, P] (0 text, 1 image) for its 3-D rotary
    positions. The rlhfv convention appends completions to the prompt, so a training forward sees
    input_ids [B, P+T]; appended tokens are text, so the ids are padded with zeros, exactly what
    `generate` does for the tokens it adds.
    """
    ids = kwargs.get("input_ids")
    for key in ("mm_token_type_ids", "token_type_ids"):  # Gemma-3's marks image tokens (1) the same way
        types = kwargs.get(key)
        if ids is not None and types is not None and types.shape[1] < ids.shape[1]:
            pad = types.new_zeros(types.shape[0], ids.shape[1] - types.shape[1])
            kwargs = {**kwargs, key: torch.cat([types, pad], dim=1)}  # [B, P+T]
    return args, kwargs


def attach_lora(module: torch.nn.Module, lora: dict[str, Any], default_targets: str | list[str]) -> Any:
    """Wrap `module` with peft LoRA adapters; only adapter weights stay trainable.

    Args:
        module: The model to adapt.
        lora: {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": regex or list of names}.
        default_targets: Targets when `lora` names none.
    """
    from peft import LoraConfig, get_peft_model

    unknown = set(lora) - LORA_KEYS
    if unknown:
        raise ValueError(f"lora has unknown key(s) {sorted(unknown)}; allowed: {sorted(LORA_KEYS)}")
    config = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=lora.get("target_modules", default_targets),
    )
    return get_peft_model(module, config)


def pixel_range(processor: Any, min_pixels: int | None, max_pixels: int | None, who: str) -> None:
    """Set a Qwen-VL image processor's pixel budget: each image is resized (aspect kept) to between
    `min_pixels` and `max_pixels` pixels, so to between min/784 and max/784 image tokens at patch
    14 with 2×2 merging. The model card's example budget is 256·28·28 to 1280·28·28."""
    if min_pixels is None and max_pixels is None:
        return
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if size is None or "longest_edge" not in size or "shortest_edge" not in size:
        raise ValueError(
            f"{who}: min_pixels/max_pixels apply to Qwen-VL image processors (size in pixels); "
            f"this model's is {type(image_processor).__name__}"
        )
    low = size["shortest_edge"] if min_pixels is None else int(min_pixels)
    high = size["longest_edge"] if max_pixels is None else int(max_pixels)
    if not 0 < low <= high:
        raise ValueError(f"{who}: need 0 < min_pixels <= max_pixels, got min_pixels={low}, max_pixels={high}")
    image_processor.size = {"shortest_edge": low, "longest_edge": high}


def _chat_model(
    module: Any,
    processor: Any,
    dtype: str,
    lora: dict[str, Any] | None,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> ChatModel:
    """Finish a loaded or built model: dtype, attention kernel, checkpointing, generation
    defaults, the hook, LoRA; bundle it."""
    tok = processor.tokenizer
    module = module.to(torch_dtype(dtype))
    module.set_attn_implementation(attn_implementation)  # language model and vision tower alike
    if gradient_checkpointing:
        checkpoint_activations(module)
    gen = module.generation_config
    gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    gen.eos_token_id = tok.eos_token_id
    # A sampled image placeholder would make the next forward expect an image that is not there.
    placeholders = {
        getattr(processor, a) for a in PLACEHOLDER_ATTRS if getattr(processor, a, None) is not None
    }
    image_token = getattr(module.config, "image_token_id", None)  # Gemma-3's processor names its boi token
    placeholders |= {image_token} if isinstance(image_token, int) else set()
    inner = getattr(module, "model", module)
    inner.register_forward_pre_hook(_pad_token_types, with_kwargs=True)
    if lora is not None:
        module = attach_lora(module, lora, LM_LORA_TARGETS)
    encoder = HFPromptEncoder(processor, torch_dtype(dtype))
    return ChatModel(module, tok, encoder, LOADER, suppressed_tokens=tuple(sorted(placeholders)))


def load_hf_vlm(
    path: str,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    revision: str | None = None,
    processor: dict[str, Any] | None = None,
    gradient_checkpointing: bool = True,
    attn_implementation: str = "sdpa",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> ChatModel:
    """Load an image-text-to-text model and its processor from a folder or a Hub ID.

    Args:
        path: Folder holding config, safetensors weights and processor files, or a Hugging Face
            Hub ID (`Qwen/Qwen2-VL-2B-Instruct`) resolved through the huggingface_hub cache
            (`rlhfv.models.hub.resolve_model`).
        dtype: "float32", "bfloat16" or "float16": the weights' dtype. Trained weights in bf16
            get no float32 master copy unless ZeRO keeps one; for single-process mixed precision
            load float32 and set `run.dtype: bfloat16` (autocast), or train LoRA adapters (peft
            keeps them in float32).
        lora: Optional LoRA settings (see `attach_lora`); by default on the language model only.
        revision: Branch, tag or commit of a Hub ID.
        processor: Options for the family's processor, passed to `AutoProcessor.from_pretrained`
            (Qwen2-VL `size` (its pixel budget), Idefics3 `do_image_splitting`, Gemma-3
            `do_pan_and_scan` …).
        gradient_checkpointing: Recompute layer activations in backward (`checkpoint_activations`);
            on by default, as in TRL. Same values, about one more forward pass of compute.
        attn_implementation: "sdpa", "eager", or "flash_attention_2" (GPU, needs flash-attn and a
            bf16/fp16 `dtype`).
        min_pixels, max_pixels: Qwen-VL image budget per image (`pixel_range`); None keeps the
            processor's own.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rlhfv.models.hub import resolve_model

    folder = resolve_model(path, revision)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"load_hf_vlm: {folder} is not a model folder (no config.json there); "
            "give a local folder written by save_pretrained or rlhfv.models.base.save_model"
        )
    try:
        module = AutoModelForImageTextToText.from_pretrained(
            str(folder),
            dtype=torch_dtype(dtype),
            attn_implementation=attn_implementation,
            local_files_only=True,
        )
    except ValueError as e:  # e.g. a text-only config: transformers names the class, not the folder
        raise ValueError(
            f"load_hf_vlm: {folder} does not hold an image-text-to-text model ({str(e).splitlines()[0]}); "
            "for text-only models use rlhfv.models.text_lm.load_text_lm"
        ) from e
    loaded = AutoProcessor.from_pretrained(str(folder), local_files_only=True, **(processor or {}))
    pixel_range(loaded, min_pixels, max_pixels, f"load_hf_vlm({folder})")
    return _chat_model(module.eval(), loaded, dtype, lora, gradient_checkpointing, attn_implementation)


def _tiny_tokenizer(special: list[str], roles: dict[str, str], vocab_size: int) -> Any:
    from rlhfv.models.tokenizer import train_tiny_tokenizer

    tok = train_tiny_tokenizer(special, vocab_size)
    tok.add_special_tokens(roles)
    return tok


def _text_config(
    tok: Any, hidden_size: int, num_layers: int, num_heads: int, kv_heads: int = 1, **extra: Any
) -> dict[str, Any]:
    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise ValueError(f"hidden_size={hidden_size} must split into {num_heads} heads of even size")
    return dict(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size - 2,  # an odd-looking width catches shape mix-ups
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=kv_heads,  # 1: grouped-query attention, as in the real models
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def _check_image_size(image_size: int, unit: int, family: str) -> None:
    if image_size % unit:
        raise ValueError(f"{family}: image_size={image_size} must be a multiple of {unit} (patch × merge)")


def _tiny_qwen(
    version: str,
    seed: int,
    hidden_size: int,
    num_layers: int,
    image_size: int,
    dtype: str,
    lora: dict[str, Any] | None,
    kv_heads: int = 1,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> ChatModel:
    import transformers as tf

    _check_image_size(image_size, 24, f"tiny_qwen{version}_vl")
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    special += ["<|image_pad|>", "<|video_pad|>"]
    tok = _tiny_tokenizer(special, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, 800)
    ids = dict(zip(special, tok.convert_tokens_to_ids(special), strict=True))
    half = hidden_size // 3 // 2  # rotary pairs per head, shared by the time/height/width sections
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    text = _text_config(
        tok,
        hidden_size,
        num_layers,
        3,
        kv_heads,
        rope_parameters={"rope_type": "default", "mrope_section": mrope},
    )
    # Patch 12 and 2×2 merging: a 96×96 image is an 8×8 patch grid, 16 image tokens.
    vision = dict(depth=2, num_heads=2, patch_size=12, spatial_merge_size=2, temporal_patch_size=2)
    if version == "2":
        vision.update(embed_dim=32, hidden_size=hidden_size)
        config_cls, model_cls, proc_cls = (
            tf.Qwen2VLConfig,
            tf.Qwen2VLForConditionalGeneration,
            tf.Qwen2VLProcessor,
        )
    else:  # windowed attention in the first block, full attention in the last
        vision.update(hidden_size=32, intermediate_size=58, out_hidden_size=hidden_size)
        vision.update(window_size=48, fullatt_block_indexes=[1])
        config_cls = tf.Qwen2_5_VLConfig
        model_cls, proc_cls = tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLProcessor
    config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    pixels = {"shortest_edge": image_size * image_size, "longest_edge": image_size * image_size}
    processor = proc_cls(
        image_processor=tf.Qwen2VLImageProcessor(size=pixels, patch_size=12, merge_size=2),
        video_processor=tf.Qwen2VLVideoProcessor(size=pixels, patch_size=12, merge_size=2),
        tokenizer=tok,
        chat_template=QWEN_TEMPLATE,
    )
    pixel_range(processor, min_pixels, max_pixels, f"tiny_qwen{version}_vl")
    with seeded(seed):
        module = model_cls(config).eval()
        return _chat_model(module, processor, dtype, lora, gradient_checkpointing, attn_implementation)


def tiny_qwen2_vl(
    seed: int = 0,
    hidden_size: int = 36,
    num_layers: int = 2,
    image_size: int = 96,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    kv_heads: int = 1,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> ChatModel:
    """A random Qwen2-VL (M-RoPE, 2×2 patch merging) small enough for CPU tests.

    `kv_heads`: how many key/value heads the 3 attention heads share (1: grouped-query attention,
    as in the real model; 3: each head its own). A tiny judge trained on ShapesVQA pairs learned to
    keep its verdict, its second sentence and its scores consistent only with 3 (results/grlhfv_shapes.md)."""
    return _tiny_qwen(
        "2", seed, hidden_size, num_layers, image_size, dtype, lora, kv_heads,
        gradient_checkpointing, attn_implementation, min_pixels, max_pixels,
    )  # fmt: skip


def tiny_qwen2_5_vl(
    seed: int = 0,
    hidden_size: int = 36,
    num_layers: int = 2,
    image_size: int = 96,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    kv_heads: int = 1,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> ChatModel:
    """A random Qwen2.5-VL (windowed vision attention, SwiGLU vision MLP) for CPU tests
    (`kv_heads` as in `tiny_qwen2_vl`)."""
    return _tiny_qwen(
        "2.5", seed, hidden_size, num_layers, image_size, dtype, lora, kv_heads,
        gradient_checkpointing, attn_implementation, min_pixels, max_pixels,
    )  # fmt: skip


def tiny_llava(
    seed: int = 0,
    hidden_size: int = 36,
    num_layers: int = 2,
    image_size: int = 96,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> ChatModel:
    """A random LLaVA-1.5-style model: CLIP ViT tower, MLP projector, Llama language model."""
    import transformers as tf

    _check_image_size(image_size, 24, "tiny_llava")
    special = ["<unk>", "<s>", "</s>", "<image>"]
    roles = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>"}
    tok = _tiny_tokenizer(special, roles, 800)
    patches = (image_size // 24) ** 2  # patch 24: a 96×96 image gives 16 patch tokens (CLS dropped)
    vision = tf.CLIPVisionConfig(
        hidden_size=32, intermediate_size=58, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=24, projection_dim=32,
    )  # fmt: skip
    config = tf.LlavaConfig(
        vision_config=vision,
        text_config=tf.LlamaConfig(**_text_config(tok, hidden_size, num_layers, 3)),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    processor = tf.LlavaProcessor(
        image_processor=tf.CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tok,
        patch_size=24,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, which the "default" strategy drops again
        chat_template=LLAVA_TEMPLATE,
    )
    with seeded(seed):
        module = tf.LlavaForConditionalGeneration(config).eval()
        return _chat_model(module, processor, dtype, lora, gradient_checkpointing, attn_implementation)


def tiny_idefics3(
    seed: int = 0,
    hidden_size: int = 36,
    num_layers: int = 2,
    image_size: int = 96,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> ChatModel:
    """A random Idefics3/SmolVLM: SigLIP-style tower, pixel-shuffle connector, Llama language model.

    Image splitting is off: each image is resized to fit `image_size` and padded, one tile only.
    """
    import transformers as tf

    _check_image_size(image_size, 24, "tiny_idefics3")
    special = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>"]
    special += ["<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    roles = {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<|endoftext|>"}
    tok = _tiny_tokenizer(special, roles, 900)
    vision = dict(
        hidden_size=32, intermediate_size=58, num_hidden_layers=2, num_attention_heads=2,
        image_size=image_size, patch_size=12,
    )  # fmt: skip
    config = tf.Idefics3Config(
        vision_config=vision,
        text_config=dict(model_type="llama", **_text_config(tok, hidden_size, num_layers, 3)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,  # pixel shuffle: 2×2 patches become one token
        pad_token_id=tok.pad_token_id,  # the config's own default (128002) is outside a tiny vocabulary
    )
    processor = tf.Idefics3Processor(
        image_processor=tf.Idefics3ImageProcessor(
            do_image_splitting=False,
            size={"longest_edge": image_size},
            max_image_size={"longest_edge": image_size},
        ),
        tokenizer=tok,
        image_seq_len=(image_size // 12 // 2) ** 2,
        chat_template=IDEFICS3_TEMPLATE,
    )
    with seeded(seed):
        module = tf.Idefics3ForConditionalGeneration(config).eval()
        return _chat_model(module, processor, dtype, lora, gradient_checkpointing, attn_implementation)


GEMMA3_TEMPLATE = (  # Gemma's turns; a system message goes into the first user turn (Gemma has no system role)
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}<start_of_turn>user\n"
    "{% else %}{% if m['role'] == 'user' and loop.index0 > 0 and messages[loop.index0 - 1]['role'] == 'system' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{% endif %}{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% if m['role'] == 'system' %}\n\n{% else %}<end_of_turn>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def tiny_gemma3(
    seed: int = 0,
    hidden_size: int = 36,
    num_layers: int = 2,
    image_size: int = 96,
    dtype: str = "float32",
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> ChatModel:
    """A random Gemma-3: SigLIP-style tower, average-pooled to 16 soft tokens, Gemma-3 LM.

    The processor returns `token_type_ids` (1 for image tokens, which attend to each other both
    ways); a training forward pads them over the appended completion (`_pad_token_types`).
    """
    import transformers as tf

    _check_image_size(image_size, 24, "tiny_gemma3")
    special = ["<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
    special += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    roles = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<end_of_turn>"}
    tok = _tiny_tokenizer(special, roles, 800)
    # The processor reads these by name; they are saved in the tokenizer config.
    tok._set_model_specific_special_tokens({"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                            "image_token": "<image_soft_token>"})  # fmt: skip
    ids = dict(zip(special, tok.convert_tokens_to_ids(special), strict=True))
    text = _text_config(tok, hidden_size, num_layers, 3, head_dim=hidden_size // 3, query_pre_attn_scalar=hidden_size // 3,
                        sliding_window=64, layer_types=["sliding_attention"] * (num_layers - 1) + ["full_attention"])  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=58, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=12)  # fmt: skip
    config = tf.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=16,  # the 8×8 patch grid average-pooled 2×2
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    processor = tf.Gemma3Processor(
        image_processor=tf.Gemma3ImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tok,
        image_seq_length=16,
        chat_template=GEMMA3_TEMPLATE,
    )
    with seeded(seed):
        module = tf.Gemma3ForConditionalGeneration(config).eval()
        # Gemma-3 initialises its image projection to zeros (pretrained weights replace it); a
        # random model needs a random one, or every image would give the same soft tokens.
        torch.nn.init.normal_(module.model.multi_modal_projector.mm_input_projection_weight, std=0.2)
        return _chat_model(module, processor, dtype, lora, gradient_checkpointing, attn_implementation)
