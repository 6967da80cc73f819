"""`rlhfv serve grm`: a generative reward model as an HTTP reward service for any trainer.

    rlhfv serve grm --model checkpoints/grlhfv_shapes/grm_rl/final --port 8000

Endpoints (JSON bodies; `rlhfv.serve.protocol` holds their fields):

| endpoint | body → answer |
| --- | --- |
| `POST /v1/pairwise` | question, a, b, images → `scores` [s_a, s_b] (null if unreadable), the judge's `text` |
| `POST /v1/grouped` | question, G completions, images → one `rewards` entry per completion: the Generative RLHF-V grouped comparison, the numbers `rlhfv.rewards.grouped.GroupedComparisonReward` gives in-process |
| `POST /v1/pointwise` | question, n responses, k → SPCT voting@k `scores` (Eq. 14 sums) and each sample's scores |
| `POST /get_reward` | OpenRLHF's remote RM body `{"query", "prompts"}` → `{"rewards", "scores", "extra_logs"}` |
| `GET /health`, `GET /info` | liveness; the model, engine, judge prompt version, settings and batching counters |

The judge code is rlhfv's own: `GRMJudge` for pairs, `rlhfv.grm.judge.judge` for pointwise
scores, `GroupedComparisonReward` for the aggregation. Rows from concurrent requests share judge
calls (`rlhfv.serve.batching`). Safe by default: loopback only unless a bearer token is set
(`--token-file`), caps on body, image and group sizes, a timeout per request, 4xx naming the field
for bad requests, and one log line per request without its content.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfv.serve.batching import MicroBatcher
from rlhfv.serve.protocol import (
    GroupRequest,
    ImageIn,
    Limits,
    OpenRLHFRequest,
    PairRequest,
    PointwiseRequest,
    RequestError,
    check_cap,
    decode_image,
    split_query,
)

if TYPE_CHECKING:
    from PIL import Image

    from rlhfv.models.base import ChatModel
    from rlhfv.types import Prompt

logger = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class JudgeSettings:
    """How the served judge judges (the `rlhfv serve grm` flags of the same names).

    Attributes:
        max_new_tokens, greedy, temperature, reading, compact, force, batch_size: `GRMJudge`'s.
        vote_temperature: Sampling temperature of voting@k samples for k > 1 (SPCT uses 0.5);
            k = 1 is one greedy judgement with the responses in their given order.
        aggregator, both_orders, on_unparsable, uncompared: `GroupedComparisonReward`'s.
        get_reward: What OpenRLHF's `/get_reward` gives each query: "pointwise" (the judge's
            score of that response alone, mean over `get_reward_votes` samples that parsed, 0
            when none did) or "grouped" (queries of one request with the same prompt are
            compared with each other; OpenRLHF's single-turn executor sends one query per
            request, so a lone query gets `uncompared`).
    """

    max_new_tokens: int = 96
    greedy: bool = True
    temperature: float = 1.0
    vote_temperature: float = 0.5
    reading: bool = False
    compact: bool = False
    force: bool = False
    batch_size: int = 64
    aggregator: str = "mean_score"
    both_orders: bool = False
    on_unparsable: str = "skip"
    uncompared: float = 0.0
    get_reward: str = "pointwise"
    get_reward_votes: int = 1


def prompt_version(settings: JudgeSettings) -> str:
    """A short hash of the judge prompt as this server renders it: clients can tell two servers'
    prompts apart, and a change to the prompt's wording changes it."""
    from rlhfv.grm.prompts import pointwise_prompt
    from rlhfv.types import READING_SLOT

    text = pointwise_prompt(
        "{question}",
        ["{response 1}", "{response 2}"],
        compact=settings.compact,
        reading=READING_SLOT if settings.reading else None,
    ).text
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Replay:
    """A pairwise judge answering with verdicts already computed (by a batched judge call) for
    exactly these pairs, so `GroupedComparisonReward` aggregates them as it does in-process."""

    def __init__(self, pairs: list[tuple[str, str]], results: list[tuple[Any, str]]):
        self.pairs, self.results = pairs, results
        self.last_texts: list[str] = []

    def __call__(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> list[Any]:
        if list(zip(first, second, strict=True)) != self.pairs:
            raise RuntimeError("the grouped reward asked for other pairs than were judged")
        self.last_texts = [text for _, text in self.results]
        return [verdict for verdict, _ in self.results]


class GRMService:
    """One judge model behind the endpoints: request bodies in, JSON-ready answers out.

    Args:
        model: The judge (a ChatModel).
        name: What `/info` calls the model (its path or pulled name).
        engine: "hf" or "vllm" (`GRMJudge(engine=...)`).
        max_batch: Rows per judge call (pairs, or pointwise items × k); 1 = one request at a time.
        max_wait_s: How long a batch waits for more requests to join it.
    """

    def __init__(
        self,
        model: ChatModel,
        name: str,
        settings: JudgeSettings,
        limits: Limits,
        image_root: str | None = None,
        engine: str = "hf",
        device: str = "auto",
        max_batch: int = 64,
        max_wait_s: float = 0.01,
    ):
        from rlhfv.algorithms.comparison import AGGREGATORS, UNPARSABLE
        from rlhfv.rewards.grm import GRMJudge

        if settings.aggregator not in AGGREGATORS or settings.on_unparsable not in UNPARSABLE:
            raise ValueError(f"aggregator {settings.aggregator!r} / on_unparsable {settings.on_unparsable!r}")
        if settings.get_reward not in ("pointwise", "grouped"):
            raise ValueError(f"get_reward = {settings.get_reward!r}; choose 'pointwise' or 'grouped'")
        self.model, self.name, self.settings, self.limits, self.engine = model, name, settings, limits, engine
        self.image_root = Path(image_root).resolve() if image_root else None
        self.judge = GRMJudge(
            model,
            max_new_tokens=settings.max_new_tokens,
            greedy=settings.greedy,
            temperature=settings.temperature,
            batch_size=settings.batch_size,
            device=device,
            reading=settings.reading,
            compact=settings.compact,
            force=settings.force,
            engine=engine,
        )
        self.version = prompt_version(settings)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="judge")  # one model, one thread
        self.pairs = MicroBatcher(self._judge_pairs, self.executor, max_batch, max_wait_s)
        self.points = MicroBatcher(self._judge_points, self.executor, max_batch, max_wait_s)

    # -- judge calls (on the judge thread) ---------------------------------------------------

    def _judge_pairs(self, rows: list[tuple[Prompt, str, str]]) -> list[tuple[Any, str]]:
        verdicts = self.judge([p for p, _, _ in rows], [a for _, a, _ in rows], [b for _, _, b in rows])
        return list(zip(verdicts, self.judge.last_texts, strict=True))

    def _judge_points(self, rows: list[tuple[Any, list[list[int]]]]) -> list[Any]:
        """Pointwise items with their k display orders; one judge call per distinct k."""
        from rlhfv.grm.judge import judge

        out: list[Any] = [None] * len(rows)
        for k in sorted({len(orders) for _, orders in rows}):
            idx = [i for i, (_, orders) in enumerate(rows) if len(orders) == k]
            judged = judge(
                self.model,
                [rows[i][0] for i in idx],
                k=k,
                orders=[rows[i][1] for i in idx],
                greedy=k == 1,
                temperature=self.settings.vote_temperature,
                max_new_tokens=self.settings.max_new_tokens,
                force=self.settings.force,
                reading=self.settings.reading,
                compact=self.settings.compact,
                engine=self.judge.engine,
            )
            for i, j in zip(idx, judged, strict=True):
                out[i] = j
        return out

    # -- endpoints -----------------------------------------------------------------------------

    def images(self, images: list[ImageIn]) -> list[Image.Image]:
        check_cap(len(images), self.limits.max_images, "images", "--max-images")
        return [decode_image(im, f"images.{i}", self.limits, self.image_root) for i, im in enumerate(images)]

    async def pairwise(self, req: PairRequest) -> dict[str, Any]:
        from rlhfv.types import Prompt

        [(verdict, text)] = await self.pairs.submit(
            [(Prompt(req.question, self.images(req.images)), req.a, req.b)]
        )
        return {"scores": list(verdict) if verdict is not None else None, "text": text}

    async def grouped(self, req: GroupRequest) -> dict[str, Any]:
        from rlhfv.types import Prompt

        check_cap(len(req.completions), self.limits.max_group, "completions", "--max-group")
        complete = req.complete if req.complete is not None else [True] * len(req.completions)
        if len(complete) != len(req.completions):
            raise RequestError(
                422, "complete", f"complete: {len(complete)} flags for {len(req.completions)} completions"
            )
        [rewards] = await self.grouped_rewards(
            [(Prompt(req.question, self.images(req.images)), req.completions, complete)]
        )
        return rewards

    async def grouped_rewards(
        self, groups: list[tuple[Prompt, list[str], list[bool]]]
    ) -> list[dict[str, Any]]:
        """Each group's grouped-comparison rewards; all pairs of all groups in one submission."""
        import torch

        from rlhfv.algorithms.comparison import comparison_pairs
        from rlhfv.rewards.grouped import GroupedComparisonReward
        from rlhfv.rollout import Rollout

        s = self.settings
        pairs = [comparison_pairs(complete, s.both_orders) for _, _, complete in groups]
        rows = [
            (p, texts[i], texts[j]) for (p, texts, _), ps in zip(groups, pairs, strict=True) for i, j in ps
        ]
        results = await self.pairs.submit(rows)
        out, start = [], 0
        for (prompt, texts, complete), ps in zip(groups, pairs, strict=True):
            mine = results[start : start + len(ps)]
            start += len(ps)
            g = len(texts)
            rollout = Rollout(
                prompts=[prompt],
                labels=[""],
                prompt_batch={},
                completion_ids=torch.zeros(g, 0, dtype=torch.long),
                completion_mask=torch.zeros(g, 0),
                texts=list(texts),
                complete=torch.tensor(complete, dtype=torch.bool),
                group_size=g,
            )
            replay = _Replay([(texts[i], texts[j]) for i, j in ps], mine)
            reward = GroupedComparisonReward(
                replay, s.both_orders, s.aggregator, s.on_unparsable, s.uncompared
            )
            rewards = reward(rollout)  # [G]
            out.append(
                {"rewards": rewards.tolist(), "judgments": rollout.judgments[0] if rollout.judgments else []}
            )
        return out

    async def pointwise(self, req: PointwiseRequest) -> dict[str, Any]:
        from rlhfv.grm.judge import JudgeItem
        from rlhfv.grm.voting import shuffled_order, vote

        n = len(req.responses)
        if n == 0:
            raise RequestError(422, "responses", "responses: give at least one response")
        check_cap(n, self.limits.max_responses, "responses", "--max-responses")
        check_cap(req.k, self.limits.max_votes, "k", "--max-votes")
        rng = random.Random(req.seed)
        orders = [list(range(n))] if req.k == 1 else [shuffled_order(n, rng) for _ in range(req.k)]
        item = JudgeItem(req.question, list(req.responses), self.images(req.images))
        [judged] = await self.points.submit([(item, orders)])
        return {
            "scores": vote(judged.scores, n),
            "samples": judged.scores,
            "parsed": sum(s is not None for s in judged.scores),
            "k": req.k,
        }

    async def get_reward(self, req: OpenRLHFRequest) -> dict[str, Any]:
        from rlhfv.grm.judge import JudgeItem
        from rlhfv.types import Prompt

        check_cap(len(req.query), self.limits.max_queries, "query", "--max-queries")
        if len(req.prompts) != len(req.query):
            raise RequestError(
                422, "prompts", f"prompts: {len(req.prompts)} prompts for {len(req.query)} queries"
            )
        split = [split_query(q, p, i) for i, (q, p) in enumerate(zip(req.query, req.prompts, strict=True))]
        rewards = [0.0] * len(split)
        parsed = [0.0] * len(split)
        if self.settings.get_reward == "pointwise":
            k = self.settings.get_reward_votes
            judged = await self.points.submit([(JudgeItem(q, [r]), [[0]] * k) for q, r in split])
            for i, j in enumerate(judged):
                scores = [s[0] for s in j.scores if s is not None]
                rewards[i] = sum(scores) / len(scores) if scores else 0.0
                parsed[i] = len(scores) / k
        else:
            members: dict[str, list[int]] = {}
            for i, (question, _) in enumerate(split):
                members.setdefault(question, []).append(i)
            check_cap(
                max(map(len, members.values()), default=0), self.limits.max_group, "query", "--max-group"
            )
            groups = [
                (Prompt(q), [split[i][1] for i in idx], [True] * len(idx)) for q, idx in members.items()
            ]
            for idx, result in zip(members.values(), await self.grouped_rewards(groups), strict=True):
                seen, read = [0] * len(idx), [0] * len(idx)  # comparisons of each query, and readable ones
                for v in result["judgments"]:
                    for member in (v["a"], v["b"]):
                        seen[member] += 1
                        read[member] += v["scores"] is not None
                for m, i in enumerate(idx):
                    rewards[i], parsed[i] = result["rewards"][m], read[m] / max(1, seen[m])
        return {"rewards": rewards, "scores": rewards, "extra_logs": {"grm_parsed": parsed}}

    def info(self) -> dict[str, Any]:
        calls = self.pairs.calls + self.points.calls
        return {
            "model": self.name,
            "engine": self.engine,
            "judge_prompt_version": self.version,
            "judge": asdict(self.settings),
            "limits": asdict(self.limits),
            "batching": {
                "max_batch": self.pairs.max_rows,
                "max_wait_s": self.pairs.max_wait_s,
                "judge_calls": calls,
                "rows_per_call": (self.pairs.rows_done + self.points.rows_done) / max(1, calls),
            },
        }


def load_judge_model(spec: str, dtype: str = "float32") -> ChatModel:
    """The judge named on the command line: a folder written by rlhfv, a plain Hugging Face
    folder (text or vision-language), a pulled model's name (`rlhfv models pull`), or a Hub ID
    (`org/name`, through the huggingface_hub cache; `HF_HUB_OFFLINE=1` is honoured)."""
    import json

    from rlhfv.models.base import MODEL_CARD, load_model
    from rlhfv.models.hub import resolve_model

    folder = resolve_model(spec)
    if (folder / MODEL_CARD).is_file():
        return load_model(str(folder), dtype=dtype)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if "vision_config" in config:
        from rlhfv.models.hf_vlm import load_hf_vlm

        return load_hf_vlm(str(folder), dtype=dtype)
    from rlhfv.models.text_lm import load_text_lm

    return load_text_lm(str(folder), dtype=dtype)


def read_token(path: str | None, host: str) -> str | None:
    """The bearer token from `path`; refuses to serve beyond loopback without one."""
    if path:
        token = Path(path).read_text().strip()
        if not token:
            raise SystemExit(f"rlhfv serve grm: token file {path} is empty")
        return token
    if host not in LOOPBACK:
        raise SystemExit(
            f"rlhfv serve grm: refusing to bind {host} without a bearer token; pass --token-file "
            "(a file holding the token) or bind 127.0.0.1"
        )
    return None


def parser() -> argparse.ArgumentParser:
    d, lim = JudgeSettings(), Limits()
    p = argparse.ArgumentParser(
        prog="rlhfv serve grm", description="serve a generative reward model over HTTP"
    )
    p.add_argument(
        "--model", required=True, help="rlhfv or Hugging Face model folder, or a pulled model's name"
    )
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    p.add_argument("--host", default="127.0.0.1", help="beyond loopback only with --token-file")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", help="file holding the bearer token clients must send")
    p.add_argument("--image-root", help="folder that image paths in requests are taken from (default: none)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--sample", action="store_true", help="sample pairwise judgements instead of greedy")
    p.add_argument("--temperature", type=float, default=d.temperature, help="with --sample")
    p.add_argument("--vote-temperature", type=float, default=d.vote_temperature)
    p.add_argument("--reading", action="store_true", help="the judge answers each question first")
    p.add_argument("--compact", action="store_true", help="judge prompts without instructions")
    p.add_argument(
        "--force-scores", action="store_true", help="force a score line where the judge wrote none"
    )
    p.add_argument("--aggregator", default=d.aggregator, choices=("mean_score", "borda", "bradley_terry"))
    p.add_argument("--both-orders", action="store_true")
    p.add_argument("--on-unparsable", default=d.on_unparsable, choices=("skip", "zero"))
    p.add_argument("--uncompared", type=float, default=d.uncompared)
    p.add_argument("--get-reward", default=d.get_reward, choices=("pointwise", "grouped"))
    p.add_argument("--get-reward-votes", type=int, default=d.get_reward_votes)
    p.add_argument("--judge-batch", type=int, default=d.batch_size, help="rows per generate call")
    p.add_argument("--max-batch", type=int, default=64, help="rows gathered from requests per judge call")
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--max-concurrency", type=int, default=256, help="open requests; more get 503")
    for name in ("max_request_bytes", "max_image_bytes", "max_image_pixels", "max_images", "max_group",
                 "max_responses", "max_votes", "max_queries"):  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(lim, name))
    p.add_argument("--request-timeout-s", type=float, default=lim.request_timeout_s)
    return p


def main(argv: list[str] | None = None) -> int:
    """`rlhfv serve grm ...`"""
    argv = list(argv or [])
    if not argv or argv[0] != "grm":
        print("usage: rlhfv serve grm --model MODEL [options]  (rlhfv serve grm --help)")
        return 2
    args = parser().parse_args(argv[1:])
    token = read_token(args.token_file, args.host)
    import uvicorn

    from rlhfv.serve.app import build_app

    settings = JudgeSettings(
        max_new_tokens=args.max_new_tokens,
        greedy=not args.sample,
        temperature=args.temperature,
        vote_temperature=args.vote_temperature,
        reading=args.reading,
        compact=args.compact,
        force=args.force_scores,
        batch_size=args.judge_batch,
        aggregator=args.aggregator,
        both_orders=args.both_orders,
        on_unparsable=args.on_unparsable,
        uncompared=args.uncompared,
        get_reward=args.get_reward,
        get_reward_votes=args.get_reward_votes,
    )
    limits = Limits(**{k: getattr(args, k) for k in asdict(Limits())})
    model = load_judge_model(args.model, args.dtype)
    service = GRMService(
        model, args.model, settings, limits, args.image_root, args.engine, args.device,
        args.max_batch, args.max_wait_ms / 1000,
    )  # fmt: skip
    logger.info(
        "serving %s on http://%s:%d (judge prompt %s)", args.model, args.host, args.port, service.version
    )
    uvicorn.run(
        build_app(service, token),
        host=args.host,
        port=args.port,
        access_log=False,  # our own line per request replaces it
        limit_concurrency=args.max_concurrency,
        timeout_keep_alive=5,
        log_level="warning",
    )
    return 0
