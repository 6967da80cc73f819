"""Prompt + completion batches and the per-token log-probabilities of completions.

Prompts come left-padded from a model's encoder ([N, P]); completions are right-padded ([N, T]).
Putting them side by side gives one [N, P+T] sequence per row whose completion always starts at
column P, so the completion's logits are the slice [P-1, P+T-1) of the model output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlhfv.models.base import ChatModel


def tokenize_completions(
    model: ChatModel, texts: Sequence[str], add_eos: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded completion ids [N, T] and mask [N, T] (1 = real token), EOS appended."""
    tok = model.tokenizer
    rows = [
        tok(t, add_special_tokens=False)["input_ids"] + ([model.eos_token_id] if add_eos else [])
        for t in texts
    ]
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), model.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def completion_logprobs(
    model: ChatModel,
    prompt_batch: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probability of each completion token under the model. Shape [N, T] (0 where masked).

    Args:
        prompt_batch: The encoder's output (left-padded prompts + vision tensors), on the model's device.
        completion_ids: [N, T] right-padded completion tokens.
        completion_mask: [N, T], 1 for real tokens.
        temperature: Logits are divided by it (match the sampling temperature for RL ratios).
    """
    prompt_len = prompt_batch["input_ids"].shape[1]
    input_ids = torch.cat([prompt_batch["input_ids"], completion_ids], dim=1)  # [N, P+T]
    attention = torch.cat([prompt_batch["attention_mask"], completion_mask], dim=1)  # [N, P+T]
    vision = {k: v for k, v in prompt_batch.items() if k not in ("input_ids", "attention_mask")}
    logits = model.module(input_ids=input_ids, attention_mask=attention, **vision).logits  # [N, P+T, V]
    logits = logits[:, prompt_len - 1 : -1, :].float() / temperature  # [N, T, V]: position t predicts token t
    logprobs = (
        torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    )  # [N, T]
    return logprobs * completion_mask


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
