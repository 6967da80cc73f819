"""kill -9 of one rank of a 2-process run, then a relaunch with run.resume=auto: the metrics equal
those of an uninterrupted 2-process run, step for step, under DDP and FSDP2."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from rlhfv.training.metrics import read_metrics
from tests.distributed.launch import ROOT, env, free_port, torchrun
from tests.distributed.test_equivalence import recipe

STEPS = ["steps=24", "run.save_every=4", "run.resume=auto", "log_every=1"]


def strip(rows: list[dict]) -> list[dict]:  # wall-clock figures differ by nature
    return [{k: v for k, v in r.items() if not k.startswith("perf/") or k == "perf/processes"} for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_run_whose_rank_was_killed_resumes_like_an_uninterrupted_one(tmp_path, strategy):
    path = recipe(tmp_path, "sft")
    args = ["run", str(path), *STEPS, f"strategy={strategy}"]
    torchrun([*args, f"run.dir={tmp_path / 'ref'}"])

    victim_dir = tmp_path / "kill"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), str(ROOT / "tests" / "distributed" / "launch.py"), *args, f"run.dir={victim_dir}"]  # fmt: skip
    launcher = subprocess.Popen(
        cmd, env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (victim_dir / "step_8").is_dir():  # two checkpoints written: kill one rank
        assert launcher.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    ranks = psutil.Process(launcher.pid).children()
    assert len(ranks) == 2
    ranks[-1].send_signal(signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    assert not (victim_dir / "summary.json").exists()

    torchrun([*args, f"run.dir={victim_dir}"])
    expected = strip(read_metrics(tmp_path / "ref" / "metrics.jsonl"))
    got = strip(read_metrics(victim_dir / "metrics.jsonl"))
    assert [r["step"] for r in got] == list(range(1, 25))
    assert got == expected
