"""SFT: the SFT recipe's tiny variant learns, and a SIGKILLed run resumes step for step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfv.cli import main as cli
from rlhfv.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
SFT_RECIPE = str(ROOT / "recipes" / "sft_shapes.yaml")
TINY = [
    "train_data.size=64",
    "eval_data.size=8",
    "batch_size=4",
    "eval_batch_size=8",
    "warmup_steps=2",
    "log_every=1",
    "eval_every=0",
    "max_new_tokens=6",
]


def run_cli(run_dir: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "rlhfv.cli", "run", SFT_RECIPE, *TINY, f"run.dir={run_dir}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkilled_run_resumes_with_identical_metrics(tmp_path):
    steps = ["steps=14", "run.save_every=3", "run.resume=auto"]
    reference = run_cli(tmp_path / "ref", *steps)
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-2000:]

    victim = run_cli(tmp_path / "kill", *steps)
    deadline = time.time() + 300
    while not (tmp_path / "kill" / "step_6").is_dir():  # let it pass two checkpoints, then kill it
        assert victim.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "kill" / "summary.json").exists()

    resumed = run_cli(tmp_path / "kill", *steps)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    expected = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    got = read_metrics(tmp_path / "kill" / "metrics.jsonl")

    def strip(rows: list[dict]) -> list[dict]:  # wall-clock figures differ by nature
        return [{k: v for k, v in r.items() if k != "perf/tokens_per_s"} for r in rows]

    assert [r["step"] for r in got] == [r["step"] for r in expected]
    assert strip(got) == strip(expected)
    assert json.loads((tmp_path / "kill" / "summary.json").read_text()) == json.loads(
        (tmp_path / "ref" / "summary.json").read_text()
    )


def test_existing_run_is_not_overwritten_without_being_asked(tmp_path, capsys):
    args = ["run", SFT_RECIPE, *TINY, "steps=2", "run.save_every=1", f"run.dir={tmp_path}"]
    assert cli(args) == 0
    with pytest.raises(RuntimeError, match="run.resume=auto"):
        cli(args + ["run.resume=never"])


@pytest.mark.slow
def test_sft_recipe_tiny_variant_lowers_the_loss_and_saves_a_loadable_model(tmp_path):
    from rlhfv.models.base import load_model

    args = ["run", SFT_RECIPE, *TINY, "steps=30", "train_data.size=200", f"run.dir={tmp_path}"]
    assert cli(args) == 0
    losses = [r["loss/sft"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss/sft" in r]
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
    model = load_model(str(tmp_path / "final"))
    assert sum(p.numel() for p in model.module.parameters()) > 0
