"""Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath", arXiv 2402.03300), with
the loss normalisations of Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training",
arXiv 2503.20783).

    J(θ) = E[ 1/G Σ_i 1/|o_i| Σ_t min(ρ_it Â_i, clip(ρ_it, 1−ε, 1+ε) Â_i) − β KL_k3(π_θ || π_ref) ]
    ρ_it = π_θ(o_it | q, o_i,<t) / π_old(o_it | q, o_i,<t),   Â_i = (r_i − mean_G r) / std_G r

How the per-token terms are averaged (`loss_norm`) changes which completions weigh most:
- "token_mean": Σ over every token of the batch / number of tokens (DAPO, TRL's default). Each
  token counts the same, so long completions weigh more.
- "sequence_mean": mean over tokens of each completion, then over completions (the GRPO paper).
  Each completion counts the same, so tokens of short completions weigh more; Dr. GRPO shows this
  favours long wrong answers.
- "constant": Σ over every token / (completions × max_new_tokens) (Dr. GRPO). No length bias; the
  scale is constant, so the learning rate means the same at any length.
Dr. GRPO also drops the division by the group's std (`scale=False` in `group_advantages`).

A batch is usually split into micro-batches for gradient accumulation. `grpo_loss` takes the
whole batch's token and completion counts, so the micro-batch losses add up to the full-batch loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfv.algorithms.kl import k3

LOSS_NORMS = ("token_mean", "sequence_mean", "constant")


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """Score each completion against the other completions of its prompt.

    Args:
        rewards: One scalar per completion, prompt-major. Shape [N].
        group_size: Completions per prompt, G.
        scale: Divide by the group's standard deviation (GRPO); False gives Dr. GRPO's r − mean.
        eps: Added to the std so a group of equal rewards gives 0, not NaN.
    Returns:
        Advantages. Shape [N].
    """
    grouped = rewards.float().view(-1, group_size)  # [B, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)  # std of one sample is NaN: G ≥ 2
    return centred.view(-1)


@dataclass
class GRPOLossConfig:
    """Settings of the GRPO objective.

    Attributes:
        clip_eps: ε of the clipped ratio (PPO's 0.2).
        kl_coef: β; 0 drops the KL term (no reference model is needed then).
        loss_norm: "token_mean", "sequence_mean" or "constant" (see the module docstring).
        max_len: The completion length limit, used by "constant".
    """

    clip_eps: float = 0.2
    kl_coef: float = 0.0
    loss_norm: str = "token_mean"
    max_len: int = 0

    def __post_init__(self) -> None:
        if self.loss_norm not in LOSS_NORMS:
            raise ValueError(f"loss_norm = {self.loss_norm!r}; choose one of {LOSS_NORMS}")
        if self.loss_norm == "constant" and self.max_len <= 0:
            raise ValueError("loss_norm 'constant' needs max_len > 0 (the completion length limit)")


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: GRPOLossConfig,
    ref_logprobs: torch.Tensor | None = None,
    batch_tokens: float | None = None,
    batch_sequences: int | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate plus k3 KL, averaged as `cfg.loss_norm` says.

    Args:
        logprobs: log π_θ of the sampled tokens, with grad. Shape [n, T].
        old_logprobs: log π_old of the same tokens (the policy that sampled them). Shape [n, T].
        advantages: One per completion. Shape [n].
        mask: 1 where the token belongs to the completion. Shape [n, T].
        cfg: Clip, KL coefficient and normalisation.
        ref_logprobs: log π_ref; needed when cfg.kl_coef > 0. Shape [n, T].
        batch_tokens: Completion tokens in the whole batch this micro-batch is part of
            (default: this micro-batch's), for "token_mean".
        batch_sequences: Completions in the whole batch (default: n), for the other two.
        token_weights: Per-token weights of the surrogate, no grad (`truncated_is_weights`). [n, T]
    Returns:
        The loss to minimise (this micro-batch's share) and float metrics.
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs  # [n, T]
    ratio = torch.exp(log_ratio)
    adv = advantages.to(logprobs.dtype).unsqueeze(1)  # [n, 1]: every token of o_i gets Â_i
    clipped = ratio.clamp(1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps)
    surrogate = -torch.minimum(ratio * adv, clipped * adv)  # [n, T]
    if token_weights is not None:
        surrogate = surrogate * token_weights.detach().to(surrogate.dtype)
    loss = masked_average(surrogate, mask, cfg, batch_tokens, batch_sequences)
    metrics = {"loss/policy": loss.item()}
    if cfg.kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        kl = masked_average(k3(logprobs, ref_logprobs), mask, cfg, batch_tokens, batch_sequences)
        loss = loss + cfg.kl_coef * kl
        metrics["loss/kl"] = kl.item()
    with torch.no_grad():
        # The clip removes a token's gradient only where min() picks the clipped term: ratio above
        # 1+ε with Â > 0, or below 1−ε with Â < 0. Divided by the whole batch's token count, the
        # micro-batches' fractions add up to the batch's, like the loss.
        removed = (adv > 0) & (ratio > 1.0 + cfg.clip_eps) | (adv < 0) & (
            ratio < 1.0 - cfg.clip_eps
        )  # [n, T]
        tokens = float(batch_tokens) if batch_tokens is not None else mask.sum().clamp(min=1.0)
        metrics["loss/clip_frac"] = float((removed.to(mask.dtype) * mask).sum() / tokens)
    return loss, metrics


def masked_average(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    cfg: GRPOLossConfig,
    batch_tokens: float | None = None,
    batch_sequences: int | None = None,
) -> torch.Tensor:
    """Reduce per-token terms [n, T] to a scalar following `cfg.loss_norm` (module docstring)."""
    n = per_token.shape[0]
    sequences = float(batch_sequences or n)
    if cfg.loss_norm == "token_mean":
        tokens = float(batch_tokens) if batch_tokens is not None else mask.sum().clamp(min=1.0)
        return (per_token * mask).sum() / tokens
    if cfg.loss_norm == "sequence_mean":
        lengths = mask.sum(dim=1).clamp(min=1.0)  # [n]
        return ((per_token * mask).sum(dim=1) / lengths).sum() / sequences
    return (per_token * mask).sum() / (sequences * cfg.max_len)


def truncated_is_weights(
    old_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float
) -> torch.Tensor:
    """Truncated importance sampling (Yao et al. 2025, "Your efficient RL framework secretly brings
    you off-policy RL training"; TRL's vllm_importance_sampling_cap, verl's TIS): the tokens were
    drawn by the engine's sampler π_sampler, not by π_old that the loss assumes, so each token's
    term is weighted by π_old / π_sampler, capped at `cap` to bound the variance.

    Shapes: [n, T] each → [n, T] (no grad). Masked positions, where both are 0, get weight 1.
    """
    return torch.exp(old_logprobs.detach() - sampler_logprobs).clamp(max=cap)
