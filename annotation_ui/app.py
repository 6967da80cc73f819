"""The annotation app: log in, then label (annotators) or also manage and watch training (admins).

Started by `rlhfv annotate`, which passes the database and folders in environment variables:
RLHFV_DB (URL or SQLite path), RLHFV_MEDIA, RLHFV_RUNS, RLHFV_EXPORTS, RLHFV_MAX_UPLOAD_MB.
Pages are plain functions; an annotator's menu holds only the labelling page, and every admin
page checks the role again before it reads anything.

A login is a server-side session (`Store.start_session`): the browser keeps its random token in
a cookie, so a reload or a new tab stays logged in, and every rerun checks the token against the
store, so logging out, a password change or a disabled account ends it everywhere at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the page modules beside this file

import ui_admin  # noqa: E402
import ui_dashboard  # noqa: E402
import ui_label  # noqa: E402
import ui_loop  # noqa: E402

from rlhfv.store.store import DEFAULT_URL, SESSION_LIFETIME, Store, UserInfo  # noqa: E402


@st.cache_resource
def open_store(url: str, media: str | None) -> Store:
    return Store(url, media_dir=media)


def cookie_name(store: Store) -> str:
    """One cookie per database: cookies ignore ports, so two apps on one host would otherwise
    keep overwriting each other's login."""
    return "rlhfv_session_" + hashlib.sha256(store.url.encode()).hexdigest()[:12]


def set_cookie(name: str, token: str, max_age: int) -> None:
    """Write (or, with max_age 0, delete) the session cookie from the page: Streamlit has no
    server-side Set-Cookie. SameSite=Strict keeps it off requests other sites start."""
    value = json.dumps(f"{name}={token}; Path=/; Max-Age={max_age}; SameSite=Strict")
    secure = "(location.protocol === 'https:' ? '; Secure' : '')"
    st.html(f"<script>document.cookie = {value} + {secure};</script>", unsafe_allow_javascript=True)


def login(store: Store) -> None:
    st.title("rlhfv annotate")
    address = st.context.ip_address
    address = address if isinstance(address, str) else ""  # None on localhost; a mock under AppTest
    with st.form("login"):
        name = st.text_input("User name", key="login-name")
        password = st.text_input("Password", type="password", key="login-password")
        if st.form_submit_button("Log in"):
            user = store.authenticate(name, password, address=address)
            if user is None:
                wait = store.login_retry_after(name, address)
                if wait > 0:
                    minutes = math.ceil(wait / 60)
                    st.error(
                        f"Too many failed logins; try again in {ui_admin.plural(minutes, 'minute')} or ask an admin."
                    )
                else:
                    st.error("Unknown user name or wrong password.")
            else:
                st.session_state["session_token"] = store.start_session(user.id)
                st.session_state["write_cookie"] = True
                st.rerun()


def current_user(store: Store) -> UserInfo | None:
    """The user this browser is logged in as: this tab's token, or the cookie of an earlier tab."""
    cookie = st.context.cookies.get(cookie_name(store))
    cookie = cookie if isinstance(cookie, str) else None  # AppTest hands back a mock
    token = st.session_state.get("session_token") or cookie
    user = store.session_user(token) if token else None
    if user is None:
        st.session_state.pop("session_token", None)
        if cookie:  # expired or ended: forget it, or every visit would try it again
            set_cookie(cookie_name(store), "", 0)
    else:
        st.session_state["session_token"] = token
    return user


def main() -> None:
    st.set_page_config(page_title="rlhfv annotate", layout="wide")
    store = open_store(os.environ.get("RLHFV_DB", DEFAULT_URL), os.environ.get("RLHFV_MEDIA") or None)
    user = current_user(store)
    if user is None:  # never logged in, logged out, or the session was ended since
        login(store)
        return
    if st.session_state.pop("write_cookie", False):
        set_cookie(
            cookie_name(store), st.session_state["session_token"], int(SESSION_LIFETIME.total_seconds())
        )
    pages = {"Label": ui_label.render}
    if user.role == "admin":
        # Admins land on progress, their usual first look; Label stays one click away.
        pages = {"Progress & agreement": ui_admin.render_progress, **pages, "Tasks": ui_admin.render_tasks,
                 "Import tasks": ui_admin.render_import, "Export": ui_admin.render_export,
                 "Users": ui_admin.render_users, "Training dashboard": ui_dashboard.render,
                 "Loop": ui_loop.render}  # fmt: skip
    with st.sidebar:
        st.text(f"Logged in as {user.name} ({user.role})")  # plain text: a name is user input
        page = st.radio("Page", list(pages), key="page")
        if st.button("Log out"):
            store.end_session(st.session_state["session_token"])
            st.session_state.clear()
            st.rerun()  # the login page then deletes the cookie
    pages[page](store, user)


main()
