"""Per-token estimators of KL(π_θ || π_ref) from samples of π_θ (Schulman, "Approximating KL
divergence", 2020).

With r = π_ref(o_t) / π_θ(o_t) for a token o_t sampled from π_θ:
- k1 = −log r: unbiased, high variance, can be negative;
- k3 = r − 1 − log r: unbiased, never negative, low variance. GRPO (Shao et al. 2024, Eq. 4) uses k3.
"""

from __future__ import annotations

import torch


def k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Naive estimator log π_θ − log π_ref per token. Shapes [N, T] → [N, T]."""
    return logprobs - ref_logprobs


def k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """GRPO's estimator r − 1 − log r with r = π_ref / π_θ, per token. Shapes [N, T] → [N, T].

    The log-ratio is clamped to ±20 so a token the reference finds impossible gives a large,
    finite penalty instead of inf.
    """
    log_ratio = (ref_logprobs - logprobs).clamp(-20.0, 20.0)  # [N, T]
    return torch.exp(log_ratio) - 1.0 - log_ratio
