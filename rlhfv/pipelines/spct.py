"""SPCT rejective fine-tuning: the cold start of DeepSeek-GRM (arXiv 2504.02495, §3.2, App. C).

1. Sample N principle+critique judgements per preference item from a sampler GRM, each with the
   responses in its own random order (and, optionally, one extra *hinted* sample per item whose
   prompt names the best response).
2. Reject every judgement that is incorrect by Eq. 10 (the preferred response must get a strictly
   higher score than every other; unparsable output is incorrect). Reject all of an item's
   judgements when all N non-hinted ones are correct: the item is too easy to teach anything.
   A hinted judgement is kept only if correct, and is trained on the *unhinted* prompt.
3. Supervised fine-tuning of the GRM on the kept (prompt, judgement) pairs.

The second SPCT stage, rule-based online RL with the ±1 reward (Eq. 11), is the GRPO pipeline with
`rlhfv.data.pairs.JudgeTask` data and `rlhfv.rewards.grm.JudgeRuleReward(rule="spct")`: see
recipes/spct_rl_shapes.yaml.

The sampled trajectories are written to `<run dir>/rft_trajectories.jsonl` (item index, display
order, text, hinted flag) once sampling ends, so a resumed run, with or without a checkpoint,
trains on exactly the same data without resampling.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlhfv.config import RunConfig, component_field, instantiate
from rlhfv.grm.judge import JudgeItem, judge
from rlhfv.grm.prompts import pointwise_prompt
from rlhfv.grm.rules import preferred_truth, spct_correct
from rlhfv.grm.voting import shuffled_order
from rlhfv.models.base import ChatModel
from rlhfv.training import distributed
from rlhfv.training.batching import batch_indices, sft_update
from rlhfv.training.run import start_run, training_state
from rlhfv.training.schedule import lr_schedule
from rlhfv.training.step import TrainStep
from rlhfv.types import Example

logger = logging.getLogger(__name__)

TRAJECTORIES = "rft_trajectories.jsonl"


@dataclass
class SPCTConfig:
    """Keys of an SPCT rejective fine-tuning recipe.

    Attributes:
        grm: The judge to fine-tune (model builder node returning a ChatModel).
        sampler: The judge that samples trajectories (SPCT used a stronger pretrained model);
            omit to sample from `grm` itself.
        pairs: Data set node of `PreferencePair`s (prompt with images, responses, preferred).
        samples_per_item: N_RFT non-hinted samples per item (SPCT: 3).
        hinted: Also draw one hinted sample per item.
        temperature, max_new_tokens: Sampling of judgements.
        sample_batch_size: Rows per generate call while sampling.
        force_scores: Force the score line onto samples that lack one (`rlhfv.grm.judge`); for a
            sampler too small to follow the output contract, so that RFT has correct samples to keep.
        principles: Optional annotation principles ('w/ principles' prompts).
        score_low / score_high: The score range; scores outside it are clamped (as DeepSeek-GRM's card does).
        steps, batch_size, grad_accum, warmup_steps, schedule, max_grad_norm: SFT on kept trajectories.
        engine: "hf" (sample in this process) or "vllm": a vLLM process serves the (frozen)
            sampler and takes `sample_batch_size` rows per call, forced score lines included.
        vllm_python: The engine environment's interpreter ("" = `rlhfv engine install vllm`'s).
    """

    run: RunConfig = field(default_factory=RunConfig)
    grm: dict[str, Any] = component_field({"_component_": "rlhfv.models.text_lm.tiny_text_lm"})
    sampler: dict[str, Any] | None = None
    pairs: dict[str, Any] = component_field({"_component_": "rlhfv.data.pairs.ShapesPairs"})
    optimizer: dict[str, Any] = component_field({"_component_": "torch.optim.AdamW", "lr": 5e-6})
    samples_per_item: int = 3
    hinted: bool = True
    temperature: float = 1.0
    max_new_tokens: int = 256
    sample_batch_size: int = 16
    force_scores: bool = False
    principles: str | None = None
    score_low: float = 1.0
    score_high: float = 10.0
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 0
    schedule: str = "constant"
    max_grad_norm: float = 1.0
    log_every: int = 10
    engine: str = "hf"
    vllm_python: str = ""


def sampling_engine(model: ChatModel, engine: str, vllm_python: str, max_new_tokens: int, seed: int) -> Any:
    """None for "hf"; for "vllm" a `VLLMEngine` serving `model` as it is now (never synced:
    the sampling stages judge with a frozen model). The caller closes it."""
    if engine not in ("hf", "vllm"):
        raise ValueError(f"engine = {engine!r}; choose 'hf' or 'vllm'")
    if engine == "hf":
        return None
    from rlhfv.engine import RolloutConfig
    from rlhfv.engine.vllm import VLLMEngine

    dtype = str(next(model.module.parameters()).dtype).removeprefix("torch.")
    settings = RolloutConfig(engine="vllm", vllm_python=vllm_python)
    return VLLMEngine(model, settings, max_new_tokens, 1.0, 1.0, [], dtype, seed)


def rejective_sample(
    sampler: ChatModel, pairs: Any, cfg: SPCTConfig, rng: random.Random, engine: Any | None = None
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Steps 1-2: sample, judge correctness (Eq. 10), keep the informative correct trajectories."""
    n_samples, kept = cfg.samples_per_item, []
    counts = {
        "items": 0,
        "too_easy": 0,
        "no_correct": 0,
        "samples": 0,
        "correct": 0,
        "parse_failures": 0,
        "hinted_kept": 0,
    }
    per_call = max(1, cfg.sample_batch_size // n_samples)
    score_range = (cfg.score_low, cfg.score_high)
    for lo in tqdm(range(0, len(pairs), per_call), desc="rejective sampling"):
        chunk = [(i, pairs[i]) for i in range(lo, min(lo + per_call, len(pairs)))]
        items = [JudgeItem(p.prompt.text, list(p.responses), list(p.prompt.images)) for _, p in chunk]
        judged = judge(
            sampler,
            items,
            k=n_samples,
            rng=rng,
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
            principles=cfg.principles,
            score_range=score_range,
            clip=True,
            force=cfg.force_scores,
            engine=engine,
        )
        hinted = hinted_samples(sampler, chunk, cfg, rng, engine) if cfg.hinted else [None] * len(chunk)
        for (index, pair), j, hint in zip(chunk, judged, hinted, strict=True):
            truth = preferred_truth(len(pair.responses), pair.preferred)
            correct = [spct_correct(s, truth) for s in j.scores]
            counts["items"] += 1
            counts["samples"] += n_samples
            counts["correct"] += sum(correct)
            counts["parse_failures"] += sum(not p.ok for p in j.parsed)
            if all(correct):
                counts["too_easy"] += 1
                continue
            rows = [
                {"item": index, "order": o, "text": t, "hinted": False}
                for o, t, c in zip(j.orders, j.texts, correct, strict=True)
                if c
            ]
            if hint is not None:
                rows.append(hint)
                counts["hinted_kept"] += 1
            counts["no_correct"] += not rows
            kept += rows
    stats = {
        "rft/items": counts["items"],
        "rft/items_too_easy": counts["too_easy"],
        "rft/items_without_correct": counts["no_correct"],
        "rft/sample_accuracy": counts["correct"] / max(1, counts["samples"]),
        "rft/parse_failure_rate": counts["parse_failures"] / max(1, counts["samples"]),
        "rft/hinted_kept": counts["hinted_kept"],
        "rft/trajectories": len(kept),
    }
    return kept, stats


def hinted_samples(
    sampler: ChatModel,
    chunk: list[tuple[int, Any]],
    cfg: SPCTConfig,
    rng: random.Random,
    engine: Any | None = None,
) -> list[dict[str, Any] | None]:
    """One hinted sample per item (the prompt names the best response); kept only if correct."""
    orders = [[shuffled_order(len(p.responses), rng)] for _, p in chunk]
    judged = judge(
        sampler,
        [JudgeItem(p.prompt.text, list(p.responses), list(p.prompt.images)) for _, p in chunk],
        orders=orders,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        principles=cfg.principles,
        score_range=(cfg.score_low, cfg.score_high),
        clip=True,
        force=cfg.force_scores,
        hints=[p.preferred for _, p in chunk],
        engine=engine,
    )
    out: list[dict[str, Any] | None] = []
    for (index, p), j in zip(chunk, judged, strict=True):
        ok = spct_correct(j.scores[0], preferred_truth(len(p.responses), p.preferred))
        out.append({"item": index, "order": j.orders[0], "text": j.texts[0], "hinted": True} if ok else None)
    return out


def trajectory_example(pairs: Any, row: dict[str, Any], principles: str | None) -> Example:
    """A kept trajectory as an SFT example: the unhinted prompt in the sampled order → the judgement."""
    pair = pairs[row["item"]]
    shown = [pair.responses[o] for o in row["order"]]
    return Example(
        prompt=pointwise_prompt(pair.prompt.text, shown, pair.prompt.images, principles),
        answer=row["text"],
        task="judge",
    )


def main(cfg: SPCTConfig) -> dict[str, float]:
    run = start_run(cfg)
    grm: ChatModel = instantiate(cfg.grm)
    pairs = instantiate(cfg.pairs)
    trajectories_file = Path(run.dir) / TRAJECTORIES
    summary: dict[str, float] = {}
    if trajectories_file.is_file():  # resume: same data, no resampling (written once sampling ended)
        kept = [json.loads(line) for line in trajectories_file.read_text().splitlines()]
        summary = dict(run.state["summary"]) if run.state is not None else {}
        logger.info("training on the %d trajectories already sampled in %s", len(kept), trajectories_file)
    else:
        sampler: ChatModel = instantiate(cfg.sampler) if cfg.sampler else grm
        sampler.module.to(run.device).eval()
        engine = sampling_engine(sampler, cfg.engine, cfg.vllm_python, cfg.max_new_tokens, cfg.run.seed)
        try:
            kept, stats = rejective_sample(sampler, pairs, cfg, random.Random(cfg.run.seed), engine)
        finally:
            if engine is not None:
                engine.close()
        trajectories_file.write_text("".join(json.dumps(r) + "\n" for r in kept))
        summary.update(stats)
        run.log(0, stats)
        logger.info("rejective sampling kept %d trajectories: %s", len(kept), stats)
        if sampler is not grm:
            sampler.module.cpu()
    if not kept:
        raise RuntimeError(
            f"rejective sampling kept no trajectory from {len(pairs)} items (sample accuracy "
            f"{summary.get('rft/sample_accuracy', float('nan')):.3f}); use a stronger sampler, more samples_per_item or hinted: true"
        )
    examples = [trajectory_example(pairs, r, cfg.principles) for r in kept]

    grm.module.to(run.device).train()
    params = [p for p in grm.module.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, params)
    scheduler = lr_schedule(optimizer, cfg.warmup_steps, cfg.steps, cfg.schedule)
    accelerator = distributed.build_accelerator("auto", 0, run.device)
    trainer = TrainStep(
        accelerator,
        *accelerator.prepare(grm.module, optimizer),
        scheduler,
        cfg.max_grad_norm,
        "stop",
        "SFT loss",
    )
    if run.state is not None:
        summary.update(run.restore(grm.module, optimizer, scheduler))

    def state() -> dict[str, Any]:
        return training_state(grm.module, optimizer, scheduler, summary)

    bar = tqdm(
        range(run.start_step + 1, cfg.steps + 1), initial=run.start_step, total=cfg.steps, desc="rft sft"
    )
    for step in bar:
        started = time.perf_counter()
        done = sft_update(
            grm, examples, step, trainer, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
            seed=cfg.run.seed, device=run.device,
        )  # fmt: skip
        loss_total, grad_norm = done.loss, done.grad_norm
        bar.set_postfix(loss=f"{loss_total:.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(
                step,
                {
                    "loss/sft": loss_total,
                    "optim/grad_norm": float(grad_norm),
                    "perf/step_s": time.perf_counter() - started,
                },
            )
        summary["final_loss"] = loss_total
        run.maybe_save(step, state, force=step == cfg.steps and cfg.run.save_every > 0)
    return run.finish(grm, summary)


META_SAMPLES = "meta_rm_samples.jsonl"


@dataclass
class MetaRMConfig:
    """Keys of a meta-RM training recipe (SPCT §4): BCE on the correctness of the GRM's own samples.

    Attributes:
        grm: The judge whose sampled judgements the meta-RM learns to grade.
        meta_base: Language model under the meta-RM's scalar head.
        pairs: Preference data set node. samples_per_item: Judgements sampled per item.
        steps, batch_size: BCE training. The meta-RM is saved to `<run dir>/final`
            (`rlhfv.grm.meta_rm.load_meta_rm`; `rlhfv eval grm --meta-rm` reads it).
        engine, vllm_python: As in `SPCTConfig`: who samples the judgements.
    """

    run: RunConfig = field(default_factory=RunConfig)
    grm: dict[str, Any] = component_field({"_component_": "rlhfv.models.base.load_model"})
    meta_base: dict[str, Any] = component_field({"_component_": "rlhfv.models.text_lm.tiny_text_lm"})
    pairs: dict[str, Any] = component_field({"_component_": "rlhfv.data.pairs.ShapesPairs"})
    optimizer: dict[str, Any] = component_field({"_component_": "torch.optim.AdamW", "lr": 1e-5})
    samples_per_item: int = 3
    temperature: float = 0.5
    max_new_tokens: int = 256
    sample_batch_size: int = 16
    force_scores: bool = False
    principles: str | None = None
    steps: int = 100
    batch_size: int = 8
    log_every: int = 10
    engine: str = "hf"
    vllm_python: str = ""


def meta_rm_main(cfg: MetaRMConfig) -> dict[str, float]:
    from rlhfv.grm.meta_rm import MetaRM, meta_rm_loss, save_meta_rm

    run = start_run(cfg)
    pairs = instantiate(cfg.pairs)
    samples_file = Path(run.dir) / META_SAMPLES
    if samples_file.is_file():
        rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    else:
        grm: ChatModel = instantiate(cfg.grm)
        grm.module.to(run.device).eval()
        engine = sampling_engine(grm, cfg.engine, cfg.vllm_python, cfg.max_new_tokens, cfg.run.seed)
        rows, rng, per_call = (
            [],
            random.Random(cfg.run.seed),
            max(1, cfg.sample_batch_size // cfg.samples_per_item),
        )
        for lo in tqdm(range(0, len(pairs), per_call), desc="sampling judgements"):
            chunk = [(i, pairs[i]) for i in range(lo, min(lo + per_call, len(pairs)))]
            items = [JudgeItem(p.prompt.text, list(p.responses), list(p.prompt.images)) for _, p in chunk]
            judged = judge(
                grm,
                items,
                k=cfg.samples_per_item,
                rng=rng,
                temperature=cfg.temperature,
                max_new_tokens=cfg.max_new_tokens,
                principles=cfg.principles,
                force=cfg.force_scores,
                engine=engine,
            )
            for (index, p), j in zip(chunk, judged, strict=True):
                truth = preferred_truth(len(p.responses), p.preferred)
                rows += [
                    {"item": index, "order": o, "text": t, "correct": spct_correct(s, truth)}
                    for o, t, s in zip(j.orders, j.texts, j.scores, strict=True)
                ]
        if engine is not None:
            engine.close()
        samples_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        grm.module.cpu()
    positive = sum(r["correct"] for r in rows) / max(1, len(rows))
    logger.info("meta-RM data: %d judgements, %.1f%% correct", len(rows), 100 * positive)
    examples = [trajectory_example(pairs, r, cfg.principles) for r in rows]

    meta = MetaRM(instantiate(cfg.meta_base)).to(run.device)
    optimizer = instantiate(cfg.optimizer, [p for p in meta.parameters() if p.requires_grad])
    if run.state is not None:
        meta.load_state_dict(run.state["model"])
        optimizer.load_state_dict(run.state["optimizer"])
    summary: dict[str, float] = {"meta_rm/samples": len(rows), "meta_rm/positive_rate": positive}
    meta.train()
    for step in tqdm(
        range(run.start_step + 1, cfg.steps + 1), initial=run.start_step, total=cfg.steps, desc="meta-RM"
    ):
        indices = batch_indices(step, 0, cfg.batch_size, 1, len(rows), cfg.run.seed)
        loss, metrics = meta_rm_loss(
            meta,
            [examples[i].prompt for i in indices],
            [rows[i]["text"] for i in indices],
            [rows[i]["correct"] for i in indices],
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, metrics)
        summary.update(metrics)
        run.maybe_save(step, lambda: {"model": meta.state_dict(), "optimizer": optimizer.state_dict()})
    save_meta_rm(meta, Path(run.dir) / "final")
    return run.finish(None, summary)
