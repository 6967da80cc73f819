"""Checkpoints round-trip any plain state without pickle, and a crash mid-save loses nothing."""

from __future__ import annotations

import random

import numpy as np
import torch

from rlhfv.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_nested_state_with_tensors_tuples_and_optimizer_round_trips(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "pos": (3, [1, 2]), "name": "x"}
    save_checkpoint(tmp_path, 5, state)
    step, loaded = load_checkpoint(tmp_path / "step_5")
    assert step == 5 and loaded["pos"] == (3, [1, 2]) and loaded["name"] == "x"
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_tied_weights_are_saved(tmp_path):
    w = torch.randn(4, 4)
    save_checkpoint(tmp_path, 1, {"a": w, "b": w})
    _, loaded = load_checkpoint(tmp_path / "step_1")
    assert torch.equal(loaded["a"], loaded["b"])


def test_checkpoint_files_are_not_pickles(tmp_path):
    save_checkpoint(tmp_path, 1, {"x": torch.ones(2)})
    names = sorted(p.name for p in (tmp_path / "step_1").iterdir())
    assert names == ["state.json", "tensors.safetensors"]


def test_half_written_save_leaves_the_previous_checkpoint_usable(tmp_path):
    save_checkpoint(tmp_path, 10, {"x": torch.ones(2)})
    crashed = tmp_path / ".tmp_step_20_999"  # what a kill during the next save leaves behind
    crashed.mkdir()
    (crashed / "tensors.safetensors").write_bytes(b"\x00garbage")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_10"
    (tmp_path / "latest").write_text("step_30")  # pointer to a folder that never completed
    assert latest_checkpoint(tmp_path) == tmp_path / "step_10"


def test_old_checkpoints_are_pruned(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"x": torch.ones(1) * step}, keep_last=2)
    assert list_checkpoints(tmp_path) == [3, 4]


def test_rng_state_restores_every_generator(tmp_path):
    state = rng_state()
    save_checkpoint(tmp_path, 1, {"rng": state})
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    _, loaded = load_checkpoint(tmp_path / "step_1")
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
