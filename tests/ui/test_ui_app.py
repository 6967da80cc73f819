"""The app's pages through Streamlit's AppTest: login, labelling, role separation, admin pages."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from rlhfv.store.agreement import gold_accuracy, units_from_labels
from rlhfv.store.curation import browse_tasks
from rlhfv.store.schema import Task
from rlhfv.store.store import MAX_ACCOUNT_FAILURES, NewTask, Store

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "annotation_ui" / "app.py"


def logged_in(name: str, password: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    at.text_input(key="login-name").input(name)
    at.text_input(key="login-password").input(password)
    next(b for b in at.button if b.label == "Log in").click().run()
    assert not at.exception, at.exception
    return at


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(store: Store):
    at = logged_in("ann", "not-her-password")
    assert [e.value for e in at.error] == ["Unknown user name or wrong password."]
    assert "user_id" not in at.session_state


def test_an_annotator_sees_only_the_labelling_page(store: Store):
    at = logged_in("ann", "ann-password")
    assert at.radio(key="page").options == ["Label"]
    admin = logged_in("boss", "boss-password")
    assert (
        "Export" in admin.radio(key="page").options
        and "Training dashboard" in admin.radio(key="page").options
    )


@pytest.mark.parametrize("page", ["render_import", "render_progress", "render_export", "render_users"])
def test_admin_pages_show_nothing_to_an_annotator_who_reaches_them(store: Store, page: str):
    store.add_tasks([NewTask("secret prompt", ["a", "b"])], overlap=2)
    bob = store.authenticate("bob", "bob-password")
    store.submit(bob.id, store.next_task(bob.id).id, [0, 1], rationale="bob's private reason")
    ann = store.authenticate("ann", "ann-password")
    script = f"""
import sys
sys.path.insert(0, {str(APP.parent)!r})
import ui_admin
from rlhfv.store.store import Store, UserInfo
ui_admin.{page}(Store({store.url!r}), UserInfo({ann.id}, "ann", "admin"))  # a forged role
"""
    at = AppTest.from_string(script, default_timeout=30).run()
    assert [e.value for e in at.error] == ["This page is for admins only."]
    assert not at.button and not at.dataframe and not at.metric


def test_labelling_maps_the_shown_order_back_and_records_choice_rationale_and_time(store: Store):
    store.add_tasks([NewTask("Which is red?", ["red", "blue"]), NewTask("Rank", ["x", "y", "z"])], overlap=1)
    at = logged_in("ann", "ann-password")
    assert "0 labelled, 2 to go" in at.get("progress")[0].proto.text
    click(at, "Start labelling")
    shown = [t.value for t in at.text if t.value in ("red", "blue")]
    at.radio[0].set_value("A")
    at.text_area[0].input("A says red")
    click(at, "Submit")
    label = store.labels()[0]
    winner = label["responses"][label["ranks"].index(0)]
    assert winner == shown[0]  # what was on the left won, whatever the stored order
    assert label["rationale"] == "A says red" and label["seconds"] >= 0
    # The ranking task: rank by position, then check the stored ranks name the same responses.
    shown = [t.value for t in at.text if t.value in ("x", "y", "z")]
    click(at, "Submit")
    assert [e.value for e in at.error] == ["Give every response a rank first."]
    for position, rank in enumerate([2, 1, 3]):
        at.selectbox[position].set_value(rank)
    click(at, "Submit")
    ranks = store.labels()[1]["ranks"]
    assert [ranks[["x", "y", "z"].index(text)] for text in shown] == [1, 0, 2]
    assert any("Nothing left" in s.value for s in at.success)


def test_skip_moves_on_and_the_task_returns_once_after_the_rest(store: Store):
    store.add_tasks([NewTask("first", ["a", "b"]), NewTask("second", ["c", "d"])], overlap=1)
    at = click(logged_in("ann", "ann-password"), "Start labelling")
    assert "first" in [t.value for t in at.text]
    click(at, "Skip")
    assert "second" in [t.value for t in at.text]
    at.radio[0].set_value("Tie")
    click(at, "Submit")
    assert store.labels()[0]["ranks"] == [0, 0]
    assert "first" in [t.value for t in at.text]  # back at the end
    click(at, "Skip")
    assert any("Nothing left" in s.value for s in at.success)
    assert store.user_progress(store.authenticate("ann", "ann-password").id)["skipped"] == 1


def test_admin_imports_shapes_sees_agreement_exports_and_adds_a_user(store: Store, tmp_path: Path):
    at = logged_in("boss", "boss-password")
    at.radio(key="page").set_value("Import tasks").run()
    at.text_area[0].input("Prefer the answer that names the **right colour**.")
    click(at, "Save guidelines")
    at.number_input[0].set_value(2)  # k, the project's overlap
    click(at, "Save k")
    at.radio(key="page").set_value("Users").run()
    at.radio(key="page").set_value("Import tasks").run()
    assert at.number_input[0].value == 2  # the field shows the project's k, not a fixed 3
    click(at, "Import ShapesVQA gold items")
    assert any("Added 20 tasks; 0 tasks already there." in s.value for s in at.success)
    for name in ("ann", "bob"):
        user = store.authenticate(name, f"{name}-password")
        if name == "ann":
            view = store.next_task(user.id)
            ann = logged_in("ann", "ann-password")  # guidelines are shown to annotators
            assert any("right colour" in m.value for m in ann.markdown)
            store.submit(user.id, view.id, [0, 1])
        while (view := store.next_task(user.id)) is not None:
            store.submit(user.id, view.id, [0, 1])
    at.radio(key="page").set_value("Progress & agreement").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Labels"] == "40 / 40" and metrics["Units with 2+ labels"] == "20"
    assert len(at.dataframe) >= 2  # per annotator, gold accuracy
    at.radio(key="page").set_value("Export").run()
    click(at, "Export snapshot")
    assert (tmp_path / "exports" / "v1" / "preferences.jsonl").is_file()
    click(at, "Export snapshot")
    assert list(at.dataframe[0].value["version"]) == [2, 1]  # earlier snapshots are listed
    assert at.selectbox(key="export-version").value == 2  # the new one is offered
    assert at.get("download_button")  # the archive and the three files
    at.radio(key="page").set_value("Users").run()
    at.text_input[0].input("carol")
    at.text_input[1].input("carol-password")
    click(at, "Add")
    assert store.authenticate("carol", "carol-password").role == "annotator"


def test_oversized_and_oddly_named_uploads_are_refused_with_a_message_and_the_rest_imported(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.syspath_prepend(str(APP.parent))
    import ui_admin

    class Upload:  # what st.file_uploader hands back
        def __init__(self, name: str, data: bytes):
            self.name, self.size, self._data = name, len(data), data

        def getvalue(self) -> bytes:
            return self._data

    shown: dict[str, list[str]] = {"error": [], "warning": [], "success": []}
    for kind in shown:
        monkeypatch.setattr(ui_admin.st, kind, lambda text, kind=kind: shown[kind].append(str(text)))
    problems: list[dict] = []
    monkeypatch.setattr(ui_admin.st, "dataframe", lambda rows, **_: problems.extend(rows))
    monkeypatch.setenv("RLHFV_MAX_UPLOAD_MB", "1")
    img = store.media_dir.parent / "ok.png"
    Image.new("RGB", (10, 10)).save(img)
    rows = [{"prompt": "p", "images": ["ok.png"], "responses": ["a", "b"]},
            {"prompt": "q", "images": ["big.png"], "responses": ["a", "b"]},
            {"prompt": "r", "images": ["gone.png"], "responses": ["a", "b"]}]  # fmt: skip
    task_file = Upload("pilot-batch.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    uploads = [Upload("ok.png", img.read_bytes()), Upload("big.png", b"\0" * (2 * 2**20)), Upload("..", b"x")]
    ui_admin.import_uploads(store, task_file, uploads, overlap=1)
    assert store.overview()["tasks"] == 1
    assert any("big.png is 2.0 MiB, over the 1 MiB upload limit" in e for e in shown["error"])
    assert any("'..' is not a plain file name" in e for e in shown["error"])
    assert shown["warning"] == ["Skipped 2 bad rows; everything else was imported."]
    assert problems[1] == {"line": 3, "field": "images[0]", "problem": "gone.png: image file not found"}
    assert store.labels() == [] and store.next_task(store.authenticate("ann", "ann-password").id).id
    with store.session() as s:
        assert s.scalars(select(Task.source)).all() == ["pilot-batch"]  # the uploaded file's name
    shown["error"].clear()
    ui_admin.import_uploads(store, Upload("huge.jsonl", b" " * (2 * 2**20)), [], overlap=1)
    assert shown["error"] == ["huge.jsonl is 2.0 MiB, over the 1 MiB upload limit; not used."]


def test_an_oversized_image_quotes_one_limit_and_an_escaping_path_reads_as_a_sentence(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.syspath_prepend(str(APP.parent))
    import ui_admin

    from rlhfv.store.ingest import MAX_IMAGE_BYTES

    class Upload:  # what st.file_uploader hands back
        def __init__(self, name: str, data: bytes):
            self.name, self.size, self._data = name, len(data), data

        def getvalue(self) -> bytes:
            return self._data

    said: list[str] = []
    for kind in ("error", "warning", "success"):
        monkeypatch.setattr(ui_admin.st, kind, lambda text: said.append(str(text)))
    monkeypatch.setattr(ui_admin.st, "dataframe", lambda rows, **_: said.extend(r["problem"] for r in rows))
    monkeypatch.setenv("RLHFV_MAX_UPLOAD_MB", "50")  # the upload limit is above the image limit (20 MiB)
    rows = [{"prompt": "p", "images": ["big.png"], "responses": ["a", "b"]},
            {"prompt": "q", "images": ["../outside.png"], "responses": ["a", "b"]}]  # fmt: skip
    task_file = Upload("batch.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    big = Upload("big.png", b"\0" * (MAX_IMAGE_BYTES + 2**20))
    ui_admin.import_uploads(store, task_file, [big], overlap=1)
    about_big = [m for m in said if "big.png is" in m]
    assert about_big == ["big.png is 21.0 MiB, over the 20 MiB limit for an image; not used."]
    assert not any("50 MiB" in m for m in said)  # one limit, the one that applies
    assert "../outside.png: image path escapes the folder of the uploaded images" in said


def test_the_users_table_shows_a_user_as_soon_as_they_are_added_or_changed(store: Store):
    at = logged_in("boss", "boss-password")
    at.radio(key="page").set_value("Users").run()
    at.text_input[0].input("carol")
    at.text_input[1].input("carol-password")
    click(at, "Add")
    users = at.dataframe[0].value
    assert "carol" in list(users["name"])
    at.selectbox[1].set_value("carol")
    at.selectbox[3].set_value("disabled")
    click(at, "Save")
    users = at.dataframe[0].value
    assert not users[users["name"] == "carol"]["active"].item()


def test_adjudication_shows_each_annotators_vote_and_the_ranks_have_a_legend(store: Store):
    store.add_tasks([NewTask("Disputed", ["left", "right"])], overlap=2)
    for name, ranks, why in (("ann", [0, 1], "left is right"), ("bob", [1, 0], "right, surely")):
        user = store.authenticate(name, f"{name}-password")
        store.submit(user.id, store.next_task(user.id).id, ranks, rationale=why)
    at = logged_in("boss", "boss-password")
    at.radio(key="page").set_value("Progress & agreement").run()
    votes = at.table[-1].value.to_dict("records")
    assert votes == [
        {"annotator": "ann", "Response 0": 1, "Response 1": 2, "rationale": "left is right"},
        {"annotator": "bob", "Response 0": 2, "Response 1": 1, "rationale": "right, surely"},
    ]
    assert any(c.value.startswith("ranks: one number per response") for c in at.caption)


def test_a_locked_account_is_marked_on_the_users_page_and_an_admin_unlocks_it(store: Store):
    from rlhfv.store.store import MAX_ACCOUNT_FAILURES

    for i in range(MAX_ACCOUNT_FAILURES):
        store.authenticate("ann", f"guess {i}", address="10.0.0.9")
    assert store.authenticate("ann", "ann-password") is None  # locked
    at = logged_in("boss", "boss-password")
    at.radio(key="page").set_value("Users").run()
    users = at.dataframe[0].value.set_index("name")
    assert users.loc["ann", "locked"].startswith("for ") and users.loc["bob", "locked"] == ""
    at.selectbox(key="unlock-name").set_value("ann")
    click(at, "Unlock")
    assert at.dataframe[0].value.set_index("name").loc["ann", "locked"] == ""
    assert store.authenticate("ann", "ann-password").name == "ann"


def write_run(run: Path) -> None:
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("pipeline: x\n")
    rows = [{"step": s, "loss/policy": 1.0 / s, "reward/mean": 0.1 * s, "grm/accuracy": 0.5 + 0.01 * s,
             "monitor/length_drift": 0.02 * s, "monitor/position_bias": 0.1, "note": "text"} for s in range(1, 6)]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "loss')
    Image.new("RGB", (16, 16), (0, 0, 255)).save(run / "r0.png")
    rollout = {"step": 5, "prompt": "What colour is it?", "images": ["r0.png"], "completions": ["blue", "red"],
               "rewards": [0.9, 0.1], "judgments": [{"a": 0, "b": 1, "text": "The first is right.", "scores": [9, 2]}]}  # fmt: skip
    (run / "rollouts.jsonl").write_text(json.dumps(rollout) + "\n")


def test_dashboard_plots_each_metric_area_shows_monitors_and_queues_a_rollout(store: Store, tmp_path: Path):
    write_run(tmp_path / "checkpoints" / "grm-run")
    at = logged_in("boss", "boss-password")
    at.radio(key="page").set_value("Training dashboard").run()
    assert not at.exception, at.exception
    headers = [h.value for h in at.subheader]
    assert headers[0] == "Reward-hacking monitors" and {"grm", "loss", "reward"} <= set(headers)
    assert {m.label for m in at.metric} == {"length_drift", "position_bias"}
    assert len(at.get("vega_lite_chart")) == 4  # one chart per area; the text key "note" is not plotted
    texts = [t.value for t in at.text]
    assert "The first is right." in texts and "blue" in texts
    assert len(at.get("image")) == 1
    store.set_setting("overlap", "2")  # the project's k, set on the Import page
    click(at, "Send to the label queue")
    assert store.overview()["tasks"] == 1
    assert any("Queued" in s.value for s in at.success)
    with store.session() as s:
        task = s.scalars(select(Task)).one()
        assert (task.overlap, task.external_id, task.source) == (2, "step5-line1", "rollout:grm-run")


def test_admin_adjudicates_a_disputed_task_and_the_answer_becomes_gold(store: Store):
    store.add_tasks([NewTask("Disputed", ["left", "right"])], overlap=2)
    for name, ranks in (("ann", [0, 1]), ("bob", [1, 0])):
        user = store.authenticate(name, f"{name}-password")
        store.submit(user.id, store.next_task(user.id).id, ranks)
    at = logged_in("boss", "boss-password")
    at.radio(key="page").set_value("Progress & agreement").run()
    assert any(h.value == "Tasks with disagreement (1)" for h in at.subheader)
    task_id = store.labels()[0]["task_id"]
    at.selectbox(key="drill-annotator").set_value("bob").run()
    drill = at.dataframe[-2].value  # bob's disagreements, above the disputed tasks' labels
    assert list(drill["prompt"]) == ["Disputed"] and list(drill["own"]) == ["response 1 better"]
    assert at.selectbox(key="adjudicate-task").options == [f"Disputed (task {task_id})"]
    assert {"Disputed", "left", "right"} <= {t.value for t in at.text}  # the task, as plain text
    click(at, "Save as the answer")  # untouched: no tie is stored by default
    assert [e.value for e in at.error] == ["Give every response a rank first."] and store.gold() == {}
    at.selectbox(key=f"adj-{task_id}-0").set_value(2)
    at.selectbox(key=f"adj-{task_id}-1").set_value(1)
    click(at, "Save as the answer")
    assert store.gold() == {task_id: [1, 0]}
    at.run()
    assert any(h.value == "Tasks with disagreement (0)" for h in at.subheader)
    accuracy = {
        r["annotator"]: r["accuracy"] for r in gold_accuracy(units_from_labels(store.labels()), store.gold())
    }
    assert accuracy == {"ann": 0.0, "bob": 1.0}


def test_opening_the_label_page_claims_nothing_until_start_and_admins_land_elsewhere(store: Store):
    store.add_tasks([NewTask("the only task", ["a", "b"])], overlap=1)
    bob = store.authenticate("bob", "bob-password")
    admin = logged_in("boss", "boss-password")
    assert admin.radio(key="page").value == "Progress & agreement"
    ann = logged_in("ann", "ann-password")  # her first page is Label
    assert "0 labelled, 1 to go" in ann.get("progress")[0].proto.text
    assert store.user_progress(bob.id)["available"] == 1  # nobody holds the task's one slot yet
    click(ann, "Start labelling")
    assert "the only task" in [t.value for t in ann.text]
    assert store.user_progress(bob.id)["available"] == 0 and store.next_task(bob.id) is None


def test_a_password_change_logs_out_an_open_browser_at_its_next_rerun(store: Store):
    at = logged_in("ann", "ann-password")
    assert at.radio(key="page").options == ["Label"]
    store.update_user("ann", password="a-new-password")
    at.run()
    assert not at.radio and at.text_input(key="login-name") is not None
    assert logged_in("ann", "a-new-password").radio(key="page").options == ["Label"]


def test_repeated_wrong_passwords_lock_the_account_for_new_browser_sessions_too(store: Store):
    at = logged_in("ann", "guess-0")
    for i in range(1, MAX_ACCOUNT_FAILURES):
        at.text_input(key="login-password").input(f"guess-{i}")
        click(at, "Log in")
    fresh = logged_in("ann", "ann-password")  # a reload: a new Streamlit session, the right password
    assert not fresh.radio
    assert [e.value for e in fresh.error] == [
        "Too many failed logins; try again in 15 minutes or ask an admin."
    ]
    assert [(t["name"], t["outcome"]) for t in store.login_attempts(2)] == [
        ("ann", "locked"),
        ("ann", "failed"),
    ]
    admin = logged_in("boss", "boss-password")
    assert not admin.dataframe and "No labels yet." in [c.value for c in admin.caption]  # no grey bar
    admin.radio(key="page").set_value("Users").run()
    refused = admin.dataframe[-1].value
    assert list(refused["name"]) == ["ann"] * (MAX_ACCOUNT_FAILURES + 1)
    assert list(refused["outcome"]) == ["locked"] + ["failed"] * MAX_ACCOUNT_FAILURES
    assert "password" not in " ".join(refused.columns)


def test_small_images_are_enlarged_by_a_whole_factor_without_blurring(tmp_path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(APP.parent))
    import ui_label

    small = Image.new("RGB", (96, 96), (0, 0, 0))
    small.putpixel((5, 7), (255, 0, 0))
    small.save(tmp_path / "small.png")
    big = ui_label.crisp(tmp_path / "small.png")
    assert big.size == (384, 384)  # 96 x 4
    block = {big.getpixel((x, y)) for x in range(20, 24) for y in range(28, 32)}
    assert block == {(255, 0, 0)} and big.getpixel((19, 28)) == (0, 0, 0)  # one pixel, a sharp 4x4 block
    Image.new("RGB", (640, 480)).save(tmp_path / "photo.png")
    assert ui_label.crisp(tmp_path / "photo.png") is None  # large enough: shown as it is


def test_sparse_eval_points_are_drawn_and_perf_rates_get_their_own_axes(store: Store, tmp_path: Path):
    run = tmp_path / "checkpoints" / "sparse"
    run.mkdir(parents=True)
    rows = [
        {"step": s, "loss/policy": 1.0 / s, "perf/tokens_per_s": 5000.0 + s, "perf/step_s": 0.2}
        for s in range(1, 7)
    ]
    rows[1]["eval/accuracy"], rows[4]["eval/accuracy"] = 0.4, 0.7  # logged at steps 2 and 5 only
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    at = logged_in("boss", "boss-password")
    at.radio(key="page").set_value("Training dashboard").run()
    assert not at.exception, at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    assert len(specs) == 4  # eval, loss, and perf/step_s and perf/tokens_per_s apart
    assert all(spec["mark"] == {"type": "line", "point": True} for spec in specs)
    eval_rows = pa.ipc.open_stream(at.get("vega_lite_chart")[0].proto.datasets[0].data.data).read_all()
    assert eval_rows.column("value").to_pylist() == [0.4, 0.7]  # the two logged points, no NaN rows


def test_an_annotator_flags_a_broken_task_and_an_admin_finds_and_retires_it(store: Store):
    store.add_tasks([NewTask("Broken: no image", ["a", "b"]), NewTask("Fine", ["c", "d"])], overlap=1)
    ann = click(logged_in("ann", "ann-password"), "Start labelling")
    assert "Broken: no image" in [t.value for t in ann.text]
    click(ann, "Flag as broken")
    assert [e.value for e in ann.error] == ["say what is wrong with the task"]
    broken = browse_tasks(store, search="Broken")[0]["task_id"]
    ann.text_input(key=f"flag-comment-{broken}").input("the image is missing")
    click(ann, "Flag as broken")
    assert "Fine" in [t.value for t in ann.text]  # moved on
    admin = logged_in("boss", "boss-password")
    admin.radio(key="page").set_value("Tasks").run()
    assert any(h.value == "Flagged as broken (1)" for h in admin.header)
    assert list(admin.dataframe[0].value["comment"]) == ["the image is missing"]
    admin.text_input(key="task-search").input("broken").run()
    assert list(admin.dataframe[1].value["prompt"]) == ["Broken: no image"]
    click(admin, "Retire (offer to nobody, leave out of exports)")
    assert any(h.value == "Flagged as broken (0)" for h in admin.header)  # retiring resolves it
    assert list(admin.dataframe[0].value["status"]) == ["retired"]
    bob = store.authenticate("bob", "bob-password")
    assert store.next_task(bob.id) is None  # "Fine" is ann's; the flagged task is retired


def test_an_annotator_changes_her_last_label_in_the_order_she_saw_it(store: Store):
    store.add_tasks([NewTask("Which is red?", ["red", "blue"])], overlap=1)
    at = click(logged_in("ann", "ann-password"), "Start labelling")
    shown = [t.value for t in at.text if t.value in ("red", "blue")]
    at.radio[0].set_value("A")
    click(at, "Submit")
    assert any("Nothing left" in s.value for s in at.success)
    task_id = store.labels()[0]["task_id"]
    assert at.radio(key=f"edit-choice-{task_id}").value == "A"  # her label, as she saw it
    at.radio(key=f"edit-choice-{task_id}").set_value("B")
    at.text_area(key=f"edit-why-{task_id}").input("misread it")
    click(at, "Save the change")
    label = store.labels()[0]
    assert label["responses"][label["ranks"].index(0)] == shown[1] and label["rationale"] == "misread it"
