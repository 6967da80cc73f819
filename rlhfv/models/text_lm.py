"""Text-only causal language models as `ChatModel`s: any local transformers folder, or a tiny one.

`load_text_lm` opens a transformers causal-LM folder (a `save_model` output, a plain
`save_pretrained` folder, or a model pulled with `rlhfv models pull`, by name). `tiny_text_lm`
builds a small Llama-style model from config with a byte-level BPE tokenizer trained offline, for
tests. Both feed prompts through the tokenizer's chat template; text models ignore `Prompt.images`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhfv.models.base import ChatModel, checkpoint_activations, seeded, torch_dtype
from rlhfv.types import Prompt

logger = logging.getLogger(__name__)

LOADER = "rlhfv.models.text_lm.load_text_lm"

# A ChatML-style template, used by the tiny tokenizer (SmolLM2 ships the same shape of template).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TextPromptEncoder:
    """Prompts → left-padded token batch via the tokenizer's chat template (images are ignored)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        system = [{"role": "system", "content": prompt.system}] if prompt.system else []
        return [*system, {"role": "user", "content": prompt.text}]

    def __call__(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        texts = [
            self.tokenizer.apply_chat_template(self.messages(p), tokenize=False, add_generation_prompt=True)
            + p.prefill
            for p in prompts
        ]
        # The template already holds every special token; adding a BOS again would double it.
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}  # [B, P] each

    def save_pretrained(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(path)


def wrap_text_lm(module: torch.nn.Module, tokenizer: Any) -> ChatModel:
    """Give a causal LM + tokenizer the ChatModel interface (left padding, a pad token, eos)."""
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts are padded on the left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    module.generation_config.pad_token_id = tokenizer.pad_token_id
    module.generation_config.eos_token_id = tokenizer.eos_token_id
    return ChatModel(module=module, tokenizer=tokenizer, encoder=TextPromptEncoder(tokenizer), loader=LOADER)


def load_text_lm(
    path: str,
    dtype: str = "float32",
    lora: dict | None = None,
    revision: str | None = None,
    gradient_checkpointing: bool = True,
    attn_implementation: str = "sdpa",
) -> ChatModel:
    """Load a transformers causal LM from a local folder, a pulled model's name or a Hub ID.

    Args:
        path: Folder with weights + tokenizer, a pulled model's name (`rlhfv.models.hub.model_home`)
            or a Hugging Face Hub ID (`HuggingFaceTB/SmolLM2-135M-Instruct`).
        dtype: "float32", "bfloat16" or "float16" (see `rlhfv.models.hf_vlm.load_hf_vlm` on
            training bf16 weights).
        lora: Optional peft LoraConfig keyword arguments (`{"r": 8, "target_modules": [...]}`);
            the returned module then trains only the adapters.
        revision: Branch, tag or commit of a Hub ID.
        gradient_checkpointing: Recompute layer activations in backward
            (`rlhfv.models.base.checkpoint_activations`); on by default, as in TRL.
        attn_implementation: "sdpa", "eager", or "flash_attention_2" (GPU).
    Returns:
        The model as a ChatModel whose loader is this function.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfv.models.hub import resolve_model

    folder = resolve_model(path, revision)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.chat_template is None:
        raise ValueError(f"{folder}: the tokenizer has no chat_template; add one to tokenizer_config.json")
    module = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch_dtype(dtype), attn_implementation=attn_implementation
    )
    if gradient_checkpointing:
        checkpoint_activations(module)
    if lora:
        from peft import LoraConfig, get_peft_model

        module = get_peft_model(module, LoraConfig(task_type="CAUSAL_LM", **lora))
    return wrap_text_lm(module, tokenizer)


def tiny_tokenizer() -> Any:
    """A small byte-level BPE tokenizer (trained offline) with ChatML markers and a chat template."""
    from rlhfv.models.tokenizer import train_tiny_tokenizer

    tok = train_tiny_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], vocab_size=397)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_text_lm(
    seed: int = 0,
    hidden_size: int = 36,
    num_layers: int = 2,
    num_heads: int = 3,
    intermediate_size: int = 52,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
) -> ChatModel:
    """A randomly initialised Llama-style model (odd sizes catch shape bugs) with a tiny tokenizer.

    Gradient checkpointing is off by default here: a tiny model's activations are small, and
    the recomputation would only slow CPU tests down."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    with seeded(seed):
        module = LlamaForCausalLM(config)
    module.set_attn_implementation(attn_implementation)
    if gradient_checkpointing:
        checkpoint_activations(module)
    return wrap_text_lm(module, tokenizer)
