"""Multi-stage recipes on several processes and nodes, launched as a user would (torchrun, gloo, CPU).

Every launch runs under a timeout, so a hang fails the test instead of stalling CI. "Two nodes"
are two torchrun invocations on this machine (`--nnodes 2 --node_rank 0|1`); a node that runs in
its own working folder with a relative `run.dir` stands for a node without the shared filesystem.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfv.models.base import load_model
from rlhfv.training.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
GRPO_SHAPES = str(ROOT / "recipes" / "grpo_shapes.yaml")
TINY_GRPO_SHAPES = [  # SFT then GRPO, a few steps each, on 2 prompts a step (global: 1 a rank)
    "run.device=cpu",
    "stages.sft.steps=2",
    "stages.sft.batch_size=4",
    "stages.sft.warmup_steps=0",
    "stages.sft.train_data.size=16",
    "stages.sft.eval_data.size=4",
    "stages.grpo.steps=3",
    "stages.grpo.prompts_per_step=2",
    "stages.grpo.group_size=2",
    "stages.grpo.max_new_tokens=4",
    "stages.grpo.train_data.size=16",
    "stages.grpo.eval_data.size=4",
    "stages.grpo.eval_every=0",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], port: int, nproc: int = 2, node_rank: int | None = None) -> list[str]:
    nodes = (
        ["--nnodes", "2", "--node_rank", str(node_rank), "--master_addr", "127.0.0.1"]
        if node_rank is not None
        else []
    )
    return [
        sys.executable, "-m", "torch.distributed.run", *nodes, "--nproc_per_node", str(nproc),
        "--master_port", str(port), "-m", "rlhfv.cli", "run", *args,
    ]  # fmt: skip


def launch(args: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun(args, free_port(), **kw), env=ENV, capture_output=True, text=True, timeout=timeout
    )


def two_nodes(
    args: list[str], timeout: float, cwds=(None, None), extra=((), ())
) -> list[tuple[int, str, float]]:
    """Start node 0 and node 1 (one process each) at once; (exit code, output, seconds) per node."""
    port, start = free_port(), time.monotonic()
    nodes = [
        subprocess.Popen(
            torchrun([*args, *extra[rank]], port, nproc=1, node_rank=rank),
            env=ENV, cwd=cwds[rank], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    results = []
    try:
        for node in nodes:
            out, _ = node.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
            results.append((node.returncode, out, time.monotonic() - start))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    return results


def assert_stage_finished(stage_dir: Path) -> list[dict]:
    """One writer: a summary, a final model that loads, and one metrics row per logged step."""
    assert json.loads((stage_dir / "summary.json").read_text()) is not None
    load_model(str(stage_dir / "final"))
    rows = read_metrics(stage_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"{stage_dir}: metrics rows {steps} (two writers?)"
    assert not list(stage_dir.glob(".*tmp*")), "a save was left half-way"
    return rows


@pytest.mark.slow
def test_two_processes_run_sft_then_grpo_and_only_rank_0_writes(tmp_path):
    done = launch([GRPO_SHAPES, *TINY_GRPO_SHAPES, f"run.dir={tmp_path}"], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_stage_finished(tmp_path / "sft")
    rows = assert_stage_finished(tmp_path / "grpo")
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2, 3]
    assert done.stdout.count('"grpo"') == 1  # one process reports the results


@pytest.mark.slow
def test_the_flagship_runs_every_stage_on_two_processes(tmp_path):
    from tests.recipes.test_grlhfv_recipes import tiny_flagship

    overrides = [
        *tiny_flagship(tmp_path),
        "run.device=cpu",
        "stages.grm_rl.prompts_per_step=2",  # a global batch that 2 processes split
        "stages.policy_rl.prompts_per_step=2",
    ]
    done = launch([str(ROOT / "recipes" / "grlhfv_shapes.yaml"), *overrides], timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("policy_sft", "grm_drill", "grm_warmup", "grm_sft", "grm_refine", "grm_rl", "policy_rl"):
        assert_stage_finished(tmp_path / stage)


@pytest.mark.slow
def test_two_nodes_on_one_machine_run_three_grpo_steps(tmp_path):
    nodes = two_nodes([GRPO_SHAPES, *TINY_GRPO_SHAPES, f"run.dir={tmp_path}"], timeout=300)
    for code, out, _ in nodes:
        assert code == 0, out[-3000:]
    rows = assert_stage_finished(tmp_path / "grpo")
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2, 3]
    assert all(r["perf/processes"] == 2 for r in rows if "reward/mean" in r)


@pytest.mark.slow
def test_a_node_that_cannot_see_an_earlier_stage_stops_every_node_naming_the_folder(tmp_path):
    # a relative run.dir in two working folders: node 1 never sees what rank 0 writes
    cwds = (tmp_path / "node0", tmp_path / "node1")
    for folder in cwds:
        folder.mkdir()
    nodes = two_nodes([GRPO_SHAPES, *TINY_GRPO_SHAPES, "run.dir=run"], timeout=300, cwds=cwds)
    for code, out, _ in nodes:
        assert code != 0
        assert "rank 1 on" in out and "needs run/sft/final (policy.path)" in out, out[-3000:]
        assert "shared filesystem" in out
    assert (cwds[0] / "run" / "sft" / "summary.json").is_file()  # node 0 finished the SFT stage
    assert not (cwds[0] / "run" / "grpo").exists()  # and no node started GRPO
    assert not (cwds[1] / "run").exists()  # rank 1 wrote nothing


@pytest.mark.slow
def test_recipes_that_differ_between_ranks_stop_every_rank_before_any_work(tmp_path):
    args = [GRPO_SHAPES, *TINY_GRPO_SHAPES, f"run.dir={tmp_path / 'run'}"]
    nodes = two_nodes(args, timeout=120, extra=((), ("stages.grpo.steps=4",)))
    for code, out, seconds in nodes:
        assert code != 0 and seconds < 60
        assert "differs between processes: rank(s) [1] differ from rank 0" in out, out[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_rank_that_raises_is_named_and_no_rank_hangs(tmp_path):
    recipe = tmp_path / "failing.yaml"
    recipe.write_text(
        f"pipeline: tests.distributed.failing_pipeline.main\nrun: {{dir: {tmp_path / 'run'}, device: cpu}}\n"
    )
    start = time.monotonic()
    done = launch([str(recipe)], timeout=120)
    assert done.returncode != 0 and time.monotonic() - start < 60
    assert "rank 1 on" in done.stderr and "failed: RuntimeError: this rank fails on purpose" in done.stderr, (
        done.stderr[-3000:]
    )
    assert not (tmp_path / "run" / "summary.json").exists()
