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
from rlhfv.training import distributed
from rlhfv.training.step import TrainStep
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


def sft_loss(
    model: ChatModel,
    examples: Sequence[Example],
    device: torch.device,
    forward: torch.nn.Module | None = None,
    accelerator: Any = None,
) -> tuple[torch.Tensor, int]:
    """Mean answer-token cross-entropy, and the number of answer tokens.

    With several processes (`accelerator`), each holding its share of the examples, the mean is
    over the answer tokens of all processes, scaled by the number of processes: the average of
    the processes' losses, which DDP, ZeRO and FSDP apply to the gradients, is then the loss of
    the whole batch. `forward` is the module to run (the prepared one; default `model.module`)."""
    prompts = to_device(model.encoder([e.prompt for e in examples]), device)
    ids, mask = tokenize_completions(model, [e.answer for e in examples])
    ids, mask = ids.to(device), mask.to(device)
    logprobs = sequence_logprobs(
        forward if forward is not None else model.module, prompts, ids, mask,
        suppressed_tokens=model.suppressed_tokens,
    )  # [N, T]  # fmt: skip
    tokens = int(mask.sum())
    world = accelerator.num_processes if accelerator is not None else 1
    total = distributed.sum_over_processes(accelerator, tokens) if world > 1 else tokens
    return -logprobs.sum() / max(total, 1) * world, tokens


@dataclass
class SFTStep:
    """What one supervised optimizer step did."""

    loss: float  # mean answer-token cross-entropy over the step's examples (this process's share)
    grad_norm: float  # before clipping
    tokens: int  # answer tokens trained on (this process)


def sft_update(
    model: ChatModel,
    dataset: Any,
    step: int,
    trainer: TrainStep,
    *,
    batch_size: int,
    grad_accum: int,
    seed: int,
    device: torch.device,
    autocast: Any = None,
) -> SFTStep:
    """One optimizer step of supervised training on the step's deterministic batch (`batch_indices`).

    `batch_size` is global: with W processes, each takes its 1/W slice of every micro-batch.
    Raises FloatingPointError naming the step and examples when the loss is not finite.
    """
    accelerator = trainer.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    loss_total, tokens = 0.0, 0
    for micro in range(grad_accum):
        indices = distributed.rank_slice(
            batch_indices(step, micro, batch_size, grad_accum, len(dataset), seed), rank, world
        )
        with autocast if autocast is not None else nullcontext():
            loss, n_tokens = sft_loss(
                model, [dataset[i] for i in indices], device, trainer.model, accelerator
            )
        trainer.loss_is_finite(loss, step, lambda indices=indices: f" (examples {indices[:4]}…)")
        trainer.backward(loss / grad_accum, last=micro == grad_accum - 1)
        loss_total += loss.item() / grad_accum
        tokens += n_tokens
    grad_norm, _ = trainer.step(step)
    return SFTStep(loss_total, grad_norm, tokens)
