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


@pytest.fixture
def bare_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """`rlhfv annotate` in a fresh folder: the default SQLite location, a first admin and one
    annotator, runs under checkpoints/, no task yet. One per test, so no test sees another's labels."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    folder = tmp_path_factory.mktemp("app")
    store = Store(folder / "rlhfv_annotate" / "store.db")  # where `rlhfv annotate` looks by default
    store.add_user("ann", "ann-password")
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


@pytest.fixture
def app(bare_app: App) -> App:
    """The app with four one-label tasks queued, "Question 0?" to "Question 3?"."""
    tasks = [NewTask(f"Question {i}?", [f"left answer {i}", f"right answer {i}"]) for i in range(4)]
    bare_app.store.add_tasks(tasks, 1)
    return bare_app


def log_in(app: App, p: Any, name: str, password: str, **page_options: Any) -> Any:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_context(**page_options).new_page()  # a context, so a test can open more tabs
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
        expect(page.get_by_text("0 labelled, 4 to go")).to_be_visible(timeout=30_000)
        ann = next(u.id for u in app.store.users() if u.name == "ann")
        assert app.store.user_progress(ann)["available"] == 4  # the open page holds no slot
        assert app.store.next_task(app.store.add_user("bob", "bob-password").id) is not None
        assert app.store.user_progress(ann)["available"] == 3  # bob's claim fills one task
        page.get_by_role("button", name="Start labelling").click()
        for i in range(3):
            # Tasks come in id order here (one label each; bob holds the first); wait for the form.
            expect(page.get_by_text(f"Question {i + 1}?")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(f"{i} labelled, {3 - i} to go")).to_be_visible()
            expect(page.locator(IDLE)).to_be_attached(timeout=30_000)  # act once the rerun finished
            form = page.get_by_role("radiogroup", name="Which response is better?")  # not the edit form's
            form.get_by_text("B", exact=True).click()
            expect(form.get_by_role("radio", name="B", exact=True)).to_be_checked()
            page.get_by_label("Why? (optional)").fill(f"reason {i}")
            page.get_by_role("button", name="Submit").click()
        expect(page.get_by_text("Nothing left for you to label")).to_be_visible(timeout=30_000)
        assert page.get_by_text("Export", exact=True).count() == 0  # no admin page in the menu
    with urllib.request.urlopen(f"{app.url}/_stcore/metrics", timeout=10) as r:  # open to anyone
        metrics = r.read().decode()
    # Only counts and cache sizes (README: block it at a proxy if even those are private).
    assert not [text for text in ("Question", "reason 0", "answer", '"ann"', "password") if text in metrics]
    assert "active_sessions" in metrics
    labels = app.store.labels()
    assert [row["annotator"] for row in labels] == ["ann"] * 3
    assert [row["rationale"] for row in labels] == ["reason 0", "reason 1", "reason 2"]
    assert len({row["task_id"] for row in labels}) == 3
    assert "Question 0?" not in {row["prompt"] for row in labels}  # bob's claim, from the lowest id
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


@pytest.mark.slow
def test_a_login_survives_reloads_and_new_tabs_until_logout_or_a_password_change(app: App):
    expect = app.sync_api.expect
    logged_in, login_form = "Logged in as ann", lambda page: page.get_by_role("button", name="Log in")
    with app.sync_api.sync_playwright() as p:
        page = log_in(app, p, "ann", "ann-password")
        page.reload()
        expect(page.get_by_text(logged_in)).to_be_visible(timeout=30_000)
        other = page.context.new_page()  # a second tab of the same browser
        other.goto(app.url)
        expect(other.get_by_text(logged_in)).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Log out").click()
        expect(login_form(page)).to_be_visible(timeout=30_000)
        other.reload()  # the session ended on the server, so the other tab's cookie is void
        expect(login_form(other)).to_be_visible(timeout=30_000)
        page = log_in(app, p, "ann", "ann-password")
        app.store.update_user("ann", password="a-new-password")  # say, by an admin elsewhere
        page.reload()
        expect(login_form(page)).to_be_visible(timeout=30_000)
        assert page.get_by_text(logged_in).count() == 0


def label_task(store: Store, user_id: int, prompt_start: str, ranks: list[int]) -> None:
    """Have a user label the task whose prompt starts so, skipping whatever comes before it."""
    while not (view := store.next_task(user_id)).prompt.startswith(prompt_start):
        store.skip(user_id, view.id)
    store.submit(user_id, view.id, ranks)


def serve_counting(hits: list[str]) -> tuple[str, Any]:
    """A local web server that records every path asked of it: the stand-in for a tracker."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


@pytest.mark.slow
def test_imported_text_loads_nothing_from_other_sites_in_any_page(app: App):
    hits: list[str] = []
    tracker, server = serve_counting(hits)
    bait = lambda where: f"![pixel]({tracker}/{where}.png) <img src='{tracker}/{where}-html.png'>"  # noqa: E731
    store = app.store
    store.set_setting("guidelines", f"Be **fair**. {bait('guidelines')}")
    name = f"![]({tracker}/n.png)"  # a user name is typed by an admin, and shown on every page
    store.add_user(name, "eve-password")
    store.add_tasks([NewTask(f"Look {bait('prompt')}", [f"A {bait('a')}", f"B {bait('b')}"]),
                     NewTask(f"Again {bait('prompt2')}", ["x", f"y {bait('y')}"])], overlap=2)  # fmt: skip
    voters = [store.add_user(voter, f"{voter}-password").id for voter in ("v1", "v2")]
    for uid, ranks in zip(voters, ([0, 1], [1, 0]), strict=True):  # a disputed task, which admins see
        label_task(store, uid, "Look", ranks)
    label_task(store, voters[0], "Again", [0, 1])  # half done, so it comes first for the next person
    run = app.folder / "checkpoints" / "live"
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss/policy": 0.5}) + "\n")
    rollout = {"step": 1, "prompt": bait("rollout"), "completions": [bait("c0"), "c1"],
               "judgments": [{"a": bait("ja"), "b": 1, "text": bait("jt"), "scores": [1, 2]}]}  # fmt: skip
    (run / "rollouts.jsonl").write_text(json.dumps(rollout) + "\n")
    outside: list[str] = []
    try:
        with app.sync_api.sync_playwright() as p:
            page = log_in(app, p, name, "eve-password")
            page.on("request", lambda r: None if r.url.startswith(app.url) else outside.append(r.url))
            page.get_by_role("button", name="Start labelling").click()
            app.sync_api.expect(page.get_by_text(f"{tracker}/prompt2.png", exact=False)).to_be_visible(
                timeout=30_000
            )
            app.sync_api.expect(page.get_by_text("fair", exact=True)).to_be_visible()  # Markdown kept
            admin = log_in(app, p, "boss", "boss-password")
            admin.on("request", lambda r: None if r.url.startswith(app.url) else outside.append(r.url))
            app.sync_api.expect(admin.get_by_text("Tasks with disagreement (1)")).to_be_visible(
                timeout=30_000
            )
            app.sync_api.expect(admin.get_by_text(f"A {bait('a')}")).to_be_visible()
            admin.get_by_text("Users", exact=True).click()
            app.sync_api.expect(admin.get_by_text("Add a user")).to_be_visible(timeout=30_000)
            admin.get_by_text("Training dashboard", exact=True).click()
            app.sync_api.expect(admin.get_by_text("1 metric rows, last step 1")).to_be_visible(timeout=30_000)
            time.sleep(2)  # give any image request time to leave
    finally:
        server.shutdown()
    assert hits == [] and outside == []


@pytest.mark.slow
def test_keyboard_shortcuts_choose_submit_and_skip_but_not_while_typing(app: App):
    expect = app.sync_api.expect
    with app.sync_api.sync_playwright() as p:
        page = log_in(app, p, "ann", "ann-password")
        page.get_by_role("button", name="Start labelling").click()
        expect(page.get_by_text("Question 0?")).to_be_visible(timeout=30_000)
        expect(
            page.get_by_text("Keys: 1 or A, 2 or B, 3 or T choose · Enter submits · S skips")
        ).to_be_visible()
        expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
        form = page.get_by_role("radiogroup", name="Which response is better?")
        page.keyboard.press("2")
        expect(form.get_by_role("radio", name="B", exact=True)).to_be_checked()
        page.get_by_label("Why? (optional)").press_sequentially("sat")  # s, a, t typed: no skip, no A
        expect(form.get_by_role("radio", name="B", exact=True)).to_be_checked()
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("Enter")
        expect(page.get_by_text("Question 1?")).to_be_visible(timeout=30_000)
        expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
        page.keyboard.press("s")
        expect(page.get_by_text("Question 2?")).to_be_visible(timeout=30_000)
        # The skipped task counts as still to go: it comes back at the end.
        expect(page.get_by_text("1 labelled, 3 to go, 1 skipped")).to_be_visible(timeout=30_000)
        expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
        page.keyboard.press("t")
        expect(form.get_by_role("radio", name="Tie", exact=True)).to_be_checked()
        page.keyboard.press("Enter")
        expect(page.get_by_text("2 labelled, 2 to go, 1 skipped")).to_be_visible(timeout=30_000)
    first, second = app.store.labels()
    assert (first["prompt"], first["rationale"], second["prompt"]) == ("Question 0?", "sat", "Question 2?")
    assert first["ranks"].count(0) == 1 and second["ranks"] == [0, 0]


CLIPPED = "el => [el, ...el.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1)"


@pytest.mark.slow
def test_buttons_and_rank_fields_show_their_whole_text_in_a_1024_px_window(app: App):
    from PIL import Image

    Image.new("RGB", (96, 96), (200, 30, 30)).save(app.store.media_dir / "red96.png")
    four = [f"a fairly long response number {i}, as models write them" for i in range(4)]
    app.store.add_tasks([NewTask("What is shown?", ["red", "blue"], images=["red96.png"]),
                         NewTask("Rank four", four)], overlap=3)  # fmt: skip
    bob = app.store.add_user("bob", "bob-password").id
    label_task(app.store, bob, "What is shown?", [0, 1])  # one label in: these come first for ann
    label_task(app.store, bob, "Rank four", [0, 1, 2, 3])
    expect = app.sync_api.expect
    with app.sync_api.sync_playwright() as p:
        page = log_in(app, p, "ann", "ann-password", viewport={"width": 1024, "height": 800})
        page.get_by_role("button", name="Start labelling").click()
        for prompt in ("What is shown?", "Rank four"):
            expect(page.get_by_text(prompt)).to_be_visible(timeout=30_000)
            expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
            for name in ("Submit", "Skip"):
                button = page.get_by_role("button", name=name)
                assert button.inner_text().strip() == name and not button.evaluate(CLIPPED), (prompt, name)
            for select in page.get_by_test_id("stSelectbox").all():
                assert not select.evaluate(CLIPPED), select.inner_text()
            page.get_by_role("button", name="Skip").click()


@pytest.mark.slow
def test_an_admin_downloads_a_snapshot_as_one_zip_with_its_images(app: App):
    import io
    import zipfile

    from PIL import Image

    Image.new("RGB", (12, 12), (0, 0, 250)).save(app.store.media_dir / "blue.png")
    app.store.add_tasks([NewTask("Which colour?", ["blue", "red"], images=["blue.png"])], overlap=1)
    ann = next(u.id for u in app.store.users() if u.name == "ann")
    label_task(app.store, ann, "Which colour?", [0, 1])
    expect = app.sync_api.expect
    with app.sync_api.sync_playwright() as p:
        page = log_in(app, p, "boss", "boss-password")
        page.get_by_text("Export", exact=True).click()
        page.get_by_role("button", name="Export snapshot").click()
        expect(page.get_by_text("Snapshot v1:")).to_be_visible(timeout=30_000)
        with page.expect_download(timeout=30_000) as download:
            page.get_by_role("button", name="Download v1 (.zip with images)").click()
        data = Path(download.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        row = json.loads(archive.read("v1/preferences.jsonl").decode().splitlines()[0])
        assert archive.read(f"v1/{row['images'][0]}") == (app.store.media_dir / "blue.png").read_bytes()


def wait_for(what: str, done: Any, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll `done()` until true; fail at once, with the loop's log, if the loop process died."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise AssertionError(
                f"the loop exited ({proc.returncode}) before {what}: {log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s: {log.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.mark.slow
def test_people_label_a_loop_round_in_chromium_and_the_loop_page_shows_round_2(bare_app: App, tmp_path: Path):
    """The closed loop with people: the loop queues round 1, ann labels it in the browser, the loop
    trains the GRM on her labels and queues round 2, which the admin's Loop page shows and ends."""
    from rlhfv.models.base import save_model
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    model, run_dir, log = tmp_path / "tiny", tmp_path / "loop", tmp_path / "loop.log"
    save_model(tiny_qwen2_vl(seed=0), model)
    parity = "tests.data.test_pairs.ParityGraded"  # a rule a random tiny policy's answers split
    overrides = [
        f"run.dir={run_dir}", f"store={bare_app.store.url}", "annotators=app", "overlap=1", "per_round=2",
        "rounds=2", "poll_s=0.2", "wait_timeout_s=150", f"policy.path={model}", f"grm.path={model}",
        f"pool._component_={parity}", "pool.size=6", "pool.tasks=[count]", "samples=3", "max_new_tokens=6",
        "judge_samples=2", "judge_max_new_tokens=6", "judge_force=true", "grm_train.steps=2",
        "grm_train.batch_size=2", "grm_train.warmup_steps=0", "grm_train.eval_batch_size=4",
        "grm_train.max_new_tokens=6", f"grm_train.eval_data.pairs.data._component_={parity}",
        "grm_train.eval_data.pairs.data.size=4", "grm_train.eval_data.pairs.data.tasks=[count]",
        "grm_train.eval_data.pairs.max_new_tokens=6", "grm_train.eval_data.pairs.samples=3",
        "retrain.validation=0",  # two labels a round: every round's GRM is served (plain retraining)
    ]  # fmt: skip
    recipe = str(ROOT / "recipes" / "active_loop_shapes.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    store, expect = bare_app.store, bare_app.sync_api.expect
    state = lambda: json.loads(store.setting("loop:active_loop_shapes") or "{}")  # noqa: E731
    with log.open("w") as out:
        loop = subprocess.Popen([sys.executable, "-m", "rlhfv.cli", "run", recipe, *overrides], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        # 1. the loop queues round 1 and waits for people
        wait_for("round 1's wait", lambda: state().get("phase") == "wait", loop, log)
        round_1 = store.task_progress(f"loop:{state()['id']}:r1:")
        assert len(round_1) == 2 and all(p.overlap == 1 and p.labels == 0 for p in round_1.values())
        with bare_app.sync_api.sync_playwright() as p:
            # 2. an annotator labels those tasks in the browser: the images and answers the policy gave
            page = log_in(bare_app, p, "ann", "ann-password")
            expect(page.get_by_text("0 labelled, 2 to go")).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Start labelling").click()
            for i in range(2):
                expect(page.get_by_text(f"{i} labelled, {2 - i} to go")).to_be_visible(timeout=30_000)
                expect(page.get_by_role("img").first).to_be_visible()  # the ShapesVQA picture
                expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
                form = page.get_by_role("radiogroup", name="Which response is better?")
                form.get_by_text("A", exact=True).click()
                expect(form.get_by_role("radio", name="A", exact=True)).to_be_checked()
                page.get_by_role("button", name="Submit").click()
            expect(page.get_by_text("Nothing left for you to label")).to_be_visible(timeout=30_000)
            # 3. the loop takes her labels, retrains the GRM and queues round 2
            wait_for("round 2's wait", lambda: (state()["round"], state()["phase"]) == (2, "wait"), loop, log)
            # 4. the admin's Loop page shows round 2, and ends it
            admin = log_in(bare_app, p, "boss", "boss-password")
            admin.get_by_text("Loop", exact=True).click()
            expect(admin.get_by_text("Round 2: waiting for labels")).to_be_visible(timeout=30_000)
            metric = lambda label: admin.get_by_test_id("stMetric").filter(has_text=label)  # noqa: E731
            expect(metric("Labels still needed")).to_contain_text("2")
            expect(metric("Labels used so far")).to_contain_text("2")
            accuracy = f"{state()['history'][0]['grm/accuracy']:.3f}"  # round 1's, as the loop recorded it
            expect(admin.get_by_test_id("stTable").get_by_role("row").nth(1)).to_contain_text(accuracy)
            expect(admin.locator(IDLE)).to_be_attached(timeout=30_000)
            admin.get_by_role("button", name="End round 2 now").click()
            # the loop stops waiting, trains once more and ends; the page follows it there
            finished = admin.get_by_text("Finished after 2 rounds: all 2 rounds done.")
            expect(finished).to_be_visible(timeout=60_000)
            rows = admin.get_by_test_id("stTable").get_by_role("row")
            expect(rows).to_have_count(3)  # the header, round 1, round 2
        assert loop.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if loop.poll() is None:
            os.killpg(loop.pid, signal.SIGKILL)
            loop.wait()
    final = state()
    assert final["phase"] == "done" and [h["round"] for h in final["history"]] == [1, 2]
    assert [h["labels/used"] for h in final["history"]] == [2, 2]  # ann's two; round 2 ended with none
    assert [h["labels/pairs"] for h in final["history"]] == [2, 2]
    assert all(0 <= h["grm/accuracy"] <= 1 for h in final["history"])  # trained both rounds (NaN: not)
    labels = store.labels()
    assert [(row["annotator"], row["external_id"].split(":")[2]) for row in labels] == [("ann", "r1")] * 2
    assert {row["external_id"] for row in labels} == set(round_1)
    assert store.setting("loop:active_loop_shapes:end_round") == "2"
    # round 2 brought no new pair (ended with no label): the GRM trained in round 1 stays served
    assert (run_dir / "round_1" / "grm" / "final").is_dir() and final["grm"].endswith("round_1/grm/final")
    assert final["history"][1]["grm/decision"] == "kept"


@pytest.mark.slow
def test_enter_acts_on_the_focused_control_and_a_flag_leaves_the_next_report_form_closed(app: App):
    expect = app.sync_api.expect
    with app.sync_api.sync_playwright() as p:
        page = log_in(app, p, "ann", "ann-password")
        page.get_by_role("button", name="Start labelling").click()
        expect(page.get_by_text("Question 0?")).to_be_visible(timeout=30_000)
        expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
        # Enter on a focused Skip skips: no label, no "choose first" complaint
        page.get_by_role("button", name="Skip").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_text("Question 1?")).to_be_visible(timeout=30_000)
        expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
        assert not page.get_by_text("Choose A, B or Tie first.").is_visible()
        # Enter on the report form's focused button flags the task with its comment: no label
        page.get_by_text("Report this task as broken").click()
        page.get_by_label("What is wrong?").fill("the picture is blank")
        page.get_by_role("button", name="Flag as broken").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_text("Question 2?")).to_be_visible(timeout=30_000)
        expect(page.locator(IDLE)).to_be_attached(timeout=30_000)
        # the next task's report form is closed
        expect(page.get_by_label("What is wrong?")).not_to_be_visible()
    from rlhfv.store.curation import open_flags

    assert app.store.labels() == []
    assert [f["comment"] for f in open_flags(app.store)] == ["the picture is blank"]
