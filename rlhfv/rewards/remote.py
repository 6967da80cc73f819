"""A GRPO reward computed by a GRM served over HTTP (`rlhfv serve grm`), so every process of a
multi-GPU run shares one judge instead of loading its own copy beside its policy.

`GRMClient` is the small HTTP client (bearer token, timeout, retries with backoff) that
`RemoteGRM` and the adapters in `rlhfv.integrations` share. A request the server refuses (4xx)
is not retried: it would be refused again. A server that cannot be reached, times out or fails
(5xx) is retried `retries` times; then the reward raises `RemoteGRMError` naming the URL, the
pipeline stops before the step's update (`rlhfv.rewards.checked_rewards`), and the checkpoints
already written stay as they were.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from PIL import Image

    from rlhfv.rollout import Rollout

logger = logging.getLogger(__name__)
RETRIED = {429, 500, 502, 503, 504}
MODES = ("grouped", "pointwise")


class RemoteGRMError(RuntimeError):
    """The GRM server refused a request or could not be reached; the message names the URL."""


def encode_image(image: Image.Image) -> dict[str, str]:
    """A PIL image as the server's `{"data": base64 PNG}`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"data": base64.b64encode(buffer.getvalue()).decode()}


class GRMClient:
    """Calls a `rlhfv serve grm` server.

    Args:
        url: The server, e.g. "http://127.0.0.1:8000".
        token_file: A file holding the server's bearer token ("" = none).
        timeout_s: Seconds one HTTP request may take.
        retries: Further tries after a failed one (connection error, timeout, 429 or 5xx).
        backoff_s: Wait before the first retry; doubled before each next one.
        max_parallel: Requests in flight at once from `post_many` (the server batches them).
    """

    def __init__(
        self,
        url: str,
        token_file: str = "",
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_parallel: int = 16,
    ):
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url = {url!r}; give the server's address, e.g. http://127.0.0.1:8000")
        if retries < 0 or timeout_s <= 0:
            raise ValueError(f"retries = {retries} (≥ 0) and timeout_s = {timeout_s} (> 0)")
        self.url = url.rstrip("/")
        headers = {}
        if token_file:
            token = Path(token_file).read_text().strip()
            if not token:
                raise ValueError(f"token_file {token_file} is empty")
            headers["Authorization"] = f"Bearer {token}"
        limits = httpx.Limits(max_connections=max_parallel, max_keepalive_connections=max_parallel)
        self.http = httpx.Client(headers=headers, timeout=timeout_s, limits=limits)
        self.retries, self.backoff_s, self.max_parallel = retries, backoff_s, max_parallel

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `path` and return the JSON answer, retrying what may succeed later."""
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.http.post(self.url + path, json=body)
            except httpx.HTTPError as e:  # refused, reset, timed out
                last = f"{type(e).__name__}: {e}"
                continue
            if response.status_code in RETRIED:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise RemoteGRMError(
                    f"GRM server {self.url}{path} refused the request: HTTP {response.status_code} "
                    f"{response.text[:300]}"
                )
            return response.json()
        raise RemoteGRMError(
            f"GRM server {self.url}{path} did not answer after {self.retries + 1} tries ({last}); "
            f"is `rlhfv serve grm` running there?"
        )

    def post_many(self, path: str, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST each body concurrently (one answer per body, in order)."""
        if len(bodies) <= 1:
            return [self.post(path, body) for body in bodies]
        with ThreadPoolExecutor(min(self.max_parallel, len(bodies))) as pool:
            return list(pool.map(lambda body: self.post(path, body), bodies))


def score_groups(
    client: GRMClient,
    groups: Sequence[tuple[str, list[dict[str, str]], list[str], list[bool]]],
    mode: str = "grouped",
    votes: int = 1,
) -> tuple[list[list[float]], list[list[dict[str, Any]]]]:
    """Rewards for groups of completions, one request per group, sent concurrently.

    Args:
        groups: (question, images as the server takes them, completions, complete flags) each.
        mode: "grouped" (`/v1/grouped`) or "pointwise" (`/v1/pointwise`, the complete
            completions judged together; each reward is the mean over the `votes` samples that
            parsed, 0 when none did; incomplete completions get 0).
    Returns:
        Each group's rewards, and its pairwise judgments ("grouped" mode; empty lists otherwise).
    """
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r}; choose one of {MODES}")
    bodies: list[dict[str, Any]]
    if mode == "grouped":
        bodies = [
            {"question": q, "completions": texts, "complete": flags, "images": images}
            for q, images, texts, flags in groups
        ]
        answers = client.post_many("/v1/grouped", bodies)
        return [a["rewards"] for a in answers], [a["judgments"] for a in answers]
    asked = [i for i, (_, _, _, flags) in enumerate(groups) if any(flags)]  # nothing to judge otherwise
    bodies = [
        {
            "question": q,
            "responses": [t for t, ok in zip(texts, flags, strict=True) if ok],
            "k": votes,
            "images": images,
        }
        for q, images, texts, flags in (groups[i] for i in asked)
    ]
    scored = dict(zip(asked, client.post_many("/v1/pointwise", bodies), strict=True))
    rewards = []
    for i, (_, _, _, flags) in enumerate(groups):
        scores = iter(scored[i]["scores"]) if i in scored else iter(())
        parsed = max(1, scored[i]["parsed"]) if i in scored else 1
        rewards.append([next(scores) / parsed if ok else 0.0 for ok in flags])
    return rewards, [[] for _ in groups]


class RemoteGRM:
    """The GRPO reward of a served GRM: each prompt's G completions go to the server together.

    Args:
        url, token_file, timeout_s, retries, backoff_s, max_parallel: `GRMClient`'s.
        mode: "grouped": the Generative RLHF-V grouped comparison (the numbers
            `GroupedComparisonReward` gives in-process with the server's judge settings), or
            "pointwise": SPCT scores with voting@`votes` (`score_groups`).
        votes: k of voting@k in "pointwise" mode.
    """

    def __init__(
        self,
        url: str,
        mode: str = "grouped",
        votes: int = 1,
        token_file: str = "",
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_parallel: int = 16,
    ):
        if mode not in MODES:
            raise ValueError(f"RemoteGRM mode = {mode!r}; choose one of {MODES}")
        if votes < 1:
            raise ValueError(f"RemoteGRM votes = {votes}; 1 or more")
        self.client = GRMClient(url, token_file, timeout_s, retries, backoff_s, max_parallel)
        self.mode, self.votes = mode, votes
        self.name = f"RemoteGRM({self.client.url})"  # what a stopped run's error names
        self.last_metrics: dict[str, float] = {}

    def __call__(self, rollout: Rollout) -> torch.Tensor:
        g = rollout.group_size
        complete = rollout.complete.tolist()
        start = time.perf_counter()
        groups = [
            (
                prompt.text,
                [encode_image(im) for im in prompt.images],
                rollout.texts[b * g : (b + 1) * g],
                complete[b * g : (b + 1) * g],
            )
            for b, prompt in enumerate(rollout.prompts)
        ]
        rewards, judgments = score_groups(self.client, groups, self.mode, self.votes)
        if self.mode == "grouped":
            rollout.judgments = judgments  # the dashboard shows them as for an in-process judge
        self.last_metrics = {"perf/remote_grm_s": time.perf_counter() - start}
        return torch.tensor([r for group in rewards for r in group], dtype=torch.float32)  # [N]
