"""SPCT rejective fine-tuning: which trajectories are kept, and the tiny recipe end to end."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlhfv.cli import main as cli
from rlhfv.models.base import ChatModel
from rlhfv.models.text_lm import tiny_text_lm
from rlhfv.pipelines.spct import SPCTConfig, rejective_sample, trajectory_example
from rlhfv.types import PreferencePair, Prompt

ROOT = Path(__file__).resolve().parents[2]


class ScriptedJudge(torch.nn.Module):
    """Reads each judge prompt and answers by a rule on the question (a stand-in sampler):
    'easy' → always right; 'hard' → right only when the good response is shown first;
    'impossible' → no scores; a hinted prompt → follows the hint."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.weight = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def generate(self, input_ids, attention_mask, **kwargs):  # the settings come in generation_config
        rows = []
        for prompt in self.tokenizer.batch_decode(input_ids, skip_special_tokens=True):
            shown = re.findall(r"\[Response \d\]\n(.*?)\n\[End", prompt)
            hint = re.search(r"The best response is: Response (\d)", prompt)
            good = shown.index("good") if "good" in shown else 0
            if hint:
                best = int(hint.group(1)) - 1
            elif "impossible" in prompt:
                best = None
            elif "hard" in prompt:
                best = 0  # position bias: right only when the good answer comes first
            else:
                best = good
            text = (
                "Analysis: fine." if best is None else f"Scores: \\boxed{{{'9, 2' if best == 0 else '2, 9'}}}"
            )
            rows.append(
                self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            )
        width = max(len(r) for r in rows)
        new = torch.full((len(rows), width), self.tokenizer.pad_token_id)
        for i, r in enumerate(rows):
            new[i, : len(r)] = torch.tensor(r)
        return torch.cat([input_ids, new], dim=1)


def scripted_sampler() -> ChatModel:
    tiny = tiny_text_lm(seed=0)
    return ChatModel(ScriptedJudge(tiny.tokenizer), tiny.tokenizer, tiny.encoder, tiny.loader)


class Pairs:
    def __init__(self, questions: list[str]):
        self.pairs = [
            PreferencePair(Prompt(q), ["good", "bad"] if i % 2 else ["bad", "good"], i % 2 == 0, str(i))
            for i, q in enumerate(questions)
        ]
        for p in self.pairs:
            p.preferred = p.responses.index("good")

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return self.pairs[i]


def test_rejective_sampling_drops_too_easy_items_and_incorrect_trajectories():
    pairs = Pairs(["easy", "hard", "impossible"])
    cfg = SPCTConfig(samples_per_item=4, hinted=True, sample_batch_size=64, max_new_tokens=16)
    kept, stats = rejective_sample(
        scripted_sampler(), pairs, cfg, random.Random(2)
    )  # seed 2 shows the hard item in both orders
    by_item = {i: [r for r in kept if r["item"] == i] for i in range(3)}
    # easy: 4/4 correct → the whole item is dropped (SPCT: "too easy").
    assert by_item[0] == [] and stats["rft/items_too_easy"] == 1
    # hard: only samples that showed the good answer first are correct; those (and the hint) stay.
    hard = by_item[1]
    assert hard and all(r["hinted"] or r["order"][0] == pairs[1].preferred for r in hard)
    # impossible: no sample parses; only the correct hinted sample is kept.
    assert [r["hinted"] for r in by_item[2]] == [True]
    assert stats["rft/parse_failure_rate"] == pytest.approx(4 / 12)  # the 4 impossible samples of 12


def tiny_rft_recipe(tmp_path: Path, sampler: str, pairs: int) -> Path:
    """spct_rft_hh.yaml with a tiny GRM, the named sampler of this module and `pairs` ShapesPairs."""
    recipe = OmegaConf.load(ROOT / "recipes" / "spct_rft_hh.yaml")
    recipe.grm = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 1}
    recipe.sampler = {"_component_": f"{__name__}.{sampler}"}
    recipe.pairs = {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": pairs}
    path = tmp_path / "spct_tiny.yaml"
    path.write_text("# tiny variant\n" + OmegaConf.to_yaml(recipe))
    return path


def failing_sampler() -> ChatModel:
    raise AssertionError("the sampler was built although the trajectories were already sampled")


def test_a_rerun_without_checkpoint_trains_on_the_trajectories_already_sampled(tmp_path):
    """Sampling ends by writing rft_trajectories.jsonl; a run stopped in SFT before any
    checkpoint must not sample again (minutes of engine time) when started again."""
    path = tiny_rft_recipe(tmp_path, "failing_sampler", pairs=2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [
        {"item": i, "order": [0, 1], "text": "Fine.\nScores: \\boxed{7, 3}", "hinted": False} for i in (0, 1)
    ]
    (run_dir / "rft_trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "run",
        str(path),
        f"run.dir={run_dir}",
        "steps=1",
        "batch_size=2",
        "warmup_steps=0",
        "log_every=1",
    ]
    assert cli(args) == 0
    assert (run_dir / "final" / "rlhfv_model.json").is_file()


@pytest.mark.slow
def test_spct_rft_recipe_tiny_variant_trains_on_kept_trajectories(tmp_path):
    path = tiny_rft_recipe(tmp_path, "scripted_sampler", pairs=6)
    run_dir = tmp_path / "run"
    args = [
        "run",
        str(path),
        f"run.dir={run_dir}",
        "steps=3",
        "batch_size=2",
        "max_new_tokens=16",
        "warmup_steps=0",
        "log_every=1",
    ]
    assert cli(args) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    kept = (run_dir / "rft_trajectories.jsonl").read_text().splitlines()
    assert summary["rft/trajectories"] == len(kept) > 0
    assert (run_dir / "final" / "rlhfv_model.json").is_file()
    losses = [
        json.loads(line)["loss/sft"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if "loss/sft" in line
    ]
    assert len(losses) == 3 and losses[-1] < losses[0]


@pytest.mark.slow
def test_spct_rl_recipe_tiny_variant_runs_grpo_with_the_plus_minus_one_reward(tmp_path):
    recipe = OmegaConf.load(ROOT / "recipes" / "spct_rl_hh.yaml")
    recipe.policy = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 1}
    recipe.train_data.pairs = {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": 4}
    path = tmp_path / "spct_rl_tiny.yaml"
    path.write_text("# tiny variant\n" + OmegaConf.to_yaml(recipe))
    args = [
        "run",
        str(path),
        f"run.dir={tmp_path / 'run'}",
        "steps=1",
        "prompts_per_step=2",
        "group_size=2",
        "max_new_tokens=4",
        "kl_coef=0.0",
    ]
    assert cli(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    assert rewards == [-1.0]  # a random tiny judge never writes a box: every judgement earns −1


@pytest.mark.slow
def test_meta_rm_pipeline_learns_from_the_judges_own_samples_and_feeds_eval(tmp_path):
    from rlhfv.grm.meta_rm import load_meta_rm, meta_rm_scores

    recipe = OmegaConf.create(
        {
            "pipeline": "rlhfv.pipelines.spct.meta_rm_main",
            "grm": {"_component_": f"{__name__}.scripted_sampler"},
            "meta_base": {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 3},
            "pairs": {"_component_": f"{__name__}.mixed_pairs"},
            "optimizer": {"_component_": "torch.optim.AdamW", "lr": 0.01},
            "samples_per_item": 4,
            "steps": 25,
            "batch_size": 8,
            "log_every": 1,
        }
    )
    path = tmp_path / "meta.yaml"
    path.write_text("# tiny variant\n" + OmegaConf.to_yaml(recipe))
    assert cli(["run", str(path), f"run.dir={tmp_path / 'run'}"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # 'easy' items: every judgement right; 'impossible' items: every judgement unparsable, so wrong.
    assert summary["meta_rm/positive_rate"] == 0.5
    meta = load_meta_rm(str(tmp_path / "run" / "final"))
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "meta_rm_samples.jsonl").read_text().splitlines()
    ]
    prompts = [trajectory_example(mixed_pairs(), r, None).prompt for r in rows]  # as the meta-RM saw them
    scores = meta_rm_scores(meta, prompts, [r["text"] for r in rows])
    right = [s for s, r in zip(scores, rows, strict=True) if r["correct"]]
    wrong = [s for s, r in zip(scores, rows, strict=True) if not r["correct"]]
    assert min(right) > max(wrong)  # the trained head ranks every right judgement above every wrong one


def mixed_pairs() -> Pairs:
    return Pairs(["easy", "impossible"] * 2)


@pytest.mark.slow
def test_spct_textchecks_recipe_tiny_variant_runs_rft_meta_rm_and_rl_on_textchecks_pairs(tmp_path):
    """Every stage of recipes/spct_textchecks.yaml with tiny models on 4 TextChecks pairs."""
    recipe = OmegaConf.load(ROOT / "recipes" / "spct_textchecks.yaml")
    tiny = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 1}
    recipe.stages.rft.grm = tiny
    recipe.stages.meta_rm.meta_base = tiny
    recipe.stages.rft.pairs.size = recipe.stages.meta_rm.pairs.size = (
        recipe.stages.rl.train_data.pairs.size
    ) = 4
    path = tmp_path / "spct_textchecks_tiny.yaml"
    path.write_text("# tiny variant\n" + OmegaConf.to_yaml(recipe))
    small = ["steps=2", "batch_size=2", "max_new_tokens=8", "log_every=1"]
    args = ["run", str(path), f"run.dir={tmp_path}"]
    args += [f"stages.{stage}.{kv}" for stage in ("rft", "meta_rm") for kv in small]
    args += [
        "stages.rl.steps=1",
        "stages.rl.prompts_per_step=2",
        "stages.rl.group_size=2",
        "stages.rl.max_new_tokens=4",
    ]
    assert cli(args) == 0
    kept = (tmp_path / "rft" / "rft_trajectories.jsonl").read_text().splitlines()
    assert kept  # forced scores give the tiny judge parsable samples; correct ones are kept
    assert (tmp_path / "meta_rm" / "final").is_dir() and (
        tmp_path / "rl" / "final" / "rlhfv_model.json"
    ).is_file()
