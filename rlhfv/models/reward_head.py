"""A score-only reward model: any builder's network with a linear head on its last hidden state.

The head reads the final layer's hidden state at the last real token of prompt + response (the
response's EOS), the place where a causal model has seen everything, and maps it to one number.
`rlhfv.pipelines.reward_model` trains it on pairs (Bradley–Terry); `rlhfv.rewards.scalar.ScalarRM`
scores a policy's completions with it.

Saved as the backbone's usual model folder (`save_model`, so `load_model` still reads it) plus
`score_head.safetensors`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfv.models.base import ChatModel, load_model, save_model

HEAD_FILE = "score_head.safetensors"


def hidden_size(module: nn.Module, pad_token_id: int) -> int:
    """Width of the last hidden state, read from a one-token forward pass (works for any builder)."""
    with torch.no_grad():
        device = next(module.parameters()).device
        one = torch.full((1, 1), pad_token_id, dtype=torch.long, device=device)
        out = module(
            input_ids=one, attention_mask=torch.ones_like(one), output_hidden_states=True, use_cache=False
        )
    return out.hidden_states[-1].shape[-1]


class ScalarRewardModel(nn.Module):
    """`backbone` (a ChatModel's module) + a linear head [H] → 1; its state dict holds both."""

    def __init__(self, backbone: nn.Module, width: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(width, 1)
        nn.init.normal_(self.head.weight, std=1 / (width + 1) ** 0.5)  # scores start near 0, of order 1
        nn.init.zeros_(self.head.bias)
        base_of = getattr(backbone, "get_base_model", None)  # a peft model wraps the network
        inner: Any = base_of() if base_of is not None else backbone
        # the LM head's logits are not needed: compute one position's where the model allows it
        self.keep_one = "logits_to_keep" in inspect.signature(inner.forward).parameters

    def forward(
        self,
        prompt_batch: dict[str, torch.Tensor],
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
    ) -> torch.Tensor:
        """One score per row. Prompts left-padded [N, P] (+ vision tensors), responses right-padded
        [N, T] with mask [N, T]; returns [N] in float32."""
        p = prompt_batch["input_ids"].shape[1]
        input_ids = torch.cat([prompt_batch["input_ids"], completion_ids], dim=1)  # [N, P+T]
        attention = torch.cat(
            [prompt_batch["attention_mask"], completion_mask.to(prompt_batch["attention_mask"].dtype)], dim=1
        )
        vision: dict[str, Any] = {
            k: v for k, v in prompt_batch.items() if k not in ("input_ids", "attention_mask")
        }
        if self.keep_one:
            vision["logits_to_keep"] = 1
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention,
            output_hidden_states=True,
            use_cache=False,
            **vision,
        )
        hidden = out.hidden_states[-1]  # [N, P+T, H]
        last = p + completion_mask.sum(dim=1) - 1  # [N]: the response's last token (its EOS)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [N, H]
        return self.head(picked.to(self.head.weight.dtype)).squeeze(-1).float()


def save_reward_model(chat: ChatModel, rm: ScalarRewardModel, path: str | Path) -> None:
    """The backbone as a model folder (`save_model`) and the head beside it."""
    from safetensors.torch import save_file

    save_model(chat, path)
    head = {k: v.detach().cpu().contiguous() for k, v in rm.head.state_dict().items()}
    save_file(head, str(Path(path) / HEAD_FILE))


def load_reward_model(path: str, dtype: str = "float32") -> tuple[ChatModel, ScalarRewardModel]:
    """Read what `save_reward_model` wrote."""
    from safetensors.torch import load_file

    head_file = Path(path) / HEAD_FILE
    if not head_file.is_file():
        raise FileNotFoundError(
            f"{path} has no {HEAD_FILE}: not a reward model written by rlhfv.pipelines.reward_model"
        )
    chat = load_model(path, dtype)
    head = load_file(str(head_file))
    rm = ScalarRewardModel(chat.module, head["weight"].shape[1])
    rm.head.load_state_dict(head)
    return chat, rm  # the head stays float32 whatever the backbone's dtype: forward casts into it
