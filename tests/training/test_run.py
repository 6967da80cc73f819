"""The run folder on several processes: rank 0 alone writes, and a run is finished only when it says so."""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from rlhfv.config import RunConfig
from rlhfv.training.run import Run


def run_config(run_dir, **run):
    return OmegaConf.create(
        {"run": OmegaConf.merge(OmegaConf.structured(RunConfig), {"dir": str(run_dir), **run})}
    )


def test_a_process_other_than_rank_0_writes_nothing_and_seeds_by_its_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # no process group: the launcher's environment alone
    run = Run(run_config(tmp_path / "run", seed=5, save_every=1))
    assert not run.writes and run.start_step == 0 and torch.initial_seed() == 6
    run.log(1, {"loss/x": 1.0})
    run.maybe_save(1, lambda: {"model": {"w": torch.ones(2)}}, force=True)
    assert run.finish(None, {"done": 1.0}) == {"done": 1.0}
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_is_unfinished_until_it_writes_its_summary_again(tmp_path):
    cfg = run_config(tmp_path / "run", resume="auto", save_every=2)
    first = Run(cfg)
    assert first.writes
    first.maybe_save(2, lambda: {"model": {"w": torch.ones(2)}})
    first.finish(None, {"final_loss": 0.5})
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {"final_loss": 0.5}
    again = Run(cfg)
    assert again.start_step == 2 and torch.equal(again.state["model"]["w"], torch.ones(2))
    assert not (tmp_path / "run" / "summary.json").exists()  # a later stage must not read it now
    again.finish(None, {"final_loss": 0.25})
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {"final_loss": 0.25}
    assert not [p.name for p in (tmp_path / "run").iterdir() if "tmp" in p.name]
