"""Actor-critic for PPO with two value heads, V_E (extrinsic) and V_I (intrinsic), as in RND.

Vector or small-grid observations (MiniGrid's 7×7×3 view) go through two separate tanh MLPs, one
for the actor and one for the critic (CleanRL's and stable-baselines3's default layout, which
keeps our throughput comparison fair). Image stacks of at least 36×36 (Atari, [4, 84, 84] uint8)
go through one shared Nature-CNN trunk scaled by 1/255.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _layer(i: int, o: int, gain: float = math.sqrt(2)) -> nn.Linear:
    """Orthogonal init, zero bias (the PPO implementation details everyone copies)."""
    layer = nn.Linear(i, o)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def is_image(obs_shape: tuple[int, ...]) -> bool:
    return len(obs_shape) == 3 and min(obs_shape[1:]) >= 36


def _mlp(in_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), _layer(in_dim, hidden), nn.Tanh(), _layer(hidden, hidden), nn.Tanh())


class Agent(nn.Module):
    """Policy logits and both values from one observation batch.

    Args:
        obs_shape: One observation's shape.
        n_actions: Size of the Discrete action space.
        hidden: MLP width (CNN inputs use 512 after the convolutions).
    """

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, hidden: int = 64) -> None:
        super().__init__()
        self.image = is_image(obs_shape)
        if self.image:
            conv = nn.Sequential(
                nn.Conv2d(obs_shape[0], 32, 8, stride=4),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, stride=2),
                nn.ReLU(),
                nn.Conv2d(64, 64, 3, stride=1),
                nn.ReLU(),
                nn.Flatten(),
            )
            with torch.no_grad():
                width = conv(torch.zeros(1, *obs_shape)).shape[1]
            self.actor_body = nn.Sequential(conv, _layer(width, 512), nn.ReLU())
            self.critic_body = self.actor_body  # shared trunk, as in the RND Atari agent
            hidden = 512
        else:
            in_dim = math.prod(obs_shape)
            self.actor_body, self.critic_body = _mlp(in_dim, hidden), _mlp(in_dim, hidden)
        self.logits = _layer(hidden, n_actions, gain=0.01)
        self.v_ext = _layer(hidden, 1, gain=1.0)
        self.v_int = _layer(hidden, 1, gain=1.0)

    def _bodies(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float() / 255.0 if self.image else obs.float()
        a = self.actor_body(x)
        return a, (a if self.image else self.critic_body(x))

    def values(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_E, V_I), each [B]."""
        _, c = self._bodies(obs)
        return self.v_ext(c).squeeze(-1), self.v_int(c).squeeze(-1)

    def act(
        self, obs: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or score the given) actions: (action, logprob, entropy, V_E, V_I), each [B]."""
        a, c = self._bodies(obs)
        # Categorical by hand: torch.distributions re-validates and re-normalises on every call,
        # which is a visible share of a rollout step with networks this small.
        logp_all = torch.log_softmax(self.logits(a), dim=-1)  # [B, A]
        if action is None:
            action = torch.multinomial(logp_all.exp(), 1).squeeze(-1)
        logprob = logp_all.gather(-1, action[:, None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return action, logprob, entropy, self.v_ext(c).squeeze(-1), self.v_int(c).squeeze(-1)
