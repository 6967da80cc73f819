"""`RemoteGRM`: a GRPO reward from a served judge; a run stops naming the URL when the server is
gone, and two training processes share one judge."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
import torch

from rlhfv.cli import main as cli
from rlhfv.rewards import RewardError
from rlhfv.rewards.remote import RemoteGRM
from rlhfv.rollout import Rollout
from rlhfv.training.checkpoint import latest_checkpoint, load_checkpoint
from rlhfv.training.metrics import read_metrics
from rlhfv.types import Prompt
from tests.pipelines.test_grpo import tiny_recipe
from tests.serve.judges import ROOT, free_port, grm_server
from tests.serve.test_grm_server import GROUPS, in_process_grouped

TEXT_POLICY = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
GRPO = [
    "train_data.size=32", "train_data.image_size=24", "prompts_per_step=2", "group_size=3",
    "max_new_tokens=4", "log_rollouts_every=0", "run.device=cpu", "optimizer.lr=0.01",
    "reward._component_=rlhfv.rewards.remote.RemoteGRM", "reward.retries=1", "reward.backoff_s=0.1",
    "reward.timeout_s=30",
    "stop_strings=[e,a,o,t]",  # a random policy rarely ends by itself: only complete completions are compared
]  # fmt: skip


def rollout_of(groups, complete=None):
    g = len(groups[0][1])
    n = g * len(groups)
    return Rollout(
        prompts=[Prompt(q) for q, _ in groups], labels=[""] * len(groups), prompt_batch={},
        completion_ids=torch.zeros(n, 0, dtype=torch.long), completion_mask=torch.zeros(n, 0),
        texts=[t for _, texts in groups for t in texts],
        complete=torch.ones(n, dtype=torch.bool) if complete is None else torch.tensor(complete), group_size=g,
    )  # fmt: skip


@pytest.fixture(scope="module")
def url(judge_folder):
    with grm_server(judge_folder) as address:
        yield address


def test_remote_grm_gives_the_in_process_grouped_reward_and_fills_the_judgments(url, judge_model):
    rollout = rollout_of(GROUPS)
    rewards = RemoteGRM(url)(rollout)
    assert rewards.tolist() == [r for group in in_process_grouped(judge_model, GROUPS) for r in group]
    assert len(rollout.judgments) == 2 and len(rollout.judgments[0]) == 6


def test_remote_grm_pointwise_scores_complete_completions_and_gives_incomplete_ones_zero(url):
    complete = [True, False, True, True, False, False, False, False]
    rewards = RemoteGRM(url, mode="pointwise")(rollout_of(GROUPS, complete)).tolist()
    assert rewards[1] == 0.0 and rewards[4:] == [0.0] * 4  # the second group has one complete completion
    assert all(1.0 <= r <= 10.0 for i, r in enumerate(rewards) if complete[i])


def test_a_run_whose_server_is_gone_stops_naming_the_url_and_keeps_its_checkpoint(tmp_path, judge_folder):
    recipe = tiny_recipe(tmp_path, TEXT_POLICY, drop_eval=True)
    out = tmp_path / "run"
    with grm_server(judge_folder) as address:
        common = [*GRPO, f"reward.url={address}", f"run.dir={out}", "run.save_every=1"]
        assert cli(["run", recipe, *common, "steps=1"]) == 0
    with pytest.raises(
        RewardError, match=f"RemoteGRM\\({address}\\).*{address}/v1/grouped did not answer after 2 tries"
    ):
        cli(["run", recipe, *common, "steps=2", "run.resume=auto"])
    ckpt = latest_checkpoint(out)
    assert ckpt.name == "step_1" and load_checkpoint(ckpt)[0] == 1


@pytest.mark.slow
def test_two_training_processes_share_one_judge(tmp_path, url):
    """torchrun, 2 processes on gloo (DeepSpeed ZeRO-2, the multi-process path the pipeline has),
    each rewarding its own prompts through the same server."""
    pytest.importorskip("deepspeed")
    info = httpx.get(url + "/info").json()["batching"]
    rows_before = round(info["rows_per_call"] * info["judge_calls"])
    recipe = tiny_recipe(tmp_path, TEXT_POLICY, drop_eval=True)
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        "-m", "rlhfv.cli", "run", recipe, *GRPO, f"reward.url={url}", f"run.dir={out}", "zero_stage=2",
        "run.save_every=0", "steps=2", "micro_batch_size=3",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(r["perf/processes"] == 2 for r in rows)
    info = httpx.get(url + "/info").json()["batching"]
    # 2 processes × 2 steps × 2 prompts × 3 pairs (G = 3), unless a completion was cut short
    judged = round(info["rows_per_call"] * info["judge_calls"]) - rows_before
    assert 0 < judged <= 24
    assert any(r["reward/mean"] > 0 for r in rows)  # judged completions score 1-10, uncompared ones 0
