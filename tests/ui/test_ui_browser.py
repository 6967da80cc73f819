"""A real browser (Debian chromium via Playwright) against `rlhfv annotate` started as a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rlhfv.store.store import NewTask, Store

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "annotation_ui" / "app.py"

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app did not answer at {url} within {timeout} s")


@pytest.mark.slow
def test_an_annotator_logs_in_and_labels_three_tasks_in_chromium(tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    store = Store(tmp_path / "rlhfv_annotate" / "store.db")  # where `rlhfv annotate` looks by default
    store.add_user("ann", "ann-password")
    store.add_tasks(
        [NewTask(f"Question {i}?", [f"left answer {i}", f"right answer {i}"]) for i in range(4)], overlap=1
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHFV_")}
    env.update(RLHFV_ADMIN_PASSWORD="boss-password", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "rlhfv.cli", "annotate", "--port", str(port), "--address", "127.0.0.1",
               "--admin", "boss"]  # fmt: skip
    log = tmp_path / "server.log"  # a file, not a pipe: a full pipe would stall the server
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.get_by_label("User name").fill("ann")
            page.get_by_label("Password", exact=True).fill("ann-password")
            page.get_by_role("button", name="Log in").click()
            expect = sync_api.expect
            for i in range(3):
                # Tasks come in id order here (one label each); wait until this one's form is drawn.
                expect(page.get_by_text(f"Question {i}?")).to_be_visible(timeout=30_000)
                expect(page.get_by_text(f"{i} labelled, {4 - i} to go")).to_be_visible()
                idle = page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')
                expect(idle).to_be_attached(timeout=30_000)  # interact only once the rerun has finished
                form = page.get_by_test_id("stForm")
                form.get_by_text("B", exact=True).click()
                expect(form.get_by_role("radio", name="B", exact=True)).to_be_checked()
                page.get_by_label("Why? (optional)").fill(f"reason {i}")
                page.get_by_role("button", name="Submit").click()
            try:
                page.get_by_text("3 labelled, 1 to go").wait_for(timeout=30_000)
            finally:
                page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
                print(f"screenshot: {tmp_path / 'last.png'}")
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    labels = store.labels()
    assert [row["annotator"] for row in labels] == ["ann"] * 3
    assert [row["rationale"] for row in labels] == ["reason 0", "reason 1", "reason 2"]
    assert len({row["task_id"] for row in labels}) == 3
    assert store.authenticate("boss", "boss-password").role == "admin"  # the first admin was created
