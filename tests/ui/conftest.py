"""Helpers for driving annotation_ui/app.py with Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfv.store.store import Store


@pytest.fixture
def store(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A store with one admin and two annotators, which the app under test opens through RLHFV_DB
    (on SQLite and on PostgreSQL: `database_url`)."""
    s = Store(database_url, media_dir=tmp_path / "media")
    s.add_user("boss", "boss-password", "admin")
    s.add_user("ann", "ann-password")
    s.add_user("bob", "bob-password")
    monkeypatch.setenv("RLHFV_DB", s.url)
    monkeypatch.setenv("RLHFV_MEDIA", str(s.media_dir))
    monkeypatch.setenv("RLHFV_RUNS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("RLHFV_EXPORTS", str(tmp_path / "exports"))
    return s
