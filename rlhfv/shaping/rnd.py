"""Random network distillation (Burda et al. 2018, arXiv 1810.12894): novelty as intrinsic reward.

A fixed random `target` network embeds an observation; a `predictor` learns to match it. The
squared error is large on observations seen rarely. As in the paper, observations are whitened by
running statistics (then clipped to ±5) before both networks, only the newest frame of an Atari
frame stack is used, the reward is divided by the running std of its discounted sum, and the
predictor learns from a random `update_proportion` of each minibatch (which slows its fitting
when there are many parallel environments).
"""

from __future__ import annotations

import torch
from torch import nn


class RunningMeanStd(nn.Module):
    """Mean and variance of everything seen so far (parallel-merge formula), kept as buffers so
    they are saved with the module."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """x: [B, *shape]."""
        x = x.double()
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)


def discounted_running_sums(rewards: torch.Tensor, carry: torch.Tensor, gamma: float) -> torch.Tensor:
    """RND's reward "forward filter": R_t = γ·R_{t−1} + r_t per environment, never reset.

    Args:
        rewards: [T, N]. carry: R before the first step, [N] (updated in place).
    Returns:
        R_t for every step, [T, N]; its running std is what the intrinsic reward is divided by.
    """
    out = torch.empty_like(rewards)
    for t in range(rewards.shape[0]):
        carry.mul_(gamma).add_(rewards[t])
        out[t] = carry
    return out


def _embedding_net(obs_shape: tuple[int, ...], out_dim: int, depth_extra: int) -> nn.Module:
    """Image input [1, H, W] -> RND paper's CNN; anything else -> flattened MLP."""
    if len(obs_shape) == 3 and min(obs_shape[1:]) >= 36:
        layers: list[nn.Module] = [
            nn.Conv2d(obs_shape[0], 32, 8, stride=4),
            nn.LeakyReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.LeakyReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.LeakyReLU(),
            nn.Flatten(),
        ]
        with torch.no_grad():
            width = nn.Sequential(*layers)(torch.zeros(1, *obs_shape)).shape[1]
        hidden = 512
    else:
        layers, width, hidden = [nn.Flatten()], int(torch.tensor(obs_shape).prod()), 128
    for _ in range(depth_extra):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class RND(nn.Module):
    """Target and predictor networks plus the observation statistics.

    Args:
        obs_shape: Shape of the observations RND sees (the newest frame for Atari: [1, 84, 84]).
        out_dim: Embedding size (512 in the paper; 64 is plenty for MiniGrid).
    """

    def __init__(self, obs_shape: tuple[int, ...], out_dim: int = 64) -> None:
        super().__init__()
        self.obs_rms = RunningMeanStd(obs_shape)
        self.target = _embedding_net(obs_shape, out_dim, depth_extra=1)
        self.predictor = _embedding_net(obs_shape, out_dim, depth_extra=2)  # deeper, as in the paper
        for p in self.target.parameters():
            p.requires_grad_(False)

    def _whiten(self, obs: torch.Tensor) -> torch.Tensor:
        mean, std = self.obs_rms.mean.float(), self.obs_rms.var.float().sqrt()
        return ((obs.float() - mean) / (std + 1e-8)).clamp(-5.0, 5.0)

    def errors(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-observation squared prediction error (mean over embedding units), [B] with grad."""
        x = self._whiten(obs)
        with torch.no_grad():
            target = self.target(x)
        return (self.predictor(x) - target).pow(2).mean(dim=1)

    def predictor_loss(self, obs: torch.Tensor, update_proportion: float) -> torch.Tensor:
        """Mean error over a random `update_proportion` of the batch (at least one sample)."""
        errors = self.errors(obs)  # [B]
        keep = (torch.rand_like(errors) < update_proportion).float()
        return (errors * keep).sum() / keep.sum().clamp(min=1.0)
