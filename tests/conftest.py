"""Shared test fixtures: the read-only real data beside the repository, and quiet threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RLHFV_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts on one torch thread and leaves the count as it found it (pipelines set
    `run.cpu_threads`). Tiny models are dominated by per-op overhead: a second OpenMP thread only
    adds sync cost, and on a busy 2-core machine two threads spin-wait for each other (40 training
    steps took 90 s with 2 threads, 3 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip: a user's fresh clone does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set RLHFV_SHARED_DATA to use another)")
    return SHARED_DATA
