"""The active loop: rounds of sample → score → queue → label → export → retrain, its stopping
rules and bad input, and kill -9 at each phase followed by run.resume=auto."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhfv.cli import main as cli
from rlhfv.data.pairs import short_answer
from rlhfv.store.store import NewTask, Store

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes" / "active_loop_shapes.yaml")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from rlhfv.models.base import save_model
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model(tiny_qwen2_vl(seed=0), path)
    return path


@dataclass
class Db:
    """The store a loop test runs on: a SQLite file in the run folder or PostgreSQL (`database_url`)."""

    url: str
    media: Path

    def open(self) -> Store:
        return Store(self.url, media_dir=self.media)

    def keys(self) -> list[str]:
        return [f"store={self.url}", f"media={self.media}"]


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> Db:
    if database_url.startswith("sqlite"):  # where the loop puts it by default
        return Db(f"sqlite:///{tmp_path / 'run' / 'store.db'}", tmp_path / "run" / "media")
    return Db(database_url, tmp_path / "media")


def tiny(run_dir: Path, model: Path, *extra: str, db: Db | None = None) -> list[str]:
    """The recipe cut to seconds: tiny models, a parity checker a random policy's answers split."""
    parity = "tests.data.test_pairs.ParityGraded"
    return [
        f"run.dir={run_dir}", "run.resume=auto", f"policy.path={model}", f"grm.path={model}",
        f"pool._component_={parity}", "pool.size=6", "pool.tasks=[count]",
        "samples=3", "max_new_tokens=6", "judge_samples=2", "judge_max_new_tokens=6", "judge_force=true",
        "per_round=2", "rounds=2", "overlap=2", "simulated.count=2", "poll_s=0.05", "store_backoff_s=0.01",
        "grm_train.steps=2", "grm_train.batch_size=2", "grm_train.warmup_steps=0", "grm_train.eval_batch_size=4",
        "grm_train.max_new_tokens=6", f"grm_train.eval_data.pairs.data._component_={parity}",
        "grm_train.eval_data.pairs.data.size=4", "grm_train.eval_data.pairs.data.tasks=[count]",
        "grm_train.eval_data.pairs.max_new_tokens=6", "grm_train.eval_data.pairs.samples=3",
        "retrain.validation=0", *(db.keys() if db else []), *extra,
    ]  # fmt: skip


def loop_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "loop_state.json").read_text())


def check_store(run_dir: Path, db: Db, rounds: int, per_round: int = 2, overlap: int = 2) -> None:
    """Each round's tasks queued once, each with exactly `overlap` labels, none counted twice."""
    store = db.open()
    progress = store.task_progress("loop:")
    labels = store.labels()
    store.close()
    ids = list(progress)
    assert len(ids) == len(set(ids)) == rounds * per_round
    assert sorted({i.split(":")[2] for i in ids}) == [f"r{r}" for r in range(1, rounds + 1)]
    assert all(p.labels == overlap for p in progress.values())
    assert (
        len(labels)
        == len({(row["task_id"], row["annotator"]) for row in labels})
        == rounds * per_round * overlap
    )
    history = loop_state(run_dir)["history"]
    assert [h["round"] for h in history] == list(range(1, rounds + 1))
    assert [h["labels/used"] for h in history] == [r * per_round * overlap for r in range(1, rounds + 1)]


@pytest.mark.slow
def test_the_tiny_loop_runs_its_rounds_and_reports_accuracy_per_round(tmp_path, tiny_model, db, capsys):
    assert cli(["run", RECIPE, *tiny(tmp_path / "run", tiny_model, db=db)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rounds"] == 2 and out["labels_by_round"] == [4, 8] and len(out["accuracy_by_round"]) == 2
    assert out["stopped"] == "all 2 rounds done"
    check_store(tmp_path / "run", db, rounds=2)
    # each round trained from the starting GRM on the pairs of all labels so far, and judged the next
    assert (tmp_path / "run" / "round_2" / "grm" / "final").is_dir()
    assert loop_state(tmp_path / "run")["grm"].endswith("round_2/grm/final")
    store = db.open()  # the state is mirrored where the app can show it
    assert json.loads(store.setting("loop:active_loop_shapes")) == loop_state(tmp_path / "run")
    store.close()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "grm/accuracy" in r] == [1, 2]
    assert all("loop/unparsable" in r for r in rows if "grm/accuracy" in r)
    # it trained on its pairs with each response's short answer and the labelled winner as the reading
    snapshot = Path(loop_state(tmp_path / "run")["snapshot"])
    pairs = [json.loads(x) for x in (snapshot / "loop_preferences.jsonl").read_text().splitlines()]
    assert pairs and all(p["reference"] == p["responses"][p["preferred"]] for p in pairs)
    assert all(p["answers"] == [short_answer(r, "1") for r in p["responses"]] for p in pairs)


@pytest.mark.slow
def test_the_mode_without_a_reading_still_runs(tmp_path, tiny_model, db, capsys):
    """A GRM judged and trained on the question and answers alone (no own answer, "verdict")."""
    verdict = [
        "judge_reading=false",
        "judge_task.analysis=verdict",
        "judge_task.reading=none",
        "judge_task.misread=0",
        "judge_task.reading_items=0",
        "grm_train.eval_data.analysis=verdict",
        "grm_train.eval_data.reading=none",
        "retrain.replay=null",
    ]  # fmt: skip (grm_refine's data is "compare")
    assert cli(["run", RECIPE, *tiny(tmp_path / "run", tiny_model, *verdict, db=db)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labels_by_round"] == [4, 8] and len(out["accuracy_by_round"]) == 2
    recipe = (tmp_path / "run" / "round_2" / "grm" / "recipe.yaml").read_text()
    assert "analysis: verdict" in recipe and "reading: given" not in recipe


@pytest.mark.slow
def test_policy_grpo_every_round_trains_the_policy_the_next_round_pairs(tmp_path, tiny_model, db, capsys):
    grpo = ["policy_every=1", "policy_train.steps=1", "policy_train.prompts_per_step=2", "policy_train.group_size=2",
            "policy_train.max_new_tokens=4", "policy_train.train_data.size=8", "policy_train.eval_data.size=2",
            "policy_train.eval_batch_size=2", "policy_train.log_rollouts_every=0"]  # fmt: skip
    run_dir = tmp_path / "run"
    assert cli(["run", RECIPE, *tiny(run_dir, tiny_model, *grpo, db=db)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == str(run_dir / "round_1" / "policy" / "final")  # round 2 ends the loop: no GRPO
    assert (
        json.loads((run_dir / "round_1" / "policy" / "summary.json").read_text())["final_reward"] is not None
    )
    history = loop_state(run_dir)["history"]
    assert "policy/accuracy" in history[0] and "policy/accuracy" not in history[1]
    check_store(run_dir, db, rounds=2)
    # the GRPO stage was given the GRM trained in round 1 as its judge
    recipe = (run_dir / "round_1" / "policy" / "recipe.yaml").read_text()
    assert f"path: {run_dir}/round_1/grm/final" in recipe


def run_cli(run_dir: Path, model: Path, *extra: str, db: Db, hold: str = "") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RLHFV_LOOP_HOLD": hold}
    args = [sys.executable, "-m", "rlhfv.cli", "run", RECIPE, *tiny(run_dir, model, *extra, db=db)]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize(
    "hold, phase",
    [("sample", "sample"), ("queue", "sample"), ("wait", "wait"), ("export", "export"), ("train", "train")],
)
def test_kill_9_in_a_phase_then_resume_continues_the_same_round_losing_and_doubling_nothing(
    tmp_path, tiny_model, db, hold, phase
):
    """`hold` stops the loop mid-phase: after judging (sample), after queueing but before the state
    says so (queue), after one of two labellers (wait), after the snapshot (export), after the
    GRM's SFT (train); each before the phase's state is saved."""
    run_dir = tmp_path / "run"
    victim = run_cli(run_dir, tiny_model, db=db, hold=hold)
    deadline = time.time() + 240
    while not (run_dir / f"held-{hold}").exists():  # the loop stops mid-phase in round 1
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
        assert time.time() < deadline, f"the loop never reached the {phase} phase"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    state = loop_state(run_dir)
    assert (state["round"], state["phase"]) == (1, phase)  # killed in the middle of that phase
    store = db.open()
    queued_before = {k: p.id for k, p in store.task_progress("loop:").items()}
    store.close()
    if hold != "sample":
        assert len(queued_before) == 2  # queued before the kill: must not be queued again

    resumed = run_cli(run_dir, tiny_model, db=db)
    assert resumed.wait(timeout=240) == 0, resumed.stderr.read().decode()[-3000:]
    check_store(run_dir, db, rounds=2)
    store = db.open()
    after = {k: p.id for k, p in store.task_progress("loop:").items()}
    store.close()
    assert all(after[k] == v for k, v in queued_before.items())  # the same round-1 tasks, not new ones
    assert loop_state(run_dir)["phase"] == "done"


def test_bad_recipes_are_refused_before_any_work_naming_the_key(tmp_path, tiny_model, capsys):
    cases = {
        "annotators=robots": "annotators = 'robots'",
        "simulated.count=1": "simulated.count = 1 labellers cannot give each task overlap = 2",
        "samples=1": "samples = 1",
        "grm_train.stepz=3": "grm_train: unknown key 'stepz'; did you mean 'steps'",
        "judge_task.analysys=verdict": "judge_task: unknown key .*analysys",
        "selection=rlhfv.grm.selection.nope": "selection = 'rlhfv.grm.selection.nope'",
    }
    for override, message in cases.items():
        assert cli(["run", RECIPE, *tiny(tmp_path / override, tiny_model, override)]) == 2
        assert re.search(message, capsys.readouterr().err), override
        assert not (tmp_path / override / "loop_state.json").exists()


@pytest.mark.slow
def test_an_empty_pool_and_unparsable_judgements_stop_the_round_clearly_and_it_stays_resumable(
    tmp_path, tiny_model, db
):
    run_dir = tmp_path / "run"
    # Without forced score lines the random tiny GRM never writes a score: every candidate is
    # unparsable, none is queued with a made-up score.
    with pytest.raises(
        ValueError, match=r"round 1: empty candidate pool: the GRM's judgements of all 4 .* unparsable \(4\)"
    ):
        cli(["run", RECIPE, *tiny(run_dir, tiny_model, "judge_force=false", db=db)])
    assert (loop_state(run_dir)["round"], loop_state(run_dir)["phase"]) == (1, "sample")
    assert db.open().task_progress("loop:") == {}
    stopped = db.open().setting("loop:active_loop_shapes:stopped")  # what the app's Loop page shows
    assert stopped.startswith("stopped at round 1, phase sample: ValueError: round 1: empty candidate pool")
    # ShapesVQA's own checker: a random policy never says the right answer, so nothing pairs.
    with pytest.raises(ValueError, match="round 1: empty candidate pool: none of the 6 pool questions"):
        cli(
            ["run", RECIPE, *tiny(run_dir, tiny_model, "pool._component_=rlhfv.data.shapes.ShapesVQA", db=db)]
        )
    # fixed, the same run continues from round 1
    assert cli(["run", RECIPE, *tiny(run_dir, tiny_model, "rounds=1", db=db)]) == 0
    check_store(run_dir, db, rounds=1)


@pytest.mark.slow
def test_app_annotators_time_out_resumably_and_the_loop_takes_peoples_labels_on_resume(
    tmp_path, tiny_model, db, caplog
):
    run_dir = tmp_path / "run"
    app = ["annotators=app", "wait_timeout_s=0.3", "rounds=1"]
    with pytest.raises(TimeoutError, match=r"round 1: 4 labels still missing on 2 tasks .* run.resume=auto"):
        cli(["run", RECIPE, *tiny(run_dir, tiny_model, *app, db=db)])
    assert loop_state(run_dir)["phase"] == "wait"
    from rlhfv.store.curation import retire_task

    store = db.open()
    # an admin withdraws one of the round's tasks: the loop stops waiting for it and does not count it
    retire_task(store, next(iter(store.task_progress("loop:").values())).id)
    # people label through the store as the app does, one of them also a task of another source
    store.add_tasks([NewTask(prompt="not the loop's", responses=["a", "b"], external_id="mine")], overlap=1)
    for name in ("ann", "bob"):
        user = store.add_user(name, f"{name}-password").id
        while (view := store.next_task(user)) is not None:
            store.submit(user, view.id, [0, 1])
    store.close()
    assert cli(["run", RECIPE, *tiny(run_dir, tiny_model, *app, db=db)]) == 0
    foreign = store.task_progress("mine")["mine"].id
    assert f"labels on 1 task(s) the loop does not track (task ids [{foreign}])" in caplog.text
    state = loop_state(run_dir)
    assert state["history"][0]["labels/used"] == 2  # neither the foreign label nor the retired task's
    rows = (Path(state["snapshot"]) / "preferences.jsonl").read_text().splitlines()
    loop_rows = (Path(state["snapshot"]) / "loop_preferences.jsonl").read_text().splitlines()
    assert len(rows) == 2 and len(loop_rows) == 1  # the foreign pair is exported but not trained on


def test_an_admin_can_end_a_round_early_and_a_round_without_pairs_keeps_the_grm(tmp_path, tiny_model, db):
    run_dir = tmp_path / "run"
    store = db.open()
    store.set_setting("loop:active_loop_shapes:end_round", "1")  # what the app's admin would set
    store.set_setting("overlap", "4")  # the project's k, which overlap=0 takes
    store.close()
    assert (
        cli(["run", RECIPE, *tiny(run_dir, tiny_model, "annotators=app", "rounds=1", "overlap=0", db=db)])
        == 0
    )
    store = db.open()
    from sqlalchemy import select

    from rlhfv.store.schema import Task

    with store.session() as s:  # task_progress leaves out retired tasks, and the loop has ended
        assert s.scalars(select(Task.overlap).where(Task.external_id.startswith("loop:"))).all() == [4, 4]
    store.close()
    state = loop_state(run_dir)
    assert state["history"][0]["labels/used"] == 0 and state["history"][0]["labels/pairs"] == 0
    assert state["grm"] == state["grm_start"] and not (run_dir / "round_1" / "grm").exists()
    assert state["history"][0]["grm/decision"] == "kept"
    assert "round 1's labels give no new preference pair" in state["history"][0]["grm/reason"]
    # the loop has ended: its tasks still waiting for labels leave every queue
    store = db.open()
    late = store.add_user("late", "late-password").id
    assert store.next_task(late) is None and store.task_progress("loop:") == {}
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_unreachable_store_is_retried_with_backoff_then_stops_with_a_message(
    tmp_path, tiny_model, caplog, kind
):
    blocked = tmp_path / "not-a-database"
    blocked.mkdir()  # a folder where the SQLite file should be: every open fails
    if kind == "postgresql":  # a server that does not answer (nothing listens on port 9)
        blocked = "postgresql+psycopg://rlhfv:secret@127.0.0.1:9/rlhfv"
    shown = str(blocked).replace(":secret@", ":***@")  # the password never appears
    with pytest.raises(
        RuntimeError, match=rf"store {re.escape(shown)}: opening failed 3 times .* run.resume=auto"
    ):
        cli(["run", RECIPE, *tiny(tmp_path / "run", tiny_model, f"store={blocked}", "store_retries=2")])
    assert caplog.text.count("retrying in") == 2
    assert "secret" not in caplog.text


def test_a_loop_in_progress_is_not_restarted_without_being_asked(tmp_path, tiny_model):
    from rlhfv.training.run import RunExistsError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "loop_state.json").write_text("{}")
    with pytest.raises(RunExistsError, match="run.resume=auto"):
        cli(["run", RECIPE, *tiny(tmp_path / "run", tiny_model, "run.resume=never")])


def test_a_candidate_whose_judgements_all_fail_to_parse_is_skipped_counted_and_never_queued(
    tmp_path, tiny_model, db, monkeypatch, caplog
):
    from dataclasses import replace

    from rlhfv.pipelines import active_loop

    judge, kept = active_loop.judge, []

    def all_but_one_unparsable(grm, items, **kwargs):
        """The real judgements, but every candidate after the first loses all its scores."""
        out = judge(grm, items, **kwargs)
        for j, item in enumerate(items):
            if not kept:
                kept.append((item.question, item.responses))
            elif (item.question, item.responses) != kept[0]:
                out[j] = replace(out[j], scores=[None] * len(out[j].scores))
        return out

    monkeypatch.setattr(active_loop, "judge", all_but_one_unparsable)
    run_dir = tmp_path / "run"
    assert cli(["run", RECIPE, *tiny(run_dir, tiny_model, "rounds=1", db=db)]) == 0
    stats = loop_state(run_dir)["history"][0]
    assert stats["loop/candidates"] > 2  # several to choose from, per_round = 2 …
    assert stats["loop/unparsable"] == stats["loop/candidates"] - 1  # … all counted as unparsable but one,
    assert stats["loop/queued"] == 1  # so one task is queued, not two: none with a made-up score
    n, c = stats["loop/unparsable"], stats["loop/candidates"]
    assert f"round 1: no judgement of {n} of the {c} candidate pairs parsed; they are skipped" in caplog.text
    store = db.open()
    queued = store.labels()
    store.close()
    assert {(row["prompt"], tuple(row["responses"])) for row in queued} == {(kept[0][0], tuple(kept[0][1]))}


def test_a_store_lost_mid_round_is_retried_then_stops_naming_the_phase_and_the_loop_resumes(
    tmp_path, tiny_model, db, monkeypatch, caplog
):
    from sqlalchemy.exc import OperationalError

    calls = []
    task_progress = Store.task_progress

    def lost_after_queueing(self, prefix):
        calls.append(prefix)
        if len(calls) > 1:  # the first read is the sample phase's; from the wait on, the store is gone
            raise OperationalError("SELECT", {}, Exception("unable to open database file"))
        return task_progress(self, prefix)

    monkeypatch.setattr(Store, "task_progress", lost_after_queueing)
    run_dir = tmp_path / "run"
    app = ["annotators=app", "rounds=1", "store_retries=2"]
    with pytest.raises(
        RuntimeError, match=r"reading tasks failed 3 times .* round 1, phase wait: make the store"
    ):
        cli(["run", RECIPE, *tiny(run_dir, tiny_model, *app, db=db)])
    assert caplog.text.count("retrying in") == 2
    assert (loop_state(run_dir)["round"], loop_state(run_dir)["phase"]) == (1, "wait")
    monkeypatch.undo()  # the store is back: the same round continues, its tasks not queued again
    store = db.open()
    store.set_setting("loop:active_loop_shapes:end_round", "1")
    store.close()
    assert cli(["run", RECIPE, *tiny(run_dir, tiny_model, *app, db=db)]) == 0
    assert loop_state(run_dir)["history"][0]["loop/queued"] == 2
    store = db.open()
    from sqlalchemy import func, select

    from rlhfv.store.schema import Task

    with store.session() as s:  # from the tasks table: the loop has ended and retired its open tasks
        assert s.scalar(select(func.count()).where(Task.external_id.startswith("loop:"))) == 2
    store.close()


REPLAY = [  # the GRM's earlier training data: templated ShapesVQA pairs, as grm_refine trained on
    "retrain.replay._component_=rlhfv.data.pairs.JudgeTask", "retrain.replay.analysis=compare",
    "retrain.replay.reading=given", "retrain.replay.pairs._component_=rlhfv.data.pairs.ShapesPairs",
    "retrain.replay.pairs.size=40", "retrain.replay.pairs.split=train", "retrain.replay.pairs.tasks=[count]",
]  # fmt: skip


@pytest.mark.slow
def test_retraining_mixes_replay_scales_steps_and_lr_and_serves_only_a_grm_no_worse_on_validation(
    tmp_path, tiny_model, db, monkeypatch
):
    from rlhfv.pipelines import active_loop

    # A tiny random GRM scores 0 on every pair, so the validation scores are set here: round 1's
    # last checkpoint scores 1.0 (it is served), round 2's best 0.5 against 0.75 for the GRM served.
    best_checkpoint, score = active_loop.best_checkpoint, active_loop.score

    def rigged_best(cfg, state, run_dir, steps):
        path, best = best_checkpoint(cfg, state, run_dir, steps)
        if state["round"] == 1:
            return str(run_dir / "final"), {**best, "step": steps, "accuracy": 1.0}
        return path, {**best, "accuracy": 0.5}

    def rigged_score(path, dataset, *args):
        if path.endswith("round_1/grm/final") and len(dataset) == loop_state(run_dir)["validation_pairs"]:
            return 0.75
        return score(path, dataset, *args)

    monkeypatch.setattr(active_loop, "best_checkpoint", rigged_best)
    monkeypatch.setattr(active_loop, "score", rigged_score)
    run_dir = tmp_path / "run"
    keys = ["retrain.validation=0.7", "retrain.min_steps=1", "retrain.epochs=1", "retrain.checks=2",
            "retrain.full_lr_pairs=16", "grm_train.steps=4", "per_round=3", "pool.size=8", *REPLAY]  # fmt: skip
    assert cli(["run", RECIPE, *tiny(run_dir, tiny_model, *keys, db=db)]) == 0
    state = loop_state(run_dir)
    first, second = state["history"]
    for record in (first, second):
        assert record["labels/validation"] >= 1  # seeded split: the same on every run of this recipe
        assert "validation pairs" in record["grm/reason"]
    # round 1: labelled pairs + twice as many replayed items; steps ceil(1 epoch × items / batch 2)
    # within [1, 4]; lr 1e-4 (the recipe's) × sqrt(train pairs / 16)
    train = first["labels/pairs"] - first["labels/validation"]
    assert first["grm/replayed"] == 2 * train
    assert first["grm/steps"] == min(4, -(-(3 * train) // 2))
    lr = OmegaConf.load(RECIPE).grm_train.optimizer.lr
    assert first["grm/lr"] == pytest.approx(lr * (train / 16) ** 0.5)
    recipe = OmegaConf.load(run_dir / "round_1" / "grm" / "recipe.yaml")
    assert recipe.train_data._component_ == "rlhfv.data.replay.ReplayMix" and recipe.run.keep_last == 0
    # round 1's best scores at least as well as the served (starting) GRM: it is served
    assert first["grm/decision"] == "replaced" and first["grm/validation"] == 1.0
    assert "grm/accuracy_before" in first and first["grm/accuracy"] == first["grm/candidate_accuracy"]
    # round 2's candidate scores below the GRM served after round 1: that one stays served
    assert second["grm/decision"] == "kept" and (
        second["grm/validation"],
        second["grm/served_validation"],
    ) == (0.5, 0.75)
    assert "scores 0.500 on 1 validation pairs, the served GRM 0.750" in second["grm/reason"]
    assert state["grm"] == str(run_dir / "round_1" / "grm" / "final")
    assert second["grm/accuracy"] == first["grm/accuracy"]  # the served GRM's, not the candidate's


def test_a_round_whose_labels_are_all_ties_keeps_the_grm_and_says_so(tmp_path, tiny_model, db):
    run_dir = tmp_path / "run"
    app = ["annotators=app", "rounds=1", "wait_timeout_s=0.2"]
    with pytest.raises(TimeoutError):  # the round's tasks are queued; people now label them
        cli(["run", RECIPE, *tiny(run_dir, tiny_model, *app, db=db)])
    store = db.open()
    for name in ("ann", "bob"):
        user = store.add_user(name, f"{name}-password").id
        while (view := store.next_task(user)) is not None:
            store.submit(user, view.id, [0, 0])  # "both equally good"
    store.close()
    assert cli(["run", RECIPE, *tiny(run_dir, tiny_model, *app, db=db)]) == 0
    record = loop_state(run_dir)["history"][0]
    assert record["labels/used"] == 4 and record["labels/pairs"] == 0
    assert record["grm/decision"] == "kept"
    assert record["grm/reason"] == "round 1's labels give no new preference pair (all ties, flagged or none)"
    assert loop_state(run_dir)["grm"] == loop_state(run_dir)["grm_start"]


def test_validate_refuses_a_judge_task_the_train_phase_would_refuse(capsys):
    assert cli(["validate", RECIPE, "judge_task.reading=none"]) == 2  # misread 0.2 stays
    assert "judge_task: JudgeTask.misread applies to reading='given' only" in capsys.readouterr().err
    assert cli(["validate", RECIPE, "judge_task.reading=none", "judge_task.misread=0"]) == 2
    assert (
        "retrain.replay trains reading='given' but judge_task has reading='none'" in capsys.readouterr().err
    )
    assert (
        cli(["validate", RECIPE, "judge_task.reading=none", "judge_task.misread=0", "retrain.replay=null"])
        == 0
    )
    assert cli(["validate", RECIPE, "retrain.validation=1"]) == 2
    assert "retrain.validation = 1" in capsys.readouterr().err


@pytest.mark.slow
def test_a_postgresql_server_that_goes_away_mid_round_stops_the_loop_and_it_resumes_losing_nothing(
    tmp_path, tiny_model, monkeypatch, caplog
):
    from sqlalchemy import create_engine, make_url, text

    from rlhfv.pipelines import active_loop
    from tests.conftest import POSTGRES_URL, empty_postgres

    if not POSTGRES_URL:
        pytest.skip("set RLHFV_TEST_POSTGRES_URL to an empty PostgreSQL database (.ci/postgres makes one)")
    empty_postgres(POSTGRES_URL)
    db = Db(POSTGRES_URL, tmp_path / "media")
    url = make_url(POSTGRES_URL)
    # from the maintenance database: a session cannot lock others out of its own database
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def server(allow: bool) -> None:
        """Refuse new connections to the test database and end the open ones (or allow them again)."""
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{url.database}" WITH ALLOW_CONNECTIONS {str(allow).lower()}'))
            if not allow:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"),
                    {"db": url.database},
                )

    hold = active_loop.hold_if_asked

    def gone_after_the_first_labeller(run_dir, phase):
        if phase == "wait":  # one of the two simulated labellers has labelled round 1
            server(allow=False)
        hold(run_dir, phase)

    monkeypatch.setattr(active_loop, "hold_if_asked", gone_after_the_first_labeller)
    run_dir = tmp_path / "run"
    try:
        with pytest.raises(
            RuntimeError, match=r"failed 3 times .* round 1, phase wait: make the store reachable"
        ):
            cli(["run", RECIPE, *tiny(run_dir, tiny_model, "store_retries=2", db=db)])
        assert caplog.text.count("retrying in") >= 2
    finally:
        server(allow=True)
        admin.dispose()
    monkeypatch.undo()
    assert (loop_state(run_dir)["round"], loop_state(run_dir)["phase"]) == (1, "wait")
    assert cli(["run", RECIPE, *tiny(run_dir, tiny_model, db=db)]) == 0
    check_store(run_dir, db, rounds=2)  # every task once, every label once
