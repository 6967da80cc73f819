"""The micro-batcher alone (no model): rows of concurrent requests share calls, each request gets
its own results back, a request that gave up is never run, a failed call fails only its batch;
and through the app, a request past its timeout gets 504 while the server keeps serving."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlhfv.serve.batching import MicroBatcher


def run_with(batcher_args, scenario):
    async def main():
        with ThreadPoolExecutor(1) as pool:
            calls = []

            def run_rows(rows):
                calls.append(list(rows))
                if "boom" in rows:
                    raise ValueError("judge failed")
                return [row * 10 for row in rows]

            batcher = MicroBatcher(run_rows, pool, **batcher_args)
            server = asyncio.create_task(batcher.serve())
            try:
                return await scenario(batcher), calls
            finally:
                server.cancel()
                await asyncio.gather(server, return_exceptions=True)

    return asyncio.run(main())


def test_concurrent_requests_share_a_call_and_get_their_own_results():
    async def scenario(batcher):
        return await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(5)))

    results, calls = run_with({"max_rows": 6, "max_wait_s": 0.2}, scenario)
    assert results == [[i * 10, (i + 100) * 10] for i in range(5)]
    # 10 rows at most 6 a call, whole requests only: 3 requests, then 2
    assert [len(c) for c in calls] == [6, 4]
    assert sorted(r for c in calls for r in c) == sorted([*range(5), *range(100, 105)])  # none lost or twice


def test_max_rows_one_serves_one_request_per_call():
    async def scenario(batcher):
        return await asyncio.gather(*(batcher.submit([i]) for i in range(4)))

    results, calls = run_with({"max_rows": 1, "max_wait_s": 0.2}, scenario)
    assert results == [[0], [10], [20], [30]] and calls == [[0], [1], [2], [3]]


def test_a_request_that_gave_up_is_not_run_and_a_failed_call_fails_only_its_batch():
    async def scenario(batcher):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit([7]), timeout=0.01)  # gives up while waiting for company
        with pytest.raises(ValueError, match="judge failed"):
            await batcher.submit(["boom"])
        return await batcher.submit([3])

    result, calls = run_with({"max_rows": 4, "max_wait_s": 0.1}, scenario)
    assert result == [30] and [7] not in calls and ["boom"] in calls


def test_a_request_past_its_timeout_gets_504_and_the_server_keeps_serving():
    from fastapi.testclient import TestClient

    from rlhfv.serve.app import build_app
    from rlhfv.serve.grm import GRMService, JudgeSettings
    from rlhfv.serve.protocol import Limits
    from tests.serve.judges import sharp_judge

    limits = Limits(request_timeout_s=1e-4)
    service = GRMService(
        sharp_judge(), "tiny", JudgeSettings(max_new_tokens=2, force=True), limits, device="cpu"
    )
    body = {"question": "What is 2 + 2?", "a": "4", "b": "5"}
    with TestClient(build_app(service)) as client:
        late = client.post("/v1/pairwise", json=body)
        assert late.status_code == 504 and "--request-timeout-s" in late.json()["error"]
        limits.request_timeout_s = 60.0
        good = client.post("/v1/pairwise", json=body)
        assert good.status_code == 200 and len(good.json()["scores"]) == 2


def test_get_reward_in_grouped_mode_compares_the_queries_that_share_a_prompt(judge_model):
    """`--get-reward grouped`: a sender that batches a prompt's samples gets the grouped
    comparison per prompt, in any query order."""
    from fastapi.testclient import TestClient

    from rlhfv.serve.app import build_app
    from rlhfv.serve.grm import GRMService, JudgeSettings
    from rlhfv.serve.protocol import Limits
    from tests.serve.test_grm_server import GROUPS, in_process_grouped

    settings = JudgeSettings(max_new_tokens=4, force=True, get_reward="grouped")
    service = GRMService(judge_model, "tiny", settings, Limits(), device="cpu")
    wrap = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    rows = [(q, t) for i in range(4) for q, texts in GROUPS for t in texts[i : i + 1]]  # prompts interleaved
    body = {
        "query": [wrap.format(q) + t + "<|im_end|>" for q, t in rows],
        "prompts": [wrap.format(q) for q, _ in rows],
    }
    with TestClient(build_app(service)) as client:
        got = client.post("/get_reward", json=body).json()
    expected = dict(
        zip(
            [(q, t) for q, texts in GROUPS for t in texts],
            sum(in_process_grouped(judge_model, GROUPS), []),
            strict=True,
        )
    )
    assert got["rewards"] == [expected[row] for row in rows]
    assert got["extra_logs"]["grm_parsed"] == [1.0] * len(rows)
