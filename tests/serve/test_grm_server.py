"""`rlhfv serve grm` as clients meet it: OpenRLHF's request shape and the grouped comparison give
the in-process judge's numbers, concurrent requests are batched without loss, bad requests get
a 4xx naming the field and the server keeps serving, and it is safe by default."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from rlhfv.grm.judge import JudgeItem, judge
from rlhfv.rewards.grm import GRMJudge
from rlhfv.rewards.grouped import GroupedComparisonReward
from rlhfv.rollout import Rollout
from rlhfv.types import Prompt
from tests.serve.conftest import TOKEN
from tests.serve.judges import ROOT

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GROUPS = [
    ("What is 2 + 2?", ["4", "It is four.", "5", "Two plus two is 4, I think."]),
    ("Name a colour.", ["Red.", "blue", "The sky.", "Colours are hard"]),
]


def in_process_grouped(model, groups):
    """The GRLHF-V reward as a GRPO run computes it in-process: one rollout, B prompts × G."""
    g = len(groups[0][1])
    rollout = Rollout(
        prompts=[Prompt(q) for q, _ in groups], labels=[""] * len(groups), prompt_batch={},
        completion_ids=torch.zeros(g * len(groups), 0, dtype=torch.long),
        completion_mask=torch.zeros(g * len(groups), 0),
        texts=[t for _, texts in groups for t in texts],
        complete=torch.ones(g * len(groups), dtype=torch.bool), group_size=g,
    )  # fmt: skip
    reward = GroupedComparisonReward(GRMJudge(model, max_new_tokens=4, device="cpu", force=True))
    return reward(rollout).view(len(groups), g).tolist()


def post(server, path, body, headers=AUTH):
    return httpx.post(server["url"] + path, json=body, headers=headers, timeout=60)


def test_openrlhf_request_shape_gives_the_in_process_judges_scores(server, judge_model):
    questions = ["What is 2 + 2?", "Name a colour.", "Is the sky green?"]
    answers = ["4", "blue", "No, it is blue."]
    prompts = [f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n" for q in questions]
    queries = [p + a + "<|im_end|>" for p, a in zip(prompts, answers, strict=True)]
    got = post(server, "/get_reward", {"query": queries, "prompts": prompts, "labels": ["", "", ""]})
    assert got.status_code == 200, got.text
    body = got.json()
    expected = [
        j.scores[0][0] if j.scores[0] is not None else 0.0
        for j in judge(judge_model, [JudgeItem(q, [a]) for q, a in zip(questions, answers, strict=True)],
                       k=1, greedy=True, max_new_tokens=4, force=True)
    ]  # fmt: skip
    assert body["rewards"] == expected and body["scores"] == expected
    assert body["extra_logs"]["grm_parsed"] == [1.0, 1.0, 1.0]


def test_grouped_comparison_over_http_equals_the_in_process_reward(server, judge_model):
    with ThreadPoolExecutor(2) as pool:  # both groups at once: the server batches their pairs
        answers = list(
            pool.map(lambda g: post(server, "/v1/grouped", {"question": g[0], "completions": g[1]}), GROUPS)
        )
    served = [a.json()["rewards"] for a in answers]
    expected = in_process_grouped(judge_model, GROUPS)
    assert served == expected
    assert len({r for group in expected for r in group}) > 2  # the judge tells the completions apart
    judged = answers[0].json()["judgments"]
    assert [(v["a"], v["b"]) for v in judged] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_concurrent_clients_lose_and_duplicate_nothing_and_share_judge_calls(server, judge_model):
    """4 clients × 6 grouped requests, each request its own question: every answer is the
    in-process reward of its own request, and the server judged each pair exactly once."""
    before = httpx.get(server["url"] + "/info", headers=AUTH).json()["batching"]
    requests = [
        (f"Question {c}-{r}: what is {r} + {c}?", [str(r + c), "no idea", f"{r}{c}"])
        for c in range(4)
        for r in range(6)
    ]

    def client(c):
        return [
            post(server, "/v1/grouped", {"question": q, "completions": t}).json()["rewards"]
            for q, t in requests[c * 6 : (c + 1) * 6]
        ]

    with ThreadPoolExecutor(4) as pool:
        served = [r for rewards in pool.map(client, range(4)) for r in rewards]
    assert served == [in_process_grouped(judge_model, [req])[0] for req in requests]
    after = httpx.get(server["url"] + "/info", headers=AUTH).json()["batching"]
    pairs = len(requests) * 3  # G = 3 → 3 pairs each
    rows_before = before["rows_per_call"] * before["judge_calls"]
    rows_after = after["rows_per_call"] * after["judge_calls"]
    assert round(rows_after - rows_before) == pairs  # each pair judged once: none lost, none twice
    assert after["judge_calls"] - before["judge_calls"] < len(requests)  # requests shared calls


def test_pointwise_voting_sums_k_samples_in_the_original_order(server):
    body = {"question": "What is 2 + 2?", "responses": ["4", "5", "four"], "k": 4, "seed": 3}
    a, b = post(server, "/v1/pointwise", body).json(), post(server, "/v1/pointwise", body).json()
    assert a["k"] == 4 and len(a["samples"]) == 4 and a["parsed"] == 4
    assert a["scores"] == [sum(s[i] for s in a["samples"]) for i in range(3)]  # Eq. 14
    assert all(1 <= x <= 10 for s in a["samples"] for x in s)
    assert b["k"] == 4  # sampled judgements: the totals may differ, the shape may not


def png(size: int, noise: bool = False) -> str:
    from PIL import Image

    image = Image.effect_noise((size, size), 100).convert("RGB") if noise else Image.new("RGB", (size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PAIR = {"question": "What colour is it?", "a": "Red.", "b": "Blue."}
BAD = [
    ("wrong JSON", "/v1/pairwise", b'{"question": "x", "a": ', AUTH, 400, "body"),
    ("missing field", "/v1/pairwise", {"question": "x", "a": "y"}, AUTH, 422, "b"),
    ("misspelt field", "/v1/grouped", {"question": "x", "completion": ["a"]}, AUTH, 422, "completions"),
    ("wrong type", "/v1/pointwise", {"question": "x", "responses": ["a"], "k": "many"}, AUTH, 422, "k"),
    ("oversized image", "/v1/pairwise", {**PAIR, "images": [{"data": png(120, noise=True)}]}, AUTH, 413, "images.0"),
    ("too many pixels", "/v1/pairwise", {**PAIR, "images": [{"data": png(80)}]}, AUTH, 413, "images.0"),
    ("not an image", "/v1/pairwise", {**PAIR, "images": [{"data": base64.b64encode(b"hello").decode()}]}, AUTH, 422, "images.0"),
    ("path outside the root", "/v1/pairwise", {**PAIR, "images": [{"path": "../../etc/passwd"}]}, AUTH, 403, "images.0"),
    ("absolute path", "/v1/pairwise", {**PAIR, "images": [{"path": "/etc/hostname"}]}, AUTH, 403, "images.0"),
    ("missing token", "/v1/pairwise", PAIR, {}, 401, "Authorization"),
    ("wrong token", "/v1/pairwise", PAIR, {"Authorization": "Bearer guess"}, 403, "Authorization"),
    ("group over the cap", "/v1/grouped", {"question": "x", "completions": ["a"] * 7}, AUTH, 422, "completions"),
    ("flags for another group", "/v1/grouped", {"question": "x", "completions": ["a", "b"], "complete": [True]}, AUTH, 422, "complete"),
    ("query without its prompt", "/get_reward", {"query": ["abc"], "prompts": ["xyz"]}, AUTH, 422, "query.0"),
    ("body over the cap", "/v1/pairwise", {**PAIR, "a": "x" * 300_000}, AUTH, 413, "body"),
]  # fmt: skip


@pytest.mark.parametrize("what, path, body, headers, status, field", BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_gets_its_4xx_naming_the_field_and_the_next_good_one_succeeds(
    server, what, path, body, headers, status, field
):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    got = httpx.post(
        server["url"] + path, headers={**headers, "content-type": "application/json"}, timeout=60, **kwargs
    )
    assert got.status_code == status, got.text
    assert got.json()["field"] == field and field.split(".")[0] in got.json()["error"]
    good = post(server, "/v1/pairwise", {**PAIR, "images": [{"path": "red.png"}]})
    assert good.status_code == 200 and len(good.json()["scores"]) == 2


def test_health_is_open_and_info_names_the_model_engine_and_prompt_version(server, judge_folder):
    assert httpx.get(server["url"] + "/health").json() == {"status": "ok"}
    assert httpx.get(server["url"] + "/info").status_code == 401
    info = httpx.get(server["url"] + "/info", headers=AUTH).json()
    assert info["model"] == str(judge_folder) and info["engine"] == "hf"
    assert len(info["judge_prompt_version"]) == 12 and info["limits"]["max_group"] == 6


def test_the_server_refuses_to_bind_beyond_loopback_without_a_token(judge_folder):
    cmd = [
        sys.executable,
        "-m",
        "rlhfv.cli",
        "serve",
        "grm",
        "--model",
        str(judge_folder),
        "--host",
        "0.0.0.0",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert done.returncode != 0
    assert "refusing to bind 0.0.0.0 without a bearer token" in done.stderr


def test_the_server_logs_one_line_per_request_without_its_content(server, judge_folder):
    post(server, "/v1/pairwise", {**PAIR, "question": "A secret question?"})
    post(server, "/v1/pairwise", {**PAIR, "question": "A secret question?"}, headers={})
    port = server["url"].rsplit(":", 1)[1]
    lines = (judge_folder.parent / f"server_{port}.log").read_text().splitlines()
    requests = [line for line in lines if "rlhfv.serve.app: POST " in line]
    assert any("POST /v1/pairwise 200" in line for line in requests)
    assert any("POST /v1/pairwise 401" in line for line in requests)  # refused ones too
    assert not any("secret" in line or "Red." in line for line in lines)
