"""Shared test fixtures: the read-only real data beside the repository, and quiet threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RLHFV_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Tiny models gain nothing from a second thread and stall on one when the cores are busy.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip: a user's fresh clone does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set RLHFV_SHARED_DATA to use another)")
    return SHARED_DATA
