"""A fresh SQLite store per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfv.store.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store.db")
    yield s
    s.close()
