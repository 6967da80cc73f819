"""Losses on preference pairs: direct preference optimisation and its variants, and the
Bradley–Terry loss of a score-only reward model. Pure tensor maths, no models.

Notation: for a pair (prompt x, chosen y_w, rejected y_l) and the summed completion log-probs of
the policy π_θ and the reference π_ref,

    h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)]

is how much more the policy prefers y_w than the reference does; β·(log π_θ − log π_ref) is DPO's
implicit reward of a response.

- DPO, sigmoid loss: −log σ(β·h). Rafailov et al., "Direct Preference Optimization: Your Language
  Model is Secretly a Reward Model", NeurIPS 2023, Eq. 7.
- cDPO (conservative DPO): the label is trusted with probability 1 − ε,
  −(1 − ε)·log σ(β·h) − ε·log σ(−β·h). Mitchell, "A note on DPO with noisy preferences & relationship
  to IPO", 2023. Its minimum is at a finite h, so the margin stops growing.
- Robust DPO (rDPO): the unbiased estimate of the clean-label loss under labels flipped with rate
  ε < 1/2, [(1 − ε)·(−log σ(β·h)) − ε·(−log σ(−β·h))] / (1 − 2ε). Chowdhury et al., "Provably
  Robust DPO: Aligning Language Models with Noisy Feedback", ICML 2024, Eq. 8.
- IPO: the squared loss (h − 1/(2τ))², with τ the regulariser (here `beta`). Azar et al., "A General
  Theoretical Paradigm to Understand Learning from Human Preferences", AISTATS 2024, Eq. 17. Its
  target margin 1/(2τ) is finite whatever the data, which is the paper's point against DPO.
- DPO + NLL (RPO): adds α·(−log π_θ(y_w|x) / |y_w|), the chosen response's per-token negative
  log-likelihood. Pang et al., "Iterative Reasoning Preference Optimization", NeurIPS 2024, Eq. 1.
  DPO alone may lower the chosen response's likelihood too, as long as the rejected one falls
  faster; the NLL term holds the chosen one up.
- Bradley–Terry reward model: −log σ(r_w − r_l − m). Ouyang et al., "Training language models to
  follow instructions with human feedback", 2022, Eq. 1; the margin m from Touvron et al., "Llama 2",
  2023, Eq. 2 (a larger m for pairs labelled as more clearly separated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "robust", "ipo")


def dpo_sigmoid_loss(h: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO's loss per pair, with cDPO's label smoothing ε (0: plain DPO). Shape [B] → [B]."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def robust_dpo_loss(h: torch.Tensor, beta: float, flip_rate: float) -> torch.Tensor:
    """rDPO's loss per pair for labels flipped with probability `flip_rate` ∈ [0, 1/2). [B] → [B]."""
    if not 0.0 <= flip_rate < 0.5:
        raise ValueError(f"robust DPO needs a flip rate (label_smoothing) in [0, 0.5), got {flip_rate}")
    clean, flipped = -F.logsigmoid(beta * h), -F.logsigmoid(-beta * h)
    return ((1 - flip_rate) * clean - flip_rate * flipped) / (1 - 2 * flip_rate)


def ipo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO's loss per pair: (h − 1/(2β))². [B] → [B].

    IPO's h is best taken from per-token mean log-probs (TRL does so, with the authors' assent):
    summed over long completions it grows with length and the fixed target margin loses meaning.
    `preference_loss(..., lengths=...)` does that.
    """
    return (h - 1 / (2 * beta)) ** 2


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean −log σ(r_w − r_l − m) over pairs, and its metrics.

    Args:
        chosen / rejected: The reward model's scores of each pair's two responses. Shape [B].
        margin: m, a scalar or one per pair [B]; the chosen score must beat the other by m.
    Returns:
        The loss (a scalar) and `loss/rm`, `rm/accuracy` (share of pairs with r_w > r_l),
        `rm/margin` (mean r_w − r_l), `rm/chosen`, `rm/rejected` (mean scores).
    """
    diff = chosen - rejected  # [B]
    loss = -F.logsigmoid(diff - margin).mean()
    metrics = {
        "loss/rm": loss.item(),
        "rm/accuracy": (diff > 0).float().mean().item(),
        "rm/margin": diff.mean().item(),
        "rm/chosen": chosen.mean().item(),
        "rm/rejected": rejected.mean().item(),
    }
    return loss, metrics


@dataclass
class PreferenceLogprobs:
    """Summed completion log-probs of both responses of B pairs, under the policy and the reference.

    Attributes:
        chosen / rejected: log π_θ(y_w|x), log π_θ(y_l|x). Shape [B]; carry gradients.
        ref_chosen / ref_rejected: The same under π_ref. Shape [B]; no gradients.
        chosen_tokens / rejected_tokens: Completion lengths in tokens (for IPO's per-token mean). [B]
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


def preference_loss(
    lp: PreferenceLogprobs,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    nll_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean preference-optimisation loss over B pairs, and DPO's metrics.

    Args:
        lp: Log-probs of the pairs (see `PreferenceLogprobs`).
        beta: β of DPO / rDPO, τ of IPO.
        loss_type: "sigmoid" (DPO; cDPO when label_smoothing > 0), "robust" (rDPO) or "ipo".
        label_smoothing: ε: cDPO's label noise for "sigmoid", the flip rate for "robust".
        nll_coef: α of RPO's per-token NLL of the chosen responses (0: none).
    Returns:
        The loss (a scalar) and metrics: `loss/dpo` (the NLL term included), `loss/nll`; the implicit rewards β·(log π_θ − log π_ref) of
        chosen and rejected (`reward/chosen`, `reward/rejected`), their mean difference
        (`reward/margin`) and the share of pairs where the chosen one's is higher
        (`reward/accuracy`); the mean summed log-probs (`logprobs/chosen`, `logprobs/rejected`).
    """
    chosen_ratio = lp.chosen - lp.ref_chosen  # [B]
    rejected_ratio = lp.rejected - lp.ref_rejected  # [B]
    if loss_type == "sigmoid":
        losses = dpo_sigmoid_loss(chosen_ratio - rejected_ratio, beta, label_smoothing)
    elif loss_type == "robust":
        losses = robust_dpo_loss(chosen_ratio - rejected_ratio, beta, label_smoothing)
    elif loss_type == "ipo":
        per_token = chosen_ratio / lp.chosen_tokens.clamp(min=1) - rejected_ratio / lp.rejected_tokens.clamp(
            min=1
        )
        losses = ipo_loss(per_token, beta)
    else:
        raise ValueError(f"loss_type = {loss_type!r}; choose one of {LOSS_TYPES}")
    loss = losses.mean()
    nll = (-lp.chosen / lp.chosen_tokens.clamp(min=1)).mean()  # per-token NLL of the chosen responses
    if nll_coef:
        loss = loss + nll_coef * nll
    chosen_reward = beta * chosen_ratio.detach()
    rejected_reward = beta * rejected_ratio.detach()
    metrics = {
        "loss/dpo": loss.item(),
        "loss/nll": nll.item(),
        "reward/chosen": chosen_reward.mean().item(),
        "reward/rejected": rejected_reward.mean().item(),
        "reward/margin": (chosen_reward - rejected_reward).mean().item(),
        "reward/accuracy": (chosen_reward > rejected_reward).float().mean().item(),
        "logprobs/chosen": lp.chosen.detach().mean().item(),
        "logprobs/rejected": lp.rejected.detach().mean().item(),
    }
    return loss, metrics
