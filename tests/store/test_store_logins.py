"""Login throttling in the database, the failed-login log, and login sessions that outlive a page."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, text, update

from rlhfv.store.schema import LoginAttempt, LoginSession, utcnow
from rlhfv.store.store import LOGIN_WINDOW, MAX_ACCOUNT_FAILURES, MAX_ADDRESS_FAILURES, Store


def age_attempts(store: Store, by: timedelta) -> None:
    """Move every recorded login try `by` into the past, as if that much time had gone by."""
    with store.session() as s:
        for attempt in s.scalars(select(LoginAttempt)):
            attempt.at -= by


def test_failures_lock_the_account_for_every_address_even_against_the_right_password(store: Store):
    store.add_user("alice", "correct horse")
    for i in range(MAX_ACCOUNT_FAILURES):
        assert store.authenticate("alice", f"guess {i}", address=f"10.0.0.{i}") is None
    # A new browser, a new address, the right password: still refused while the lock holds.
    assert store.authenticate("alice", "correct horse", address="10.9.9.9") is None
    wait = store.login_retry_after("alice", "10.9.9.9")
    assert LOGIN_WINDOW.total_seconds() - 60 < wait <= LOGIN_WINDOW.total_seconds()
    assert store.login_retry_after("bob", "10.9.9.9") == 0  # another account is not locked
    age_attempts(store, LOGIN_WINDOW + timedelta(seconds=1))
    assert store.authenticate("alice", "correct horse", address="10.9.9.9") is not None


def test_a_success_before_the_limit_resets_the_account_count(store: Store):
    store.add_user("alice", "correct horse")
    for _ in range(2):  # twice (limit - 1) failures in the window, with a success between
        for i in range(MAX_ACCOUNT_FAILURES - 1):
            assert store.authenticate("alice", f"typo {i}") is None
        assert store.authenticate("alice", "correct horse") is not None


def test_failures_from_one_address_over_many_names_lock_that_address_only(store: Store):
    store.add_user("alice", "correct horse")
    for i in range(MAX_ADDRESS_FAILURES):  # one guess per name stays under the account limit
        assert store.authenticate(f"user{i}", "123456", address="203.0.113.7") is None
    assert store.authenticate("alice", "correct horse", address="203.0.113.7") is None
    assert store.login_retry_after("alice", "203.0.113.7") > 0
    assert store.authenticate("alice", "correct horse", address="198.51.100.1") is not None


def test_failed_logins_are_logged_with_name_address_and_time_but_never_the_password(
    store, caplog, stored_bytes
):
    store.add_user("alice", "correct horse")
    with caplog.at_level(logging.WARNING, logger="rlhfv.store.store"):
        store.authenticate("alice", "hunter2-secret", address="192.0.2.5")
        store.authenticate("alice", "correct horse", address="192.0.2.5")
    tries = store.login_attempts()
    assert [(t["name"], t["address"], t["outcome"]) for t in tries] == [
        ("alice", "192.0.2.5", "ok"),
        ("alice", "192.0.2.5", "failed"),
    ]
    assert tries[1]["at"] <= tries[0]["at"]
    assert "alice" in caplog.text and "192.0.2.5" in caplog.text
    assert "hunter2" not in caplog.text
    raw = stored_bytes()
    assert b"alice" in raw and b"hunter2" not in raw


def test_a_session_token_logs_in_until_it_is_ended_and_only_its_hash_is_stored(store, stored_bytes):
    uid = store.add_user("alice", "correct horse").id
    token = store.start_session(uid)
    assert store.session_user(token).name == "alice"
    assert store.session_user(token + "x") is None
    raw = stored_bytes()
    assert b"alice" in raw and token.encode() not in raw
    store.end_session(token)
    assert store.session_user(token) is None


def test_a_session_expires(store: Store):
    token = store.start_session(store.add_user("alice", "correct horse").id)
    with store.session() as s:
        s.execute(update(LoginSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert store.session_user(token) is None


def test_a_password_change_ends_every_open_session_of_that_user_only(store: Store):
    alice = store.add_user("alice", "correct horse").id
    bob = store.add_user("bob", "battery staple").id
    tabs = [store.start_session(alice) for _ in range(2)]
    bobs = store.start_session(bob)
    store.update_user("alice", role="admin")  # a role change keeps sessions (the role is re-read)
    assert all(store.session_user(t) is not None for t in tabs)
    store.update_user("alice", password="new password")
    assert [store.session_user(t) for t in tabs] == [None, None]
    assert store.session_user(bobs).name == "bob"
    store.update_user("bob", active=False)
    assert store.session_user(bobs) is None
    with store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from login_sessions")).scalar() == 0


def test_a_new_password_lifts_the_account_lock_but_not_an_address_lock(store: Store):
    store.add_user("alice", "correct horse")
    for i in range(MAX_ACCOUNT_FAILURES):
        store.authenticate("alice", f"guess {i}", address="10.0.0.1")
    assert store.authenticate("alice", "correct horse") is None  # locked
    store.update_user("alice", password="a new password")  # what an admin does for a locked-out user
    assert store.authenticate("alice", "a new password") is not None
    for i in range(MAX_ADDRESS_FAILURES):
        store.authenticate(f"user{i}", "123456", address="203.0.113.7")
    store.update_user("alice", password="another password")
    assert store.authenticate("alice", "another password", address="203.0.113.7") is None
