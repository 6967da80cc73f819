"""Ways to turn an intrinsic reward F into the reward the intrinsic critic learns from.

ADOPS, "Action-Dependent Optimality-Preserving Reward Shaping" (arXiv 2505.12611, ICML 2025), and
the baselines it is compared with, each citing its own paper below. Every method is a small
class with the same call, `method(inputs, progress) -> F'` of shape [T, N] (T steps of N parallel
environments), so the PPO pipeline never asks which one it holds. The maths are pure functions below the classes.

Choices the papers leave open (each is a constructor argument):
- PBRS potential: Φ(s) = the normalised RND novelty of s itself, Φ(terminal) = 0.
- PIES / ADOPES schedules: linear in the fraction of training frames done, over `end_fraction` /
  `ramp_fraction` of training (0.5 by default: intrinsic reward gone, or fully corrected, by mid-run).
- ADOPS ε = 1e-6 (the co-author code's default; the paper note says 1e-7).
- ADOPS discounts: Q_E(s,a) ≈ r_E + γ_E·V_E(s')·(1−done) and γ_I on V_I(s'). The derivation needs
  Q_I(s,a) = F' + γ_I·V_I(s') to be the intrinsic critic's own target, so V_I(s') is masked where
  the intrinsic stream ends (`int_dones`): at episode ends when it is episodic, never when it is
  not (RND's setting, as in the co-author code).
- `ADOPS(ext_weight=w)` scales V_E − Q_E inside Ω; w = 1 is the paper's formula (the default). The
  PPO advantage weighs the two streams (ext_coef·A_E + int_coef·A_I), so w = ext_coef/int_coef
  (2 with RND's coefficients) protects that weighted comparison instead: our variant, an option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class ShapingInputs:
    """One rollout, step-major. Every tensor is [T, N]; `dones[t]` is 1 when step t ended an episode.

    Attributes:
        intrinsic: F_t, the (normalised) intrinsic reward of the transition s_t -> s_{t+1}.
        potential: Φ(s_t), the normalised novelty of the state the step started from.
        potential_next: Φ(s_{t+1}) (any value where dones = 1; it is masked).
        ext_rewards: r_E,t.
        dones: 1.0 where the episode ended at step t (terminated or truncated).
        v_ext, v_ext_next: V_E(s_t), V_E(s_{t+1}) (next values may be anything where dones = 1).
        v_int, v_int_next: V_I(s_t), V_I(s_{t+1}) (likewise).
        gamma_ext, gamma_int: the two discounts.
        int_dones: 1.0 where the intrinsic stream ends: `dones` when it is episodic (None means
            that), zeros when it runs on across episodes as in RND.
    """

    intrinsic: torch.Tensor
    potential: torch.Tensor
    potential_next: torch.Tensor
    ext_rewards: torch.Tensor
    dones: torch.Tensor
    v_ext: torch.Tensor
    v_ext_next: torch.Tensor
    v_int: torch.Tensor
    v_int_next: torch.Tensor
    gamma_ext: float
    gamma_int: float
    int_dones: torch.Tensor | None = None


class ShapingMethod(Protocol):
    """What the PPO pipeline needs from a shaping method.

    `uses_intrinsic` is False only for plain PPO, which then skips RND altogether. `progress` is the
    fraction of training frames done, in [0, 1]. Methods with episode memory (PBIM, GRM) keep it
    per environment across calls, so an episode may span several rollouts.
    """

    uses_intrinsic: bool

    def __call__(self, x: ShapingInputs, progress: float) -> torch.Tensor: ...


# ----------------------------------------------------------------------------------------------
# Pure maths


def adops_f2(
    v_ext: torch.Tensor,
    q_ext: torch.Tensor,
    v_int: torch.Tensor,
    v_int_next: torch.Tensor,
    intrinsic: torch.Tensor,
    gamma: float,
    epsilon: float = 1e-6,
    ext_weight: float = 1.0,
) -> torch.Tensor:
    """ADOPS correction F2 (element-wise), so that F + F2 never flips the sign of Q_E − V_E.

    Ω = w·(V_E − Q_E) + V_I(s) − γ·V_I(s') − F is the largest F2 that keeps an action no better
    than the state value once the intrinsic return is added (w = 1 in the paper).

    Returns:
        min(0, Ω − ε) where Q_E < V_E (keep sub-optimal actions strictly sub-optimal),
        max(0, Ω) where Q_E ≥ V_E (keep optimal or neutral actions at least neutral).
    """
    omega = ext_weight * (v_ext - q_ext) + v_int - gamma * v_int_next - intrinsic
    return torch.where(q_ext < v_ext, (omega - epsilon).clamp(max=0.0), omega.clamp(min=0.0))


def pbrs_reward(
    potential: torch.Tensor, potential_next: torch.Tensor, dones: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Potential-based shaping γ·Φ(s') − Φ(s), with Φ = 0 at episode ends (Ng et al. 1999)."""
    return gamma * potential_next * (1.0 - dones) - potential


def linear_schedule(progress: float, span: float) -> float:
    """0 at the start, rising linearly to 1 after `span` of training, then 1 (span 0: always 1)."""
    return 1.0 if span <= 0 else min(max(progress / span, 0.0), 1.0)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimates, [T, N] in, [T, N] out.

    `next_values[t]` is V(s_{t+1}) (for the last step, the bootstrap state after the rollout);
    `dones[t]` = 1 cuts both the bootstrap and the λ-trace at the end of an episode.
    """
    not_done = 1.0 - dones
    deltas = rewards + gamma * next_values * not_done - values  # [T, N] one-step TD errors
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])  # [N]
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages


# ----------------------------------------------------------------------------------------------
# Methods


class NoIntrinsic:
    """Plain PPO: no intrinsic reward at all (RND is not even run)."""

    uses_intrinsic = False

    def __call__(self, x: ShapingInputs, progress: float) -> torch.Tensor:
        return torch.zeros_like(x.intrinsic)


class RawIntrinsic:
    """RND as published: the intrinsic critic learns from F itself."""

    uses_intrinsic = True

    def __call__(self, x: ShapingInputs, progress: float) -> torch.Tensor:
        return x.intrinsic


class PBRS:
    """Potential-based shaping with the novelty of the state as potential (see module docstring)."""

    uses_intrinsic = True

    def __call__(self, x: ShapingInputs, progress: float) -> torch.Tensor:
        return pbrs_reward(x.potential, x.potential_next, x.dones, x.gamma_int)


class PBIM:
    """Potential-based intrinsic motivation (Forbes et al.): F' = F, except at the last step of an
    episode, which pays back everything so that Σ_t γ^t F'_t = 0.

    Keeps per environment A = Σ_{t'<t} γ^{t'−t} F_t' (in float64: it grows like γ^−t, which is why
    PBIM fails on 4,500-step Montezuma episodes).
    """

    uses_intrinsic = True

    def __init__(self) -> None:
        self.owed: torch.Tensor | None = None  # [N]

    def __call__(self, x: ShapingInputs, progress: float) -> torch.Tensor:
        gamma = x.gamma_int
        if self.owed is None:
            self.owed = torch.zeros(x.intrinsic.shape[1], dtype=torch.float64, device=x.intrinsic.device)
        out = torch.empty_like(x.intrinsic)
        for t in range(x.intrinsic.shape[0]):
            f, done = x.intrinsic[t].double(), x.dones[t] > 0
            out[t] = torch.where(done, -self.owed, f).to(out.dtype)
            self.owed = torch.where(done, torch.zeros_like(f), (self.owed + f) / gamma)
        return out


class GRM:
    """Generalised reward matching with delay D: F'_t = F_t − γ^−D·F_{t−D}; at the end of an
    episode also cancel the rewards not yet matched, Σ_{k=0}^{D−1} γ^−k·F_{T−k} (current one
    included), so Σ_t γ^t F'_t = 0 for every episode.
    """

    uses_intrinsic = True

    def __init__(self, delay: int = 1) -> None:
        if delay < 1:
            raise ValueError(f"GRM delay must be >= 1, got {delay}")
        self.delay = delay
        self.history: torch.Tensor | None = None  # [N, D]: column k holds F_{t−1−k} of this episode

    def __call__(self, x: ShapingInputs, progress: float) -> torch.Tensor:
        gamma, d = x.gamma_int, self.delay
        if self.history is None:
            self.history = torch.zeros(
                x.intrinsic.shape[1], d, dtype=torch.float64, device=x.intrinsic.device
            )
        back = gamma ** -torch.arange(d, dtype=torch.float64, device=x.intrinsic.device)  # [D]: γ^−k
        out = torch.empty_like(x.intrinsic)
        for t in range(x.intrinsic.shape[0]):
            f, done = x.intrinsic[t].double(), x.dones[t] > 0
            shaped = f - gamma**-d * self.history[:, d - 1]  # F_{t−D} is matched now
            self.history = torch.cat([f[:, None], self.history[:, : d - 1]], dim=1)  # now F_{t−k}
            shaped = torch.where(done, shaped - self.history @ back, shaped)
            self.history[done] = 0.0
            out[t] = shaped.to(out.dtype)
        return out


class PIES:
    """Policy-invariant explicit shaping (Behboudian et al. 2022): F' = w·F with w falling
    linearly from 1 to 0 over the first `end_fraction` of training."""

    uses_intrinsic = True

    def __init__(self, end_fraction: float = 0.5) -> None:
        self.end_fraction = end_fraction

    def __call__(self, x: ShapingInputs, progress: float) -> torch.Tensor:
        return (1.0 - linear_schedule(progress, self.end_fraction)) * x.intrinsic


class ADOPS:
    """F' = F + ζ·F2 (see `adops_f2`). ADOPS: ζ = 1. ADOPES: `ramp_fraction` > 0 ramps ζ from 0
    to 1 over that fraction of training, so early exploration gets the raw intrinsic reward.
    `ext_weight`: the weight of V_E − Q_E in Ω, 1 as published (see the module docstring)."""

    uses_intrinsic = True

    def __init__(self, epsilon: float = 1e-6, ramp_fraction: float = 0.0, ext_weight: float = 1.0) -> None:
        self.epsilon = epsilon
        self.ramp_fraction = ramp_fraction
        self.ext_weight = ext_weight

    def __call__(self, x: ShapingInputs, progress: float) -> torch.Tensor:
        q_ext = x.ext_rewards + x.gamma_ext * x.v_ext_next * (1.0 - x.dones)  # one-step Q_E(s_t, a_t)
        int_dones = x.dones if x.int_dones is None else x.int_dones
        f2 = adops_f2(
            x.v_ext,
            q_ext,
            x.v_int,
            x.v_int_next * (1.0 - int_dones),
            x.intrinsic,
            x.gamma_int,
            self.epsilon,
            self.ext_weight,
        )
        return x.intrinsic + linear_schedule(progress, self.ramp_fraction) * f2
