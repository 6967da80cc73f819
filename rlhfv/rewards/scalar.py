"""A score-only reward model as a GRPO reward: one scalar per completion from a trained head.

    reward: {_component_: rlhfv.rewards.ScalarRM, path: <run>/final, normalize: true}

The reward model reads the prompt (with its images) and the completion's text, tokenized with its
own tokenizer, so it need not share the policy's. With `normalize`, each batch's scores are
standardized (mean 0, std 1 over the N completions). A reward model's scale is arbitrary: GRPO's
`scale_rewards` divides it out within each group, but with `scale_rewards: false`, or when the
score is added to other rewards, the scale would set the step size and the weighting.

The reward model reads every completion with an EOS after it, so it cannot tell an answer that
ended from one cut at `max_new_tokens`. `missing_eos_penalty` (TRL's option of the same name) is
subtracted from the raw score of every cut completion: a tiny Qwen2-VL policy on ShapesVQA learned,
without it, to answer "4 4 4 4 …" up to the limit, which its reward model scored 4.3 against 1.8 for
its short answers (experiments/grlhfv_table2.py, row rm_grpo). Grouped comparison gives a cut
completion its lowest reward in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from rlhfv.config import ExistingPath

if TYPE_CHECKING:
    from rlhfv.models.base import ChatModel
    from rlhfv.models.reward_head import ScalarRewardModel
    from rlhfv.rollout import Rollout
    from rlhfv.types import Prompt


def score_responses(
    chat: ChatModel,
    rm: ScalarRewardModel | torch.nn.Module,
    prompts: Sequence[Prompt],
    texts: Sequence[str],
    device: torch.device,
    max_prompt_tokens: int = 0,
    max_response_tokens: int = 0,
) -> torch.Tensor:
    """The reward model's score of each (prompt, response text), response EOS-terminated. [N]

    `max_prompt_tokens` keeps each prompt's last tokens (its latest turn; text prompts only, since
    cutting a VLM prompt would cut its image placeholders) and `max_response_tokens` each response's
    first ones, its EOS then cut with the rest; 0 keeps everything. On CPU a long dialogue costs
    its full length in every forward pass, and the pair is decided mostly by the final exchange.
    """
    from rlhfv.training.batching import to_device, tokenize_completions

    batch = chat.encoder(list(prompts))  # input_ids [N, P] left-padded, vision tensors
    if max_prompt_tokens and batch["input_ids"].shape[1] > max_prompt_tokens:
        if set(batch) != {"input_ids", "attention_mask"}:
            raise ValueError("max_prompt_tokens cuts text prompts only: these prompts carry images")
        batch = {k: v[:, -max_prompt_tokens:] for k, v in batch.items()}  # [N, max_prompt_tokens]
    ids, mask = tokenize_completions(chat, list(texts))  # [N, T]
    if max_response_tokens:
        ids, mask = ids[:, :max_response_tokens], mask[:, :max_response_tokens]
    return rm(to_device(batch, device), ids.to(device), mask.to(device))


class ScalarRM:
    """Rewards from a reward model written by `rlhfv.pipelines.reward_model` (its `final/` folder).

    Args:
        path: The reward model folder.
        normalize: Standardize each batch's scores (mean 0, std 1).
        batch_size: Completions per forward pass.
        device: "auto" (a GPU if there is one), "cpu" or "cuda".
        dtype: The backbone's dtype.
        missing_eos_penalty: Subtracted from the raw score of each completion that did not end by
            itself (`rollout.complete` False), before normalisation; 0: none.
    """

    name = "ScalarRM"

    def __init__(
        self,
        path: ExistingPath,
        normalize: bool = False,
        batch_size: int = 32,
        device: str = "auto",
        dtype: str = "float32",
        missing_eos_penalty: float = 0.0,
    ):
        from rlhfv.models.reward_head import load_reward_model
        from rlhfv.training.run import pick_device

        self.device = pick_device(device)
        self.chat, self.rm = load_reward_model(str(path), dtype)
        self.rm.to(self.device).eval().requires_grad_(False)
        self.normalize, self.batch_size = normalize, batch_size
        self.missing_eos_penalty = missing_eos_penalty
        self.last_metrics: dict[str, float] = {}

    @torch.no_grad()
    def __call__(self, rollout: Rollout) -> torch.Tensor:
        g = rollout.group_size
        prompts = [p for p in rollout.prompts for _ in range(g)]  # prompt-major, like the rollout's rows
        scores = torch.cat(
            [
                score_responses(
                    self.chat,
                    self.rm,
                    prompts[s : s + self.batch_size],
                    rollout.texts[s : s + self.batch_size],
                    self.device,
                )
                for s in range(0, len(prompts), self.batch_size)
            ]
        ).cpu()  # [N]
        self.last_metrics = {
            "rm/score_mean": scores.mean().item(),
            "rm/score_std": scores.std().item() if len(scores) > 1 else 0.0,
        }
        scores = scores - self.missing_eos_penalty * (~rollout.complete.cpu()).float()  # [N]
        if self.normalize and len(scores) > 1:
            scores = (scores - scores.mean()) / (scores.std() + 1e-6)  # equal scores give 0, not NaN
        return scores
