"""Rewards: callables that take a `Rollout` and return one reward per completion.

Anything with `__call__(rollout) -> Tensor[N]` is a reward; a recipe names it as a component
(`reward: {_component_: my_package.my_reward, ...}`), so a user's own class in their own file works
without touching the library. `checked_rewards` is the single place where a reward's output is
validated before it reaches the loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from rlhfv.rollout import Rollout


class Reward(Protocol):
    """One scalar per completion of a rollout, prompt-major. Shape [N]."""

    def __call__(self, rollout: Rollout) -> torch.Tensor: ...


class RewardError(RuntimeError):
    """A reward callable failed or returned something unusable; the step is stopped."""


def reward_name(reward: Any) -> str:
    """What error messages call a reward: its `name`, or the function's or class's dotted path."""
    if isinstance(getattr(reward, "name", None), str):
        return reward.name
    kind = reward if hasattr(reward, "__qualname__") else type(reward)
    return f"{kind.__module__}.{kind.__qualname__}"


def checked_rewards(reward: Reward, rollout: Rollout) -> torch.Tensor:
    """Call `reward` and check its output: a float tensor of length N, every value finite.

    Raises:
        RewardError: naming the reward and what was wrong (the exception it raised, the length,
            or the rows holding NaN/inf).
    """
    import torch

    name = reward_name(reward)
    try:
        values = reward(rollout)
    except Exception as e:
        raise RewardError(f"reward {name} raised {type(e).__name__}: {e}") from e
    try:
        values = torch.as_tensor(values, dtype=torch.float32).flatten().cpu()
    except (TypeError, ValueError) as e:
        raise RewardError(f"reward {name} returned {type(values).__name__}, not numbers: {e}") from e
    if values.numel() != len(rollout):
        raise RewardError(f"reward {name} returned {values.numel()} values for {len(rollout)} completions")
    bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
    if bad:
        raise RewardError(
            f"reward {name} returned non-finite values {values[bad].tolist()} at completions {bad}"
        )
    return values


def __getattr__(name: str) -> Any:
    """`rlhfv.rewards.ScalarRM` and `rlhfv.rewards.RemoteGRM` without importing torch,
    transformers or httpx with the package."""
    if name == "ScalarRM":
        from rlhfv.rewards.scalar import ScalarRM

        return ScalarRM
    if name == "RemoteGRM":
        from rlhfv.rewards.remote import RemoteGRM

        return RemoteGRM
    raise AttributeError(f"module 'rlhfv.rewards' has no attribute {name!r}")
