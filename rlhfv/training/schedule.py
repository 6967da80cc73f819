"""Learning-rate schedules as a LambdaLR (its state dict is plain data, so it checkpoints as JSON)."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "cosine", "linear")


def lr_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, kind: str = "cosine"):
    """Linear warm-up to the base rate, then constant, cosine or linear decay to 10% of it."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1 - progress
        return 0.1 + 0.9 * shape

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
