"""A fresh store per test, on SQLite and on PostgreSQL (`database_url`, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rlhfv.store.store import Store


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Store:
    s = Store(database_url, media_dir=tmp_path / "media")
    yield s
    s.close()


@pytest.fixture
def stored_bytes(store: Store) -> Callable[[], bytes]:
    """What the test's store holds (`database_bytes`), read when called."""
    return lambda: database_bytes(store)


def database_bytes(store: Store) -> bytes:
    """Everything the database holds, as a reader of its files would see it: a SQLite file and its
    write-ahead log byte for byte; on PostgreSQL every row of every table in its text form."""
    if store.is_sqlite:
        db = Path(store.url.split(":///", 1)[1])
        return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))
    from sqlalchemy import inspect, text

    with store.engine.connect() as conn:
        tables = inspect(conn).get_table_names()
        rows = [conn.execute(text(f'SELECT CAST("{t}" AS text) FROM "{t}"')).scalars().all() for t in tables]
    return "\n".join(row for table in rows for row in table).encode()
