"""A tiny judge whose forced scores depend on what it reads, and the server it runs in.

A randomly initialised model at the usual init scale (std 0.02) writes the same score line for
every input; at std 0.3 its greedy, forced scores differ from pair to pair, so a test that
compares rewards can tell a right pair from a wrong one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from rlhfv.models.base import ChatModel, save_model, seeded

ROOT = Path(__file__).resolve().parents[2]
JUDGE_FLAGS = ["--max-new-tokens", "4", "--force-scores", "--device", "cpu"]


def sharp_judge(seed: int = 0) -> ChatModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfv.models.text_lm import tiny_tokenizer, wrap_text_lm

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=36, intermediate_size=52, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=3, max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        tie_word_embeddings=False, initializer_range=0.3,
    )  # fmt: skip
    with seeded(seed):
        return wrap_text_lm(LlamaForCausalLM(config), tok)


def save_sharp_judge(folder: Path, seed: int = 0) -> Path:
    save_model(sharp_judge(seed), folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def grm_server(model: Path, *flags: str, start_timeout_s: float = 90.0) -> Iterator[str]:
    """`rlhfv serve grm` as a real uvicorn process on 127.0.0.1; yields its URL and stops it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "rlhfv.cli", "serve", "grm", "--model", str(model), "--port", str(port)]
    log = open(model.parent / f"server_{port}.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([*cmd, *JUDGE_FLAGS, *flags], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"server not up after {start_timeout_s} s: {Path(log.name).read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
