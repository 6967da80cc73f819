"""The annotation app: log in, then label (annotators) or also manage and watch training (admins).

Started by `rlhfv annotate`, which passes the database and folders in environment variables:
RLHFV_DB (URL or SQLite path), RLHFV_MEDIA, RLHFV_RUNS, RLHFV_EXPORTS, RLHFV_MAX_UPLOAD_MB.
Pages are plain functions; an annotator's menu holds only the labelling page, and every admin
page checks the role again before it reads anything.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the page modules beside this file

import ui_admin  # noqa: E402
import ui_dashboard  # noqa: E402
import ui_label  # noqa: E402

from rlhfv.store.store import DEFAULT_URL, Store  # noqa: E402


@st.cache_resource
def open_store(url: str, media: str | None) -> Store:
    return Store(url, media_dir=media)


def login(store: Store) -> None:
    st.title("rlhfv annotate")
    with st.form("login"):
        name = st.text_input("User name", key="login-name")
        password = st.text_input("Password", type="password", key="login-password")
        if st.form_submit_button("Log in"):
            user = store.authenticate(name, password)
            if user is None:
                # Each failure in this session waits longer, which slows password guessing.
                failures = st.session_state.get("login_failures", 0) + 1
                st.session_state["login_failures"] = failures
                time.sleep(min(failures - 1, 5))
                st.error("Unknown user name or wrong password.")
            else:
                st.session_state["user_id"] = user.id
                st.session_state.pop("login_failures", None)
                st.rerun()


def main() -> None:
    st.set_page_config(page_title="rlhfv annotate", layout="wide")
    store = open_store(os.environ.get("RLHFV_DB", DEFAULT_URL), os.environ.get("RLHFV_MEDIA") or None)
    user = store.user(st.session_state["user_id"]) if "user_id" in st.session_state else None
    if user is None:  # never logged in, or disabled since
        st.session_state.pop("user_id", None)
        login(store)
        return
    pages = {"Label": ui_label.render}
    if user.role == "admin":
        pages |= {"Import tasks": ui_admin.render_import, "Progress & agreement": ui_admin.render_progress,
                  "Export": ui_admin.render_export, "Users": ui_admin.render_users,
                  "Training dashboard": ui_dashboard.render}  # fmt: skip
    with st.sidebar:
        st.write(f"Logged in as **{user.name}** ({user.role})")
        page = st.radio("Page", list(pages), key="page")
        if st.button("Log out"):
            st.session_state.clear()
            st.rerun()
    pages[page](store, user)


main()
