"""The one interface every model builder returns, and saving/loading it.

A `ChatModel` bundles
- `module`: a torch module called as `module(input_ids=…, attention_mask=…, **vision).logits`
  (logits shape [B, L, V]) and `module.generate(**inputs, …)` like a transformers model;
- `tokenizer`: a transformers tokenizer (eos/pad ids, decoding of completions);
- `encoder`: a `PromptEncoder` that turns `Prompt`s (text + PIL images) into a left-padded batch
  `{"input_ids": [B, P], "attention_mask": [B, P], **vision}` ready for `generate` and, with
  completion tokens appended on the right, for training forward passes. Vision tensors (pixel
  values, grid sizes …) are passed through unchanged: they only concern the prompt part.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from rlhfv.types import Prompt

logger = logging.getLogger(__name__)

MODEL_CARD = "rlhfv_model.json"
ADAPTER_DIR = "adapter"  # a LoRA model's adapters, beside the merged weights


class PromptEncoder(Protocol):
    """Turns prompts into model inputs; saved next to the weights."""

    def __call__(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]: ...

    def save_pretrained(self, path: str | Path) -> None: ...


@dataclass
class ChatModel:
    """A model plus everything needed to feed it chat prompts.

    Attributes:
        module: The network; see the module docstring for the calling convention.
        tokenizer: Tokenizer for decoding completions and for pad/eos ids.
        encoder: Prompt → left-padded input batch.
        loader: Dotted path of a function `f(path) -> ChatModel` that loads what `save_model` wrote.
        suppressed_tokens: Token ids the policy never emits (image placeholders: a sampled one
            would make the next forward pass expect an image that is not there). Sampling gives
            them probability 0 and `rlhfv.rollout.sequence_logprobs` does the same, so the
            sampler and the trainer share one distribution.
    """

    module: torch.nn.Module
    tokenizer: Any
    encoder: PromptEncoder
    loader: str
    suppressed_tokens: tuple[int, ...] = ()

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Initialise weights under `seed`, then give torch's CPU generator back its state: a built
    model is a pure function of its seed, and building one does not reset the run's random
    stream (seeded with run.seed) to the model's seed. Modules draw their initial weights from
    the global generator, so it is forked rather than replaced by a local one."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def save_model(model: ChatModel, path: str | Path) -> None:
    """Write weights (safetensors), tokenizer/processor and a card naming the loader."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    module = model.module
    if hasattr(module, "merge_and_unload") and hasattr(module, "peft_config"):
        module.save_pretrained(path / ADAPTER_DIR)  # the adapters alone too (`rlhfv export --adapter-only`)
        module = module.merge_and_unload()  # a LoRA model is saved merged, loadable without peft
    module.save_pretrained(path, safe_serialization=True)
    model.encoder.save_pretrained(path)
    (path / MODEL_CARD).write_text(json.dumps({"loader": model.loader}, indent=2))


def load_model(path: str, dtype: str = "float32", revision: str | None = None) -> ChatModel:
    """Load any folder written by `save_model` (the card names the right loader): a local folder
    or a Hub ID whose repository holds one (`rlhfv export --push-to-hub`)."""
    from rlhfv.models.hub import resolve_model

    folder = resolve_model(path, revision)
    card = folder / MODEL_CARD
    if not card.is_file():
        raise FileNotFoundError(
            f"{folder} is not an rlhfv model folder (no {MODEL_CARD}); "
            "use rlhfv.models.hf_vlm.load_hf_vlm or rlhfv.models.text_lm.load_text_lm for plain HF folders"
        )
    loader = json.loads(card.read_text())["loader"]
    module_name, _, fn_name = loader.rpartition(".")
    return getattr(importlib.import_module(module_name), fn_name)(str(folder), dtype=dtype)


def freeze_parameters(module: torch.nn.Module, patterns: list[str], key: str = "freeze") -> int:
    """Stop training every parameter whose name matches one of the regular expressions (searched
    anywhere in the name, e.g. "visual" for a Qwen2-VL vision tower, "^model\\.language_model"
    for its LM). Returns how many tensors were frozen. A pattern that matches no parameter is an
    error naming the recipe `key`, since a typo there would silently train everything."""
    params = dict(module.named_parameters())
    frozen = 0
    for pattern in patterns:
        regex = re.compile(pattern)
        hits = [p for name, p in params.items() if regex.search(name)]
        if not hits:
            names = list(params)
            shown = ", ".join(names[:3] + ["…"] + names[-2:]) if len(names) > 5 else ", ".join(names)
            raise ValueError(
                f"{key}: pattern {pattern!r} matches no parameter name (names look like: {shown})"
            )
        frozen += sum(p.requires_grad for p in hits)
        for p in hits:
            p.requires_grad_(False)
    if patterns:
        logger.info("%s: %d of %d parameter tensors frozen", key, frozen, len(params))
    return frozen


def checkpoint_activations(module: torch.nn.Module) -> None:
    """Gradient checkpointing on every layer of a transformers model (vision tower included).

    Each layer keeps only its input for backward and recomputes its activations there: activation
    memory drops from layers × (all intermediates) to layers × hidden per token, for about one
    more forward pass of compute. The values are unchanged. Non-reentrant checkpointing (TRL's
    setting) needs no `enable_input_require_grads`: gradients reach LoRA adapters and trainable
    layers even when the layer inputs (frozen embeddings) do not require grad.

    transformers checkpoints only in training mode with gradients on, and then keeps no KV cache
    (`checkpointing_active`); sampling under `torch.no_grad` keeps its cache.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(module, "activation_checkpointing_enable"):  # the newer name; the old one warns there
        module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def checkpointing_active(module: torch.nn.Module) -> bool:
    """Whether a forward pass of `module` would checkpoint now, and so build no KV cache: some layer
    has checkpointing on, the module is in training mode and gradients are enabled."""
    return (
        module.training
        and torch.is_grad_enabled()
        and any(getattr(m, "gradient_checkpointing", False) is True for m in module.modules())
    )


def torch_dtype(name: str) -> torch.dtype:
    """Map a recipe's dtype string ("float32", "bfloat16", "float16") to a torch dtype."""
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]
