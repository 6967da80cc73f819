"""Looking after the task pool: annotators flag broken tasks; admins browse, edit and retire them.

A retired task is offered to nobody and left out of exports, but its labels stay, so `retire_task`
with `retired=False` undoes it. A task's text can be edited only while nobody has labelled it:
a label judged the old text, so a labelled task is retired and imported again instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, cast, delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from rlhfv.store.schema import Annotation, Assignment, Flag, Retired, Task, User, utcnow
from rlhfv.store.store import Store, task_fingerprint

STATUSES = ("new", "in progress", "complete", "retired")


def flag_task(store: Store, user_id: int, task_id: int, comment: str) -> None:
    """Report a task as broken; the annotator moves on and is not offered it again."""
    comment = comment.strip()[:2000]
    if not comment:
        raise ValueError("say what is wrong with the task")
    with store.session() as s:
        claim = s.scalar(
            select(Assignment).where(Assignment.user_id == user_id, Assignment.task_id == task_id)
        )
        if claim is None:
            raise PermissionError(f"task {task_id} was not given to user {user_id}")
        if claim.status != "done":
            claim.status, claim.finished_at = "passed", utcnow()
        s.add(Flag(task_id=task_id, user_id=user_id, comment=comment))


def open_flags(store: Store) -> list[dict[str, Any]]:
    """Unresolved flags, oldest first, with the task's prompt and who flagged it."""
    with store.session() as s:
        rows = s.execute(
            select(Flag, User.name, Task.prompt)
            .join(User, User.id == Flag.user_id)
            .join(Task, Task.id == Flag.task_id)
            .where(Flag.resolved_at.is_(None))
            .order_by(Flag.id)
        ).all()
        return [{"task_id": f.task_id, "prompt": prompt, "annotator": name, "comment": f.comment,
                 "flagged_at": f.created_at} for f, name, prompt in rows]  # fmt: skip


def resolve_flags(store: Store, task_id: int) -> None:
    with store.session() as s:
        for flag in s.scalars(select(Flag).where(Flag.task_id == task_id, Flag.resolved_at.is_(None))):
            flag.resolved_at = utcnow()


def retire_task(store: Store, task_id: int, retired: bool = True) -> None:
    """Withdraw a task (or bring it back); its flags count as resolved once it is withdrawn."""
    with store.session() as s:
        if s.get(Task, task_id) is None:
            raise ValueError(f"no task {task_id}")
        if not retired:
            s.execute(delete(Retired).where(Retired.task_id == task_id))
        elif s.get(Retired, task_id) is None:
            s.add(Retired(task_id=task_id))
    if retired:
        resolve_flags(store, task_id)


def retired_tasks(store: Store) -> set[int]:
    with store.session() as s:
        return set(s.scalars(select(Retired.task_id)))


def edit_task(store: Store, task_id: int, prompt: str, responses: list[str]) -> None:
    """Correct an unlabelled task's text; refused once anyone labelled it."""
    if not prompt.strip() or len(responses) < 2 or not all(r.strip() for r in responses):
        raise ValueError("a task needs a prompt and at least two non-empty responses")
    with store.session() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise ValueError(f"no task {task_id}")
        if s.scalar(select(func.count()).where(Annotation.task_id == task_id)):
            raise ValueError(f"task {task_id} is already labelled; retire it and import a corrected copy")
        if len(responses) != len(task.responses):
            raise ValueError(f"task {task_id} has {len(task.responses)} responses; keep that many")
        task.prompt, task.responses = prompt, list(responses)
        task.fingerprint = task_fingerprint(prompt, list(task.images), list(responses))
        try:
            s.flush()
        except IntegrityError:
            raise ValueError("another task already has exactly this text") from None


def browse_tasks(
    store: Store, search: str = "", status: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Tasks whose prompt or responses contain `search` (any case), optionally of one status,
    with their label and open-flag counts; newest first."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    with store.session() as s:
        labels = select(Annotation.task_id, func.count().label("n")).group_by(Annotation.task_id).subquery()
        flags = (
            select(Flag.task_id, func.count().label("n"))
            .where(Flag.resolved_at.is_(None))
            .group_by(Flag.task_id)
            .subquery()
        )
        query = (
            select(Task, func.coalesce(labels.c.n, 0), func.coalesce(flags.c.n, 0), Retired.task_id)
            .outerjoin(labels, labels.c.task_id == Task.id)
            .outerjoin(flags, flags.c.task_id == Task.id)
            .outerjoin(Retired, Retired.task_id == Task.id)
            .order_by(Task.id.desc())
        )
        if search.strip():
            # responses are JSON; searching its text form finds a word in any response
            pattern = f"%{search.strip().lower()}%"
            query = query.where(
                or_(
                    func.lower(Task.prompt).like(pattern),
                    func.lower(cast(Task.responses, Text)).like(pattern),
                )
            )
        rows = []
        for task, n_labels, n_flags, retired in s.execute(query):
            state = ("retired" if retired is not None else "complete" if n_labels >= task.overlap
                     else "in progress" if n_labels else "new")  # fmt: skip
            if status is None or state == status:
                rows.append({"task_id": task.id, "prompt": task.prompt, "responses": list(task.responses),
                             "labels": int(n_labels), "overlap": task.overlap, "status": state,
                             "open_flags": int(n_flags), "source": task.source})  # fmt: skip
            if len(rows) >= limit:
                break
        return rows
