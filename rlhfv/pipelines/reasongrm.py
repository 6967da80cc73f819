"""ReasonGRM (arXiv 2506.16712): a reasoning judge that ends with `</think>` and `[[A]]`/`[[B]]`.

Three stages; stages 1 and 3 are the GRPO pipeline with the pieces defined here:
1. Zero-RL: GRPO with the outcome reward (`VerdictReward`) on questions the model sometimes, but
   not always, gets right (`OutcomeFilter(keep="mixed")`: 0 < correct < K of K samples).
2. R* selection + SFT (`main` below): sample G paths per question, keep the complete ones (ended
   by EOS, not by the length limit) that close their reasoning with `</think>` and give the right
   verdict after it, score each by R* = P(reasoning | Q) · P(answer | Q, reasoning) under the
   sampling model, keep the single best path (R* > 0) per question and fine-tune on them.
3. Hard-example GRPO: GRPO again on questions the SFT model does not always get right
   (`OutcomeFilter(keep="not_all_correct")`; whether the paper also drops all-wrong ones is not
   public, so "mixed" is available too).
A model that never closes a reasoning (SmolLM2-135M: no `</think>` in 160 tokens) gives Zero-RL
nothing to learn from; the paper starts from a reasoning model (QwQ-32B). `FormatPaths` is a
format cold start for such a model, an SFT data set run before Zero-RL (our addition, a recipe
stage). `ReasonGRMConfig.selection = "random"` picks a random correct path instead of the best R*
one: the paper's ablation, run on the very candidates an R* stage sampled (`paths_from`).
Both GRPO stages also drop, at every step, the groups whose rewards are all equal and sample
further prompts in their place (`dynamic_sampling` of the GRPO pipeline; the recipe sets it).
The outcome-reward tiers follow the authors' released reward function (the paper's exact RL
reward is not public) and are recipe values.
"""

from __future__ import annotations

import json
import logging
import random
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rlhfv.config import RunConfig, component_field, instantiate
from rlhfv.grm.parsing import parse_verdict
from rlhfv.grm.prompts import verdict_prompt
from rlhfv.grm.rstar import best_paths, mixed_outcome, path_scores
from rlhfv.grm.rules import VerdictRewardTiers, verdict_reward
from rlhfv.models.base import ChatModel
from rlhfv.training import distributed
from rlhfv.training.batching import sft_update
from rlhfv.training.run import start_run, training_state
from rlhfv.training.schedule import lr_schedule
from rlhfv.training.step import TrainStep
from rlhfv.types import Example

logger = logging.getLogger(__name__)

PATHS = "rstar_paths.jsonl"  # the paths a stage trained on
CANDIDATES = "rstar_candidates.jsonl"  # every complete correct path it sampled, with its R*
SELECTIONS = ("rstar", "random")
HINT = "\n\n(The better answer is {label}. Explain why, briefly.)"


class VerdictTask:
    """Preference pairs as A/B judging examples; the order is random per item (fixed by `seed`).

    `label` is the better answer's letter; `is_correct` checks the last verdict after `</think>`.
    """

    def __init__(self, pairs: object, seed: int = 0):
        self.pairs, self.seed = pairs, seed

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Example:
        pair = self.pairs[index]  # type: ignore[index]
        swap = random.Random(self.seed * 1_000_003 + index).random() < 0.5
        a, b = (pair.responses[1], pair.responses[0]) if swap else (pair.responses[0], pair.responses[1])
        label = "A" if (pair.preferred == 0) != swap else "B"
        return Example(
            prompt=verdict_prompt(pair.prompt.text, a, b, pair.prompt.images),
            answer="",
            label=label,
            task="verdict",
        )

    @staticmethod
    def is_correct(text: str, example: Example) -> bool:
        return parse_verdict(text).verdict == example.label


class VerdictReward:
    """ReasonGRM's tiered outcome reward for a rollout (see `rlhfv.grm.rules.verdict_reward`)."""

    def __init__(
        self,
        exact: float = 1.0,
        correct_with_extra: float = 0.1,
        wrong: float = -0.9,
        unfinished: float = -1.0,
    ):
        self.tiers = VerdictRewardTiers(exact, correct_with_extra, wrong, unfinished)

    def __call__(self, rollout: Any) -> torch.Tensor:
        g = rollout.group_size
        rewards = [
            verdict_reward(text, rollout.labels[i // g], bool(rollout.complete[i]), self.tiers)
            for i, text in enumerate(rollout.texts)
        ]
        return torch.tensor(rewards, dtype=torch.float32)  # [N]


def sample_outcomes(
    model: ChatModel, task: Any, samples: int, max_new_tokens: int, temperature: float, batch_prompts: int
) -> tuple[list[str], list[int], list[bool]]:
    """K sampled completions per question (prompt-major), each question's correct count, and
    whether each completion ended by itself (not at the length limit)."""
    from rlhfv.rollout import generate

    texts: list[str] = []
    counts: list[int] = []
    complete: list[bool] = []
    for lo in tqdm(range(0, len(task), batch_prompts), desc=f"sampling {samples} per question"):
        examples = [task[i] for i in range(lo, min(lo + batch_prompts, len(task)))]
        rollout = generate(model, [e.prompt for e in examples], samples, max_new_tokens, temperature)
        texts += rollout.texts
        complete += rollout.complete.tolist()
        for b, e in enumerate(examples):
            counts.append(sum(task.is_correct(t, e) for t in rollout.texts[b * samples : (b + 1) * samples]))
    return texts, counts, complete


class FormatPaths:
    """A format cold start: one path per question that ends as ReasonGRM's contract asks.

    `model` writes a short reasoning under the question's prompt with the right verdict told
    (`hint`), sampled at `temperature`; the reasoning is cut after its last full sentence (any
    `</think>` or verdict it wrote is dropped) and closed with `</think>` and the right verdict.
    The examples pair the *unhinted* prompt with that path. Nothing checks that the reasoning
    supports the verdict: an SFT stage on these teaches the output contract, not judging.
    """

    def __init__(
        self,
        task: object,
        model: object,
        max_new_tokens: int = 32,
        temperature: float = 0.7,
        hint: bool = True,
        batch_prompts: int = 16,
        seed: int = 0,
    ):
        from rlhfv.rollout import generate

        self.task = task
        model.module.eval()  # type: ignore[attr-defined]
        torch.manual_seed(seed)
        self.examples: list[Example] = []
        for lo in tqdm(range(0, len(task), batch_prompts), desc="format paths"):  # type: ignore[arg-type]
            chunk = [task[i] for i in range(lo, min(lo + batch_prompts, len(task)))]  # type: ignore[index, arg-type]
            prompts = [
                replace(e.prompt, text=e.prompt.text + HINT.format(label=e.label)) if hint else e.prompt
                for e in chunk
            ]
            texts = generate(model, prompts, 1, max_new_tokens, temperature).texts  # type: ignore[arg-type]
            self.examples += [
                replace(e, answer=f"{whole_sentences(t)}\n</think>\n\n[[{e.label}]]".lstrip())
                for e, t in zip(chunk, texts, strict=True)
            ]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def is_correct(self, text: str, example: Example) -> bool:
        return self.task.is_correct(text, example)  # type: ignore[attr-defined]


def whole_sentences(text: str) -> str:
    """`text` before any `</think>` or `[[`, cut after its last full sentence (all of it if none ends)."""
    text = text.split("</think>")[0].split("[[")[0].strip()
    if text.endswith((".", "!", "?")):
        return text
    end = max(text.rfind(mark) for mark in (". ", ".\n", "! ", "? ", "\n"))
    return text[: end + 1].strip() if end > 0 else text


class OutcomeFilter:
    """The questions of `task` worth RL: sampled K times by `model`, keep "mixed" (0 < c < K) or
    "not_all_correct" (c < K). A recipe node wrapping any data set with `is_correct`."""

    def __init__(
        self,
        task: object,
        model: object,
        samples: int = 4,
        keep: str = "mixed",
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        batch_prompts: int = 8,
    ):
        if keep not in ("mixed", "not_all_correct"):
            raise ValueError(f"OutcomeFilter keep = {keep!r}; choose 'mixed' or 'not_all_correct'")
        self.task = task
        model.module.eval()  # type: ignore[attr-defined]
        _, counts, _ = sample_outcomes(model, task, samples, max_new_tokens, temperature, batch_prompts)  # type: ignore[arg-type]
        wanted = mixed_outcome(counts, samples) if keep == "mixed" else [c < samples for c in counts]
        self.indices = [i for i, w in enumerate(wanted) if w]
        logger.info(
            "OutcomeFilter(%s): kept %d of %d questions (correct counts %s…)",
            keep,
            len(self.indices),
            len(counts),
            counts[:10],
        )
        if not self.indices:
            raise ValueError(
                f"OutcomeFilter(keep={keep!r}) kept none of {len(counts)} questions; correct counts: {counts[:20]}"
            )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Example:
        return self.task[self.indices[index]]  # type: ignore[index]

    def is_correct(self, text: str, example: Example) -> bool:
        return self.task.is_correct(text, example)  # type: ignore[attr-defined]


@dataclass
class ReasonGRMConfig:
    """Keys of the R*-selection + SFT stage.

    Attributes:
        model: The model fine-tuned on the selected paths (the code of the authors restarts from the base model).
        scorer: The model that samples paths and scores R* (LRM-Zero); omit to use `model`.
        task: Data set node of verdict examples (`VerdictTask`).
        paths_per_question: G sampled paths per question (the authors: 16).
        token_mean: "arith" (the paper's text) or "geom" (the authors' code) per-token mean in R*.
        selection: "rstar" (the paper: the best R* path per question) or "random" (a random
            correct path per question, seeded by `run.seed`: the paper's ablation).
        paths_from: The folder of an earlier stage of this pipeline on the same `task`: train on a
            selection from its sampled candidates (`rstar_candidates.jsonl`) instead of sampling
            anew, so R* and random selection are compared on one pool of paths.
    """

    run: RunConfig = field(default_factory=RunConfig)
    model: dict[str, Any] = component_field({"_component_": "rlhfv.models.text_lm.tiny_text_lm"})
    scorer: dict[str, Any] | None = None
    task: dict[str, Any] = component_field({"_component_": "rlhfv.pipelines.reasongrm.VerdictTask"})
    optimizer: dict[str, Any] = component_field({"_component_": "torch.optim.AdamW", "lr": 5e-6})
    paths_per_question: int = 16
    token_mean: str = "arith"
    selection: str = "rstar"
    paths_from: str | None = None
    temperature: float = 1.0
    max_new_tokens: int = 512
    batch_prompts: int = 4
    steps: int = 100
    batch_size: int = 8
    warmup_steps: int = 0
    schedule: str = "constant"
    max_grad_norm: float = 1.0
    log_every: int = 10


def sample_candidates(
    scorer: ChatModel, task: Any, cfg: ReasonGRMConfig
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Sample G paths per question and keep the complete correct ones, each with its R*.

    A path qualifies when it ended by itself (a truncated path's R* scores a reasoning cut short),
    holds `</think>` (without it the reasoning factor is 0) and gives the right verdict after it.
    """
    texts, counts, complete = sample_outcomes(
        scorer, task, cfg.paths_per_question, cfg.max_new_tokens, cfg.temperature, cfg.batch_prompts
    )
    g = cfg.paths_per_question
    found = []
    for i, (text, done) in enumerate(zip(texts, complete, strict=True)):
        parsed = parse_verdict(text)
        if done and parsed.has_think_end and parsed.verdict == task[i // g].label:
            found.append((i // g, text))
    scores: list[float] = []
    for lo in range(0, len(found), cfg.batch_prompts):
        chunk = found[lo : lo + cfg.batch_prompts]
        scores += path_scores(
            scorer, [task[q].prompt for q, _ in chunk], [t for _, t in chunk], cfg.token_mean
        ).tolist()
    candidates = [
        {"question": q, "prompt_crc": prompt_crc(task, q), "text": t, "r_star": r}
        for (q, t), r in zip(found, scores, strict=True)
    ]
    stats = {
        "rstar/questions": len(task),
        "rstar/path_accuracy": sum(counts) / max(1, len(texts)),
        "rstar/complete_correct_paths": len(candidates),
    }
    return candidates, stats


def prompt_crc(task: Any, question: int) -> int:
    return zlib.crc32(task[question].prompt.text.encode())


def read_candidates(folder: str, task: Any) -> list[dict[str, Any]]:
    """An earlier stage's candidates, checked to be about the questions of `task`."""
    path = Path(folder) / CANDIDATES
    if not path.is_file():
        raise FileNotFoundError(
            f"paths_from: {path} does not exist; run the R* stage that samples them first"
        )
    candidates = [json.loads(line) for line in path.read_text().splitlines()]
    for c in candidates:
        if c["question"] >= len(task) or c["prompt_crc"] != prompt_crc(task, c["question"]):
            raise ValueError(
                f"paths_from: {path}: question {c['question']} was sampled for another prompt than "
                "this stage's; both stages need the same task"
            )
    return candidates


def choose_paths(candidates: list[dict[str, Any]], selection: str, seed: int) -> list[dict[str, Any]]:
    """One path per question: the best R* one, or a random one (same pool, same questions)."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection = {selection!r}; choose one of {', '.join(SELECTIONS)}")
    usable = [c for c in candidates if c["r_star"] > 0]
    if selection == "rstar":
        best = best_paths(
            [c["question"] for c in usable], [c["r_star"] for c in usable], [True] * len(usable)
        )
        return [usable[i] for _, i in sorted(best.items())]
    by_question: dict[int, list[dict[str, Any]]] = {}
    for c in usable:
        by_question.setdefault(c["question"], []).append(c)
    rng = random.Random(seed)
    return [rng.choice(by_question[q]) for q in sorted(by_question)]


def mean_tokens(model: ChatModel, paths: list[dict[str, Any]]) -> float:
    lengths = [len(model.tokenizer(p["text"], add_special_tokens=False)["input_ids"]) for p in paths]
    return sum(lengths) / max(1, len(lengths))


def main(cfg: ReasonGRMConfig) -> dict[str, float]:
    run = start_run(cfg)
    model: ChatModel = instantiate(cfg.model)
    task = instantiate(cfg.task)
    paths_file = Path(run.dir) / PATHS
    summary: dict[str, float] = {}
    if run.state is not None and paths_file.is_file():  # resume: same selected paths
        chosen = [json.loads(line) for line in paths_file.read_text().splitlines()]
        summary = dict(run.state["summary"])
    else:
        stats: dict[str, float] = {}
        if cfg.paths_from:
            candidates = read_candidates(cfg.paths_from, task)
        else:
            scorer: ChatModel = instantiate(cfg.scorer) if cfg.scorer else model
            scorer.module.to(run.device).eval()
            candidates, stats = sample_candidates(scorer, task, cfg)
            (Path(run.dir) / CANDIDATES).write_text("".join(json.dumps(c) + "\n" for c in candidates))
        chosen = choose_paths(candidates, cfg.selection, cfg.run.seed)
        paths_file.write_text("".join(json.dumps(c) + "\n" for c in chosen))
        stats.update(
            {
                "rstar/questions_with_a_correct_path": len(chosen),
                "rstar/mean_chosen_r_star": sum(c["r_star"] for c in chosen) / max(1, len(chosen)),
                "rstar/mean_chosen_tokens": mean_tokens(model, chosen),
                "rstar/mean_candidate_tokens": mean_tokens(model, candidates),
            }
        )
        summary.update(stats)
        run.log(0, stats)
    if not chosen:
        raise RuntimeError(
            f"no question of {len(task)} has a correct sampled path; sample more paths or start from a stronger model"
        )
    examples = [Example(prompt=task[c["question"]].prompt, answer=c["text"], task="verdict") for c in chosen]

    model.module.to(run.device).train()
    params = [p for p in model.module.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, params)
    scheduler = lr_schedule(optimizer, cfg.warmup_steps, cfg.steps, cfg.schedule)
    accelerator = distributed.build_accelerator("auto", 0, run.device)
    trainer = TrainStep(
        accelerator,
        *accelerator.prepare(model.module, optimizer),
        scheduler,
        cfg.max_grad_norm,
        "stop",
        "SFT loss",
    )
    if run.state is not None:
        summary.update(run.restore(model.module, optimizer, scheduler))

    def state() -> dict[str, Any]:
        return training_state(model.module, optimizer, scheduler, summary)

    for step in tqdm(
        range(run.start_step + 1, cfg.steps + 1), initial=run.start_step, total=cfg.steps, desc="R* sft"
    ):
        started = time.perf_counter()
        done = sft_update(
            model, examples, step, trainer, batch_size=cfg.batch_size, grad_accum=1,
            seed=cfg.run.seed, device=run.device,
        )  # fmt: skip
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(
                step,
                {
                    "loss/sft": done.loss,
                    "optim/grad_norm": done.grad_norm,
                    "perf/step_s": time.perf_counter() - started,
                },
            )
        summary["final_loss"] = done.loss
        run.maybe_save(step, state, force=step == cfg.steps and cfg.run.save_every > 0)
    return run.finish(model, summary)
