"""A score-only reward model: a scalar head on any builder's model, trained on preference pairs with
the Bradley–Terry loss −log σ(r_w − r_l − m) (`rlhfv.algorithms.preference.bradley_terry_loss`).

One step: the step's pairs (a pure function of (seed, step), as in SFT), both responses scored
[2B] → chosen [B], rejected [B], the loss, its gradient over `grad_accum` micro-batches, one
optimizer step. Held-out pairwise accuracy (the chosen response scored strictly higher) is
measured before and after training, on any data set of `PreferencePair`s: the files `rlhfv eval grm`
reads come through `rlhfv.data.formats.PreferenceData`, so a GRM and a scalar RM meet the same items.
The result, `<run>/final`, is a GRPO reward through `rlhfv.rewards.ScalarRM`. Under DeepSpeed
(`zero_stage` 2 or 3, launched with torchrun) it trains as DPO does (`rlhfv.pipelines.dpo`).
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
        zero_stage: 0 (plain PyTorch), 2 or 3 (DeepSpeed ZeRO; launch with torchrun): every process
            takes its own `batch_size` pairs per micro-batch and ZeRO averages the gradients.
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
    if cfg.on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite = {cfg.on_nonfinite!r}; choose 'stop' or 'skip'")
    if cfg.zero_stage not in (0, 2, 3):
        raise ValueError(f"zero_stage = {cfg.zero_stage}; choose 0 (no DeepSpeed), 2 or 3")
    if cfg.zero_stage and cfg.run.save_every:
        raise ValueError(
            "run.save_every > 0 with zero_stage > 0: resumable ZeRO checkpoints are not written yet; set run.save_every=0"
        )
    device = pick_device(cfg.run.device)
    distributed.init_distributed(device)
    rank, world = distributed.world()
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
        enabled=cfg.run.dtype != "float32" and not cfg.zero_stage,
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
    engine = None
    if cfg.zero_stage:
        engine = distributed.deepspeed_engine(
            rm, optimizer, cfg.zero_stage, cfg.batch_size, cfg.grad_accum, cfg.max_grad_norm, cfg.run.dtype
        )
    trainer = engine if engine is not None else rm  # what the training forward pass calls

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
        for micro in range(cfg.grad_accum):
            indices = batch_indices(  # each process its own pairs
                step,
                rank * cfg.grad_accum + micro,
                cfg.batch_size,
                cfg.grad_accum * world,
                len(train),
                cfg.run.seed,
            )
            with autocast:
                chosen, rejected = pair_scores(
                    chat, trainer, checked_pairs(train, indices), device, caps
                )  # [B] each
            loss, metrics = bradley_terry_loss(chosen, rejected, cfg.margin)
            if not torch.isfinite(loss):
                if (
                    cfg.on_nonfinite == "stop" or engine is not None
                ):  # DeepSpeed cannot drop half an accumulation
                    raise FloatingPointError(
                        f"step {step}: reward-model loss is {loss.item()} (scores finite: "
                        f"{bool(torch.isfinite(chosen).all() and torch.isfinite(rejected).all())}; pairs {indices[:4]}…); "
                        "no checkpoint was written for this step"
                    )
                logger.warning("step %d: skipping the step, reward-model loss is %s", step, loss.item())
                skipped = 1
                break
            if engine is not None:
                engine.backward(loss)  # scaled by 1/grad_accum; the engine steps at the last micro-batch
                engine.step()
            else:
                (loss / cfg.grad_accum).backward()
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
        grad_norm = torch.tensor(0.0)
        if engine is None and not skipped:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if not torch.isfinite(grad_norm):
                if cfg.on_nonfinite == "stop":
                    raise FloatingPointError(
                        f"step {step}: gradient norm is {grad_norm.item()}; no checkpoint was written for this step"
                    )
                skipped = 1
            if not skipped:
                optimizer.step()
        if not skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if totals:
            bar.set_postfix(loss=f"{totals['loss/rm']:.3f}", acc=f"{totals['rm/accuracy']:.2f}")
        metrics = {}
        if step % cfg.log_every == 0 or step == cfg.steps or skipped:
            metrics = {
                **totals,
                "optim/lr": scheduler.get_last_lr()[0],
                "perf/pairs_per_s": cfg.batch_size * cfg.grad_accum * world / (time.perf_counter() - started),
                "skipped/nonfinite": float(skipped),
            }
            if engine is None:  # DeepSpeed clips inside its step
                metrics["optim/grad_norm"] = float(grad_norm)
            metrics = distributed.mean_across_processes(metrics)
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
        if engine is None:
            run.maybe_save(step, state, force=step == cfg.steps and cfg.run.save_every > 0)
    if engine is not None:
        weights = distributed.full_state_dict(engine)  # a collective: every process takes part
        if run is not None:
            chat = instantiate(cfg.model)  # an unsharded copy of the architecture for the gathered weights
            rm = ScalarRewardModel(chat.module, width)
            rm.load_state_dict(weights)
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
