"""A LLaVA-style multimodal LM assembled from parts: an open_clip vision tower, a trainable MLP
projector and any transformers causal LM.

The prompt text holds one placeholder token per visual token (`<image>` repeated K times per
image, written by the encoder through the LM tokenizer's chat template). The module embeds the
text, runs the tower on the pixels, projects its patch tokens (optionally with the pooled image
embedding in front) to the LM width, and writes them over the placeholder embeddings:

    pixels [I, 3, S, S] → tower → patch tokens [I, N, W] (+ pooled [I, E] → [I, 1, W])
                        → projector MLP → [I, K, H] → scattered into text embeddings [B, L, H]

Saving writes safetensors weights and a JSON config (no pickle); `load_clip_lm` rebuilds it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfv.config import ExistingPath
from rlhfv.models.base import ChatModel, checkpoint_activations, seeded, torch_dtype
from rlhfv.models.hf_vlm import attach_lora
from rlhfv.types import Prompt

LOADER = "rlhfv.models.clip_lm.load_clip_lm"
CONFIG_FILE = "clip_lm.json"
WEIGHTS_FILE = "model.safetensors"
IMAGE_TOKEN = "<image>"
FEATURES = ("patch", "pooled+patch")
# open_clip only builds whole CLIP models; the text tower is never used, so it is made minimal.
UNUSED_TEXT_TOWER = {"vocab_size": 1, "width": 8, "heads": 1, "layers": 1, "context_length": 1}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ClipLM(nn.Module):
    """Vision tower + projector + causal LM, called like a transformers image-text model."""

    def __init__(self, vision_spec: dict[str, Any], lm: nn.Module, feature: str, image_token_id: int):
        super().__init__()
        if feature not in FEATURES:
            raise ValueError(f"feature={feature!r}; choose one of {FEATURES}")
        # open_clip: {"embed_dim", "vision_cfg", optional "quick_gelu", "preprocess_cfg"};
        # timm CNN: {"kind": "timm", "timm_model", "layer", "grid", "image_size", "mean", "std",
        # "grid_pos", "feature_cache"}. Enough to rebuild the tower.
        self.vision_spec = vision_spec
        self.feature = feature
        self.image_token_id = image_token_id
        if vision_spec.get("kind") == "timm":
            self.vision = _grid_tower(vision_spec)
            width = pooled_width = self.vision.width
            num_patches = self.vision.num_tokens
        else:
            self.vision = _open_clip_tower(vision_spec)
            width, pooled_width = self.vision.conv1.out_channels, vision_spec["embed_dim"]
            num_patches = self.vision.grid_size[0] * self.vision.grid_size[1]
        hidden = lm.get_input_embeddings().embedding_dim
        # a CNN's grid tokens carry no position of their own; the LM sees only their order
        self.grid_pos = nn.Parameter(torch.zeros(num_patches, width)) if vision_spec.get("grid_pos") else None
        self.projector = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.pooled_in = nn.Linear(pooled_width, width) if feature == "pooled+patch" else None
        self.lm = lm
        self.num_image_tokens = num_patches + (1 if self.pooled_in is not None else 0)  # K

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels [I, 3, S, S] → LM-space image tokens [I, K, H]."""
        tower_trains = any(p.requires_grad for p in self.vision.parameters())
        # A frozen tower keeps no autograd graph: its activations are not stored for backward.
        with torch.set_grad_enabled(torch.is_grad_enabled() and tower_trains):
            pooled, tokens = self.vision(
                pixel_values.to(next(self.vision.parameters()).dtype)
            )  # [I, E], [I, N, W]
        if self.grid_pos is not None:
            tokens = tokens + self.grid_pos
        if self.pooled_in is not None:
            tokens = torch.cat([self.pooled_in(pooled).unsqueeze(1), tokens], dim=1)  # [I, 1+N, W]
        return self.projector(tokens)  # [I, K, H]

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        """Text embeddings [B, L, H] with image features written over the placeholder tokens."""
        embeds = self.lm.get_input_embeddings()(input_ids)  # [B, L, H]
        slots = input_ids == self.image_token_id  # [B, L]
        if pixel_values is None:
            if slots.any():
                raise ValueError(f"input_ids hold {int(slots.sum())} image placeholders but no pixel_values")
            return embeds
        features = self.image_features(pixel_values)  # [I, K, H]
        if int(slots.sum()) != features.shape[0] * features.shape[1]:
            raise ValueError(
                f"{int(slots.sum())} image placeholder tokens for {features.shape[0]} images × "
                f"{features.shape[1]} tokens each; was the prompt truncated?"
            )
        return embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> Any:
        """Logits [B, L, V] (and `.loss` when labels [B, L] are given, -100 = ignored)."""
        if logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        embeds = self.embed(input_ids, pixel_values)
        return self.lm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        **gen_kwargs: Any,
    ) -> Any:
        """Prompt ids [B, P] followed by new tokens: [B, P+T], like a transformers model.

        Given only embeddings, the LM returns just the new tokens, so the prompt is put back in
        front (also in `.sequences` when `return_dict_in_generate=True`).
        """
        embeds = self.embed(input_ids, pixel_values)
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **gen_kwargs)
        if isinstance(out, torch.Tensor):
            return torch.cat([input_ids, out], dim=1)  # [B, P+T]
        out.sequences = torch.cat([input_ids, out.sequences], dim=1)
        return out

    def _state_for_saving(self) -> dict[str, torch.Tensor]:
        """Plain weights; LoRA adapters are merged into the LM's weights for the copy that is saved."""
        lm = self.lm
        peft = hasattr(lm, "merge_adapter")
        if peft:
            lm.merge_adapter()
        try:
            state = {
                k.replace(".base_layer", ""): v for k, v in self.state_dict().items() if "lora_" not in k
            }
            state = {k.replace("lm.base_model.model.", "lm."): v for k, v in state.items()}
            seen: set[int] = set()
            out = {}
            for k, v in state.items():  # tied weights (embeddings = LM head) are stored twice
                out[k] = v.detach().clone().contiguous() if peft or v.data_ptr() in seen else v.contiguous()
                seen.add(v.data_ptr())
        finally:
            if peft:
                lm.unmerge_adapter()
        return out

    def save_pretrained(self, path: str | Path, safe_serialization: bool = True) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lm = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        config = {
            "vision": self.vision_spec,
            "lm_config": lm.config.to_dict(),
            "feature": self.feature,
            "image_token_id": self.image_token_id,
        }
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        save_file(self._state_for_saving(), str(path / WEIGHTS_FILE))


def _open_clip_tower(vision_spec: dict[str, Any]) -> nn.Module:
    import open_clip

    vision_cfg = {**vision_spec["vision_cfg"], "output_tokens": True}
    clip = open_clip.CLIP(
        vision_spec["embed_dim"],
        vision_cfg,
        UNUSED_TEXT_TOWER,
        quick_gelu=vision_spec.get("quick_gelu", False),
    )
    if not hasattr(clip.visual, "grid_size"):
        raise ValueError(
            "clip_lm needs an open_clip ViT tower (patch tokens); for a CNN use build_cnn_lm (a timm tower)"
        )
    return clip.visual


def _grid_tower(vision_spec: dict[str, Any]) -> nn.Module:
    from rlhfv.models.cnn_tower import FeatureCache, GridTower

    where = vision_spec.get("feature_cache")
    cache = None if where is None else FeatureCache(None if where == "memory" else where)
    return GridTower(
        vision_spec["timm_model"], vision_spec["layer"], vision_spec["grid"], vision_spec["image_size"], cache
    )


def _image_settings(vision_spec: dict[str, Any]) -> tuple[int, Sequence[float], Sequence[float]]:
    """(input side, mean, std) the tower expects."""
    if vision_spec.get("kind") == "timm":
        return vision_spec["image_size"], vision_spec["mean"], vision_spec["std"]
    preprocess = vision_spec.get("preprocess_cfg", {})
    return (
        vision_spec["vision_cfg"]["image_size"],
        preprocess.get("mean", OPENAI_MEAN),
        preprocess.get("std", OPENAI_STD),
    )


class ClipLMEncoder:
    """Prompts → left-padded token ids with K placeholders per image, and normalized pixels."""

    def __init__(
        self,
        tokenizer: Any,
        image_size: int,
        num_image_tokens: int,
        mean: Sequence[float],
        std: Sequence[float],
        dtype: torch.dtype = torch.float32,
    ):
        import open_clip

        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.transform = open_clip.image_transform(
            image_size, is_train=False, mean=tuple(mean), std=tuple(std)
        )
        self.dtype = dtype

    def __call__(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        texts = []
        for p in prompts:
            placeholders = IMAGE_TOKEN * self.num_image_tokens * len(p.images)
            messages = [{"role": "system", "content": p.system}] if p.system else []
            content = f"{placeholders}\n{p.text}" if p.images else p.text
            messages.append({"role": "user", "content": content})
            texts.append(
                self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                + p.prefill
            )
        batch = self.tokenizer(
            texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt"
        )  # input_ids, attention_mask: [B, P]
        out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        images = [image for p in prompts for image in p.images]
        if images:
            pixels = torch.stack([self.transform(image.convert("RGB")) for image in images])  # [I, 3, S, S]
            out["pixel_values"] = pixels.to(self.dtype)
        return out

    def save_pretrained(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(str(path))  # image settings live in the module's clip_lm.json


def _configure(
    module: ClipLM,
    freeze_vision: bool,
    freeze_lm: bool,
    lora: dict[str, Any] | None,
    gradient_checkpointing: bool = False,
) -> ClipLM:
    """Apply the trainability switches and the LM's gradient checkpointing; the projector always trains."""
    module.vision.requires_grad_(not freeze_vision)
    module.lm.requires_grad_(not freeze_lm)
    if gradient_checkpointing:  # the LM's layers: they hold nearly all of the activations
        checkpoint_activations(module.lm)
    if lora is not None:  # peft freezes the LM's own weights and adds trainable adapters
        module.lm = attach_lora(module.lm, lora, "all-linear")
    return module


def _chat_model(module: ClipLM, tokenizer: Any, dtype: str) -> ChatModel:
    module = module.to(torch_dtype(dtype)).eval()
    lm_gen = module.lm.generation_config
    lm_gen.pad_token_id = tokenizer.pad_token_id
    lm_gen.eos_token_id = tokenizer.eos_token_id
    size, mean, std = _image_settings(module.vision_spec)
    encoder = ClipLMEncoder(
        tokenizer, image_size=size, num_image_tokens=module.num_image_tokens, mean=mean, std=std,
        dtype=torch_dtype(dtype),
    )  # fmt: skip
    # a sampled placeholder has no image behind it
    return ChatModel(module, tokenizer, encoder, LOADER, suppressed_tokens=(module.image_token_id,))


def _load_tower_weights(module: ClipLM, path: str) -> None:
    """Load an open_clip checkpoint's `visual.*` weights (safetensors or a torch state dict)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"clip_pretrained: no weights file at {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no code
        state = state.get("state_dict", state)
    visual = {
        k.removeprefix("module.").removeprefix("visual."): v for k, v in state.items() if "visual." in k
    }
    if not visual:
        raise ValueError(
            f"clip_pretrained: {path} holds no 'visual.*' weights (is it an open_clip checkpoint?)"
        )
    module.vision.load_state_dict(visual)


def build_clip_lm(
    lm: ExistingPath,
    clip_model: str = "ViT-B-32",
    clip_pretrained: str | None = None,
    feature: str = "patch",
    freeze_vision: bool = True,
    freeze_lm: bool = False,
    lora: dict[str, Any] | None = None,
    dtype: str = "float32",
    seed: int = 0,
    gradient_checkpointing: bool = True,
) -> ChatModel:
    """Assemble an open_clip tower, a fresh projector and a local causal LM with a chat template.

    Args:
        lm: Local folder of a transformers causal LM and its tokenizer (with a chat template).
        clip_model: Any open_clip model name (`open_clip.list_models()`), ViT towers only.
        clip_pretrained: Local open_clip weights file; None = random tower.
        feature: "patch" (one token per patch) or "pooled+patch" (the pooled embedding first).
        freeze_vision, freeze_lm: Keep those weights fixed; the projector always trains.
        lora: LoRA settings for the LM (see `rlhfv.models.hf_vlm.attach_lora`), all linear layers by default.
        seed: Seed for the random tower and projector.
        gradient_checkpointing: Checkpoint the LM's layers (`rlhfv.models.base.checkpoint_activations`).
    """
    import open_clip

    spec = open_clip.get_model_config(clip_model)
    if spec is None:
        raise ValueError(f"clip_model={clip_model!r} is not an open_clip model; see open_clip.list_models()")
    tokenizer, language_model = _load_lm(lm, "build_clip_lm")
    vision_spec = {
        k: spec[k] for k in ("embed_dim", "vision_cfg", "quick_gelu", "preprocess_cfg") if k in spec
    }
    with seeded(seed):
        module = ClipLM(vision_spec, language_model, feature, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        if clip_pretrained is not None:
            _load_tower_weights(module, clip_pretrained)
        return _chat_model(
            _configure(module, freeze_vision, freeze_lm, lora, gradient_checkpointing), tokenizer, dtype
        )


def build_cnn_lm(
    lm: str = "smollm2-135m-instruct",
    tower: str = "efficientnet-lite0",
    layer: int | str = -1,
    grid: int = 4,
    feature: str = "patch",
    grid_pos: bool = True,
    feature_cache: str | None = "memory",
    freeze_vision: bool = True,
    freeze_lm: bool = False,
    lora: dict[str, Any] | None = None,
    dtype: str = "float32",
    seed: int = 0,
    gradient_checkpointing: bool = True,
) -> ChatModel:
    """Assemble a pulled timm CNN tower, a fresh LLaVA-1.5 projector and a local causal LM.

    Args:
        lm: A causal LM with a chat template: a local folder, or the name of a pulled model.
        tower: A tower folder written by `rlhfv models pull` (weights + tower.json), or its name.
        layer: Feature map: index into the trunk's stages (-1 = last, lite0 320×7×7; -2 = 112×14×14)
            or "head" (lite0 1280×7×7).
        grid: The map is average-pooled to grid×grid image tokens (7 keeps lite0's 7×7).
        feature: "patch" (grid tokens only) or "pooled+patch" (the map's mean as a first, global token).
        grid_pos: Add a learned position embedding per grid cell before the projector.
        feature_cache: With a frozen tower: "memory", a folder (safetensors on disk, shared by runs
            and keyed by the tower's weights) or None (no cache).
        freeze_vision, freeze_lm: Keep those weights fixed; the projector always trains.
        lora: LoRA settings for the LM (see `rlhfv.models.hf_vlm.attach_lora`).
        seed: Seed for the projector.
        gradient_checkpointing: Checkpoint the LM's layers (`rlhfv.models.base.checkpoint_activations`).
    """
    from rlhfv.models.cnn_tower import load_trunk_weights, read_tower_card
    from rlhfv.models.hub import resolve_model

    lm, tower = resolve_model(str(lm)), resolve_model(str(tower))
    card = read_tower_card(tower)
    tokenizer, language_model = _load_lm(lm, "build_cnn_lm")
    vision_spec = {
        "kind": "timm", "timm_model": card["timm_model"], "layer": layer, "grid": grid,
        "image_size": card["image_size"], "mean": card["mean"], "std": card["std"],
        "grid_pos": grid_pos, "feature_cache": feature_cache, "frozen": freeze_vision,
    }  # fmt: skip
    with seeded(seed):
        module = ClipLM(vision_spec, language_model, feature, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    load_trunk_weights(module.vision, tower)
    return _chat_model(
        _configure(module, freeze_vision, freeze_lm, lora, gradient_checkpointing), tokenizer, dtype
    )


def _load_lm(lm: str | Path, who: str) -> tuple[Any, nn.Module]:
    """A local causal LM and its tokenizer, with the image placeholder token added."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(lm)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{who}: lm={str(lm)!r} is not a model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if not tokenizer.chat_template:
        raise ValueError(f"{who}: the tokenizer in {folder} has no chat template; use an instruct model")
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    language_model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
        language_model.resize_token_embeddings(len(tokenizer))
    return tokenizer, language_model


def tiny_clip_lm(
    seed: int = 0,
    hidden_size: int = 36,
    num_layers: int = 2,
    image_size: int = 64,
    patch_size: int = 16,
    vision_width: int = 32,
    vision_layers: int = 2,
    feature: str = "patch",
    freeze_vision: bool = False,
    freeze_lm: bool = False,
    lora: dict[str, Any] | None = None,
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
) -> ChatModel:
    """A random tiny ViT tower + projector + Llama LM with the offline tokenizer, for CPU tests.

    At the defaults a 64×64 image becomes (64/16)² = 16 image tokens. Gradient checkpointing is
    off by default: a tiny model's activations are small and recomputing them slows CPU tests.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfv.models.tokenizer import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN], 515)
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tokenizer.chat_template = CHATML_TEMPLATE
    if hidden_size % 3 or (hidden_size // 3) % 2:
        raise ValueError(f"hidden_size={hidden_size} must split into 3 heads of even size (e.g. 36, 48)")
    with seeded(seed):
        lm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=hidden_size,
                intermediate_size=2 * hidden_size - 2,
                num_hidden_layers=num_layers,
                num_attention_heads=3,
                num_key_value_heads=1,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=None,
            )
        )
        vision_cfg = {"image_size": image_size, "patch_size": patch_size, "width": vision_width,
                      "layers": vision_layers, "head_width": 16}  # fmt: skip
        vision_spec = {"embed_dim": 24, "vision_cfg": vision_cfg}
        module = ClipLM(vision_spec, lm, feature, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        return _chat_model(
            _configure(module, freeze_vision, freeze_lm, lora, gradient_checkpointing), tokenizer, dtype
        )


def load_clip_lm(
    path: str,
    dtype: str = "float32",
    freeze_vision: bool | None = None,
    freeze_lm: bool = False,
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = True,
) -> ChatModel:
    """Rebuild a ClipLM written by `save_pretrained` / `rlhfv.models.base.save_model`.

    freeze_vision=None keeps the tower as its builder left it: a CNN tower built frozen stays frozen
    (and its feature cache keeps working); an open_clip tower trains. `gradient_checkpointing`
    checkpoints the LM's layers, on by default as for every loaded HF model.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"load_clip_lm: {folder} has no {CONFIG_FILE}; is it a saved clip_lm model?")
    config = json.loads((folder / CONFIG_FILE).read_text())
    lm_config = dict(config["lm_config"])
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_config.pop("model_type"), **lm_config))
    module = ClipLM(config["vision"], lm, config["feature"], config["image_token_id"])
    module.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if freeze_vision is None:
        freeze_vision = config["vision"].get("frozen", False)
    return _chat_model(
        _configure(module.eval(), freeze_vision, freeze_lm, lora, gradient_checkpointing), tokenizer, dtype
    )
