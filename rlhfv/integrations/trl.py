"""TRL's `GRPOTrainer` with rlhfv's judges: `reward_funcs` entries that call `rlhfv serve grm`.

    from rlhfv.integrations.trl import GroupedComparison
    trainer = GRPOTrainer(model=..., reward_funcs=[GroupedComparison("http://127.0.0.1:8000")], ...)

GRPOTrainer calls each reward function with the batch's prompts and completions, every prompt
repeated `num_generations` times, plus the data set's other columns (`images` / `image` for a
vision-language data set). The completions of one prompt are gathered into one group (by the
prompt's text and images) and judged together on the server: the Generative RLHF-V grouped
comparison (`GroupedComparison`) or SPCT scores with voting@k (`PointwiseScore`). Under several
processes TRL hands each its own slice of the batch, so a group split between processes is
compared within each slice only.
"""

from __future__ import annotations

from typing import Any

from rlhfv.rewards.remote import GRMClient, encode_image, score_groups


def message_text(message: Any) -> str:
    """A TRL prompt or completion as plain text: a string as it is; a conversation's messages
    joined (a single message's content alone), image parts left out."""
    if isinstance(message, str):
        return message
    parts = []
    for turn in message:
        content = turn["content"]
        if not isinstance(content, str):  # [{"type": "text", "text": ...}, {"type": "image"}]
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        parts.append(content if len(message) == 1 else f"{turn['role']}: {content}")
    return "\n".join(parts)


class _ServedReward:
    mode = "grouped"

    def __init__(
        self,
        url: str,
        token_file: str = "",
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        votes: int = 1,
    ):
        self.client = GRMClient(url, token_file, timeout_s, retries, backoff_s)
        self.votes = votes

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        images = kwargs.get("images") or [[im] if im is not None else [] for im in kwargs.get("image") or []]
        images = images or [[] for _ in prompts]
        keys: dict[tuple[str, ...], list[int]] = {}  # one group per prompt, rows in order
        encoded = []
        for i, prompt in enumerate(prompts):
            encoded.append([encode_image(im) for im in images[i] or []])
            keys.setdefault((message_text(prompt), *(im["data"] for im in encoded[i])), []).append(i)
        groups = [
            (key[0], encoded[rows[0]], [message_text(completions[i]) for i in rows], [True] * len(rows))
            for key, rows in keys.items()
        ]
        rewards, _ = score_groups(self.client, groups, self.mode, self.votes)
        out = [0.0] * len(prompts)
        for rows, group in zip(keys.values(), rewards, strict=True):
            for i, r in zip(rows, group, strict=True):
                out[i] = float(r)
        return out


class GroupedComparison(_ServedReward):
    """Each completion's Generative RLHF-V reward: its mean score in pairwise comparisons with
    the other completions of its prompt (`/v1/grouped`; aggregation as the server is set).

    Args:
        url: The `rlhfv serve grm` server. token_file, timeout_s, retries, backoff_s: `GRMClient`'s.
    """

    mode = "grouped"
    __name__ = "rlhfv_grouped_comparison"  # the name TRL logs the reward under


class PointwiseScore(_ServedReward):
    """Each completion's SPCT score, the completions of one prompt judged together; with
    `votes` = k > 1, the mean over k sampled judgements in shuffled orders (voting@k)."""

    mode = "pointwise"
    __name__ = "rlhfv_pointwise_score"
