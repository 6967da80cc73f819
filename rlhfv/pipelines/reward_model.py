"""A score-only reward model: a scalar head on any builder's model, trained on preference pairs with
the Bradley–Terry loss −log σ(r_w − r_l − m) (`rlhfv.algorithms.preference.bradley_terry_loss`).

One step: the step's pairs (a pure function of (seed, step), as in SFT), both responses scored
[2B] → chosen [B], rejected [B], the loss, its gradient over `grad_accum` micro-batches, one
optimizer step. Held-out pairwise accuracy (the chosen response scored strictly higher) is
measured before and after training, on any data set of `PreferencePair`s: the files `rlhfv eval grm`
reads come through `rlhfv.data.formats.PreferenceData`, so a GRM and a scalar RM meet the same items.
The result, `<run>/final`, is a GRPO reward through `rlhfv.rewards.ScalarRM`. With several
processes (DDP, DeepSpeed ZeRO or FSDP) it trains as DPO does (`rlhfv.pipelines.dpo`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from rlhfv.algorithms.preference import bradley_terry_loss
from rlhfv.config import RunConfig, component_field, instantiate
from rlhfv.data.pair_files import checked_pairs
from rlhfv.models.base import ChatModel, freeze_parameters
from rlhfv.models.reward_head import ScalarRewardModel, hidden_size, save_reward_model
from rlhfv.rewards.scalar import score_responses
from rlhfv.training import distributed
from rlhfv.training.batching import batch_indices
from rlhfv.training.run import pick_device, seed_everything, start_run, training_state
from rlhfv.training.schedule import lr_schedule
from rlhfv.training.step import TrainStep, check_training_config
from rlhfv.types import PreferencePair

logger = logging.getLogger(__name__)


@dataclass
class RewardModelConfig:
    """Keys of a reward-model recipe.

    Attributes:
        model: Model builder node (returns a ChatModel); the head goes on its last hidden state.
        train_data / eval_pairs: Data set nodes yielding `PreferencePair`s (eval_pairs optional).
        optimizer: Optimizer node; the trainable parameters (backbone and head) are passed positionally.
        steps: Optimizer steps; batch_size × grad_accum pairs make one.
        margin: m in −log σ(r_w − r_l − m): how far the chosen score must beat the other (0: plain BT).
        on_nonfinite: "stop" at a non-finite loss or gradient, or "skip" that step.
        freeze: Regular expressions; backbone parameters whose names match one are not trained.
        strategy / zero_stage: How several processes train (`rlhfv.training.distributed`):
            "auto" is DDP, or DeepSpeed ZeRO when zero_stage is 2 or 3; "fsdp" is FSDP2.
            batch_size is global: W processes take batch_size / W pairs of each micro-batch.
        max_prompt_tokens / max_response_tokens: Keep each prompt's last and each response's first
            tokens, in training and evaluation alike (`rlhfv.rewards.scalar.score_responses`); 0: all.
    """

    run: RunConfig = field(default_factory=RunConfig)
    model: dict[str, Any] = component_field({"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl"})
    train_data: dict[str, Any] = component_field({"_component_": "rlhfv.data.pairs.ShapesPairs"})
    eval_pairs: dict[str, Any] | None = None
    optimizer: dict[str, Any] = component_field({"_component_": "torch.optim.AdamW", "lr": 1e-4})
    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    margin: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    max_grad_norm: float = 1.0
    on_nonfinite: str = "stop"
    log_every: int = 10
    eval_every: int = 0
    eval_batch_size: int = 32
    freeze: list[str] = field(default_factory=list)
    max_prompt_tokens: int = 0
    max_response_tokens: int = 0
    strategy: str = "auto"
    zero_stage: int = 0


def pair_scores(
    chat: ChatModel,
    rm: ScalarRewardModel | torch.nn.Module,  # or the DeepSpeed engine around it
    pairs: list[PreferencePair],
    device: torch.device,
    max_tokens: tuple[int, int] = (0, 0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of each pair's chosen and rejected response. [B] each. `max_tokens`: the prompt
    and response caps of `score_responses` (0: no cap)."""
    prompts = [p.prompt for p in pairs] * 2
    texts = [p.responses[p.preferred] for p in pairs] + [p.responses[1 - p.preferred] for p in pairs]
    scores = score_responses(chat, rm, prompts, texts, device, *max_tokens)  # [2B]
    chosen, rejected = scores.chunk(2)  # [B], [B]
    return chosen, rejected


@torch.no_grad()
def pairwise_accuracy(
    chat: ChatModel,
    rm: ScalarRewardModel,
    data: Any,
    batch_size: int,
    device: torch.device,
    max_tokens: tuple[int, int] = (0, 0),
) -> dict[str, float]:
    """Share of held-out pairs whose chosen response scores strictly higher, and the mean margin."""
    was_training = rm.training
    rm.eval()
    wins, margin = 0.0, 0.0
    for start in range(0, len(data), batch_size):
        chosen, rejected = pair_scores(
            chat,
            rm,
            checked_pairs(data, range(start, min(start + batch_size, len(data)))),
            device,
            max_tokens,
        )
        wins += (chosen > rejected).sum().item()
        margin += (chosen - rejected).sum().item()
    rm.train(was_training)
    return {"eval/pairwise_accuracy": wins / len(data), "eval/margin": margin / len(data)}


def main(cfg: RewardModelConfig) -> dict[str, float]:
    check_training_config(cfg)
    distributed.check_global_batch(distributed.world()[1], batch_size=cfg.batch_size)
    if distributed.world()[1] > 1 and cfg.run.save_every:
        raise ValueError(
            f"run.save_every = {cfg.run.save_every} with several processes: the reward model writes "
            "resumable checkpoints on one process only (sft and grpo on several); set run.save_every=0"
        )
    accelerator = distributed.build_accelerator(
        cfg.strategy, cfg.zero_stage, pick_device(cfg.run.device), cfg.run.dtype, cfg.max_grad_norm
    )
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    run = start_run(cfg) if rank == 0 else None  # one run folder; other processes only seed
    if run is None:
        seed_everything(cfg.run.seed + rank)
    chat: ChatModel = instantiate(cfg.model)
    freeze_parameters(chat.module, cfg.freeze)
    chat.module.to(device)
    width = hidden_size(chat.module, chat.pad_token_id)
    rm = ScalarRewardModel(chat.module, width).to(device).train()
    train = instantiate(cfg.train_data)
    held_out = instantiate(cfg.eval_pairs) if cfg.eval_pairs else None
    caps = (cfg.max_prompt_tokens, cfg.max_response_tokens)
    params = [p for p in rm.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, params)
    scheduler = lr_schedule(optimizer, cfg.warmup_steps, cfg.steps, cfg.schedule)
    autocast = torch.autocast(
        device.type,
        dtype=getattr(torch, cfg.run.dtype),
        enabled=cfg.run.dtype != "float32"
        and distributed.resolved_strategy(cfg.strategy, cfg.zero_stage, world) != "deepspeed",
    )
    summary: dict[str, float] = {}
    if run is not None and run.state is not None:
        summary = run.restore(rm, optimizer, scheduler)
    elif held_out is not None:  # every process, before ZeRO-3 shards the weights
        with autocast:
            before = pairwise_accuracy(chat, rm, held_out, cfg.eval_batch_size, device, caps)
        summary = {"before/pairwise_accuracy": before["eval/pairwise_accuracy"]}
        if run is not None:
            run.log(0, before)
    trained, prepared_optimizer = accelerator.prepare(
        rm, optimizer
    )  # after the held-out score: ZeRO-3 shards
    trainer = TrainStep(
        accelerator,
        trained,
        prepared_optimizer,
        scheduler,
        cfg.max_grad_norm,
        cfg.on_nonfinite,
        "reward-model loss",
    )

    def state() -> dict[str, Any]:
        seen = {"pairs_seen": step * cfg.batch_size * cfg.grad_accum}
        return training_state(rm, optimizer, scheduler, summary, data_position=seen)

    start_step = run.start_step if run is not None else 0
    bar = tqdm(
        range(start_step + 1, cfg.steps + 1),
        initial=start_step,
        total=cfg.steps,
        desc="reward model",
        disable=rank > 0,
    )
    step = start_step
    for step in bar:
        started = time.perf_counter()
        totals: dict[str, float] = {}
        skipped = 0
        grad_norm = 0.0
        for micro in range(cfg.grad_accum):
            all_indices = batch_indices(step, micro, cfg.batch_size, cfg.grad_accum, len(train), cfg.run.seed)
            indices = distributed.rank_slice(all_indices, rank, world)  # this process's slice
            with autocast:
                chosen, rejected = pair_scores(
                    chat, trained, checked_pairs(train, indices), device, caps
                )  # [B] each
            loss, metrics = bradley_terry_loss(chosen, rejected, cfg.margin)
            scores_finite = bool(torch.isfinite(chosen).all() and torch.isfinite(rejected).all())
            if not trainer.loss_is_finite(
                loss,
                step,
                lambda ok=scores_finite, indices=indices: f" (scores finite: {ok}; pairs {indices[:4]}…)",
            ):
                skipped = 1
                break
            trainer.backward(loss / cfg.grad_accum, last=micro == cfg.grad_accum - 1)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
        if not skipped:
            grad_norm, skipped = trainer.step(step)
        if totals:
            bar.set_postfix(loss=f"{totals['loss/rm']:.3f}", acc=f"{totals['rm/accuracy']:.2f}")
        metrics = {}
        if step % cfg.log_every == 0 or step == cfg.steps or skipped:
            metrics = {
                **totals,
                "optim/lr": scheduler.get_last_lr()[0],
                "perf/pairs_per_s": cfg.batch_size * cfg.grad_accum / (time.perf_counter() - started),
                "skipped/nonfinite": float(skipped),
                "optim/grad_norm": grad_norm,
            }
            metrics = distributed.mean_metrics(accelerator, metrics)
            if world > 1:
                metrics["perf/processes"] = world
        if held_out is not None and (step == cfg.steps or cfg.eval_every and step % cfg.eval_every == 0):
            with autocast:  # every process: under ZeRO-3 each forward pass gathers shards from all
                metrics.update(pairwise_accuracy(chat, rm, held_out, cfg.eval_batch_size, device, caps))
            summary["after/pairwise_accuracy"] = metrics["eval/pairwise_accuracy"]
        if step == cfg.steps and totals:
            summary["final_loss"] = totals["loss/rm"]
        if run is None:
            continue
        if metrics:
            run.log(step, metrics)
        run.maybe_save(step, state, force=step == cfg.steps and cfg.run.save_every > 0)

    def rebuild() -> ScalarRewardModel:  # an unsharded copy of the architecture for the gathered weights
        return ScalarRewardModel(instantiate(cfg.model).module, width)

    final_rm = distributed.gathered_model(accelerator, rm, trained, rebuild)
    if final_rm is not rm:
        chat.module = final_rm.backbone
        rm = final_rm
    if run is None:
        return summary
    if "after/pairwise_accuracy" in summary:
        logger.info(
            "held-out pairwise accuracy: before %.3f, after %.3f",
            summary.get("before/pairwise_accuracy", float("nan")),
            summary["after/pairwise_accuracy"],
        )
    save_reward_model(chat, rm, run.dir / "final")
    return run.finish(None, summary)
