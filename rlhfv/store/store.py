"""The preference store: users, tasks, race-free assignment, labels and progress.

Both the Streamlit app and the command line go through these methods; all SQL goes through the
ORM with bound parameters. SQLite (the default, a single file) runs in WAL mode with foreign keys
on, and every transaction starts with `BEGIN IMMEDIATE`, so claiming a task (read the free slots,
write the assignment) cannot interleave with another session's claim. On PostgreSQL a claim first
takes a transaction-scoped advisory lock, which serializes claims the same way (row locks alone
are not enough there: a claim that counts the free slots from a snapshot taken just before
another claim commits would over-fill a task; the concurrency test caught exactly that).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import secrets
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rlhfv.store.auth import DUMMY_HASH, hash_password, verify_password
from rlhfv.store.schema import (
    Annotation,
    Assignment,
    Flag,
    Gold,
    LoginAttempt,
    LoginSession,
    Meta,
    Retired,
    Snapshot,
    Task,
    User,
    migrate,
    utcnow,
)

logger = logging.getLogger(__name__)

ROLES = ("admin", "annotator")
CLAIM_LOCK = 0x726C686676  # PostgreSQL advisory lock key for task claims ("rlhfv")
DEFAULT_URL = "sqlite:///rlhfv_annotate/store.db"
# Assignment states: "active" (claimed), "done" (labelled), "skipped" (comes back once, after the
# rest), "returned" (a skipped task claimed again) and "passed" (skipped a second time: final).
OPEN = ("active", "returned")
GIVEN_UP = ("skipped", "passed")
GIVE_UP = {"active": "skipped", "returned": "passed"}
RETIRED = select(Retired.task_id)  # tasks an admin withdrew: never offered
# Failed logins within LOGIN_WINDOW lock an account after MAX_ACCOUNT_FAILURES (a success resets
# the count) and a client address after MAX_ADDRESS_FAILURES (over all names it tried), until the
# oldest counted failure leaves the window. Kept in the database, so a reload or a new browser
# resets nothing, and every app process sees the same counts.
LOGIN_WINDOW = timedelta(minutes=15)
MAX_ACCOUNT_FAILURES = 5
MAX_ADDRESS_FAILURES = 20
SESSION_LIFETIME = timedelta(hours=12)


@dataclass
class UserInfo:
    id: int
    name: str
    role: str
    active: bool = True


@dataclass
class NewTask:
    """A task to add. `images` are media file names (see `Store.media_dir`); `gold` is known ranks."""

    prompt: str
    responses: list[str]
    images: list[str] = field(default_factory=list)
    source: str = ""
    external_id: str = ""
    gold: list[int] | None = None


@dataclass
class TaskView:
    """What an annotator is shown: responses in `shown_order` (indices into the task's responses)."""

    id: int
    prompt: str
    images: list[Path]
    responses: list[str]
    shown_order: list[int]
    external_id: str = ""


@dataclass
class TaskProgress:
    """A task's labels so far against the `overlap` it wants (what a waiting pipeline polls)."""

    id: int
    external_id: str
    overlap: int
    labels: int


def flagged_by_them(assignment: Any) -> Any:
    """SQL: the assigned user reported this task as broken (a flag gives the task up too, but
    is no skip)."""
    return (
        select(Flag.id).where(Flag.task_id == assignment.task_id, Flag.user_id == assignment.user_id).exists()
    )


def task_fingerprint(prompt: str, images: list[str], responses: list[str]) -> str:
    return hashlib.sha256(json.dumps([prompt, images, responses], ensure_ascii=False).encode()).hexdigest()


def check_ranks(ranks: list[int], n: int) -> list[int]:
    """Ranks must give every one of the n responses a rank in 0..n-1 (equal ranks are ties)."""
    if len(ranks) != n or not all(
        isinstance(r, int) and not isinstance(r, bool) and 0 <= r < n for r in ranks
    ):
        raise ValueError(f"ranks must be {n} integers in 0..{n - 1}, got {ranks!r}")
    return [int(r) for r in ranks]


class Store:
    """A database (SQLite file or PostgreSQL URL) plus the media folder its tasks' images live in."""

    def __init__(
        self, url: str | Path = DEFAULT_URL, media_dir: str | Path | None = None, lease_minutes: float = 30.0
    ):
        url = str(url)
        if "://" not in url:  # a bare path means a SQLite file
            url = f"sqlite:///{Path(url).expanduser()}"
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            db_path = Path(url.split(":///", 1)[1]).resolve()
            db_path.parent.mkdir(parents=True, exist_ok=True)
            url = self.url = f"sqlite:///{db_path}"  # absolute, so the app's process finds the same file
            # Streamlit serves every browser session from threads of one process; each borrows a
            # connection only for one short transaction, so the pool may grow as needed.
            self.engine = create_engine(
                url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=8, max_overflow=-1
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
            default_media = db_path.parent / "media"
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
            default_media = Path("rlhfv_annotate/media")
        self.media_dir = Path(media_dir) if media_dir else default_media
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.lease = timedelta(minutes=lease_minutes)  # an unanswered claim frees its slot after this
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self.engine.begin() as conn:
            applied = migrate(conn)
        if applied:
            logger.info("store %s: applied schema steps %s", self.url, applied)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # --- users -----------------------------------------------------------------------------

    def add_user(self, name: str, password: str, role: str = "annotator") -> UserInfo:
        name = name.strip()
        if not name or len(name) > 64:
            raise ValueError(f"user name must have 1 to 64 characters, got {name!r}")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        try:
            with self.session() as s:
                user = User(name=name, password_hash=hash_password(password), role=role, active=True)
                s.add(user)
                s.flush()
                return UserInfo(user.id, user.name, user.role)
        except IntegrityError:
            raise ValueError(f"user {name!r} already exists") from None

    def authenticate(self, name: str, password: str, address: str = "") -> UserInfo | None:
        """The user if the password is right and neither the account nor the address is locked.

        Every try is recorded (name, address, time, outcome; never the password). While locked,
        even the right password is refused, so guessing gains nothing from trying faster.
        """
        name = name.strip()[:64]
        with self.session() as s:
            locked = login_retry_after(s, name, address) > 0
            user = s.scalar(select(User).where(User.name == name))
        if locked or user is None or not user.active:
            verify_password(password, DUMMY_HASH)  # same cost as a real check
            ok = False
        else:
            ok = verify_password(password, user.password_hash)
        outcome = "ok" if ok else "locked" if locked else "failed"
        if not ok:
            logger.warning(
                "refused login (%s) for %r from %s", outcome, name, address or "an unknown address"
            )
        with self.session() as s:
            s.add(LoginAttempt(name=name, address=address[:64], outcome=outcome))
        return UserInfo(user.id, user.name, user.role) if ok and user is not None else None

    def login_retry_after(self, name: str, address: str = "") -> float:
        """Seconds until this name may try again from this address (0 when it may now)."""
        with self.session() as s:
            return login_retry_after(s, name.strip()[:64], address)

    def unlock_account(self, name: str) -> None:
        """Lift the lockout of account `name` now (an admin's unlock), as a new password does;
        locks on client addresses stay."""
        with self.session() as s:
            if s.scalar(select(User.id).where(User.name == name)) is None:
                raise ValueError(f"no user {name!r}")
            s.add(LoginAttempt(name=name, address="", outcome="reset"))
        logger.info("account %r unlocked by an admin", name)

    def login_attempts(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent login tries, newest first (admins read these on the Users page)."""
        with self.session() as s:
            rows = s.scalars(select(LoginAttempt).order_by(LoginAttempt.id.desc()).limit(limit))
            return [{"name": a.name, "address": a.address, "outcome": a.outcome, "at": a.at} for a in rows]

    # --- login sessions: what keeps a browser logged in across reloads and tabs --------------

    def start_session(self, user_id: int) -> str:
        """A new random token for a logged-in browser; the store keeps only its SHA-256."""
        token = secrets.token_urlsafe(32)
        with self.session() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at <= utcnow()))  # tidy up
            s.add(LoginSession(token_sha256=_sha256(token), user_id=user_id,
                               expires_at=utcnow() + SESSION_LIFETIME))  # fmt: skip
        return token

    def session_user(self, token: str) -> UserInfo | None:
        """The user a token logs in, as stored now; None once it expired or was ended."""
        with self.session() as s:
            row = s.get(LoginSession, _sha256(token))
            if row is None or row.expires_at <= utcnow():
                return None
        return self.user(row.user_id)

    def end_session(self, token: str) -> None:
        with self.session() as s:
            s.execute(delete(LoginSession).where(LoginSession.token_sha256 == _sha256(token)))

    def user(self, user_id: int) -> UserInfo | None:
        """The user as stored now (None if unknown or disabled), so a changed role takes effect at once."""
        with self.session() as s:
            u = s.get(User, user_id)
            return UserInfo(u.id, u.name, u.role, u.active) if u is not None and u.active else None

    def users(self) -> list[UserInfo]:
        with self.session() as s:
            return [
                UserInfo(u.id, u.name, u.role, u.active) for u in s.scalars(select(User).order_by(User.id))
            ]

    def update_user(
        self, name: str, password: str | None = None, role: str | None = None, active: bool | None = None
    ) -> None:
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise ValueError(f"no user named {name!r}")
            if password is not None:
                user.password_hash = hash_password(password)
            if role is not None:
                user.role = role
            if active is not None:
                user.active = active
            if password is not None or active is False:
                # Whoever knew the old password may be logged in somewhere: end every session.
                s.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
            if password is not None:  # a new password also lifts the account's lockout
                s.add(LoginAttempt(name=user.name, address="", outcome="reset"))

    # --- tasks -----------------------------------------------------------------------------

    def default_overlap(self) -> int:
        """The project's k: labels wanted per task unless an import says otherwise (3 until set)."""
        return int(self.setting("overlap", "3"))

    def set_overlap(self, overlap: int, task_ids: list[int] | None = None) -> int:
        """Change k of existing tasks (all, or `task_ids`); return how many changed. Lowering k
        completes tasks that already have that many labels. The project's k is the setting "overlap"."""
        if overlap < 1:
            raise ValueError(f"overlap must be at least 1, got {overlap}")
        with self.session() as s:
            query = update(Task).where(Task.overlap != overlap)
            if task_ids is not None:
                query = query.where(Task.id.in_(task_ids))
            return s.execute(query.values(overlap=overlap)).rowcount

    def add_tasks(self, tasks: list[NewTask], overlap: int | None = None) -> tuple[int, int]:
        """Add tasks wanting `overlap` labels each (default: the project's k); return (added, already present)."""
        overlap = self.default_overlap() if overlap is None else overlap
        if overlap < 1:
            raise ValueError(f"overlap must be at least 1, got {overlap}")
        added = 0
        with self.session() as s:
            known = set(s.scalars(select(Task.fingerprint)))
            for t in tasks:
                if len(t.responses) < 2:
                    raise ValueError(f"a task needs at least two responses, got {len(t.responses)}")
                fp = task_fingerprint(t.prompt, t.images, t.responses)
                if fp in known:
                    continue
                known.add(fp)
                row = Task(prompt=t.prompt, images=t.images, responses=t.responses, source=t.source,
                           external_id=t.external_id, overlap=overlap, fingerprint=fp)  # fmt: skip
                s.add(row)
                if t.gold is not None:
                    s.flush()
                    s.add(Gold(task_id=row.id, ranks=check_ranks(t.gold, len(t.responses))))
                added += 1
        return added, len(tasks) - added

    def _view(self, task: Task, assignment: Assignment) -> TaskView:
        images = [self.media_dir / name for name in task.images]
        return TaskView(
            task.id, task.prompt, images, list(task.responses), list(assignment.shown_order), task.external_id
        )

    def _holds_a_slot(self) -> Any:
        """An assignment that fills one of its task's k slots: a label, or a claim within the lease."""
        live = or_(Assignment.status == "done", Assignment.started_at > utcnow() - self.lease)
        return Assignment.status.not_in(GIVEN_UP) & live

    def next_task(self, user_id: int) -> TaskView | None:
        """The user's open task, or a newly claimed one they have never been given, or else one
        they skipped; None when done.

        A task is free while fewer than `overlap` people have labelled it or hold a live claim on
        it; a claim older than the lease stops counting. Tasks closest to complete go first, so
        finished items (and agreement) accrue early. A label submitted on a lapsed claim is still
        kept (no one's work is thrown away), so a task can rarely end with more than k labels.
        A skipped task comes back once, after everything else, if it still has room; skipped
        again, it is passed for good.
        """
        with self.session() as s:
            if not self.is_sqlite:
                s.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
            open_ = s.scalar(
                select(Assignment).where(Assignment.user_id == user_id, Assignment.status.in_(OPEN))
            )
            counted = self._holds_a_slot()
            if open_ is not None and s.get(Retired, open_.task_id) is not None:
                open_.status, open_.finished_at, open_ = "passed", utcnow(), None  # withdrawn meanwhile
            if open_ is not None:
                task = s.get_one(Task, open_.task_id)
                if open_.started_at > utcnow() - self.lease:
                    return self._view(task, open_)
                # Back after the lease ran out: keep the task if it still has room, else move on.
                others = select(func.count()).where(
                    Assignment.task_id == task.id, Assignment.id != open_.id, counted
                )
                if (s.scalar(others) or 0) < task.overlap:
                    open_.started_at = utcnow()
                    return self._view(task, open_)
                open_.status, open_.finished_at = GIVE_UP[open_.status], utcnow()
            taken = _slots_taken(counted)
            mine = select(Assignment.task_id).where(Assignment.user_id == user_id)
            n = func.coalesce(taken.c.n, 0)
            query = (
                select(Task)
                .outerjoin(taken, taken.c.task_id == Task.id)
                .where(Task.id.not_in(mine), Task.id.not_in(RETIRED), n < Task.overlap)
                .order_by(n.desc(), Task.id)
                .limit(1)
            )
            free = s.scalar(query)
            if free is None:
                skipped = (
                    select(Assignment)
                    .join(Task, Task.id == Assignment.task_id)
                    .outerjoin(taken, taken.c.task_id == Task.id)
                    .where(Assignment.user_id == user_id, Assignment.status == "skipped", n < Task.overlap)
                    .where(Task.id.not_in(RETIRED))
                    .order_by(Assignment.finished_at, Assignment.id)
                    .limit(1)
                )
                back = s.scalar(skipped)
                if back is None:
                    return None
                back.status, back.started_at = "returned", utcnow()
                return self._view(s.get_one(Task, back.task_id), back)
            task = free
            # Each person sees the responses in their own shuffled order, so left/right position
            # bias averages out over the k labels instead of favouring whichever came first.
            order = list(range(len(task.responses)))
            random.Random(f"{task.id}:{user_id}").shuffle(order)
            claim = Assignment(task_id=task.id, user_id=user_id, status="active", shown_order=order)
            s.add(claim)
            s.flush()
            return self._view(task, claim)

    def submit(
        self, user_id: int, task_id: int, ranks: list[int], rationale: str = "", seconds: float = 0.0
    ) -> bool:
        """Record the user's label for a task they were given. False if it was already recorded."""
        with self.session() as s:
            # FOR UPDATE (PostgreSQL) makes a concurrent double submit wait and then see "done".
            mine = select(Assignment).where(Assignment.user_id == user_id, Assignment.task_id == task_id)
            claim = s.scalar(mine.with_for_update())
            if claim is None:
                raise PermissionError(f"task {task_id} was not given to user {user_id}")
            if claim.status == "done":
                return False  # a double click or a retried request: the first label stands
            task = s.get_one(Task, task_id)
            ranks = check_ranks(ranks, len(task.responses))
            s.add(Annotation(task_id=task_id, user_id=user_id, ranks=ranks, rationale=rationale.strip()[:5000],
                             seconds=max(0.0, float(seconds))))  # fmt: skip
            claim.status, claim.finished_at = "done", utcnow()
        return True

    def recent_labels(self, user_id: int, n: int = 5) -> list[dict[str, Any]]:
        """The user's last `n` labels, newest first, each with the order they saw the responses
        in and whether it may still change (no snapshot has exported it yet)."""
        with self.session() as s:
            exported_until = s.scalar(select(func.max(Snapshot.created_at)))
            rows = s.execute(
                select(Annotation, Assignment.shown_order, Task)
                .join(
                    Assignment, (Assignment.task_id == Annotation.task_id) & (Assignment.user_id == user_id)
                )
                .join(Task, Task.id == Annotation.task_id)
                .where(Annotation.user_id == user_id)
                .order_by(Annotation.id.desc())
                .limit(n)
            ).all()
            return [{"task_id": t.id, "prompt": t.prompt, "responses": list(t.responses), "shown_order": list(order),
                     "ranks": list(a.ranks), "rationale": a.rationale,
                     "editable": exported_until is None or a.created_at > exported_until}
                    for a, order, t in rows]  # fmt: skip

    def edit_label(self, user_id: int, task_id: int, ranks: list[int], rationale: str = "") -> None:
        """Change one's own label, as long as no snapshot has exported it (a training run may
        already have read an exported label, so it stays as it was)."""
        with self.session() as s:
            label = s.scalar(
                select(Annotation).where(Annotation.user_id == user_id, Annotation.task_id == task_id)
            )
            if label is None:
                raise PermissionError(f"user {user_id} has no label on task {task_id}")
            exported_until = s.scalar(select(func.max(Snapshot.created_at)))
            if exported_until is not None and label.created_at <= exported_until:
                raise ValueError("this label is already in an exported snapshot and can no longer change")
            label.ranks = check_ranks(ranks, len(s.get_one(Task, task_id).responses))
            label.rationale = rationale.strip()[:5000]

    def skip(self, user_id: int, task_id: int) -> None:
        """Give the task back; it comes back to this user once, after every other task."""
        with self.session() as s:
            claim = s.scalar(
                select(Assignment).where(Assignment.user_id == user_id, Assignment.task_id == task_id)
            )
            if claim is not None and claim.status in OPEN:
                claim.status, claim.finished_at = GIVE_UP[claim.status], utcnow()

    # --- project settings (the schema's key/value table) ------------------------------------

    def setting(self, key: str, default: str = "") -> str:
        with self.session() as s:
            row = s.get(Meta, key)
            return row.value if row is not None else default

    def set_setting(self, key: str, value: str) -> None:
        if key == "schema_version":
            raise ValueError("schema_version is set by migrations only")
        with self.session() as s:
            s.merge(Meta(key=key, value=value))

    def settings(self, prefix: str) -> dict[str, str]:
        """Every setting whose key starts with `prefix`, by key (say, each loop's `loop:<name>`)."""
        with self.session() as s:
            rows = s.execute(
                select(Meta.key, Meta.value)
                .where(Meta.key.startswith(prefix, autoescape=True))
                .order_by(Meta.key)
            ).all()
        return {key: value for key, value in rows}

    # --- reading back ----------------------------------------------------------------------

    def user_progress(self, user_id: int) -> dict[str, int]:
        """How many tasks this user labelled and skipped, and how many are still open to them
        (their own open task included)."""
        with self.session() as s:
            counts = dict(
                s.execute(
                    select(Assignment.status, func.count())
                    .where(Assignment.user_id == user_id, ~flagged_by_them(Assignment))
                    .group_by(Assignment.status)
                ).all()
            )
            # Free to this user: never given to them, and not every slot filled by labels or by
            # others' live claims (what next_task would hand out), plus their own open task.
            taken = _slots_taken(self._holds_a_slot())
            mine = select(Assignment.task_id).where(Assignment.user_id == user_id)
            free = s.scalar(
                select(func.count())
                .select_from(Task)
                .outerjoin(taken, taken.c.task_id == Task.id)
                .where(
                    Task.id.not_in(mine), Task.id.not_in(RETIRED), func.coalesce(taken.c.n, 0) < Task.overlap
                )
            )
            n = func.coalesce(taken.c.n, 0)
            returning = s.scalar(
                select(func.count())
                .select_from(Assignment)
                .join(Task, Task.id == Assignment.task_id)
                .outerjoin(taken, taken.c.task_id == Task.id)
                .where(Assignment.user_id == user_id, Assignment.status == "skipped", n < Task.overlap)
                .where(Task.id.not_in(RETIRED))
            )
            left = (free or 0) + counts.get("active", 0) + counts.get("returned", 0) + (returning or 0)
        return {
            "labelled": counts.get("done", 0),
            "skipped": counts.get("skipped", 0) + counts.get("passed", 0),  # flags are not skips
            "available": int(left or 0),
        }

    def overview(self) -> dict[str, Any]:
        """Admin progress: tasks, labels wanted and given, and per-annotator counts and speed."""
        with self.session() as s:
            # retired tasks are offered to nobody: counted, they would make the total unreachable
            live = Task.id.not_in(RETIRED)
            n_tasks = s.scalar(select(func.count()).select_from(Task).where(live)) or 0
            wanted = s.scalar(select(func.sum(Task.overlap)).where(live)) or 0
            per_task = (
                select(Annotation.task_id, func.count().label("n")).group_by(Annotation.task_id).subquery()
            )
            complete = s.scalar(
                select(func.count()).select_from(Task).join(per_task, per_task.c.task_id == Task.id)
                .where(per_task.c.n >= Task.overlap, live)
            )  # fmt: skip
            labels_live = s.scalar(
                select(func.count()).select_from(Annotation).where(Annotation.task_id.not_in(RETIRED))
            )
            rows = s.execute(
                select(User.name, Annotation.seconds)
                .select_from(Annotation)
                .join(User, User.id == Annotation.user_id)
            ).all()
            skipped = dict(
                s.execute(
                    select(User.name, func.count()).select_from(Assignment).join(User, User.id == Assignment.user_id)
                    .where(Assignment.status.in_(GIVEN_UP), ~flagged_by_them(Assignment)).group_by(User.name)
                ).all()
            )  # fmt: skip
            flagged = dict(
                s.execute(select(User.name, func.count()).select_from(Flag).join(User, User.id == Flag.user_id)
                          .group_by(User.name)).all()
            )  # fmt: skip
        per_user: dict[str, list[float]] = {}
        for name, seconds in rows:
            per_user.setdefault(name, []).append(seconds)
        annotators = [
            {"annotator": name, "labels": len(sec), "skipped": skipped.get(name, 0),
             "flagged": flagged.get(name, 0), "median_seconds": round(statistics.median(sec), 1)}
            for name, sec in sorted(per_user.items())
        ]  # fmt: skip
        return {"tasks": n_tasks, "complete_tasks": int(complete or 0), "labels": int(labels_live or 0),
                "labels_wanted": int(wanted), "annotators": annotators}  # fmt: skip

    def labels(self) -> list[dict[str, Any]]:
        """Every label with its task and annotator (admin only: the UI never shows this to annotators)."""
        with self.session() as s:
            rows = s.execute(
                select(Annotation, User.name, Task).select_from(Annotation).join(User, User.id == Annotation.user_id)
                .join(Task, Task.id == Annotation.task_id).order_by(Annotation.id)
            ).all()  # fmt: skip
            return [
                {"task_id": a.task_id, "annotator": name, "ranks": list(a.ranks), "rationale": a.rationale,
                 "seconds": a.seconds, "created_at": a.created_at.isoformat(), "prompt": t.prompt,
                 "responses": list(t.responses), "images": list(t.images), "source": t.source,
                 "external_id": t.external_id, "overlap": t.overlap}
                for a, name, t in rows
            ]  # fmt: skip

    def task_progress(self, external_prefix: str) -> dict[str, TaskProgress]:
        """Every task whose external id starts with `external_prefix`, by external id, with its label
        count; a task an admin withdrew (retired) is left out: it will get no more labels."""
        with self.session() as s:
            per_task = (
                select(Annotation.task_id, func.count().label("n")).group_by(Annotation.task_id).subquery()
            )
            rows = s.execute(
                select(Task.id, Task.external_id, Task.overlap, func.coalesce(per_task.c.n, 0))
                .outerjoin(per_task, per_task.c.task_id == Task.id)
                .where(Task.external_id.startswith(external_prefix, autoescape=True))
                .where(Task.id.not_in(RETIRED))
                .order_by(Task.id)
            ).all()
        return {ext: TaskProgress(tid, ext, overlap, int(n)) for tid, ext, overlap, n in rows}

    def gold(self) -> dict[int, list[int]]:
        with self.session() as s:
            return {g.task_id: list(g.ranks) for g in s.scalars(select(Gold))}

    def set_gold(self, task_id: int, ranks: list[int]) -> None:
        """Fix a task's answer: adjudicates a disagreement, and scores annotators on it from now on."""
        with self.session() as s:
            task = s.get(Task, task_id)
            if task is None:
                raise ValueError(f"no task {task_id}")
            s.merge(Gold(task_id=task_id, ranks=check_ranks(ranks, len(task.responses))))


def _slots_taken(holds_a_slot: Any) -> Any:
    """Per task, how many of its slots are filled: (task_id, n)."""
    return (
        select(Assignment.task_id, func.count().label("n"))
        .where(holds_a_slot)
        .group_by(Assignment.task_id)
        .subquery()
    )


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login_retry_after(s: Session, name: str, address: str) -> float:
    """Seconds until the account `name` and the client `address` are both out of their lockout."""
    now, since = utcnow(), utcnow() - LOGIN_WINDOW
    last_ok = s.scalar(
        select(func.max(LoginAttempt.at)).where(
            LoginAttempt.name == name, LoginAttempt.outcome.in_(("ok", "reset"))
        )
    )
    failed = select(LoginAttempt.at).where(LoginAttempt.outcome == "failed", LoginAttempt.at > since)
    checks = [
        (failed.where(LoginAttempt.name == name, LoginAttempt.at > (last_ok or since)), MAX_ACCOUNT_FAILURES)
    ]
    if address:
        checks.append((failed.where(LoginAttempt.address == address), MAX_ADDRESS_FAILURES))
    wait = 0.0
    for query, limit in checks:
        recent: list[datetime] = list(s.scalars(query.order_by(LoginAttempt.at.desc()).limit(limit)))
        if len(recent) == limit:  # locked until the oldest of the last `limit` failures leaves the window
            wait = max(wait, (recent[-1] + LOGIN_WINDOW - now).total_seconds())
    return max(wait, 0.0)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Leave transaction control to SQLAlchemy's "begin" hook, which issues BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
