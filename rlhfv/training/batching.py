"""Batches for training on reference answers: which examples, their completion tensors, their loss.

Prompts come left-padded from a model's encoder ([N, P]); completions are right-padded ([N, T]), so
side by side every row's completion starts at column P (`rlhfv.rollout.sequence_logprobs` scores them).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from rlhfv.models.base import ChatModel
from rlhfv.rollout import sequence_logprobs
from rlhfv.types import Example


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


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def batch_indices(step: int, micro: int, batch_size: int, grad_accum: int, size: int, seed: int) -> list[int]:
    """Data indices of micro-batch `micro` of step `step` (1-based): a fresh permutation per epoch."""
    start = ((step - 1) * grad_accum + micro) * batch_size
    out = []
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, size)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(order[offset]))
    return out


def sft_loss(model: ChatModel, examples: Sequence[Example], device: torch.device) -> tuple[torch.Tensor, int]:
    """Mean answer-token cross-entropy, and the number of answer tokens."""
    prompts = to_device(model.encoder([e.prompt for e in examples]), device)
    ids, mask = tokenize_completions(model, [e.answer for e in examples])
    ids, mask = ids.to(device), mask.to(device)
    logprobs = sequence_logprobs(model, prompts, ids, mask)  # [N, T]
    tokens = int(mask.sum())
    return -logprobs.sum() / max(tokens, 1), tokens


@dataclass
class SFTStep:
    """What one supervised optimizer step did."""

    loss: float  # mean answer-token cross-entropy over the step's examples
    grad_norm: float  # before clipping
    tokens: int  # answer tokens trained on


def sft_update(
    model: ChatModel,
    dataset: Any,
    step: int,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    batch_size: int,
    grad_accum: int,
    seed: int,
    max_grad_norm: float,
    device: torch.device,
    autocast: Any = None,
) -> SFTStep:
    """One optimizer step of supervised training on the step's deterministic batch (`batch_indices`).

    Raises FloatingPointError naming the step and examples when the loss is not finite.
    """
    loss_total, tokens = 0.0, 0
    for micro in range(grad_accum):
        indices = batch_indices(step, micro, batch_size, grad_accum, len(dataset), seed)
        with autocast if autocast is not None else nullcontext():
            loss, n_tokens = sft_loss(model, [dataset[i] for i in indices], device)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: SFT loss is {loss.item()} (examples {indices[:4]}…)")
        (loss / grad_accum).backward()
        loss_total += loss.item() / grad_accum
        tokens += n_tokens
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return SFTStep(loss_total, float(grad_norm), tokens)
