"""Rule rewards: checkable answers and output format, plus a user's own function by dotted path."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from rlhfv.config import resolve_target

if TYPE_CHECKING:
    from rlhfv.rollout import Rollout


class ExactAnswerReward:
    """1 when a completion gives its prompt's reference answer, else 0.

    Args:
        matcher: Dotted path of `f(text, label) -> bool`. The default is ShapesVQA's rule: the
            text names the label and no competing answer of the same kind.
        require_complete: Give 0 to a completion cut by the length limit, right or not (otherwise
            nothing stops completions from growing past the limit).
    """

    def __init__(self, matcher: str = "rlhfv.data.shapes.answer_matches", require_complete: bool = False):
        self.matcher = resolve_target(matcher, key="reward.matcher")
        self.require_complete = require_complete

    def __call__(self, rollout: Rollout) -> torch.Tensor:
        g = rollout.group_size
        right = torch.tensor(
            [float(self.matcher(t, rollout.labels[i // g])) for i, t in enumerate(rollout.texts)]
        )
        return right * rollout.complete.cpu().float() if self.require_complete else right


class FormatReward:
    """1 for a complete, single-line answer of at most `max_words` words matching `pattern`.

    Args:
        max_words: Longest answer that still counts as well-formed.
        pattern: Regular expression the stripped text must match in full (default: anything).
    """

    def __init__(self, max_words: int = 12, pattern: str = r"(?s).+"):
        self.max_words = max_words
        self.pattern = re.compile(pattern)

    def __call__(self, rollout: Rollout) -> torch.Tensor:
        out = []
        for text, complete in zip(rollout.texts, rollout.complete.tolist(), strict=True):
            t = text.strip()
            ok = (
                complete
                and "\n" not in t
                and 0 < len(t.split()) <= self.max_words
                and self.pattern.fullmatch(t)
            )
            out.append(1.0 if ok else 0.0)
        return torch.tensor(out)


class CallableReward:
    """A user's function `f(prompts, completions, labels) -> list[float]` named by dotted path.

    The function sees plain data: N prompt texts (each repeated G times), N completion texts and
    N labels, and returns N numbers.

    Args:
        function: Dotted path, e.g. `my_rewards.brevity`; its module must be importable.
    """

    def __init__(self, function: str):
        self.function = resolve_target(function, key="reward.function")
        self.name = function

    def __call__(self, rollout: Rollout) -> torch.Tensor:
        g = rollout.group_size
        prompts = [rollout.prompts[i // g].text for i in range(len(rollout))]
        labels = [rollout.labels[i // g] for i in range(len(rollout))]
        return torch.as_tensor(self.function(prompts, list(rollout.texts), labels), dtype=torch.float32)


class WeightedSum:
    """Σ weight_k · reward_k over several rewards (e.g. exact answer + 0.2 × format).

    Args:
        rewards: Reward nodes (built by the recipe loader).
        weights: One weight per reward.
    """

    def __init__(self, rewards: list, weights: list[float]):
        if len(rewards) != len(weights):
            raise ValueError(f"WeightedSum has {len(rewards)} rewards but {len(weights)} weights")
        self.rewards, self.weights = rewards, weights

    def __call__(self, rollout: Rollout) -> torch.Tensor:
        from rlhfv.rewards import checked_rewards

        return sum(w * checked_rewards(r, rollout) for r, w in zip(self.rewards, self.weights, strict=True))
