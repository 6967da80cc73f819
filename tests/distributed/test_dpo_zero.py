"""DPO under DeepSpeed ZeRO-2 and ZeRO-3 with two CPU processes (gloo), launched by torchrun: the
global batch of 4 pairs split over the two processes is what one process takes in two micro-batches
of 2 (grad_accum 2), so the losses match."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhfv.training.metrics import read_metrics

pytest.importorskip("deepspeed")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe(folder: Path) -> Path:
    cfg = {
        "pipeline": "rlhfv.pipelines.dpo.main",
        "run": {"seed": 0, "device": "cpu", "cpu_threads": 1},
        "policy": {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0},
        "train_data": {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": 16, "image_size": 24},
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 0.01},
        "steps": 2,
        "batch_size": 2,
        "beta": 0.5,
        "log_every": 1,
    }
    path = folder / "dpo_tiny.yaml"
    OmegaConf.save(OmegaConf.create(cfg), path)
    return path


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_dpo_under_zero_matches_one_process_with_the_same_pairs(tmp_path, stage):
    path = recipe(tmp_path)
    zero, single = tmp_path / "zero", tmp_path / "single"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    run([*launch, "--master_port", str(free_port()), "-m", "rlhfv.cli", "run", str(path),
         f"zero_stage={stage}", "batch_size=4", f"run.dir={zero}"])  # fmt: skip
    run([sys.executable, "-m", "rlhfv.cli", "run", str(path), "grad_accum=2", f"run.dir={single}"])
    got, expected = read_metrics(zero / "metrics.jsonl"), read_metrics(single / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2]
    for a, b in zip(got, expected, strict=True):  # step 2 also checks that ZeRO averaged the gradients
        assert a["loss/dpo"] == pytest.approx(b["loss/dpo"], rel=1e-4)
        assert a["reward/margin"] == pytest.approx(b["reward/margin"], rel=1e-3, abs=1e-6)
    assert (zero / "final" / "rlhfv_model.json").is_file()
