"""Score-only reward model: learns on every kind of builder, saves and reloads, resumes exactly, and
scores a GRPO rollout as `rlhfv.rewards.ScalarRM` (with per-batch normalisation)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from omegaconf import OmegaConf

from rlhfv.config import validate_recipe
from rlhfv.pipelines.reward_model import main, pair_scores
from rlhfv.training.metrics import read_metrics

TEXT = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
PAIRS = {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": 4, "seed": 0}


def run_rm(folder, **overrides):
    cfg = {
        "pipeline": "rlhfv.pipelines.reward_model.main",
        "run": {"dir": str(folder), "seed": 0, "device": "cpu", "resume": "auto", "cpu_threads": 1},
        "model": TEXT,
        "train_data": PAIRS,
        "eval_pairs": PAIRS,  # the training pairs themselves: a reward model that learns must rank them
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 3e-3},
        "steps": 6,
        "batch_size": 4,
        "log_every": 1,
    }
    cfg.update(overrides)
    # evaluating on the training pairs is what these tests want (a model that learns must rank
    # them), and exactly what validation refuses in a real recipe
    with mock.patch("rlhfv.config.check_data_overlap"):
        cfg = validate_recipe(OmegaConf.create(cfg), "test_reward_model")
    summary = main(cfg)
    return summary, read_metrics(folder / "metrics.jsonl")


@pytest.mark.parametrize(
    "model",
    [
        TEXT,
        {"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl", "seed": 0},
        {"_component_": "rlhfv.models.clip_lm.tiny_clip_lm", "seed": 0},
    ],
    ids=["text", "qwen2_vl", "clip_lm"],
)
def test_reward_model_learns_to_rank_its_training_pairs_and_reloads(tmp_path, model):
    from rlhfv.models.reward_head import load_reward_model

    summary, rows = run_rm(tmp_path, model=model)
    train_rows = [r for r in rows if "loss/rm" in r]
    assert train_rows[-1]["loss/rm"] < train_rows[0]["loss/rm"]
    assert summary["after/pairwise_accuracy"] == 1.0 and "before/pairwise_accuracy" in summary
    chat, rm = load_reward_model(str(tmp_path / "final"))
    from rlhfv.data.pairs import ShapesPairs

    pairs = [ShapesPairs(size=4)[i] for i in range(4)]
    chosen, rejected = pair_scores(chat, rm, pairs, torch.device("cpu"))
    assert (chosen > rejected).all()  # the reloaded model ranks as the trained one did


def test_margin_makes_the_loss_larger_for_the_same_scores(tmp_path):
    _, plain = run_rm(tmp_path / "plain", steps=1)
    _, margin = run_rm(tmp_path / "margin", steps=1, margin=2.0)
    assert margin[1]["loss/rm"] > plain[1]["loss/rm"]  # same model, same pairs: only m differs
    assert margin[1]["rm/margin"] == pytest.approx(plain[1]["rm/margin"])


def test_resumed_reward_model_run_matches_an_uninterrupted_one(tmp_path):
    _, whole = run_rm(tmp_path / "whole", train_data={**PAIRS, "size": 12})
    folder = tmp_path / "cut"
    run = {"dir": str(folder), "seed": 0, "device": "cpu", "save_every": 3}
    run_rm(folder, train_data={**PAIRS, "size": 12}, steps=3, run=run)
    _, resumed = run_rm(folder, train_data={**PAIRS, "size": 12}, run={**run, "resume": "auto"})
    by_step = {r["step"]: r for r in resumed}
    for row in whole:
        if row["step"] > 3:
            assert by_step[row["step"]]["loss/rm"] == pytest.approx(row["loss/rm"], rel=1e-5)


def test_scalar_rm_scores_a_rollout_and_normalises_per_batch(tmp_path):
    from rlhfv.data.shapes import ShapesVQA
    from rlhfv.models.text_lm import tiny_text_lm
    from rlhfv.rewards import ScalarRM
    from rlhfv.rewards.scalar import score_responses
    from rlhfv.rollout import generate

    run_rm(tmp_path / "rm", steps=1)
    rollout = generate(tiny_text_lm(seed=1), [ShapesVQA(2)[i].prompt for i in range(2)], 3, 6, 1.0)
    raw = ScalarRM(str(tmp_path / "rm" / "final"), device="cpu", batch_size=4)
    scores = raw(rollout)
    assert scores.shape == (6,) and torch.isfinite(scores).all()
    prompts = [p for p in rollout.prompts for _ in range(3)]
    with torch.no_grad():
        direct = score_responses(raw.chat, raw.rm, prompts, rollout.texts, torch.device("cpu"))
    torch.testing.assert_close(scores, direct)  # batching (4 + 2 rows) does not change a score
    normalised = ScalarRM(str(tmp_path / "rm" / "final"), normalize=True, device="cpu")(rollout)
    assert normalised.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert normalised.std().item() == pytest.approx(1.0, abs=1e-3)
    torch.testing.assert_close(normalised, (scores - scores.mean()) / (scores.std() + 1e-6))


def test_grpo_trains_with_scalar_rm_as_its_reward(tmp_path):
    run_rm(tmp_path / "rm", steps=1)
    cfg = {
        "pipeline": "rlhfv.pipelines.grpo.main",
        "run": {"dir": str(tmp_path / "grpo"), "seed": 0, "device": "cpu", "cpu_threads": 1},
        "policy": TEXT,
        "train_data": {"_component_": "rlhfv.data.shapes.ShapesVQA", "size": 8},
        "reward": {
            "_component_": "rlhfv.rewards.ScalarRM",
            "path": str(tmp_path / "rm" / "final"),
            "normalize": True,
        },
        "steps": 1,
        "prompts_per_step": 2,
        "group_size": 3,
        "max_new_tokens": 5,
        "log_rollouts_every": 0,
    }
    from rlhfv.pipelines.grpo import main as grpo

    grpo(validate_recipe(OmegaConf.create(cfg), "grpo with ScalarRM"))
    row = read_metrics(tmp_path / "grpo" / "metrics.jsonl")[-1]
    assert "rm/score_mean" in row and row["reward/mean"] == pytest.approx(0.0, abs=1e-5)  # normalised


def test_reward_model_evaluates_on_a_file_rlhfv_eval_grm_reads(tmp_path):
    """eval_pairs from `PreferenceData`, the loader behind `rlhfv eval grm`, so both sit in one table."""
    import json

    rows = [
        {"prompt": f"Q{i}", "responses": [f"good {i}", f"bad answer {i}"], "preferred": i % 2}
        for i in range(5)
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out = {"_component_": "rlhfv.data.formats.PreferenceData", "format": "jsonl", "path": str(path)}
    summary, _ = run_rm(tmp_path / "run", eval_pairs=held_out, steps=1)
    assert summary["after/pairwise_accuracy"] in {k / 5 for k in range(6)}  # 5 pairs, each right or wrong


def test_token_caps_keep_the_prompt_end_and_the_response_start_and_refuse_image_prompts():
    from rlhfv.data.shapes import ShapesVQA
    from rlhfv.models.hf_vlm import tiny_qwen2_vl
    from rlhfv.models.reward_head import ScalarRewardModel, hidden_size
    from rlhfv.models.text_lm import tiny_text_lm
    from rlhfv.rewards.scalar import score_responses
    from rlhfv.types import Prompt

    chat = tiny_text_lm(seed=0)
    rm = ScalarRewardModel(chat.module, hidden_size(chat.module, chat.pad_token_id)).eval()
    cpu = torch.device("cpu")
    tail = " the shapes are red and blue, which one is on the left?"
    prompts = [
        Prompt("first a long story about a circle" + tail),
        Prompt("then another, about squares" + tail),
    ]
    responses = ["the red one, and more words follow here", "the red one, then other words entirely"]

    def scores(caps: tuple[int, int], which: str) -> torch.Tensor:
        with torch.no_grad():
            if which == "prompts":  # the same response after two prompts that differ at the start
                return score_responses(chat, rm, prompts, [responses[0]] * 2, cpu, *caps)
            return score_responses(chat, rm, [prompts[0]] * 2, responses, cpu, *caps)  # differ at the end

    assert not torch.allclose(*scores((0, 0), "prompts"))  # uncapped, the openings count ...
    torch.testing.assert_close(*scores((12, 0), "prompts"))  # ... and the last 12 tokens are the same
    assert not torch.allclose(*scores((0, 0), "responses"))
    torch.testing.assert_close(*scores((0, 4), "responses"))  # the first 4 response tokens are the same
    vlm = tiny_qwen2_vl(seed=0)
    vlm_rm = ScalarRewardModel(vlm.module, hidden_size(vlm.module, vlm.pad_token_id))
    with pytest.raises(ValueError, match="carry images"):
        score_responses(vlm, vlm_rm, [ShapesVQA(1)[0].prompt], ["two"], cpu, 4, 0)


def test_scalar_rm_takes_the_missing_eos_penalty_off_cut_completions_only(tmp_path):
    import dataclasses

    from rlhfv.data.shapes import ShapesVQA
    from rlhfv.models.text_lm import tiny_text_lm
    from rlhfv.rewards import ScalarRM
    from rlhfv.rollout import generate

    run_rm(tmp_path / "rm", steps=1)
    rollout = generate(tiny_text_lm(seed=1), [ShapesVQA(2)[i].prompt for i in range(2)], 2, 6, 1.0)
    rollout = dataclasses.replace(rollout, complete=torch.tensor([True, False, True, False]))
    plain = ScalarRM(str(tmp_path / "rm" / "final"), device="cpu")(rollout)
    penalised = ScalarRM(str(tmp_path / "rm" / "final"), device="cpu", missing_eos_penalty=2.5)(rollout)
    torch.testing.assert_close(plain - penalised, torch.tensor([0.0, 2.5, 0.0, 2.5]))
