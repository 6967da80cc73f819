"""GRPO for (vision-)language policies: sample G completions per prompt, reward them, and push up
the log-probability of the better-than-their-group ones (`rlhfv.algorithms.grpo` has the maths).

One step:
  1. take B prompts (a pure function of (seed, step), so a resumed run sees the same data; with W
     processes each takes its B/W of them, so 2 processes see exactly the prompts 1 process sees);
  2. sample G completions each → a `Rollout` of N = B·G rows;
  3. rewards [N] from the recipe's reward; group advantages [N];
  4. log π_old (only when there are several updates per batch: with one update π_old = π_θ, and
     its detached log-probs give ratio 1 exactly) and log π_ref (only when kl_coef > 0; with LoRA the
     reference is the same network with its adapters switched off), both with dropout off, as
     the sampler ran;
  5. `updates_per_batch` optimizer steps over the batch, each accumulating the gradient of
     micro-batches whose losses add up to the whole batch's loss.
With several processes (DDP, DeepSpeed ZeRO or FSDP: `rlhfv.training.distributed`) every process
runs this loop on its share of the prompts; the loss is normalised by the whole batch's tokens, so
the gradient the processes average is the one-process gradient of the global batch.

`rollout/logprob_gap` checks that the samples are on-policy: the mean |log π_sampler − log π_old|
over completion tokens, where π_sampler is what `generate` drew each token from and π_old is what
the loss takes as the sampling policy. It is ~1e-5 in float32; bf16 sampling (`rollout_dtype`),
top_p < 1, dropout, or a sampler that departs from the policy raise it.

The sampler is `rollout.engine`: "hf" generates in this process on the trained module; "vllm"
runs a vLLM process (`rlhfv.engine.vllm`) that gets the trainer's weights after every
`rollout.sync_every` steps (`perf/sync_s`). There the gap also measures the engine's kernels and
precision, and a missed sync shows as a jump in it; `rollout.tis_cap` weights each token's loss
by the capped ratio π_old / π_engine.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from tqdm import tqdm

from rlhfv.algorithms.grpo import GRPOLossConfig, group_advantages, grpo_loss, truncated_is_weights
from rlhfv.config import RunConfig, component_field, instantiate
from rlhfv.engine import HFEngine, RolloutConfig, RolloutEngine, check_rollout_config
from rlhfv.models.base import ChatModel, freeze_parameters
from rlhfv.rewards import checked_rewards
from rlhfv.rollout import Rollout, rollout_of_groups, sequence_logprobs
from rlhfv.training import distributed
from rlhfv.training.batching import batch_indices
from rlhfv.training.evaluation import accuracy_summary, evaluate_accuracy
from rlhfv.training.metrics import truncate_metrics
from rlhfv.training.run import pick_device, seed_everything, start_run, training_state
from rlhfv.training.schedule import lr_schedule
from rlhfv.training.step import TrainStep, check_training_config

logger = logging.getLogger(__name__)


@dataclass
class GRPOConfig:
    """Keys of a GRPO recipe.

    Attributes:
        policy: Model builder node (returns a ChatModel); a LoRA policy comes from the builder.
        train_data / eval_data: Data set nodes yielding `Example`s; `label` is the reference
            answer that rule rewards check. eval_data (optional) needs `is_correct(text, example)`.
        reward: Reward node: `reward(rollout) -> Tensor[N]`.
        optimizer: Optimizer node; the trainable parameters are passed positionally.
        steps: Rollout batches (each followed by `updates_per_batch` optimizer steps).
        prompts_per_step: B prompts per step, over all processes (each of W takes B/W);
            group_size: G completions per prompt.
        max_new_tokens, temperature, top_p, stop_strings: Sampling.
        updates_per_batch: Optimizer steps on each rollout batch (μ; > 1 reuses samples, clipped).
        micro_batch_size: Rows per forward/backward pass (0: the whole batch at once).
        clip_eps, kl_coef, loss_norm, scale_rewards: The objective; kl_coef 0 loads no reference.
        on_nonfinite: "stop" the run at a non-finite loss or gradient, or "skip" that batch.
        log_rollouts_every / log_rollouts_prompts: Write a few prompts' completions, rewards and
            judge verdicts to rollouts.jsonl (0: never).
        dynamic_sampling: DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476), the rule
            ReasonGRM also trains with: a group whose G rewards are all equal has zero advantage,
            so it is dropped, and up to this many sampling rounds (the step's own prompts first,
            then other prompts) gather B groups whose rewards differ. Fewer than B if the rounds
            run out; 0 trains every group. reward/mean stays that of the step's own prompts. With
            W processes each gathers B/W groups, and all train as many groups as the process that
            found the fewest (all processes must run the same number of micro-batches).
        strategy / zero_stage: How several processes train (`rlhfv.training.distributed`):
            "auto" is DDP, or DeepSpeed ZeRO when zero_stage is 2 or 3; "fsdp" is FSDP2.
        rollout_dtype: Precision of sampling only ("" = run.dtype). "bfloat16" samples under
            bf16 autocast while training stays in run.dtype: about 1.4× faster sampling on CPUs
            with avx512_bf16 or AMX, and on GPUs.
        freeze: Regular expressions; parameters whose names match one are not trained (e.g.
            ["visual"] keeps a Qwen2-VL vision tower fixed).
        rollout: The sampling engine (`rlhfv.engine.RolloutConfig`): `hf` in this process, or
            `vllm` in its own, synced every `rollout.sync_every` steps.
    """

    run: RunConfig = field(default_factory=RunConfig)
    policy: dict[str, Any] = component_field({"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl"})
    train_data: dict[str, Any] = component_field({"_component_": "rlhfv.data.shapes.ShapesVQA"})
    eval_data: dict[str, Any] | None = None
    reward: dict[str, Any] = component_field({"_component_": "rlhfv.rewards.rules.ExactAnswerReward"})
    optimizer: dict[str, Any] = component_field({"_component_": "torch.optim.AdamW", "lr": 1e-5})
    steps: int = 100
    prompts_per_step: int = 8
    group_size: int = 4
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    stop_strings: list[str] = field(default_factory=list)
    updates_per_batch: int = 1
    micro_batch_size: int = 0
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    loss_norm: str = "token_mean"
    scale_rewards: bool = True
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    schedule: str = "constant"
    on_nonfinite: str = "stop"
    log_every: int = 1
    log_rollouts_every: int = 10
    log_rollouts_prompts: int = 2
    eval_every: int = 0
    eval_batch_size: int = 32
    dynamic_sampling: int = 0
    strategy: str = "auto"
    zero_stage: int = 0
    rollout_dtype: str = ""
    freeze: list[str] = field(default_factory=list)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


def check_config(cfg: GRPOConfig) -> None:
    """Refuse settings that cannot work, before loading anything."""
    if cfg.group_size < 2:
        raise ValueError(f"group_size = {cfg.group_size}: GRPO compares completions within a group, so G ≥ 2")
    check_training_config(cfg)
    _, world = distributed.world()
    distributed.check_global_batch(world, prompts_per_step=cfg.prompts_per_step)
    if cfg.dynamic_sampling < 0:
        raise ValueError(
            f"dynamic_sampling = {cfg.dynamic_sampling}; 0 (off) or the most sampling rounds per step"
        )
    n = cfg.prompts_per_step // world * cfg.group_size
    if cfg.micro_batch_size and n % cfg.micro_batch_size:
        raise ValueError(
            f"micro_batch_size = {cfg.micro_batch_size} must divide each process's rows, "
            f"prompts_per_step / processes × group_size = {cfg.prompts_per_step} / {world} × {cfg.group_size} = {n}"
        )
    if cfg.rollout_dtype not in ("", "float32", "bfloat16", "float16"):
        raise ValueError(f"rollout_dtype = {cfg.rollout_dtype!r}; choose '', float32, bfloat16 or float16")
    check_rollout_config(cfg.rollout)
    if cfg.rollout.engine == "vllm" and world > 1:
        raise ValueError(
            f"rollout.engine = 'vllm' with {world} processes: the engine syncs from one process's model; "
            "use rollout.engine=hf"
        )


def check_recipe(cfg: Any, source: str, prefix: str) -> None:
    """At `rlhfv validate`: a vLLM engine needs a policy vLLM can load (`check_supported`)."""
    if cfg.rollout.engine != "vllm":
        return
    from omegaconf import OmegaConf

    from rlhfv.engine.vllm import check_supported

    device = str(cfg.run.device)
    on_gpu = device == "cuda" or device == "auto" and torch.cuda.is_available()
    check_supported(OmegaConf.to_container(cfg.policy, resolve=False), on_gpu, source, prefix)  # type: ignore[arg-type]


def reference_context(policy_module: torch.nn.Module, reference: torch.nn.Module | None) -> Any:
    """Where log π_ref comes from: a frozen copy, or the LoRA policy with its adapters off."""
    if reference is None:
        inner = getattr(policy_module, "module", policy_module)
        return inner.disable_adapter()
    return nullcontext()


def write_rollouts(run_dir: Any, step: int, rollout: Rollout, rewards: torch.Tensor, prompts: int) -> None:
    """Append the first `prompts` prompts of a rollout to rollouts.jsonl (images as PNG files)."""
    g = rollout.group_size
    image_dir = run_dir / "rollout_images"
    with (run_dir / "rollouts.jsonl").open("a", encoding="utf-8") as f:
        for b, prompt in enumerate(rollout.prompts[:prompts]):
            paths = []
            for k, image in enumerate(prompt.images):
                image_dir.mkdir(exist_ok=True)
                path = image_dir / f"step{step}_p{b}_{k}.png"
                image.save(path)
                paths.append(path.relative_to(run_dir).as_posix())
            row = {
                "step": step,
                "prompt": prompt.text,
                "images": paths,
                "completions": rollout.texts[b * g : (b + 1) * g],
                "rewards": rewards[b * g : (b + 1) * g].tolist(),
                "judgments": rollout.judgments[b] if b < len(rollout.judgments) else [],
            }
            if rollout.reading is not None:  # what each output wrote first, before the prompt's slot
                row["readings"] = rollout.reading.texts[b * g : (b + 1) * g]
            f.write(json.dumps(row) + "\n")


def nonfinite_cause(
    logprobs: torch.Tensor, old: torch.Tensor, ref: torch.Tensor | None, adv: torch.Tensor
) -> str:
    """Name the first input of the loss that holds NaN/inf."""
    for name, t in (
        ("policy log-probs", logprobs),
        ("old log-probs", old),
        ("reference log-probs", ref),
        ("advantages", adv),
    ):
        if t is not None and not torch.isfinite(t).all():
            return f"{name} hold NaN/inf"
    return "the loss overflowed although its inputs are finite (check the learning rate and loss_norm)"


def reading_logprobs(
    model: torch.nn.Module, reading: Rollout, rows: slice, temperature: float, policy: ChatModel
) -> torch.Tensor:
    """log π under `model` of the sampled tokens of the readings in `rows`. Shape [n, T_read]."""
    return sequence_logprobs(
        model,
        reading.select(rows),
        reading.completion_ids[rows],
        reading.completion_mask[rows],
        temperature,
        suppressed_tokens=policy.suppressed_tokens,
    )


def main(cfg: GRPOConfig) -> dict[str, float]:
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
    is_lora = hasattr(module, "disable_adapter")
    reference = None
    if cfg.kl_coef > 0 and not is_lora:  # kl_coef 0: no reference at all; LoRA: adapters off
        reference = instantiate(cfg.policy).module.to(device).eval().requires_grad_(False)
    train = instantiate(cfg.train_data)
    held_out = instantiate(cfg.eval_data) if cfg.eval_data else None
    reward_fn = instantiate(cfg.reward)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, params)
    scheduler = lr_schedule(optimizer, cfg.warmup_steps, cfg.steps * cfg.updates_per_batch, cfg.schedule)
    loss_cfg = GRPOLossConfig(cfg.clip_eps, cfg.kl_coef, cfg.loss_norm, cfg.max_new_tokens)
    local_prompts = cfg.prompts_per_step // world  # this process's share of the step's prompts
    micro = cfg.micro_batch_size or local_prompts * cfg.group_size
    trainer, prepared_optimizer = accelerator.prepare(module, optimizer)  # what the training forward calls
    step_fn = TrainStep(
        accelerator, trainer, prepared_optimizer, scheduler, cfg.max_grad_norm, cfg.on_nonfinite, "GRPO loss"
    )
    casts_itself = step_fn.kind == "deepspeed"  # DeepSpeed holds the precision in its config
    synced = distributed.shards_parameters(accelerator)
    start_step = run.start_step if run else 0
    summary: dict[str, float] = {}
    if distributed.main_process_value(accelerator, run is not None and run.state is not None):
        if run is not None and run.state is not None:
            if world == 1:
                summary = run.restore(module, optimizer, scheduler)
            else:  # the weights, optimizer and RNG states: below, on every process
                summary = dict(run.state.get("summary", {}))
            truncate_metrics(run.dir / "rollouts.jsonl", start_step)
    elif held_out is not None:
        before = evaluate_accuracy(policy, held_out, cfg.eval_batch_size, cfg.max_new_tokens, synced)
        summary = accuracy_summary(before, "before")
        if run is not None:
            run.log(0, before)
            logger.info("held-out accuracy before GRPO: %.3f", before["eval/accuracy"])
    if run is not None and start_step == 0 and (run.dir / "rollouts.jsonl").exists():
        (run.dir / "rollouts.jsonl").unlink()

    if world > 1:  # every process takes up the checkpoint the main process read
        saved = run.state if run is not None else None
        start_step = distributed.restore_training_state(
            accelerator, trainer, prepared_optimizer, scheduler, saved, start_step
        )

    def state(gathered: dict[str, Any]) -> dict[str, Any]:
        seen = {"prompts_seen": step * cfg.prompts_per_step}
        if gathered:  # several processes: the full state the main process gathered
            return {
                **gathered,
                "scheduler": scheduler.state_dict(),
                "summary": summary,
                "data_position": seen,
            }
        return training_state(module, optimizer, scheduler, summary, data_position=seen)

    autocast = torch.autocast(
        device.type,
        dtype=getattr(torch, cfg.run.dtype),
        enabled=cfg.run.dtype != "float32" and not casts_itself,
    )
    # Sampling may run in lower precision than training (as with a separate inference engine):
    # with one update per batch the ratio is still exactly 1, the samples just come from a
    # slightly perturbed policy (measured in RESULTS.md, "Speed against peers").
    rollout_dtype = cfg.rollout_dtype or cfg.run.dtype
    sample_autocast = torch.autocast(
        device.type,
        dtype=getattr(torch, rollout_dtype),
        enabled=rollout_dtype != "float32" and not casts_itself,
    )
    bar = tqdm(
        range(start_step + 1, cfg.steps + 1),
        initial=start_step,
        total=cfg.steps,
        desc="grpo",
        disable=rank != 0,
    )
    step = start_step
    sampler: RolloutEngine
    if cfg.rollout.engine == "vllm":
        from rlhfv.engine.vllm import VLLMEngine

        # the engine starts from the trainer's weights as they are now (resumed runs included)
        sampler = VLLMEngine(
            policy,
            cfg.rollout,
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.top_p,
            cfg.stop_strings,
            rollout_dtype,
            cfg.run.seed,
            log_dir=run.dir if run is not None else None,
        )
    else:
        sampler = HFEngine(policy, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.stop_strings, synced)

    sample_s = 0.0  # this step's time in generate (perf/sample_s), rewards excluded

    def sample(round_: int) -> tuple[Rollout, torch.Tensor]:
        """G samples for each of B prompts and their rewards [N]; round 0 is the step's own
        prompts, a later round (dynamic sampling) another permutation of the data."""
        nonlocal sample_s
        began = time.perf_counter()
        seed = cfg.run.seed + 7919 * round_
        every = batch_indices(step, 0, cfg.prompts_per_step, 1, len(train), seed)  # the global batch
        examples = [train[i] for i in distributed.rank_slice(every, rank, world)]
        seeds = {}  # rollout.seed_per_prompt: each group from (seed, step, round, its global place)
        if cfg.rollout.seed_per_prompt:
            first = rank * local_prompts
            base = (seed * 1_000_003 + step) * 1_000_003
            seeds["prompt_seeds"] = [base + first + b for b in range(local_prompts)]
        with sample_autocast:  # the HF engine's precision; a vLLM engine runs in rollout_dtype anyway
            rollout = sampler.generate(
                [e.prompt for e in examples],
                cfg.group_size,
                [e.label for e in examples],
                step + 100_003 * round_,
                **seeds,
            )
        sample_s += time.perf_counter() - began
        # a model-based reward (a GRM's judgements) runs at the run's precision too: outside the
        # autocast it generated in float32, 1.7x slower on a bf16 CPU for the pretrained MLLM
        with autocast:
            return rollout, checked_rewards(reward_fn, rollout)  # a broken reward stops before any update

    try:
        for step in bar:
            started, cpu_started, sample_s = time.perf_counter(), time.process_time(), 0.0
            # 1–3. prompts of this step and process, G samples each, their rewards
            module.eval()  # sampling: no dropout
            rollout, rewards = sample(0)  # [N]
            step_rewards = rewards  # what the policy scores on this step's prompts (reward/mean)
            kept_groups = local_prompts
            if cfg.dynamic_sampling:
                # DAPO's dynamic sampling: a group whose G rewards are all equal has zero advantage and
                # teaches nothing. Keep the others, and sample further rounds until B groups differ.
                first = (rollout, rewards)
                picks: list[tuple[Rollout, int]] = []
                kept_rewards: list[torch.Tensor] = []
                for round_ in range(cfg.dynamic_sampling):
                    if round_ > 0:
                        rollout, rewards = sample(round_)
                    grouped = rewards.view(-1, cfg.group_size)  # [B, G]
                    for b in torch.nonzero(grouped.amax(dim=1) > grouped.amin(dim=1)).flatten().tolist():
                        if len(picks) < local_prompts:
                            picks.append((rollout, b))
                            kept_rewards.append(grouped[b])
                    # every process samples the same number of rounds (under ZeRO-3 and FSDP each
                    # forward pass is a collective)
                    if distributed.all_processes_agree(accelerator, len(picks) == local_prompts):
                        break
                # every process trains as many groups as the one that found the fewest
                kept_groups = distributed.smallest_over_processes(accelerator, len(picks))
                picks, kept_rewards = picks[:kept_groups], kept_rewards[:kept_groups]
                # with no group left, the first round trains (zero advantages: only the KL term acts)
                rollout, rewards = (
                    (rollout_of_groups(policy, picks), torch.cat(kept_rewards)) if picks else first
                )
            advantages = group_advantages(rewards, cfg.group_size, cfg.scale_rewards).to(device)  # [N]
            n_rows = len(rollout)
            mask = rollout.completion_mask  # [N, T]
            reading = rollout.reading  # the first part of each output, written from its own prompt
            if reading is not None and cfg.updates_per_batch > 1:
                raise ValueError(
                    "prompts with a reading (JudgeTask(reading='self')) train with updates_per_batch 1 only"
                )
            # token_mean over whole outputs: a reading's tokens count with the rest of its output's
            local_tokens = float(mask.sum()) + (
                float(reading.completion_mask.sum()) if reading is not None else 0.0
            )
            # the loss's denominators, per process: the whole batch's tokens (and rows) over the
            # processes, so the average of the processes' gradients is the whole batch's gradient
            batch_tokens = distributed.sum_over_processes(accelerator, local_tokens) / world
            chunks = [slice(s, s + micro) for s in range(0, n_rows, micro)]
            shared = (
                cfg.group_size if micro % cfg.group_size == 0 and reading is None else 1
            )  # micro-batches hold whole groups: share prompts (rows with readings differ)
            # 4. log π_old and log π_ref per micro-batch, without grad and (like the sampler) without dropout
            old_lp: list[torch.Tensor | None] = [None] * len(chunks)
            ref_lp: list[torch.Tensor | None] = [None] * len(chunks)
            ref_read_lp: list[torch.Tensor | None] = [None] * len(chunks)  # the readings' log π_ref
            with torch.no_grad(), autocast:
                for c, rows in enumerate(chunks):
                    args = (
                        rollout.select(rows),
                        rollout.completion_ids[rows],
                        mask[rows],
                        cfg.temperature,
                        shared,
                        policy.suppressed_tokens,
                    )
                    if cfg.updates_per_batch > 1:
                        old_lp[c] = sequence_logprobs(trainer, *args)
                    if cfg.kl_coef > 0:
                        with reference_context(module, reference):
                            ref_model = reference if reference is not None else trainer
                            ref_lp[c] = sequence_logprobs(ref_model, *args)
                            if reading is not None:
                                ref_read_lp[c] = reading_logprobs(
                                    ref_model, reading, rows, cfg.temperature, policy
                                )
            module.train()
            # 5. μ optimizer steps over the batch
            totals: dict[str, float] = {}
            gap = 0.0  # Σ |log π_sampler − log π_old| over the batch's completion tokens
            skipped = 0
            grad_norm = 0.0
            for update in range(cfg.updates_per_batch):
                for c, rows in enumerate(chunks):
                    with autocast:
                        lp = sequence_logprobs(
                            trainer,
                            rollout.select(rows),
                            rollout.completion_ids[rows],
                            mask[rows],
                            cfg.temperature,
                            shared,
                            policy.suppressed_tokens,
                        )
                    old = lp.detach() if (saved := old_lp[c]) is None else saved  # [n, T]
                    weights = None  # [n, T] truncated importance weights π_old / π_sampler
                    if rollout.sampler_logprobs is not None:
                        if update == 0:
                            gap += float(((rollout.sampler_logprobs[rows] - old).abs() * mask[rows]).sum())
                        if cfg.rollout.tis_cap:
                            weights = truncated_is_weights(
                                old, rollout.sampler_logprobs[rows], cfg.rollout.tis_cap
                            )
                    loss, metrics = grpo_loss(
                        lp,
                        old,
                        advantages[rows],
                        mask[rows],
                        loss_cfg,
                        ref_lp[c],
                        batch_tokens,
                        n_rows,
                        weights,
                    )
                    if reading is not None:
                        with autocast:
                            lp_read = reading_logprobs(trainer, reading, rows, cfg.temperature, policy)
                        if reading.sampler_logprobs is not None:  # readings are sampled output too
                            read_mask = reading.completion_mask[rows]
                            gap += float(
                                ((reading.sampler_logprobs[rows] - lp_read.detach()).abs() * read_mask).sum()
                            )
                        read_loss, read_metrics = grpo_loss(
                            lp_read,
                            lp_read.detach(),
                            advantages[rows],
                            reading.completion_mask[rows],
                            loss_cfg,
                            ref_read_lp[c],
                            batch_tokens,
                            n_rows,
                        )
                        loss = loss + read_loss
                        for key in ("loss/policy", "loss/kl"):
                            if key in read_metrics:
                                metrics[key] += read_metrics[key]
                    inputs = (lp, old, ref_lp[c], advantages[rows])
                    if not step_fn.loss_is_finite(
                        loss, step, lambda inputs=inputs: f": {nonfinite_cause(*inputs)}"
                    ):
                        skipped = 1
                        break
                    # the micro-batches' losses already add up to this process's share of the batch loss
                    step_fn.backward(loss, last=c == len(chunks) - 1)
                    for k, v in metrics.items():
                        totals[k] = totals.get(k, 0.0) + v / cfg.updates_per_batch
                if skipped:
                    break
                grad_norm, skipped = step_fn.step(step)
                if skipped:
                    break
            sync_s = 0.0  # the engine follows the trainer: new weights every rollout.sync_every steps
            if step % cfg.rollout.sync_every == 0 and not skipped:
                sync_s = sampler.sync(step)
            elapsed = time.perf_counter() - started
            lengths = mask.sum(dim=1).float()
            metrics = {
                **totals,
                "reward/mean": step_rewards.mean().item(),
                "reward/std": step_rewards.std().item(),
                "completion/length_mean": lengths.mean().item(),
                "completion/incomplete_frac": (~rollout.complete).float().mean().item(),
                "rollout/trained_groups": float(kept_groups),
                "perf/step_s": elapsed,
                "perf/step_cpu_s": time.process_time()
                - cpu_started,  # steadier than wall time on a shared machine
                "perf/sample_s": sample_s,
                "perf/sync_s": sync_s,
                "perf/tokens_per_s": batch_tokens / elapsed,
                "optim/lr": scheduler.get_last_lr()[0],
                "optim/grad_norm": grad_norm,  # the batch's last update, before clipping
                "skipped/nonfinite": float(skipped),
                **getattr(
                    reward_fn, "last_metrics", {}
                ),  # a reward's own diagnostics (monitors, parse failures)
            }
            if rollout.sampler_logprobs is not None:  # None: a stand-in sampler that records nothing
                metrics["rollout/logprob_gap"] = gap / max(1.0, batch_tokens)  # readings' tokens included
                if (
                    cfg.rollout.logprob_gap_warn
                    and metrics["rollout/logprob_gap"] > cfg.rollout.logprob_gap_warn
                ):
                    logger.warning(
                        "step %d: rollout/logprob_gap = %.4f > rollout.logprob_gap_warn = %g: the sampler's "
                        "policy differs from the trained one (a missed weight sync, low precision, or "
                        "sync_every > 1); rollout.tis_cap corrects the loss for it",
                        step,
                        metrics["rollout/logprob_gap"],
                        cfg.rollout.logprob_gap_warn,
                    )
            metrics = {**distributed.mean_metrics(accelerator, metrics), "perf/processes": world}
            if held_out is not None and (step == cfg.steps or cfg.eval_every and step % cfg.eval_every == 0):
                metrics.update(
                    evaluate_accuracy(policy, held_out, cfg.eval_batch_size, cfg.max_new_tokens, synced)
                )
                summary.update(accuracy_summary(metrics, "after"))
            save_now = cfg.run.save_every > 0 and (step % cfg.run.save_every == 0 or step == cfg.steps)
            gathered = {}  # several processes: a collective, every process takes part
            if save_now and world > 1:
                gathered = distributed.gathered_training_state(accelerator, trainer, prepared_optimizer)
            if run is None:
                continue
            bar.set_postfix(
                reward=f"{metrics['reward/mean']:.3f}", loss=f"{metrics.get('loss/policy', 0):.3f}"
            )
            if step % cfg.log_every == 0 or step == cfg.steps or "eval/accuracy" in metrics:
                run.log(step, metrics)
            if cfg.log_rollouts_every and step % cfg.log_rollouts_every == 0:
                write_rollouts(run.dir, step, rollout, rewards, cfg.log_rollouts_prompts)
            summary["final_reward"] = metrics["reward/mean"]
            run.maybe_save(step, partial(state, gathered), force=step == cfg.steps and cfg.run.save_every > 0)
    finally:
        sampler.close()
    final = distributed.gathered_model(accelerator, policy, trainer, lambda: instantiate(cfg.policy))
    if run is None:
        return summary
    if "after/accuracy" in summary:
        logger.info(
            "held-out accuracy: before %.3f, after %.3f",
            summary.get("before/accuracy", float("nan")),
            summary["after/accuracy"],
        )
    return run.finish(final, summary)
