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


POSTGRES_URL = os.environ.get("RLHFV_TEST_POSTGRES_URL")  # .ci/run sets it (.ci/postgres)


def empty_postgres(url: str) -> None:
    """Drop everything in the database's public schema. Connections a finished test left open
    (a store not closed, a killed loop's) are ended first, so the drop never waits on their locks."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store database, once as a SQLite file and once on PostgreSQL: the database that
    RLHFV_TEST_POSTGRES_URL names (emptied first; `.ci/postgres` makes one), else skipped."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if not POSTGRES_URL:
        pytest.skip("set RLHFV_TEST_POSTGRES_URL to an empty PostgreSQL database (.ci/postgres makes one)")
    empty_postgres(POSTGRES_URL)
    return POSTGRES_URL
