"""The one training step every pipeline calls: backward, accumulation, clipping, the non-finite
policy, the optimizer and scheduler step, on one process or many (`rlhfv.training.distributed`).

A pipeline's loop computes losses; `TrainStep` decides how their gradients cross processes:
    for micro, batch in enumerate(micro_batches):
        loss = ...                       # this process's share of the step's loss
        if not trainer.loss_is_finite(loss, step, cause):
            break                        # on_nonfinite = "skip": the step is dropped on every process
        trainer.backward(loss, last=micro == len(micro_batches) - 1)
    grad_norm, skipped = trainer.step(step)

Each process's losses must add up to its share of the step's loss, scaled so that the average over
processes (what DDP, ZeRO and FSDP apply to gradients) is the loss one process would compute on the
whole global batch. On one process every call reduces to `loss.backward()`,
`clip_grad_norm_`, `optimizer.step()`, `scheduler.step()`: bit-identical to a plain loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from rlhfv.training import distributed

logger = logging.getLogger(__name__)


def check_training_config(cfg: Any) -> None:
    """The keys every training pipeline shares, checked before anything loads: `on_nonfinite`,
    `max_grad_norm`, `strategy` / `zero_stage`, and `run.save_every` against the strategy."""
    on_nonfinite = getattr(cfg, "on_nonfinite", "stop")
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite = {on_nonfinite!r}; choose 'stop' or 'skip'")
    if cfg.max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm = {cfg.max_grad_norm}: must be > 0")
    strategy, zero_stage = getattr(cfg, "strategy", "auto"), getattr(cfg, "zero_stage", 0)
    distributed.check_strategy(strategy, zero_stage)
    _, size = distributed.world()
    if distributed.resolved_strategy(strategy, zero_stage, size) == "deepspeed" and cfg.run.save_every:
        raise ValueError(
            f"run.save_every = {cfg.run.save_every} with DeepSpeed (zero_stage = {zero_stage}): resumable "
            "checkpoints are written by one process, DDP and FSDP; set run.save_every=0 or strategy=fsdp"
        )


class TrainStep:
    """Accumulates the gradients of one optimizer step over micro-batches and takes the step.

    Args:
        accelerator: From `distributed.build_accelerator`.
        model: The prepared model (what the forward pass calls).
        optimizer / scheduler: The prepared optimizer and its learning-rate schedule.
        max_grad_norm: Clip the global gradient norm to this.
        on_nonfinite: "stop" (raise) or "skip" (drop the step on every process).
        name: The loss's name in messages ("GRPO loss", "DPO loss" …).
    """

    def __init__(
        self,
        accelerator: Any,
        model: torch.nn.Module,
        optimizer: Any,
        scheduler: Any,
        max_grad_norm: float,
        on_nonfinite: str,
        name: str,
    ):
        self.accelerator, self.model, self.optimizer, self.scheduler = (
            accelerator,
            model,
            optimizer,
            scheduler,
        )
        self.max_grad_norm, self.on_nonfinite, self.name = max_grad_norm, on_nonfinite, name
        self.kind = distributed.strategy_of(accelerator)

    def loss_is_finite(self, loss: torch.Tensor, step: int, cause: Callable[[], str]) -> bool:
        """Whether every process's loss is finite (a collective with several processes, so all
        processes stop or skip together). "stop" raises FloatingPointError naming the step and
        `cause()`; "skip" clears the gradients and returns False."""
        if distributed.all_processes_agree(self.accelerator, bool(torch.isfinite(loss))):
            return True
        what = (
            f"{self.name} is {loss.item()}" if not torch.isfinite(loss) else f"{self.name} on another process"
        )
        # DeepSpeed cannot drop half an accumulation: it stops whatever on_nonfinite says
        if self.on_nonfinite == "stop" or self.kind == "deepspeed":
            raise FloatingPointError(f"step {step}: {what}{cause()}; no checkpoint was written for this step")
        logger.warning("step %d: skipping the step, %s%s", step, what, cause())
        self.optimizer.zero_grad(set_to_none=True)
        return False

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate `loss`'s gradient; `last` marks the step's last micro-batch, where the
        processes exchange gradients (DDP skips the exchange before it, DeepSpeed steps at it)."""
        self.accelerator.gradient_state._set_sync_gradients(last)
        quiet = not last and self.kind == "ddp"
        with self.accelerator.no_sync(self.model) if quiet else nullcontext():
            self.accelerator.backward(loss)

    def step(self, step: int) -> tuple[float, bool]:
        """Clip, check the gradient norm, step optimizer and scheduler, clear the gradients.

        Returns (gradient norm before clipping, whether the step was skipped). A non-finite norm
        raises under "stop"; under "skip" nothing is stepped.
        """
        norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        grad_norm = float(norm) if norm is not None else float("nan")
        if not torch.isfinite(torch.tensor(grad_norm)):
            if self.on_nonfinite == "stop" or self.kind == "deepspeed":
                raise FloatingPointError(
                    f"step {step}: gradient norm is {grad_norm}; no checkpoint was written for this step"
                )
            logger.warning("step %d: skipping the step, gradient norm is %s", step, grad_norm)
            self.optimizer.zero_grad(set_to_none=True)
            return grad_norm, True
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, False
