"""verl with rlhfv's judges: custom reward functions that call `rlhfv serve grm`.

verl loads a reward function from a file named in its config and passes it the config's
`reward_kwargs`:

    custom_reward_function:
      path: <site-packages>/rlhfv/integrations/verl.py   # or a file of your own that imports these
      name: compute_score                   # per sample (verl's naive and reward-loop managers)
      reward_kwargs: {url: "http://127.0.0.1:8000", question_key: question}

verl gives a reward function the response but not the prompt; rlhfv's judges need the
question, which verl's data preparation scripts put in `extra_info["question"]` (`question_key`
names another key). Images: `extra_info["images"]` as the server takes them
(`[{"path": ...}]` under its `--image-root`, or `[{"data": base64}]`).

`compute_score` scores one response alone (SPCT pointwise, voting@`votes`). `compute_score_batch`
(verl's `batch` reward manager, `name: compute_score_batch`) gathers the batch's responses by
question and scores each group by the Generative RLHF-V grouped comparison.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from rlhfv.rewards.remote import GRMClient, score_groups


@lru_cache(maxsize=8)
def client(url: str | None, token_file: str, timeout_s: float, retries: int) -> GRMClient:
    """One client (and connection pool) per server, reused across calls."""
    url = url or os.environ.get("RLHFV_GRM_URL")
    if not url:
        raise ValueError(
            "no GRM server: set reward_kwargs.url (or RLHFV_GRM_URL) to `rlhfv serve grm`'s address"
        )
    return GRMClient(url, token_file, timeout_s, retries)


def question_of(extra_info: dict[str, Any] | None, key: str) -> str:
    if not extra_info or key not in extra_info:
        raise KeyError(
            f"extra_info has no {key!r}: the judge needs the question; put it in the data's extra_info "
            "(verl's preprocessing scripts do) or name the key with reward_kwargs.question_key"
        )
    return str(extra_info[key])


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    url: str | None = None,
    token_file: str = "",
    question_key: str = "question",
    votes: int = 1,
    timeout_s: float = 120.0,
    retries: int = 3,
    **kwargs: Any,
) -> float:
    """verl's `compute_score`: the judge's SPCT score (1-10) of this response alone; 0 when
    the judge's output could not be read."""
    question = question_of(extra_info, question_key)
    images = list((extra_info or {}).get("images") or [])
    rewards, _ = score_groups(
        client(url, token_file, timeout_s, retries),
        [(question, images, [solution_str], [True])],
        "pointwise",
        votes,
    )
    return float(rewards[0][0])


def compute_score_batch(
    data_sources: list[str],
    solution_strs: list[str],
    ground_truths: list[Any],
    extra_infos: list[dict[str, Any] | None],
    url: str | None = None,
    token_file: str = "",
    question_key: str = "question",
    mode: str = "grouped",
    votes: int = 1,
    timeout_s: float = 120.0,
    retries: int = 3,
    **kwargs: Any,
) -> list[float]:
    """verl's batch reward function: responses with the same question form one group, scored
    by the grouped comparison (`mode` "grouped") or SPCT scores judged together ("pointwise")."""
    members: dict[str, list[int]] = {}
    for i, info in enumerate(extra_infos):
        members.setdefault(question_of(info, question_key), []).append(i)
    groups = [
        (
            q,
            list((extra_infos[rows[0]] or {}).get("images") or []),
            [solution_strs[i] for i in rows],
            [True] * len(rows),
        )
        for q, rows in members.items()
    ]
    rewards, _ = score_groups(client(url, token_file, timeout_s, retries), groups, mode, votes)
    out = [0.0] * len(solution_strs)
    for rows, group in zip(members.values(), rewards, strict=True):
        for i, r in zip(rows, group, strict=True):
            out[i] = float(r)
    return out
