"""The score-only reward model under DeepSpeed ZeRO-2 and ZeRO-3 with two CPU processes (gloo),
launched by torchrun: the two processes together take the pairs one process takes with grad_accum
2, so the losses match, and the saved model scores as the single-process one does."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlhfv.data.pairs import ShapesPairs
from rlhfv.models.reward_head import load_reward_model
from rlhfv.pipelines.reward_model import pairwise_accuracy
from rlhfv.training.metrics import read_metrics

pytest.importorskip("deepspeed")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe(folder: Path) -> Path:
    cfg = {
        "pipeline": "rlhfv.pipelines.reward_model.main",
        "run": {"seed": 0, "device": "cpu", "cpu_threads": 1, "save_every": 0},
        "model": {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0},
        "train_data": {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": 16, "image_size": 24},
        "eval_pairs": {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": 6, "image_size": 24, "split": "test"},
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 0.01},
        "steps": 2,
        "batch_size": 2,
        "log_every": 1,
    }
    path = folder / "rm_tiny.yaml"
    OmegaConf.save(OmegaConf.create(cfg), path)
    return path


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_reward_model_under_zero_matches_one_process_with_the_same_pairs(tmp_path, stage):
    path = recipe(tmp_path)
    zero, single = tmp_path / "zero", tmp_path / "single"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    run([*launch, "--master_port", str(free_port()), "-m", "rlhfv.cli", "run", str(path),
         f"zero_stage={stage}", "batch_size=4", f"run.dir={zero}"])  # fmt: skip
    run([sys.executable, "-m", "rlhfv.cli", "run", str(path), "grad_accum=2", f"run.dir={single}"])
    got, expected = read_metrics(zero / "metrics.jsonl"), read_metrics(single / "metrics.jsonl")
    trained = lambda rows: [r for r in rows if "loss/rm" in r]  # noqa: E731 (step 0 is the held-out eval)
    assert [r["step"] for r in trained(got)] == [1, 2]
    for a, b in zip(trained(got), trained(expected), strict=True):  # step 2: ZeRO averaged the gradients
        assert a["loss/rm"] == pytest.approx(b["loss/rm"], rel=1e-4)
        assert a["rm/margin"] == pytest.approx(b["rm/margin"], rel=1e-3, abs=1e-6)
    assert got[-1]["eval/margin"] == pytest.approx(expected[-1]["eval/margin"], rel=1e-3, abs=1e-6)
    # the saved model holds the gathered weights: it scores held-out pairs as the single run's does
    pairs = ShapesPairs(size=6, image_size=24, split="test")
    zero_rm, single_rm = (load_reward_model(str(folder / "final")) for folder in (zero, single))
    margins = [
        pairwise_accuracy(*rm, pairs, 6, torch.device("cpu"))["eval/margin"] for rm in (zero_rm, single_rm)
    ]
    assert margins[0] == pytest.approx(margins[1], rel=1e-3, abs=1e-6)
