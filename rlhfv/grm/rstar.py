"""ReasonGRM's R* path score and example filters (arXiv 2506.16712).

R*(R, a | Q) = P(R | Q) · P(a | Q, R), where each factor is a per-token mean probability
("self-consistency" of the reasoning R, "validity" of the answer a). The paper text averages
token probabilities (arithmetic); the authors' code uses the geometric mean exp(mean log p).
Both are here (`token_mean`); arithmetic is the default. Per-token means, not products, so long
reasoning is not penalised for its length.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def token_mean_prob(logprobs: torch.Tensor, mask: torch.Tensor, token_mean: str = "arith") -> torch.Tensor:
    """Mean per-token probability over the masked positions. logprobs, mask: [N, T] → [N].

    A row with no masked token gives 0 (no evidence), not NaN.
    """
    mask = mask.to(logprobs.dtype)
    count = mask.sum(dim=1)
    if token_mean == "arith":
        total = (logprobs.exp() * mask).sum(dim=1)
        return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    if token_mean == "geom":
        mean_log = (logprobs * mask).sum(dim=1) / count.clamp(min=1)
        return torch.where(count > 0, mean_log.exp(), torch.zeros_like(mean_log))
    raise ValueError(f"token_mean must be 'arith' or 'geom', got {token_mean!r}")


def r_star(
    logprobs: torch.Tensor, reasoning_mask: torch.Tensor, answer_mask: torch.Tensor, token_mean: str = "arith"
) -> torch.Tensor:
    """R* of N (reasoning, answer) paths from their token log-probs. All inputs [N, T] → [N]."""
    return token_mean_prob(logprobs, reasoning_mask, token_mean) * token_mean_prob(
        logprobs, answer_mask, token_mean
    )


def mixed_outcome(correct_counts: Sequence[int], samples: int) -> list[bool]:
    """Zero-RL filter: keep questions the model sometimes, but not always, gets right (0 < c < K)."""
    return [0 < c < samples for c in correct_counts]


def best_paths(
    question_ids: Sequence[Hashable], scores: Sequence[float], correct: Sequence[bool]
) -> dict[Hashable, int]:
    """For each question, the index of its correct path with the highest R* (questions with no
    correct path are absent)."""
    best: dict[Hashable, int] = {}
    for i, (q, s, ok) in enumerate(zip(question_ids, scores, correct, strict=True)):
        if ok and (q not in best or s > scores[best[q]]):
            best[q] = i
    return best


@torch.no_grad()
def path_scores(
    model,
    prompts: Sequence,
    completions: Sequence[str],
    token_mean: str = "arith",
    think_end: str = "</think>",
) -> torch.Tensor:
    """R* of each completion under `model` (ReasonGRM scores with the LRM-Zero model itself).

    The reasoning part runs up to and including the last `think_end`; the answer part is the rest
    plus eos. Each part is tokenized on its own so the split falls exactly on a token boundary.
    A completion without `think_end` is all answer (its reasoning factor is 0, so R* = 0).

    Args:
        model: A ChatModel. prompts: The judge prompts ([N] `Prompt`s). completions: [N] texts.
    Returns:
        R* per completion. Shape [N].
    """
    from rlhfv.rollout import sequence_logprobs

    tok = model.tokenizer
    rows, split = [], []
    for text in completions:
        cut = text.rfind(think_end)
        reasoning = text[: cut + len(think_end)] if cut >= 0 else ""
        r_ids = tok(reasoning, add_special_tokens=False)["input_ids"] if reasoning else []
        a_ids = tok(text[len(reasoning) :], add_special_tokens=False)["input_ids"] + [model.eos_token_id]
        rows.append(r_ids + a_ids)
        split.append(len(r_ids))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), model.pad_token_id, dtype=torch.long)  # [N, T]
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    positions = torch.arange(width)[None, :]  # [1, T]
    reasoning_mask = (positions < torch.tensor(split)[:, None]).long() * mask  # [N, T]
    device = next(model.module.parameters()).device
    batch = {k: v.to(device) for k, v in model.encoder(list(prompts)).items()}
    logprobs = sequence_logprobs(model, batch, ids.to(device), mask.to(device)).cpu()  # [N, T]
    return r_star(logprobs, reasoning_mask, mask - reasoning_mask, token_mean)
