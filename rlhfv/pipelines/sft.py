"""Supervised fine-tuning of any builder's model on (image(s), prompt, answer) examples.

The loss is the mean cross-entropy of the answer tokens (EOS included) given the prompt; prompt
tokens and padding are masked out. The batch for step s is a pure function of (seed, s), so a
resumed run sees exactly the data an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from tqdm import tqdm

from rlhfv.config import RunConfig, component_field, instantiate
from rlhfv.models.base import ChatModel, freeze_parameters
from rlhfv.training import distributed
from rlhfv.training.batching import sft_update
from rlhfv.training.evaluation import accuracy_summary, evaluate_accuracy
from rlhfv.training.run import pick_device, seed_everything, start_run, training_state
from rlhfv.training.schedule import lr_schedule
from rlhfv.training.step import TrainStep, check_training_config

logger = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    """Keys of an SFT recipe.

    Attributes:
        policy: Model builder node (returns a ChatModel).
        train_data / eval_data: Data set nodes yielding `Example`s (eval_data may be omitted).
        optimizer: Optimizer node; the trainable parameters are passed positionally.
        steps: Optimizer steps. batch_size × grad_accum examples make one step.
        schedule: "constant", "cosine" or "linear" after `warmup_steps` of linear warm-up.
        eval_every: Evaluate held-out accuracy every this many steps (0: only before and after).
        max_new_tokens: Generation length for evaluation.
        freeze: Regular expressions; parameters whose names match one are not trained.
        strategy / zero_stage: How several processes train (`rlhfv.training.distributed`):
            "auto" is DDP, or DeepSpeed ZeRO when zero_stage is 2 or 3; "fsdp" is FSDP2.
            batch_size is global: W processes take batch_size / W examples each.
    """

    run: RunConfig = field(default_factory=RunConfig)
    policy: dict[str, Any] = component_field({"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl"})
    train_data: dict[str, Any] = component_field({"_component_": "rlhfv.data.shapes.ShapesVQA"})
    eval_data: dict[str, Any] | None = None
    optimizer: dict[str, Any] = component_field({"_component_": "torch.optim.AdamW", "lr": 1e-3})
    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    warmup_steps: int = 10
    schedule: str = "cosine"
    max_grad_norm: float = 1.0
    log_every: int = 10
    eval_every: int = 0
    eval_batch_size: int = 32
    max_new_tokens: int = 24
    freeze: list[str] = field(default_factory=list)
    strategy: str = "auto"
    zero_stage: int = 0


def main(cfg: SFTConfig, held_out: Any = None, evaluate_before: bool = True) -> dict[str, float]:
    """Fine-tune; `held_out` is an eval set already built (used instead of `cfg.eval_data`: the
    active loop builds its held-out pairs once and scores every round on them), and
    `evaluate_before=False` skips the score before training (the loop needs it once)."""
    check_training_config(cfg)
    distributed.check_global_batch(distributed.world()[1], batch_size=cfg.batch_size)
    accelerator = distributed.build_accelerator(
        cfg.strategy, cfg.zero_stage, pick_device(cfg.run.device), cfg.run.dtype, cfg.max_grad_norm
    )
    device, main_process = accelerator.device, accelerator.is_main_process
    run = start_run(cfg) if main_process else None  # one run folder; other processes only seed
    if run is None:
        seed_everything(cfg.run.seed + accelerator.process_index)
    policy: ChatModel = instantiate(cfg.policy)
    policy.module.to(device).train()
    freeze_parameters(policy.module, cfg.freeze)
    train = instantiate(cfg.train_data)
    if held_out is None and cfg.eval_data:
        held_out = instantiate(cfg.eval_data)
    params = [p for p in policy.module.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, params)
    scheduler = lr_schedule(optimizer, cfg.warmup_steps, cfg.steps, cfg.schedule)
    summary: dict[str, float] = {}
    world = accelerator.num_processes
    if distributed.main_process_value(accelerator, run is not None and run.state is not None):
        if world == 1 and run is not None:
            summary = run.restore(policy.module, optimizer, scheduler)
        elif run is not None and run.state is not None:  # the weights follow once prepared, below
            summary = dict(run.state.get("summary", {}))
    elif held_out is not None and evaluate_before:
        before = evaluate_accuracy(policy, held_out, cfg.eval_batch_size, cfg.max_new_tokens)
        summary = accuracy_summary(before, "before")
        if run is not None:
            run.log(0, before)
            logger.info("held-out accuracy before training: %.3f", before["eval/accuracy"])
    model, prepared_optimizer = accelerator.prepare(policy.module, optimizer)
    trainer = TrainStep(
        accelerator, model, prepared_optimizer, scheduler, cfg.max_grad_norm, "stop", "SFT loss"
    )
    synced = distributed.shards_parameters(accelerator)

    def state(gathered: dict[str, Any]) -> dict[str, Any]:
        seen = {"examples_seen": step * cfg.batch_size * cfg.grad_accum}
        if gathered:  # several processes: the full state the main process gathered
            return {
                **gathered,
                "scheduler": scheduler.state_dict(),
                "summary": summary,
                "data_position": seen,
            }
        return training_state(policy.module, optimizer, scheduler, summary, data_position=seen)

    autocast = torch.autocast(
        device.type,
        dtype=getattr(torch, cfg.run.dtype),
        enabled=cfg.run.dtype != "float32" and trainer.kind != "deepspeed",  # DeepSpeed casts itself
    )
    start_step = run.start_step if run is not None else 0
    if world > 1:  # every process takes up the checkpoint the main process read
        saved = run.state if run is not None else None
        start_step = distributed.restore_training_state(
            accelerator, model, prepared_optimizer, scheduler, saved, start_step
        )
    bar = tqdm(
        range(start_step + 1, cfg.steps + 1), initial=start_step, total=cfg.steps, desc="sft",
        disable=not main_process,
    )  # fmt: skip
    step = start_step
    for step in bar:
        started = time.perf_counter()
        done = sft_update(
            policy, train, step, trainer, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
            seed=cfg.run.seed, device=device, autocast=autocast,
        )  # fmt: skip
        loss_total, tokens, grad_norm = done.loss, done.tokens, done.grad_norm
        elapsed = time.perf_counter() - started
        bar.set_postfix(loss=f"{loss_total:.3f}", tok_s=f"{tokens / elapsed:.0f}")
        metrics: dict[str, float] = {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics = {
                "loss/sft": loss_total,
                "optim/grad_norm": float(grad_norm),
                "optim/lr": scheduler.get_last_lr()[0],
                "perf/tokens_per_s": tokens / elapsed,
            }
            metrics = distributed.mean_metrics(accelerator, metrics)
            if accelerator.num_processes > 1:  # every process's tokens, not their mean
                metrics["perf/tokens_per_s"] *= accelerator.num_processes
                metrics["perf/processes"] = accelerator.num_processes
        if held_out is not None and (step == cfg.steps or cfg.eval_every and step % cfg.eval_every == 0):
            metrics.update(
                evaluate_accuracy(policy, held_out, cfg.eval_batch_size, cfg.max_new_tokens, synced)
            )
        if "eval/accuracy" in metrics:
            summary.update(accuracy_summary(metrics, "after"))
        if step == cfg.steps:
            summary["final_loss"] = metrics.get("loss/sft", loss_total)
        save_now = cfg.run.save_every > 0 and (step % cfg.run.save_every == 0 or step == cfg.steps)
        gathered = {}  # several processes: a collective, every process takes part
        if save_now and world > 1:
            gathered = distributed.gathered_training_state(accelerator, model, prepared_optimizer)
        if run is None:
            continue
        if metrics:
            run.log(step, metrics)
        run.maybe_save(step, partial(state, gathered), force=step == cfg.steps and cfg.run.save_every > 0)
    final = distributed.gathered_model(accelerator, policy, model, lambda: instantiate(cfg.policy))
    if run is None:
        return summary
    if held_out is not None and "after/accuracy" in summary:
        logger.info(
            "held-out accuracy: before %.3f, after %.3f",
            summary.get("before/accuracy", float("nan")),
            summary["after/accuracy"],
        )
    return run.finish(final, summary)
