"""Rewards backed by a generative reward model (Generative RLHF-V, arXiv 2505.18531).

- `GRMJudge`: a pointwise GRM as the pairwise judge of the grouped-comparison reward
  (`rlhfv.rewards.grouped.GroupedComparisonReward`): one `\\boxed{s1, s2}` judgement per pair,
  all pairs of a rollout in batched `generate` calls.
- `JudgeRuleReward`: the reward for training the GRM itself by RL on preference labels: GRLHF-V's
  {0, 1} rule (§3.3) or SPCT's ±1 (Eq. 11). Ties and unparsable output count as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from rlhfv.grm.parsing import parse_scores
from rlhfv.grm.rules import grlhfv_reward, preferred_truth, spct_reward

if TYPE_CHECKING:
    from rlhfv.models.base import ChatModel
    from rlhfv.rollout import Rollout
    from rlhfv.types import Prompt

RULES = ("grlhfv", "spct")


class GRMJudge:
    """Judge pairs of answers with a generative reward model.

    Args:
        model: The GRM (a ChatModel node, e.g. `rlhfv.models.base.load_model`).
        max_new_tokens: Length limit of a judgement; a cut judgement has no box and scores None.
        greedy: Argmax decoding (True) or sampling at `temperature`.
        temperature: Sampling temperature when not greedy.
        principles: Annotation principles for the 'w/ principles' prompt variant.
        batch_size: Pairs per `generate` call.
        device: "auto", "cpu" or "cuda".
        reading: The judge answers each question itself before it sees the answers to compare
            (`rlhfv.grm.judge.judge(reading=True)`); for judges trained with
            `JudgeTask(reading=...)`.
        compact: The judge prompt without instructions (`pointwise_prompt(compact=True)`), for
            judges trained on `JudgeTask(compact=True)` prompts.
        force: Force a score line onto judgements without one (`rlhfv.grm.judge.force_scores`),
            for judges too small to have learned the output contract.
        engine: "hf" (generate in this process) or "vllm": a vLLM process serves the judge (a
            frozen GRM: nothing to sync) and all pairs of a rollout go to it in one call,
            prefix caching on; `batch_size` is then ignored.
        vllm_python: The engine environment's interpreter ("" = `rlhfv engine install vllm`'s).
    """

    def __init__(
        self,
        model: ChatModel,
        max_new_tokens: int = 96,
        greedy: bool = True,
        temperature: float = 1.0,
        principles: str | None = None,
        batch_size: int = 64,
        device: str = "auto",
        reading: bool = False,
        compact: bool = False,
        force: bool = False,
        engine: str = "hf",
        vllm_python: str = "",
    ):
        from rlhfv.training.run import pick_device

        self.model = model
        self.model.module.to(pick_device(device)).eval()
        self.engine = None
        if engine not in ("hf", "vllm"):
            raise ValueError(f"GRMJudge engine = {engine!r}; choose 'hf' or 'vllm'")
        if engine == "vllm":
            import weakref

            from rlhfv.engine import RolloutConfig
            from rlhfv.engine.vllm import VLLMEngine

            dtype = str(next(model.module.parameters()).dtype).removeprefix("torch.")
            settings = RolloutConfig(engine="vllm", vllm_python=vllm_python)
            self.engine = VLLMEngine(model, settings, max_new_tokens, temperature, 1.0, [], dtype, seed=0)
            weakref.finalize(self, self.engine.close)  # the engine process ends with the judge
        self.max_new_tokens, self.greedy, self.temperature = max_new_tokens, greedy, temperature
        self.principles, self.batch_size, self.reading = principles, batch_size, reading
        self.compact, self.force = compact, force
        self.last_texts: list[str] = []

    def __call__(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> list[tuple[float, float] | None]:
        from rlhfv.grm.judge import JudgeItem, judge

        items = [
            JudgeItem(p.text, [a, b], list(p.images)) for p, a, b in zip(prompts, first, second, strict=True)
        ]
        verdicts: list[tuple[float, float] | None] = []
        self.last_texts = []
        step = len(items) if self.engine is not None else self.batch_size  # the engine takes all at once
        for start in range(0, len(items), step):
            for j in judge(
                self.model,
                items[start : start + step],
                k=1,
                greedy=self.greedy,
                temperature=self.temperature,
                max_new_tokens=self.max_new_tokens,
                principles=self.principles,
                reading=self.reading,
                engine=self.engine,
                compact=self.compact,
                force=self.force,
            ):
                scores = j.scores[0]
                verdicts.append((scores[0], scores[1]) if scores is not None else None)
                self.last_texts.append(j.texts[0])
        return verdicts


class JudgeRuleReward:
    """Reward a judge's sampled judgements against the preference label.

    The rollout's labels are the 0-based shown position of the preferred response
    (`rlhfv.data.pairs.JudgeTask`).

    Args:
        rule: "grlhfv" ({0, 1}, the paper's GRM reward) or "spct" (±1).
    """

    def __init__(self, rule: str = "grlhfv"):
        if rule not in RULES:
            raise ValueError(f"rule = {rule!r}; choose one of {RULES}")
        self.rule = rule
        self.last_metrics: dict[str, float] = {}

    def __call__(self, rollout: Rollout) -> torch.Tensor:
        g = rollout.group_size
        if "tie" in rollout.labels:
            raise ValueError(
                "JudgeRuleReward needs a preferred response per item; the data has 'tie' items "
                "(JudgeTask(ties=...) is for SFT data only, set ties: 0 for the RL stage)"
            )
        other = [(b, label) for b, label in enumerate(rollout.labels) if label not in ("0", "1")]
        if other:
            b, label = other[0]
            raise ValueError(
                f"JudgeRuleReward scores judgements of two responses, labelled '0' or '1' (the shown "
                f"position of the preferred one, as rlhfv.data.pairs.JudgeTask writes them); prompt {b} "
                f"of this batch has label {label!r} ({len(other)} such prompts). Reading items "
                "(JudgeTask(reading_items=...)) and plain question data are not judge items: set "
                "reading_items: 0, or use a reward for answers"
            )
        out, failures = [], 0
        for i, text in enumerate(rollout.texts):
            preferred = int(rollout.labels[i // g])
            parsed = parse_scores(text, 2)
            failures += not parsed.ok
            if self.rule == "grlhfv":
                out.append(grlhfv_reward(text, preferred))
            else:
                out.append(spct_reward(parsed.scores, preferred_truth(2, preferred)))
        self.last_metrics = {"grm/parse_failure_rate": failures / max(1, len(rollout.texts))}
        return torch.tensor(out, dtype=torch.float32)
