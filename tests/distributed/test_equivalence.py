"""Two processes on gloo (torchrun) against one: at step 1, 2 ranks × half the global batch give the
loss and gradient norm of 1 rank × the whole batch (float32, within 1e-5), for sft, dpo and grpo
(a rule reward and a grouped-comparison judge reward), under DDP, ZeRO-2, ZeRO-3 and FSDP2.

A run that silently trained two replicas (no process group, or DDP missing) would log the loss and
gradient norm of half the batch, so these also check the world size and the gradient averaging;
every collective is checked for the training device (`launch.check_devices`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhfv.training.metrics import read_metrics
from tests.distributed.launch import run, torchrun

pytest.importorskip("deepspeed")

TEXT_LM = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
RUN = {"seed": 0, "device": "cpu", "cpu_threads": 1, "save_every": 0}
RECIPES = {
    "sft": {
        "pipeline": "rlhfv.pipelines.sft.main",
        "policy": TEXT_LM,
        "train_data": {"_component_": "rlhfv.data.shapes.ShapesVQA", "size": 16, "image_size": 24},
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 0.01},
        "steps": 2, "batch_size": 4, "warmup_steps": 0, "schedule": "constant", "log_every": 1,
    },
    "dpo": {
        "pipeline": "rlhfv.pipelines.dpo.main",
        "policy": TEXT_LM,
        "train_data": {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": 16, "image_size": 24},
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 0.01},
        "steps": 2, "batch_size": 4, "beta": 0.5, "log_every": 1,
    },
    "grpo_rule": {
        "pipeline": "rlhfv.pipelines.grpo.main",
        "policy": TEXT_LM,
        "train_data": {"_component_": "rlhfv.data.shapes.ShapesVQA", "size": 16, "image_size": 24},
        "reward": {"_component_": "rlhfv.rewards.rules.CallableReward",
                   "function": "tests.pipelines.test_grpo.text_length"},
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 0.01},
        "steps": 2, "prompts_per_step": 4, "group_size": 3, "max_new_tokens": 5,
        "log_rollouts_every": 0, "rollout": {"seed_per_prompt": True},
    },
}  # fmt: skip
RECIPES["grpo_judge"] = {
    **RECIPES["grpo_rule"],
    "reward": {
        "_component_": "rlhfv.rewards.grouped.GroupedComparisonReward",
        "judge": {"_component_": "rlhfv.rewards.grouped.FormatJudge", "max_words": 2},
    },
}
LOSS = {"sft": "loss/sft", "dpo": "loss/dpo", "grpo_rule": "loss/policy", "grpo_judge": "loss/policy"}
STRATEGIES = {
    "ddp": ["strategy=ddp"],
    "zero2": ["zero_stage=2"],
    "zero3": ["zero_stage=3"],
    "fsdp": ["strategy=fsdp"],
}
_single: dict[str, list[dict]] = {}


def recipe(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    OmegaConf.save(OmegaConf.create({**RECIPES[name], "run": RUN}), path)
    return path


def one_process(tmp_path_factory, name: str) -> list[dict]:
    """The single-process run of a recipe, once per test session."""
    if name not in _single:
        folder = tmp_path_factory.mktemp(f"single_{name}")
        run(
            [sys.executable, "-m", "rlhfv.cli", "run", str(recipe(folder, name)), f"run.dir={folder / 'run'}"]
        )
        _single[name] = read_metrics(folder / "run" / "metrics.jsonl")
    return _single[name]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("name", list(RECIPES))
def test_two_ranks_with_half_the_batch_each_match_one_rank_with_all_of_it(
    tmp_path, tmp_path_factory, name, strategy
):
    out = tmp_path / "run"
    torchrun(["run", str(recipe(tmp_path, name)), f"run.dir={out}", *STRATEGIES[strategy]])
    got, expected = read_metrics(out / "metrics.jsonl"), one_process(tmp_path_factory, name)
    trained = lambda rows: [r for r in rows if LOSS[name] in r]  # noqa: E731
    got, expected = trained(got), trained(expected)
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [1, 2]
    assert got[0]["perf/processes"] == 2
    for key in (LOSS[name], "optim/grad_norm"):
        assert got[0][key] == pytest.approx(expected[0][key], rel=1e-5, abs=1e-6), key
    # step 2 starts from the weights step 1 made: the averaged update was the one-process update
    assert got[1][LOSS[name]] == pytest.approx(expected[1][LOSS[name]], rel=1e-4, abs=1e-6)
    assert (out / "final" / "rlhfv_model.json").is_file()


@pytest.mark.slow
def test_dynamic_sampling_keeps_every_rank_on_the_same_rounds_and_micro_batches_under_zero3(tmp_path):
    # "How many" groups get equal rewards: the ranks find different numbers of groups that differ,
    # and ZeRO-3 hangs unless they run the same sampling rounds and train as many micro-batches
    out = tmp_path / "run"
    flat = "reward.function=tests.pipelines.test_grpo.flat_for_counting"
    torchrun(["run", str(recipe(tmp_path, "grpo_rule")), f"run.dir={out}", "zero_stage=3", flat,
              "dynamic_sampling=2", "micro_batch_size=3", "train_data.size=32"])  # fmt: skip
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "rollout/trained_groups" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["rollout/trained_groups"] in (0.0, 1.0, 2.0) for r in rows)  # of each rank's 2 prompts
