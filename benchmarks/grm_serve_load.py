"""`rlhfv serve grm` under load on loopback: batched serving against one request at a time.

    python benchmarks/grm_serve_load.py                      # 8 clients × 50 grouped requests
    python benchmarks/grm_serve_load.py --model checkpoints/grlhfv_shapes/grm_rl/final --max-new-tokens 80

Starts the server twice on 127.0.0.1, first with request batching (`--max-batch 64`), then
serving one request per judge call (`--max-batch 1`), and drives each with the same bounded load:
`clients` threads, each sending `requests` grouped-comparison requests (G completions, every
request its own question) one after another. For each server it reports throughput, p50/p95
latency and the rows per judge call, and checks that nothing was lost or duplicated: every answer
equals the in-process `GroupedComparisonReward` of its own request, and the server judged each
pair exactly once. The judge defaults to a tiny random model whose forced scores depend on its
input (the serving cost, not a judge's quality, is measured); `--model` serves any judge.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_judge(folder: Path) -> Path:
    """A tiny Llama judge initialised with std 0.3: its forced greedy scores vary with the input."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfv.models.base import save_model, seeded
    from rlhfv.models.text_lm import tiny_tokenizer, wrap_text_lm

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=36, intermediate_size=52, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=3, max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        tie_word_embeddings=False, initializer_range=0.3,
    )  # fmt: skip
    with seeded(0):
        save_model(wrap_text_lm(LlamaForCausalLM(config), tok), folder)
    return folder


def requests_for(clients: int, per_client: int, group: int) -> list[tuple[str, list[str]]]:
    return [
        (
            f"Client {c}, question {r}: what is {r} + {c}?",
            [f"{r + c + i}" + " I think" * i for i in range(group)],
        )
        for c in range(clients)
        for r in range(per_client)
    ]


def serve_and_load(model: Path, flags: list[str], requests: list, clients: int, timeout_s: float) -> dict:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "rlhfv.cli",
        "serve",
        "grm",
        "--model",
        str(model),
        "--port",
        str(port),
        *flags,
    ]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {' '.join(cmd)}") from None
                time.sleep(0.2)
        per_client = len(requests) // clients
        latencies: list[float] = []
        answers: list[list[float] | None] = [None] * len(requests)

        def client(c: int) -> None:
            with httpx.Client(timeout=timeout_s) as http:
                for i in range(c * per_client, (c + 1) * per_client):
                    q, texts = requests[i]
                    start = time.perf_counter()
                    got = http.post(url + "/v1/grouped", json={"question": q, "completions": texts})
                    latencies.append(time.perf_counter() - start)
                    if got.status_code == 200:
                        answers[i] = got.json()["rewards"]

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        wall = time.perf_counter() - start
        info = httpx.get(url + "/info").json()["batching"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    q = statistics.quantiles(latencies, n=20)
    return {
        "answers": answers,
        "wall_s": wall,
        "requests_per_s": len(requests) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * q[18],
        "judge_calls": info["judge_calls"],
        "rows_judged": round(info["rows_per_call"] * info["judge_calls"]),
        "rows_per_call": info["rows_per_call"],
    }


def in_process(model: Path, requests: list, max_new_tokens: int, force: bool) -> list[list[float]]:
    import torch

    from rlhfv.models.base import load_model
    from rlhfv.rewards.grm import GRMJudge
    from rlhfv.rewards.grouped import GroupedComparisonReward
    from rlhfv.rollout import Rollout
    from rlhfv.types import Prompt

    g, n = len(requests[0][1]), len(requests) * len(requests[0][1])
    rollout = Rollout(
        prompts=[Prompt(q) for q, _ in requests], labels=[""] * len(requests), prompt_batch={},
        completion_ids=torch.zeros(n, 0, dtype=torch.long), completion_mask=torch.zeros(n, 0),
        texts=[t for _, texts in requests for t in texts], complete=torch.ones(n, dtype=torch.bool), group_size=g,
    )  # fmt: skip
    judge = GRMJudge(load_model(str(model)), max_new_tokens=max_new_tokens, device="cpu", force=force)
    return GroupedComparisonReward(judge)(rollout).view(len(requests), g).tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="judge folder (default: a tiny random judge)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=50, help="per client")
    p.add_argument("--group", type=int, default=3, help="G completions per request")
    p.add_argument("--max-new-tokens", type=int, default=4)
    p.add_argument("--no-force", action="store_true", help="do not force score lines")
    p.add_argument("--timeout-s", type=float, default=300.0, help="per request")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="grm-serve-") as tmp:
        model = Path(args.model) if args.model else tiny_judge(Path(tmp) / "judge")
        flags = ["--max-new-tokens", str(args.max_new_tokens), "--device", "cpu"]
        flags += [] if args.no_force else ["--force-scores"]
        requests = requests_for(args.clients, args.requests, args.group)
        expected = in_process(model, requests, args.max_new_tokens, not args.no_force)
        pairs = len(requests) * args.group * (args.group - 1) // 2
        report = {}
        for name, batch in (("batched", "64"), ("one_at_a_time", "1")):
            result = serve_and_load(
                model, [*flags, "--max-batch", batch], requests, args.clients, args.timeout_s
            )
            answers = result.pop("answers")
            result["lost"] = sum(a is None for a in answers)
            result["duplicated_rows"] = result["rows_judged"] - pairs  # > 0: a pair judged twice
            result["not_equal_in_process"] = sum(a != e for a, e in zip(answers, expected, strict=True))
            report[name] = result
        report["speedup"] = report["batched"]["requests_per_s"] / report["one_at_a_time"]["requests_per_s"]
        report["load"] = {
            "clients": args.clients,
            "requests": len(requests),
            "group": args.group,
            "pairs": pairs,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
