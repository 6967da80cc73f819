"""Direct preference optimisation (DPO, cDPO, rDPO, IPO) of any builder's model on preference pairs.

The maths is in `rlhfv.algorithms.preference`; this file is the loop. One step:
  1. take the step's pairs (a pure function of (seed, step), as in SFT, so a resumed run sees
     exactly the data an uninterrupted one would);
  2. score both responses of each pair under the policy: the summed log-probs of the response
     tokens (EOS included) given the prompt and its images, chosen rows then rejected rows [2B];
  3. the same under the reference: a frozen copy of the policy, or, for a LoRA policy, the same
     network with its adapters off (as GRPO does); or, with `precompute_ref_logprobs`, a table
     filled once before training, after which no reference is held in memory;
  4. the loss, its gradient accumulated over `grad_accum` micro-batches, one optimizer step.
A non-finite loss or gradient stops the run or skips the step (`on_nonfinite`), as in GRPO.
With several processes (DDP, DeepSpeed ZeRO or FSDP, `rlhfv.training.distributed`) `batch_size`
stays the global number: each process takes its slice of every micro-batch, and the averaged
gradient is that of the whole batch.

Pairs come from any data set of `PreferencePair`s: a file (`rlhfv.data.pair_files.PairFile`, which
reads rlhfv's and TRL's formats and annotation exports), ShapesVQA's templated pairs
(`rlhfv.data.pairs.ShapesPairs`) or a policy's own answers (`rlhfv.data.pairs.SampledPairs`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from rlhfv.algorithms.preference import LOSS_TYPES, PreferenceLogprobs, preference_loss
from rlhfv.config import RunConfig, component_field, instantiate
from rlhfv.data.pair_files import checked_pairs
from rlhfv.models.base import ChatModel, freeze_parameters
from rlhfv.pipelines.grpo import reference_context
from rlhfv.rollout import sequence_logprobs
from rlhfv.training import distributed
from rlhfv.training.batching import batch_indices, to_device, tokenize_completions
from rlhfv.training.evaluation import accuracy_summary, evaluate_accuracy
from rlhfv.training.run import pick_device, seed_everything, start_run, training_state
from rlhfv.training.schedule import lr_schedule
from rlhfv.training.step import TrainStep, check_training_config
from rlhfv.types import PreferencePair

logger = logging.getLogger(__name__)


@dataclass
class DPOConfig:
    """Keys of a DPO recipe.

    Attributes:
        policy: Model builder node (returns a ChatModel); a LoRA policy comes from the builder.
        reference: Optional builder node for π_ref (same tokenizer). Omitted: a frozen copy of
            `policy` (built again from its node), or, for a LoRA policy, the policy with its adapters off.
        train_data: Data set node yielding `PreferencePair`s.
        eval_pairs: Optional held-out `PreferencePair`s: implicit-reward accuracy and margin.
        eval_data: Optional held-out `Example`s with `is_correct`: greedy answer accuracy before
            and after, as in SFT.
        optimizer: Optimizer node; the trainable parameters are passed positionally.
        steps: Optimizer steps; batch_size × grad_accum pairs make one.
        beta: β of DPO / rDPO, τ of IPO.
        loss_type: "sigmoid" (DPO, or cDPO with label_smoothing > 0), "robust" (rDPO) or "ipo".
        label_smoothing: ε: cDPO's label noise ("sigmoid") or rDPO's flip rate ("robust").
        nll_coef: α of RPO's per-token NLL of the chosen response added to the loss (0: none);
            it keeps DPO from lowering the chosen answers' likelihood along with the rejected ones'.
        precompute_ref_logprobs: Score every pair under the reference once before training (the
            table is kept in checkpoints) and free the reference.
        on_nonfinite: "stop" at a non-finite loss or gradient, or "skip" that step.
        freeze: Regular expressions; parameters whose names match one are not trained.
        strategy / zero_stage: How several processes train (`rlhfv.training.distributed`):
            "auto" is DDP, or DeepSpeed ZeRO when zero_stage is 2 or 3; "fsdp" is FSDP2.
            batch_size is global: W processes take batch_size / W pairs of each micro-batch.
    """

    run: RunConfig = field(default_factory=RunConfig)
    policy: dict[str, Any] = component_field({"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl"})
    reference: dict[str, Any] | None = None
    train_data: dict[str, Any] = component_field({"_component_": "rlhfv.data.pairs.ShapesPairs"})
    eval_pairs: dict[str, Any] | None = None
    eval_data: dict[str, Any] | None = None
    optimizer: dict[str, Any] = component_field({"_component_": "torch.optim.AdamW", "lr": 1e-5})
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    nll_coef: float = 0.0
    precompute_ref_logprobs: bool = False
    warmup_steps: int = 0
    schedule: str = "constant"
    max_grad_norm: float = 1.0
    on_nonfinite: str = "stop"
    log_every: int = 10
    eval_every: int = 0
    eval_batch_size: int = 32
    max_new_tokens: int = 24
    freeze: list[str] = field(default_factory=list)
    strategy: str = "auto"
    zero_stage: int = 0


def check_config(cfg: DPOConfig) -> None:
    """Refuse settings that cannot work, before loading anything."""
    if cfg.loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type = {cfg.loss_type!r}; choose one of {LOSS_TYPES}")
    if cfg.beta <= 0:
        raise ValueError(f"beta = {cfg.beta}: must be > 0")
    limit = 0.5 if cfg.loss_type == "robust" else 1.0
    if not 0.0 <= cfg.label_smoothing < limit:
        raise ValueError(
            f"label_smoothing = {cfg.label_smoothing}: must be in [0, {limit}) for loss_type {cfg.loss_type!r}"
        )
    check_training_config(cfg)
    distributed.check_global_batch(distributed.world()[1], batch_size=cfg.batch_size)
    if distributed.world()[1] > 1 and cfg.run.save_every:
        raise ValueError(
            f"run.save_every = {cfg.run.save_every} with several processes: DPO writes resumable checkpoints "
            "on one process only (sft and grpo on several); set run.save_every=0"
        )


def pair_logprobs(
    model: ChatModel | torch.nn.Module,
    tokenizer_of: ChatModel,
    pairs: Sequence[PreferencePair],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each pair's chosen then rejected response given its prompt, and their
    lengths in tokens (EOS included). Both [2B]: rows 0..B−1 chosen, B..2B−1 rejected.

    `model` is scored; `tokenizer_of` encodes the prompts and responses (the policy, whose
    tokenizer a reference shares)."""
    prompts = [p.prompt for p in pairs] * 2
    texts = [p.responses[p.preferred] for p in pairs] + [p.responses[1 - p.preferred] for p in pairs]
    batch = to_device(tokenizer_of.encoder(prompts), device)  # input_ids [2B, P], vision tensors
    ids, mask = tokenize_completions(tokenizer_of, texts)  # [2B, T]
    # the policy's suppressed tokens (image placeholders) also when `model` is a bare module
    logprobs = sequence_logprobs(
        model, batch, ids.to(device), mask.to(device), suppressed_tokens=tokenizer_of.suppressed_tokens
    )  # [2B, T]
    return logprobs.sum(dim=1), mask.sum(dim=1).to(device)


@torch.no_grad()
def reference_table(
    policy: ChatModel,
    reference: ChatModel | None,
    data: Any,
    batch_size: int,
    device: torch.device,
    autocast: Any,
) -> torch.Tensor:
    """log π_ref of every pair's chosen and rejected response. Shape [len(data), 2]."""
    rows = []
    for start in tqdm(range(0, len(data), batch_size), desc="reference log-probs", unit="batch"):
        pairs = checked_pairs(data, range(start, min(start + batch_size, len(data))))
        with autocast, reference_context(policy.module, reference.module if reference else None):
            summed, _ = pair_logprobs(reference or policy, policy, pairs, device)
        rows.append(summed.float().view(2, -1).T.cpu())  # [b, 2]
    return torch.cat(rows)


@torch.no_grad()
def evaluate_pairs(
    policy: ChatModel, data: Any, ref: torch.Tensor, cfg: DPOConfig, device: torch.device, autocast: Any
) -> dict[str, float]:
    """Implicit-reward accuracy and margin of the policy on held-out pairs (`ref`: their table)."""
    was_training = policy.module.training
    policy.module.eval()
    totals: dict[str, float] = {}
    for start in range(0, len(data), cfg.eval_batch_size):
        idx = list(range(start, min(start + cfg.eval_batch_size, len(data))))
        with autocast:
            summed, tokens = pair_logprobs(policy, policy, checked_pairs(data, idx), device)
        lp = PreferenceLogprobs(*summed.float().chunk(2), *ref[idx].to(device).T, *tokens.chunk(2))
        _, metrics = preference_loss(lp, cfg.beta, cfg.loss_type, cfg.label_smoothing, cfg.nll_coef)
        for k in ("loss/dpo", "reward/accuracy", "reward/margin"):
            totals[k] = totals.get(k, 0.0) + metrics[k] * len(idx) / len(data)
    policy.module.train(was_training)
    return {
        "eval/loss_dpo": totals["loss/dpo"],
        "eval/reward_accuracy": totals["reward/accuracy"],
        "eval/reward_margin": totals["reward/margin"],
    }


def main(cfg: DPOConfig) -> dict[str, float]:
    check_config(cfg)
    accelerator = distributed.build_accelerator(
        cfg.strategy, cfg.zero_stage, pick_device(cfg.run.device), cfg.run.dtype, cfg.max_grad_norm
    )
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    run = start_run(cfg) if rank == 0 else None  # one run folder; other processes only seed
    if run is None:
        seed_everything(cfg.run.seed + rank)
    policy: ChatModel = instantiate(cfg.policy)
    module = policy.module.to(device).train()
    freeze_parameters(module, cfg.freeze)
    train = instantiate(cfg.train_data)
    held_out_pairs = instantiate(cfg.eval_pairs) if cfg.eval_pairs else None
    held_out = instantiate(cfg.eval_data) if cfg.eval_data else None
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, params)
    scheduler = lr_schedule(optimizer, cfg.warmup_steps, cfg.steps, cfg.schedule)
    autocast = torch.autocast(
        device.type,
        dtype=getattr(torch, cfg.run.dtype),
        enabled=cfg.run.dtype != "float32"
        and distributed.resolved_strategy(cfg.strategy, cfg.zero_stage, world) != "deepspeed",
    )
    is_lora = hasattr(module, "disable_adapter")
    # Reference log-probs that do not change during training are computed once: the held-out
    # pairs' always, the training pairs' with precompute_ref_logprobs. A resumed run reads both
    # back from its checkpoint, so it needs no reference for them.
    saved = (run.state if run is not None else None) or {}
    needs_reference = (
        not cfg.precompute_ref_logprobs
        or "train_ref" not in saved
        or (held_out_pairs is not None and "eval_ref" not in saved)
    )
    reference: ChatModel | None = None
    if needs_reference and (cfg.reference or not is_lora):  # LoRA without a reference node: adapters off
        reference = instantiate(cfg.reference or cfg.policy)  # a frozen copy: the node built again
        reference.module.to(device).eval().requires_grad_(False)
    train_ref = saved.get("train_ref")
    if cfg.precompute_ref_logprobs and train_ref is None:
        train_ref = reference_table(policy, reference, train, cfg.eval_batch_size, device, autocast)
    eval_ref = saved.get("eval_ref")
    if held_out_pairs is not None and eval_ref is None:
        eval_ref = reference_table(policy, reference, held_out_pairs, cfg.eval_batch_size, device, autocast)
    if cfg.precompute_ref_logprobs:
        reference = None  # nothing below needs it: free it
    # after the reference tables: ZeRO-3 and FSDP shard the policy's parameters
    trained, prepared_optimizer = accelerator.prepare(module, optimizer)
    trainer = TrainStep(
        accelerator, trained, prepared_optimizer, scheduler, cfg.max_grad_norm, cfg.on_nonfinite, "DPO loss"
    )
    synced = distributed.shards_parameters(accelerator)
    start_step = run.start_step if run is not None else 0
    summary: dict[str, float] = {}
    if run is not None and run.state is not None:
        summary = run.restore(module, optimizer, scheduler)
    elif held_out is not None:
        before = evaluate_accuracy(policy, held_out, cfg.eval_batch_size, cfg.max_new_tokens, synced)
        summary = accuracy_summary(before, "before")
        if run is not None:
            run.log(0, before)
            logger.info("held-out accuracy before DPO: %.3f", before["eval/accuracy"])

    def state() -> dict[str, Any]:
        extra: dict[str, Any] = {"data_position": {"pairs_seen": step * cfg.batch_size * cfg.grad_accum}}
        if train_ref is not None:
            extra["train_ref"] = train_ref
        if eval_ref is not None:
            extra["eval_ref"] = eval_ref
        return training_state(module, optimizer, scheduler, summary, **extra)

    bar = tqdm(
        range(start_step + 1, cfg.steps + 1),
        initial=start_step,
        total=cfg.steps,
        desc="dpo",
        disable=rank > 0,
    )
    step = start_step
    for step in bar:
        started = time.perf_counter()
        totals: dict[str, float] = {}
        skipped = 0
        grad_norm = 0.0
        for micro in range(cfg.grad_accum):
            # 1. the step's pairs: this process's slice of the global micro-batch
            all_indices = batch_indices(step, micro, cfg.batch_size, cfg.grad_accum, len(train), cfg.run.seed)
            indices = distributed.rank_slice(all_indices, rank, world)
            pairs = checked_pairs(train, indices)
            # 2. policy log-probs [2B] → chosen [B], rejected [B]
            with autocast:
                summed, tokens = pair_logprobs(trained, policy, pairs, device)
            chosen, rejected = summed.float().chunk(2)
            # 3. reference log-probs [B] each
            if train_ref is not None:
                ref_chosen, ref_rejected = train_ref[indices].to(device).T
            else:
                with (
                    torch.no_grad(),
                    autocast,
                    reference_context(module, reference.module if reference else None),
                ):
                    ref_summed, _ = pair_logprobs(reference or policy, policy, pairs, device)
                ref_chosen, ref_rejected = ref_summed.float().chunk(2)
            lp = PreferenceLogprobs(chosen, rejected, ref_chosen, ref_rejected, *tokens.chunk(2))
            # 4. loss and gradient: a mean over this process's pairs, averaged over processes
            loss, metrics = preference_loss(lp, cfg.beta, cfg.loss_type, cfg.label_smoothing, cfg.nll_coef)

            def cause(summed=summed, ref=ref_chosen + ref_rejected, indices=indices) -> str:
                why = "the loss overflowed although its inputs are finite (check beta and the learning rate)"
                if not torch.isfinite(summed).all():
                    why = "the policy log-probs hold NaN/inf"
                elif not torch.isfinite(ref).all():
                    why = "the reference log-probs hold NaN/inf"
                return f" ({why}; pairs {indices[:4]}…)"

            if not trainer.loss_is_finite(loss, step, cause):
                skipped = 1
                break
            trainer.backward(loss / cfg.grad_accum, last=micro == cfg.grad_accum - 1)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
        if not skipped:
            grad_norm, skipped = trainer.step(step)
        elapsed = time.perf_counter() - started
        if totals:
            bar.set_postfix(loss=f"{totals['loss/dpo']:.3f}", acc=f"{totals['reward/accuracy']:.2f}")
        metrics = {}
        if step % cfg.log_every == 0 or step == cfg.steps or skipped:
            metrics = {
                **totals,
                "optim/lr": scheduler.get_last_lr()[0],
                "perf/pairs_per_s": cfg.batch_size * cfg.grad_accum / elapsed,
                "skipped/nonfinite": float(skipped),
            }
            metrics["optim/grad_norm"] = grad_norm
            metrics = distributed.mean_metrics(accelerator, metrics)
            if world > 1:
                metrics["perf/processes"] = world
        evaluate_now = step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)
        if evaluate_now and held_out_pairs is not None and eval_ref is not None:
            metrics.update(evaluate_pairs(policy, held_out_pairs, eval_ref, cfg, device, autocast))
            summary["after/reward_accuracy"] = metrics["eval/reward_accuracy"]
            summary["after/reward_margin"] = metrics["eval/reward_margin"]
        if evaluate_now and held_out is not None:
            metrics.update(
                evaluate_accuracy(policy, held_out, cfg.eval_batch_size, cfg.max_new_tokens, synced)
            )
            summary.update(accuracy_summary(metrics, "after"))
        if step == cfg.steps and totals:
            summary["final_loss"] = totals["loss/dpo"]
        if run is None:
            continue
        if metrics:
            run.log(step, metrics)
        run.maybe_save(step, state, force=step == cfg.steps and cfg.run.save_every > 0)
    final = distributed.gathered_model(accelerator, policy, trained, lambda: instantiate(cfg.policy))
    if run is None:
        return summary
    if "after/accuracy" in summary:
        logger.info(
            "held-out accuracy: before %.3f, after %.3f",
            summary.get("before/accuracy", float("nan")),
            summary["after/accuracy"],
        )
    if "after/reward_accuracy" in summary:
        logger.info("held-out pairs: implicit-reward accuracy %.3f", summary["after/reward_accuracy"])
    return run.finish(final, summary)
