"""GRPO under DeepSpeed ZeRO-2 and ZeRO-3 with two CPU processes (gloo), launched by torchrun."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfv.models.text_lm import tiny_text_lm
from rlhfv.training.metrics import read_metrics
from tests.pipelines.test_grpo import tiny_recipe

pytest.importorskip("deepspeed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_grpo_trains_with_two_processes_under_zero(tmp_path, stage):
    recipe = tiny_recipe(
        tmp_path, {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}, drop_eval=True
    )
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "rlhfv.cli",
        "run",
        recipe,
        f"zero_stage={stage}",
        f"run.dir={out}",
        "run.device=cpu",
        "run.save_every=0",
        "steps=2",
        "prompts_per_step=2",
        "group_size=3",
        "max_new_tokens=4",
        "micro_batch_size=3",
        "train_data.size=32",
        "train_data.image_size=24",
        "log_rollouts_every=1",
        "optimizer.lr=0.01",
        "reward._component_=rlhfv.rewards.rules.CallableReward",
        "reward.function=tests.pipelines.test_grpo.text_length",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["perf/processes"] == 2 for r in rows)
    assert "loss/policy" in rows[-1]
    # the gathered final weights moved away from the initial ones
    from rlhfv.models.base import load_model

    after = load_model(str(out / "final")).module.state_dict()
    before = tiny_text_lm(seed=0).module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
