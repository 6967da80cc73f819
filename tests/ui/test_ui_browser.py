"""A real browser (Debian chromium via Playwright) against `rlhfv annotate` started as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlhfv.store.store import NewTask, Store

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'  # no script run in progress


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


@dataclass
class App:
    url: str
    folder: Path
    store: Store
    sync_api: Any


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """`rlhfv annotate` in a fresh folder: the default SQLite location, a first admin, runs under checkpoints/."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    folder = tmp_path_factory.mktemp("app")
    store = Store(folder / "rlhfv_annotate" / "store.db")  # where `rlhfv annotate` looks by default
    store.add_user("ann", "ann-password")
    store.add_tasks(
        [NewTask(f"Question {i}?", [f"left answer {i}", f"right answer {i}"]) for i in range(4)], 1
    )
    (folder / "checkpoints" / "live").mkdir(parents=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHFV_")}
    env.update(RLHFV_ADMIN_PASSWORD="boss-password", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "rlhfv.cli", "annotate", "--port", str(port), "--address", "127.0.0.1",
               "--admin", "boss"]  # fmt: skip
    log = folder / "server.log"  # a file, not a pipe: a full pipe would stall the server
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield App(url, folder, store, sync_api)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def log_in(app: App, p: Any, name: str, password: str) -> Any:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page()
    page.goto(app.url)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    app.sync_api.expect(page.get_by_text(f"Logged in as {name}")).to_be_visible(timeout=30_000)
    return page


@pytest.mark.slow
def test_an_annotator_logs_in_and_labels_three_tasks_in_chromium(app: App):
    expect = app.sync_api.expect
    with app.sync_api.sync_playwright() as p:
        page = log_in(app, p, "ann", "ann-password")
        for i in range(3):
            # Tasks come in id order here (one label each); wait until this one's form is drawn.
            expect(page.get_by_text(f"Question {i}?")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(f"{i} labelled, {4 - i} to go")).to_be_visible()
            expect(page.locator(IDLE)).to_be_attached(timeout=30_000)  # act once the rerun finished
            form = page.get_by_test_id("stForm")
            form.get_by_text("B", exact=True).click()
            expect(form.get_by_role("radio", name="B", exact=True)).to_be_checked()
            page.get_by_label("Why? (optional)").fill(f"reason {i}")
            page.get_by_role("button", name="Submit").click()
        expect(page.get_by_text("3 labelled, 1 to go")).to_be_visible(timeout=30_000)
        assert page.get_by_text("Export", exact=True).count() == 0  # no admin page in the menu
    labels = app.store.labels()
    assert [row["annotator"] for row in labels] == ["ann"] * 3
    assert [row["rationale"] for row in labels] == ["reason 0", "reason 1", "reason 2"]
    assert len({row["task_id"] for row in labels}) == 3
    for row in labels:  # B is the right-hand response as shown, whichever response that was
        assert row["ranks"].count(0) == 1


@pytest.mark.slow
def test_the_dashboard_follows_a_run_while_it_writes_metrics(app: App):
    expect = app.sync_api.expect
    metrics = app.folder / "checkpoints" / "live" / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1, "loss/policy": 0.9, "grm/accuracy": 0.5}) + "\n")
    with app.sync_api.sync_playwright() as p:
        page = log_in(app, p, "boss", "boss-password")  # the first admin, created by `rlhfv annotate`
        page.get_by_text("Training dashboard", exact=True).click()
        expect(page.get_by_text("1 metric rows, last step 1")).to_be_visible(timeout=30_000)
        expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
        page.get_by_text("Follow the run").click()
        time.sleep(1)
        expect(page.locator(IDLE)).to_be_attached(timeout=30_000)  # the click's own rerun is over
        with metrics.open("a") as f:  # the run goes on; only the timed refresh can show this
            f.write(json.dumps({"step": 2, "loss/policy": 0.7, "grm/accuracy": 0.6}) + "\n")
        expect(page.get_by_text("2 metric rows, last step 2")).to_be_visible(timeout=30_000)
