"""The preference store's tables and the migrations that build them, one numbered step at a time.

A database records its schema version in `meta`; opening it with newer code applies the missing
steps in one transaction, and opening it with older code fails with a message instead of guessing.
Each step lists its tables explicitly, so a later step never changes what an earlier one created.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # stored naive, always UTC


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))  # scrypt, see rlhfv.store.auth
    role: Mapped[str] = mapped_column(String(16))  # "admin" | "annotator"
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Task(Base):
    """A prompt, its images (media file names) and 2..N responses to compare."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    images: Mapped[list[Any]] = mapped_column(JSON)
    responses: Mapped[list[Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(256), default="")
    external_id: Mapped[str] = mapped_column(String(256), default="")
    overlap: Mapped[int] = mapped_column(Integer)  # independent labels wanted (k)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # re-imports add nothing
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Gold(Base):
    """The known answer of a task used to check annotators (a honeypot)."""

    __tablename__ = "gold"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    ranks: Mapped[list[Any]] = mapped_column(JSON)


class Assignment(Base):
    """A task handed to one annotator; the unique pair is what stops anyone seeing a task twice."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))  # "active" | "done" | "skipped" | "returned" | "passed"
    shown_order: Mapped[list[Any]] = mapped_column(JSON)  # response indices, left to right
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Annotation(Base):
    """One annotator's judgment of one task.

    `ranks[i]` is the rank of response i in the task's own order (0 = best; equal ranks are a
    tie), so "A / B / tie" is [0, 1] / [1, 0] / [0, 0] and a full ranking is a permutation.
    """

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    ranks: Mapped[list[Any]] = mapped_column(JSON)
    rationale: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Snapshot(Base):
    """An exported, numbered copy of the aggregated labels (added in schema version 2)."""

    __tablename__ = "snapshots"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    path: Mapped[str] = mapped_column(Text)
    pairs: Mapped[int] = mapped_column(Integer)
    annotations: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


class LoginAttempt(Base):
    """One try at logging in (added in schema version 3): the throttle counts these, admins read them.

    The password is never stored, right or wrong; `name` is what was typed, known user or not, so
    an unknown name is throttled exactly like a known one and the log does not reveal which exist.
    """

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)  # the client's IP, "" when unknown
    outcome: Mapped[str] = mapped_column(String(16))  # "ok" | "failed" | "locked" | "reset" (new password)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class LoginSession(Base):
    """A logged-in browser (schema version 3). The browser keeps a random token; only its SHA-256
    is stored, so a copy of the database cannot be replayed as a login. Deleting the row (log
    out, password change, account disabled) ends the session at the browser's next request."""

    __tablename__ = "login_sessions"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Flag(Base):
    """An annotator's report that a task is broken (schema version 4), for an admin to look at."""

    __tablename__ = "flags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Retired(Base):
    """A task an admin withdrew (schema version 4): offered to nobody, exported nowhere. Its
    labels stay in the database, so retiring can be undone."""

    __tablename__ = "retired_tasks"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    retired_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def _create(*models: type[Base]) -> Callable[[Connection], None]:
    return lambda conn: Base.metadata.create_all(
        conn, tables=[Base.metadata.tables[m.__tablename__] for m in models]
    )


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (
        1,
        "users, tasks, gold, assignments, annotations",
        _create(Meta, User, Task, Gold, Assignment, Annotation),
    ),
    (2, "export snapshots", _create(Snapshot)),
    (3, "login attempts and login sessions", _create(LoginAttempt, LoginSession)),
    (4, "flagged and retired tasks", _create(Flag, Retired)),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaError(RuntimeError):
    """The database was written by a newer rlhfv than the one opening it."""


def schema_version(conn: Connection) -> int:
    if not inspect(conn).has_table("meta"):
        return 0
    value = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
    return int(value) if value is not None else 0


def migrate(conn: Connection, target: int = SCHEMA_VERSION) -> list[int]:
    """Apply the steps between the database's version and `target`; return the ones applied."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has schema version {current}, newer than this rlhfv understands "
            f"({SCHEMA_VERSION}); upgrade rlhfv before opening it"
        )
    applied = []
    for version, _, step in MIGRATIONS:
        if current < version <= target:
            step(conn)
            applied.append(version)
    if applied:
        values = {"key": "schema_version", "value": str(applied[-1])}
        if current == 0:
            conn.execute(insert(Meta).values(**values))
        else:
            conn.execute(update(Meta).where(Meta.key == "schema_version").values(value=values["value"]))
    return applied
