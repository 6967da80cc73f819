"""The closed loop (active preference learning): the GRM picks which pairs people label, and the
labels retrain the GRM.

Each round r:
1. sample: the policy answers `pool` questions (`samples` answers each); per question one answer
   the checker accepts against one it rejects, as `rlhfv.data.pairs.SampledPairs` pairs them;
2. score: the current GRM judges each pair `judge_samples` times, alternating the order; a pair
   none of whose judgements parse is skipped and counted (`loop/unparsable`), never given a score;
3. pick: the `selection` strategy (`rlhfv.grm.selection`) ranks them, `diverse` passes over near
   duplicates, and the top `per_round` are queued in the store with `overlap` labels wanted each,
   under the external id `loop:<id>:r<r>:q<question>`;
4. wait: simulated annotators label them through the store API, or (`annotators: app`) the loop
   polls the store until people have, an admin ends the round (the app's Loop page sets
   `loop:<run.name>:end_round`), or `wait_timeout_s` passes;
5. export: a numbered snapshot of every label (`rlhfv.store.export`);
6. train: the starting GRM is fine-tuned (`rlhfv.pipelines.sft`) on all the loop's labels so far
   and scored on the held-out pairs of `grm_train.eval_data`; that model judges the next round;
7. policy (every `policy_every` rounds, if set): GRPO of the policy (`rlhfv.pipelines.grpo`) with
   grouped-comparison rewards from the refreshed GRM; the next rounds pair the new policy's answers.
The loop stops after `rounds`, at `label_budget` labels or at `target_accuracy`.

Crash safety: the round and phase live in `<run.dir>/loop_state.json` (written atomically after
each phase and mirrored into the store's settings as `loop:<run.name>`, which the app's Loop page
reads); tasks and labels live in the store. Every phase can be done again without harm: sampling
is seeded per round, a round whose tasks are already in the store is not sampled or queued again,
labels are the store's (a label is never copied out and counted), an export is a new numbered
snapshot, and the GRM's SFT run resumes its own checkpoints. So after `kill -9`, `run.resume=auto`
continues the same round.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from omegaconf import OmegaConf
from sqlalchemy.exc import OperationalError
from tqdm import tqdm

from rlhfv.config import RecipeError, RunConfig, component_field, instantiate, resolve_target, validate_recipe
from rlhfv.data.pairs import short_answer, split_pair
from rlhfv.grm.judge import JudgeItem, judge
from rlhfv.grm.selection import diverse, image_hash, ranked
from rlhfv.models.base import ChatModel, load_model, save_model
from rlhfv.rollout import generate
from rlhfv.store.export import export_snapshot
from rlhfv.store.ingest import store_pil_image
from rlhfv.store.simulated import SimulatedAnnotator
from rlhfv.store.store import NewTask, Store
from rlhfv.training.run import RunExistsError, start_run

logger = logging.getLogger(__name__)
T = TypeVar("T")
PHASES = ("sample", "wait", "export", "train", "policy", "done")


class StoreUnreachable(RuntimeError):
    """The store kept failing after every retry; the loop's state is saved and resumable."""


@dataclass
class SimulatedLabellers:
    """`annotators: simulated`: `count` scripted labellers (0: as many as `overlap`)."""

    count: int = 0
    error_rate: float = 0.1
    seed: int = 0


@dataclass
class Retraining:
    """How each round retrains the GRM without losing what it knew (module docstring, step 6).

    Attributes:
        replay: The GRM's earlier training data (a data set node giving the same kind of items as
            `judge_task`, e.g. the JudgeTask its own SFT stage trained on), mixed into every round's
            training at `replay_ratio`; null: the labels alone.
        replay_ratio: Replayed items per labelled training item.
        epochs: Passes over the round's items (labelled plus replayed): the round trains
            ceil(epochs × items / grm_train.batch_size) steps, at least `min_steps` and at most
            grm_train.steps.
        min_steps: The fewest steps a round trains.
        full_lr_pairs: With this many labelled training pairs or more the round trains at
            grm_train.optimizer.lr; with fewer at lr × sqrt(pairs / full_lr_pairs).
        validation: Share of the labelled pairs held out (by task, the same tasks every round) to
            pick the round's best checkpoint and to decide whether it replaces the served GRM.
            0: no check, the round's last checkpoint is always served (plain retraining).
        checks: Checkpoints of a round scored on the validation pairs, evenly spaced (the
            starting GRM, step 0, is scored too).
    """

    replay: dict[str, Any] | None = None
    replay_ratio: float = 2.0
    epochs: float = 4.0
    min_steps: int = 10
    full_lr_pairs: int = 256
    validation: float = 0.25
    checks: int = 4


@dataclass
class ActiveLoopConfig:
    """Keys of an active-loop recipe (see the module docstring for the round).

    Attributes:
        store: The preference store (a SQLite path or database URL; "": `<run.dir>/store.db`).
        annotators: "simulated" (scripted labellers, `simulated`) or "app" (people in the app).
        overlap: Labels wanted per task (k; 0: the project's k, the store's `default_overlap`).
        policy: The policy whose answers are paired (ChatModel node).
        grm: The GRM every round's training starts from (ChatModel node).
        pool: Questions with `is_correct(text, example)` (a data set node taking `seed`; each
            round draws its own with seed = run.seed * 100003 + round).
        samples, max_new_tokens, temperature: The policy's answers per question.
        judge_samples, judge_max_new_tokens, judge_temperature: The GRM's judgements per pair
            (the order alternates; temperature 0: greedy).
        judge_reading: The GRM answers each question itself before it sees the two answers, and
            compares them with its own (`rlhfv.grm.judge.judge(reading=True)`): the mode of a GRM
            trained with `JudgeTask(reading=...)`, as the flagship's grm_refine is. Off: it judges
            from the question and answers alone.
        judge_force: Let a GRM too small for the output contract write its scores after a forced
            `Scores: \\boxed{` (`rlhfv.grm.judge.force_scores`); off, such judgements are unparsable.
        selection: Dotted path of a strategy in `rlhfv.grm.selection` (or your own, same signature).
        diverse: Pass over near-duplicate prompts and images within a round.
        per_round: Pairs queued per round (M).
        rounds / label_budget / target_accuracy: Stopping rules (0: no budget / no target).
        judge_task: Keyword arguments of `rlhfv.data.pairs.JudgeTask` for the GRM's training data.
        grm_train: Keys of an SFT recipe (`rlhfv.pipelines.sft.SFTConfig`) except run, policy and
            train_data; its `eval_data` (held-out labelled pairs) gives each round's accuracy.
            Its `steps` and `optimizer.lr` are the most a round uses (`retrain` scales them down).
        retrain: Replay, step and learning-rate scaling, validation (`Retraining`).
        media: The store's media folder ("": the store's default, beside a SQLite file or
            `rlhfv_annotate/media` for a database URL; give the app the same folder).
        policy_every: Run policy GRPO after every this many rounds (0: never).
        policy_train: Keys of a GRPO recipe (`rlhfv.pipelines.grpo.GRPOConfig`) except run, policy
            and reward: the loop gives the current policy and the GRM's grouped-comparison reward.
        wait_timeout_s, poll_s: `annotators: app`: how long to wait for a round's labels, how often to look.
        store_retries, store_backoff_s: A failing store is retried this often, waiting
            backoff, 2×backoff, … between tries; then the loop stops, resumable.
        heartbeat_s: How often the loop's process writes a sign of life into the store (the
            app's Loop page shows a loop silent for 3 × this as stopped).
    """

    run: RunConfig = field(default_factory=RunConfig)
    store: str = ""
    annotators: str = "simulated"
    simulated: SimulatedLabellers = field(default_factory=SimulatedLabellers)
    overlap: int = 0
    policy: dict[str, Any] = component_field({"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl"})
    grm: dict[str, Any] = component_field({"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl"})
    pool: dict[str, Any] = component_field({"_component_": "rlhfv.data.shapes.ShapesVQA", "size": 32})
    samples: int = 4
    max_new_tokens: int = 16
    temperature: float = 1.0
    judge_samples: int = 2
    judge_max_new_tokens: int = 64
    judge_temperature: float = 0.7
    judge_reading: bool = False
    judge_force: bool = False
    selection: str = "rlhfv.grm.selection.uncertainty"
    diverse: bool = False
    per_round: int = 8
    rounds: int = 3
    label_budget: int = 0
    target_accuracy: float = 0.0
    judge_task: dict[str, Any] = field(default_factory=dict)
    grm_train: dict[str, Any] = field(default_factory=dict)
    retrain: Retraining = field(default_factory=Retraining)
    media: str = ""
    policy_every: int = 0
    policy_train: dict[str, Any] = field(default_factory=dict)
    wait_timeout_s: float = 3600.0
    poll_s: float = 5.0
    store_retries: int = 5
    store_backoff_s: float = 1.0
    heartbeat_s: float = 30.0


class Heartbeat:
    """A thread that writes the time into the store setting `loop:<run name>:heartbeat` every
    `interval` seconds while the loop's process lives, whatever phase it is in (a GRM's training
    can take hours), so the app's Loop page can tell a dead loop from a busy one."""

    def __init__(self, interval: float):
        import threading

        self.interval, self.stopped, self.thread = interval, threading.Event(), None

    def start(self, store: Store, key: str) -> None:
        import threading

        def beat() -> None:
            while not self.stopped.is_set():
                try:
                    store.set_setting(key, f"{time.time():.0f}")
                except Exception as e:  # a store that is away: the loop's own retries report it
                    logger.debug("heartbeat not written: %s", e)
                self.stopped.wait(self.interval)

        self.thread = threading.Thread(target=beat, name="loop-heartbeat", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()


def main(cfg: ActiveLoopConfig) -> dict[str, Any]:
    """Run the loop; if it dies, say where and why in the store (`loop:<run name>:stopped`),
    which the app's Loop page shows, then raise."""
    source = f"{cfg.run.name} (rlhfv.pipelines.active_loop)"
    check_config(cfg, source)
    beat = Heartbeat(cfg.heartbeat_s)
    try:
        return run_loop(cfg, source, beat)
    except (RecipeError, RunExistsError):
        raise  # refused before it started: nothing stopped
    except Exception as e:
        record_stop(cfg, e)
        raise
    finally:
        beat.stop()


def record_stop(cfg: ActiveLoopConfig, error: Exception) -> None:
    """Best effort: write "stopped at round r, phase p: <error>" where the app reads it."""
    state_path = Path(cfg.run.dir) / "loop_state.json"
    if not state_path.is_file():
        return  # refused before it started: nothing to show
    state = json.loads(state_path.read_text())
    why = " ".join(f"{type(error).__name__}: {error}".split())[:500]
    try:
        store = Store(cfg.store or str(Path(cfg.run.dir) / "store.db"), media_dir=cfg.media or None)
        store.set_setting(
            f"loop:{cfg.run.name}:stopped",
            f"stopped at round {state['round']}, phase {state['phase']}: {why}",
        )
        store.close()
    except Exception as e:  # the store itself may be what failed
        logger.warning("could not record in the store that the loop stopped (%s)", e)


def run_loop(cfg: ActiveLoopConfig, source: str, beat: Heartbeat) -> dict[str, Any]:
    strategy = resolve_target(cfg.selection, source, "selection")
    state_path = Path(cfg.run.dir) / "loop_state.json"
    if state_path.is_file() and cfg.run.resume == "never":
        raise RunExistsError(
            f"{state_path} holds a loop in progress; pass run.resume=auto to continue it "
            "or run.resume=overwrite to start again"
        )
    run = start_run(cfg)  # "overwrite" clears the folder, state file included
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    if state is not None and state.get("phase") not in PHASES:
        raise ValueError(
            f"{state_path}: phase = {state.get('phase')!r} is none of {PHASES}; the file is not a loop's state"
        )
    if state is not None:
        logger.info("resuming the loop at round %d, phase %s", state["round"], state["phase"])
    store_url = cfg.store or str(run.dir / "store.db")
    shown_url = hide_password(store_url)  # messages and logs never show a database password

    def retrying(what: str, fn: Callable[[], T]) -> T:
        for attempt in range(cfg.store_retries + 1):
            try:
                return fn()
            except OperationalError as e:  # locked, gone, unreachable: worth another try
                why = " ".join(str(e.orig).split())  # one line (psycopg's messages span several)
                if attempt == cfg.store_retries:
                    where = (
                        f"round {state['round']}, phase {state['phase']}"
                        if state
                        else "its start (nothing done yet)"
                    )
                    raise StoreUnreachable(
                        f"store {shown_url}: {what} failed {attempt + 1} times ({why[:200]}); the "
                        f"loop is saved at {where}: make the store reachable and rerun with run.resume=auto"
                    ) from e
                delay = cfg.store_backoff_s * 2**attempt
                logger.warning("store %s: %s failed (%s); retrying in %.2g s", shown_url, what, why, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    store = retrying("opening", lambda: Store(store_url, media_dir=cfg.media or None))
    retrying("clearing an old stop", lambda: store.set_setting(f"loop:{cfg.run.name}:stopped", ""))
    beat.start(store, f"loop:{cfg.run.name}:heartbeat")

    def save(new_state: dict[str, Any]) -> None:
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(new_state, indent=2))
        tmp.replace(state_path)  # atomic: a kill leaves the old state or the new, never half
        retrying(
            "saving the loop state", lambda: store.set_setting(f"loop:{cfg.run.name}", json.dumps(new_state))
        )

    # k is fixed when the loop starts, so a resumed loop waits for what it asked
    overlap = state["overlap"] if state else cfg.overlap or retrying("reading k", store.default_overlap)
    labellers = cfg.simulated.count or overlap
    if cfg.annotators == "simulated" and labellers < overlap:
        raise RecipeError(
            f"{source}: simulated.count = {labellers} labellers cannot give each task overlap = "
            f"{overlap} labels (one label per person per task); raise simulated.count"
        )
    if state is None:
        grm_start = run.dir / "grm_start"  # every round's GRM training starts from this copy
        save_model(instantiate(cfg.grm), grm_start)
        state = {"id": secrets.token_hex(4), "round": 1, "phase": "sample", "grm": str(grm_start),
                 "heartbeat_s": cfg.heartbeat_s,
                 "grm_start": str(grm_start), "overlap": overlap, "history": [], "stopped": ""}  # fmt: skip
        save(state)
    # the policy the rounds pair: the recipe's, or the latest one the loop trained
    policy: ChatModel = load_model(state["policy"]) if state.get("policy") else instantiate(cfg.policy)
    policy.module.to(run.device).eval()
    loop_prefix = f"loop:{state['id']}:"
    held_out = None  # grm_train.eval_data, built once (the policy samples its pairs) for every round

    while state["phase"] != "done":
        r = state["round"]
        round_prefix = f"{loop_prefix}r{r}:"
        if state["phase"] in ("sample", "wait"):
            pool = instantiate(cfg.pool, seed=cfg.run.seed * 100_003 + r)

        if state["phase"] == "sample":
            queued = retrying("reading tasks", lambda p=round_prefix: store.task_progress(p))
            if queued:  # queued before a crash, the state not yet saved: never queue a round twice
                logger.info("round %d: its %d tasks are already in the store", r, len(queued))
                stats = {"loop/queued": len(queued)}
            else:
                stats = sample_and_queue(
                    cfg, policy, pool, state, round_prefix, strategy, store, run, retrying
                )
            # wall-clock time (the app shows how long the round has waited; a resume keeps it)
            state = {**state, "phase": "wait", "stats": stats, "wait_started": time.time()}
            save(state)

        if state["phase"] == "wait":
            wait_for_labels(cfg, store, loop_prefix, round_prefix, pool, r, overlap, retrying, run.dir)
            waited = round(time.time() - state.get("wait_started", time.time()), 1)
            state = {**state, "phase": "export", "stats": {**state.get("stats", {}), "loop/wait_s": waited}}
            save(state)

        if state["phase"] == "export":
            snapshot = retrying("exporting", lambda: export_snapshot(store, run.dir / "exports"))
            hold_if_asked(run.dir, "export")
            progress = retrying("reading tasks", lambda: store.task_progress(loop_prefix))
            questions = loop_questions(cfg, progress)
            # each task's side (train or validation) is drawn from the run's seed and its round and
            # question, not the loop's random id, so a rerun of a recipe splits the same way
            sides = {p.id: f"{cfg.run.seed}:{key.removeprefix(loop_prefix)}" for key, p in progress.items()}
            pairs = loop_preferences(snapshot.path, questions, sides, cfg.retrain.validation)
            labels = sum(p.labels for p in progress.values())
            state = {**state, "phase": "train", "snapshot": str(snapshot.path), "labels": labels, **pairs}
            save(state)

        if state["phase"] == "train":
            if held_out is None and state["pairs"]:
                held_out = instantiate(cfg.grm_train["eval_data"])
            outcome = retrain_grm(cfg, state, run.dir / f"round_{r}" / "grm", source, held_out)
            hold_if_asked(run.dir, "train")
            record = {"round": r, "labels/used": state["labels"], "labels/pairs": state["pairs"],
                      "labels/validation": state["validation_pairs"], **state.get("stats", {}),
                      "grm/held_out": len(held_out) if held_out is not None else 0,
                      **{k: v for k, v in outcome.items() if k != "grm"}}  # fmt: skip
            history = [*state["history"], record]
            stop = stopping_reason(cfg, r, state["labels"], record["grm/accuracy"])
            then = (
                "done" if stop else "policy" if cfg.policy_every and r % cfg.policy_every == 0 else "sample"
            )
            state = {**state, "history": history, "grm": outcome["grm"], "round": r + (then == "sample"),
                     "phase": then, "stopped": stop}  # fmt: skip
            save(state)
            run.log(r, {k: v for k, v in record.items() if isinstance(v, int | float) and k != "round"})
            logger.info(
                "round %d: %d labels, %d pairs, GRM %s (%s), served held-out accuracy %.3f",
                r, record["labels/used"], record["labels/pairs"], record["grm/decision"],
                record["grm/reason"], record["grm/accuracy"],
            )  # fmt: skip

        if state["phase"] == "policy":
            policy_dir = run.dir / f"round_{r}" / "policy"
            summary = train_policy(cfg, state, policy_dir, source)
            policy = load_model(str(policy_dir / "final"))
            policy.module.to(run.device).eval()
            gained = {"policy/accuracy": summary["after/accuracy"]} if "after/accuracy" in summary else {}
            history = [*state["history"][:-1], {**state["history"][-1], **gained}]
            state = {**state, "history": history, "policy": str(policy_dir / "final"), "round": r + 1,
                     "phase": "sample"}  # fmt: skip
            save(state)
            run.log(r, gained)

    logger.info("loop stopped: %s", state["stopped"])
    retired = retrying("retiring open tasks", lambda: retire_open_tasks(store, loop_prefix))
    if retired:
        logger.info("retired %d of the loop's tasks still waiting for labels (no longer offered)", retired)
    for rec in state["history"]:
        logger.info(
            "  round %d  labels %4d  grm/accuracy %.3f", rec["round"], rec["labels/used"], rec["grm/accuracy"]
        )
    summary_out = {
        "rounds": len(state["history"]),
        "labels": state["history"][-1]["labels/used"] if state["history"] else 0,
        "stopped": state["stopped"],
        "accuracy_by_round": [rec["grm/accuracy"] for rec in state["history"]],
        "labels_by_round": [rec["labels/used"] for rec in state["history"]],
        "grm": state["grm"],
        "policy": state.get("policy", ""),
    }
    beat.stop()
    store.close()
    return run.finish(None, summary_out)


def retire_open_tasks(store: Store, prefix: str) -> int:
    """Withdraw the loop's tasks that still want labels from every annotator's queue (their labels
    stay in the store and the loop's snapshots); return how many."""
    from rlhfv.store.curation import retire_task

    open_tasks = [p.id for p in store.task_progress(prefix).values() if p.labels < p.overlap]
    for task_id in open_tasks:
        retire_task(store, task_id)
    return len(open_tasks)


def hide_password(url: str) -> str:
    """A database URL with its password replaced by ***; a SQLite path as it is."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_config(cfg: ActiveLoopConfig, source: str) -> None:
    """Refuse a recipe the loop cannot run, before any work, naming the key and value."""
    if cfg.annotators not in ("simulated", "app"):
        raise RecipeError(f"{source}: annotators = {cfg.annotators!r}; choose 'simulated' or 'app'")
    if cfg.overlap < 0:
        raise RecipeError(f"{source}: overlap = {cfg.overlap}; give k ≥ 1, or 0 for the project's k")
    for key in ("per_round", "rounds", "judge_samples"):
        if getattr(cfg, key) < 1:
            raise RecipeError(f"{source}: {key} = {getattr(cfg, key)!r}; must be at least 1")
    if cfg.samples < 2:
        raise RecipeError(f"{source}: samples = {cfg.samples}; pairing needs at least 2 answers per question")
    if "eval_data" not in cfg.grm_train:
        raise RecipeError(f"{source}: grm_train.eval_data is missing; the loop reports held-out GRM accuracy")
    for key in ("run", "policy", "train_data", "pipeline"):
        if key in cfg.grm_train:
            raise RecipeError(f"{source}: grm_train.{key} is set by the loop; remove it")
    for key in ("run", "policy", "reward", "pipeline"):
        if key in cfg.policy_train:
            raise RecipeError(f"{source}: policy_train.{key} is set by the loop; remove it")
    if cfg.policy_train:
        policy_train = OmegaConf.to_container(cfg.policy_train, resolve=True)
        validate_recipe(
            OmegaConf.create({"pipeline": "rlhfv.pipelines.grpo.main", **policy_train}),
            f"{source}: policy_train",
        )
    # the SFT keys and the judge task's keys are checked against their code now, not in round 1
    grm_train = OmegaConf.to_container(cfg.grm_train, resolve=True)
    validate_recipe(
        OmegaConf.create({"pipeline": "rlhfv.pipelines.sft.main", **grm_train}), f"{source}: grm_train"
    )
    validate_recipe(
        OmegaConf.create({"pipeline": "rlhfv.pipelines.sft.main",
                          "train_data": {"_component_": "rlhfv.data.pairs.JudgeTask", "pairs": [], **cfg.judge_task}}),
        f"{source}: judge_task",
    )  # fmt: skip


def check_recipe(cfg: Any, source: str, prefix: str) -> None:
    """Value checks that `rlhfv validate` runs too (`rlhfv.config` calls this): a judge task
    JudgeTask would refuse in round 1's train phase, after people have labelled, and the
    retraining keys."""
    from rlhfv.data.pairs import JudgeTask

    try:
        JudgeTask(pairs=[], **OmegaConf.to_container(cfg.judge_task, resolve=True))
    except TypeError:
        pass  # an unknown key: check_config names it, with the closest valid one
    except ValueError as e:
        raise RecipeError(f"{source}: {prefix}judge_task: {e}") from e
    rt = cfg.retrain
    replay = OmegaConf.to_container(rt.replay, resolve=True) if rt.replay is not None else {}
    if replay.get("_component_") == "rlhfv.data.pairs.JudgeTask":
        # replayed items must teach the mode the loop trains, not undo it
        keys = [k for k in ("analysis", "reading") if replay.get(k, "verdict" if k == "analysis" else "none")
                != cfg.judge_task.get(k, "verdict" if k == "analysis" else "none")]  # fmt: skip
        if keys:
            raise RecipeError(
                f"{source}: {prefix}retrain.replay trains {', '.join(f'{k}={replay.get(k)!r}' for k in keys)} but "
                f"judge_task has {', '.join(f'{k}={cfg.judge_task.get(k)!r}' for k in keys)}; replay data of the "
                "mode the loop trains, or set retrain.replay=null"
            )
    if not 0.0 <= rt.validation < 1.0:
        raise RecipeError(f"{source}: {prefix}retrain.validation = {rt.validation!r}; a share in [0, 1)")
    for key, low in (
        ("replay_ratio", 0),
        ("epochs", 1e-9),
        ("min_steps", 1),
        ("full_lr_pairs", 1),
        ("checks", 1),
    ):
        if getattr(rt, key) < low:
            raise RecipeError(
                f"{source}: {prefix}retrain.{key} = {getattr(rt, key)!r}; must be at least {low:g}"
            )


def hold_if_asked(run_dir: Path, phase: str) -> None:
    """Test hook: with RLHFV_LOOP_HOLD=<phase>, stop here (leaving `held-<phase>` in the run folder)
    so a test can `kill -9` the loop in the middle of that phase."""
    if os.environ.get("RLHFV_LOOP_HOLD") == phase:
        (run_dir / f"held-{phase}").touch()
        time.sleep(3600)


def sample_and_queue(
    cfg: ActiveLoopConfig,
    policy: ChatModel,
    pool: Any,
    state: dict[str, Any],
    round_prefix: str,
    strategy: Callable[..., list[float | None]],
    store: Store,
    run: Any,
    retrying: Callable[..., Any],
) -> dict[str, int]:
    """Steps 1-3 of a round: pair the policy's answers, score the pairs with the GRM, queue the picks."""
    r = state["round"]
    check = getattr(pool, "is_correct", None)
    if check is None:
        raise RecipeError(f"pool: {type(pool).__name__} has no is_correct(text, example) to pair answers by")
    seed = cfg.run.seed * 100_003 + r
    candidates: list[tuple[int, Any]] = []  # (question index, PreferencePair)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(pool), 32), desc=f"round {r}: sampling answers", unit="batch"):
            examples = [pool[i] for i in range(start, min(len(pool), start + 32))]
            texts = generate(policy, [e.prompt for e in examples], cfg.samples, cfg.max_new_tokens,
                             cfg.temperature).texts  # fmt: skip
            for j, example in enumerate(examples):
                answers = texts[j * cfg.samples : (j + 1) * cfg.samples]
                pair = split_pair(answers, example, check, random.Random(seed + start + j), f"q{start + j}")
                if pair is not None:
                    candidates.append((start + j, pair))
    if not candidates:
        raise ValueError(
            f"round {r}: empty candidate pool: none of the {len(pool)} pool questions got both an answer "
            f"the checker accepts and one it rejects in {cfg.samples} samples; raise pool.size or samples "
            "(the loop is saved; rerun with run.resume=auto)"
        )
    grm = load_model(state["grm"])
    grm.module.to(run.device).eval()
    k = cfg.judge_samples
    orders = [[[0, 1] if j % 2 == 0 else [1, 0] for j in range(k)]] * len(candidates)  # [C][k][2]
    items = [JudgeItem(p.prompt.text, list(p.responses), list(p.prompt.images)) for _, p in candidates]
    judgements = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(items), 16), desc=f"round {r}: judging pairs", unit="batch"):
            judgements += judge(grm, items[start : start + 16], k=k, orders=orders[start : start + 16],
                                greedy=cfg.judge_temperature == 0, temperature=cfg.judge_temperature or 1.0,
                                max_new_tokens=cfg.judge_max_new_tokens, force=cfg.judge_force,
                                reading=cfg.judge_reading)  # fmt: skip
    del grm
    hold_if_asked(run.dir, "sample")
    rng = random.Random(seed)
    informativeness = strategy(judgements, rng)  # [C], None: the judgements cannot say
    unparsable = sum(all(s is None for s in j.scores) for j in judgements)
    if unparsable:
        logger.warning(
            "round %d: no judgement of %d of the %d candidate pairs parsed; they are skipped (loop/unparsable), "
            "never queued with a made-up score", r, unparsable, len(candidates),
        )  # fmt: skip
    order = ranked(informativeness, rng)
    if cfg.diverse:
        hashes = [image_hash(p.prompt.images) for _, p in candidates]
        picked = diverse(order, [p.prompt.text for _, p in candidates], hashes, cfg.per_round)
    else:
        picked = order[: cfg.per_round]
    if not picked:
        raise ValueError(
            f"round {r}: empty candidate pool: the GRM's judgements of all {len(candidates)} candidate "
            f"pairs were unparsable ({unparsable}) or gave {cfg.selection} nothing to rank; raise "
            "judge_max_new_tokens or check the GRM (the loop is saved; rerun with run.resume=auto)"
        )
    tasks = []
    for i in picked:
        index, pair = candidates[i]
        images = [store_pil_image(image, store.media_dir) for image in pair.prompt.images]
        tasks.append(NewTask(prompt=pair.prompt.text, responses=list(pair.responses), images=images,
                             source=f"loop:{cfg.run.name}", external_id=f"{round_prefix}q{index}"))  # fmt: skip
    added, present = retrying("queueing tasks", lambda: store.add_tasks(tasks, state["overlap"]))
    hold_if_asked(run.dir, "queue")  # queued, the state not yet saved: the riskiest moment to die
    if present:
        logger.warning(
            "round %d: %d picked pairs were already in the store and are not queued again", r, present
        )
    logger.info(
        "round %d: %d candidate pairs, %d unparsable, queued %d (overlap %d)",
        r, len(candidates), unparsable, added, state["overlap"],
    )  # fmt: skip
    return {"loop/candidates": len(candidates), "loop/unparsable": unparsable, "loop/queued": added}


def wait_for_labels(
    cfg: ActiveLoopConfig,
    store: Store,
    loop_prefix: str,
    round_prefix: str,
    pool: Any,
    r: int,
    overlap: int,
    retrying: Callable[..., Any],
    run_dir: Path,
) -> None:
    """Step 4: simulated labellers label the round; or poll the store until people have."""
    if cfg.annotators == "simulated":
        examples = {f"{round_prefix}q{i}": pool[i] for i in range(len(pool))}  # the question behind each task
        count = cfg.simulated.count or overlap
        for i in range(count):
            ann = retrying("adding an annotator", lambda i=i: SimulatedAnnotator(
                store, f"simulated-{i}", cfg.simulated.error_rate, cfg.simulated.seed))  # fmt: skip
            # the coins leave out the loop's random id: a rerun of the same recipe gets the same labels
            retrying("labelling", lambda ann=ann: ann.label(examples, pool.is_correct, loop_prefix))
            if i == 0:
                hold_if_asked(run_dir, "wait")
    started = time.monotonic()
    while True:
        progress = retrying("reading tasks", lambda: store.task_progress(round_prefix))
        missing = sum(max(0, p.overlap - p.labels) for p in progress.values())
        if missing == 0:
            return
        if retrying("reading settings", lambda: store.setting(f"loop:{cfg.run.name}:end_round")) == str(r):
            logger.info("round %d ended early by an admin with %d labels still missing", r, missing)
            return
        waited = time.monotonic() - started
        if waited > cfg.wait_timeout_s:
            raise TimeoutError(
                f"round {r}: {missing} labels still missing on {len(progress)} tasks after "
                f"{waited:.0f} s (wait_timeout_s = {cfg.wait_timeout_s}); the loop is saved: rerun with "
                f"run.resume=auto to keep waiting, or set the store setting loop:{cfg.run.name}:end_round={r}"
            )
        logger.info("round %d: waiting for %d labels (%.0f s so far)", r, missing, waited)
        time.sleep(cfg.poll_s)


def loop_questions(cfg: ActiveLoopConfig, progress: dict[str, Any]) -> dict[int, Any]:
    """The pool question behind each of the loop's tasks, by task id: the external id
    `loop:<id>:r<r>:q<i>` names the round (whose pool is seeded by it) and the question's index."""
    pools: dict[int, Any] = {}
    questions = {}
    for external_id, task in progress.items():
        r, q = (int(part[1:]) for part in external_id.split(":")[-2:])
        if r not in pools:
            pools[r] = instantiate(cfg.pool, seed=cfg.run.seed * 100_003 + r)
        questions[task.id] = pools[r][q]
    return questions


def pair_answers(responses: list[str], preferred: int, question: Any) -> dict[str, Any]:
    """What each response answers (`short_answer` in the kind of the question's label) and the
    labelled winner as the reference answer: the reading a "compare" judge is trained to quote
    (`JudgeTask(reading="given")`). The label, not the answer key, decides the reference, so a
    labeller's mistake is learned as a person's would be."""
    return {
        "answers": [short_answer(r, question.label) for r in responses],
        "reference": responses[preferred],
    }


def loop_preferences(
    snapshot: Path, questions: dict[int, Any], sides: dict[int, str], validation: float
) -> dict[str, int]:
    """Write the loop's labelled pairs next to the snapshot's: `loop_preferences.jsonl` (all),
    `loop_train.jsonl` and `loop_validation.jsonl` (a `validation` share of the tasks, drawn from
    each task's key in `sides`, so a task stays on its side in every round). Only the loop's own
    tasks (`questions`: the pool question behind each, by task id) count, each pair with its
    responses' short answers and a reference (`pair_answers`; read by `AnsweredPairs`).

    A label on a task the loop does not track (another source's, or added by hand) stays in the
    store and the snapshot but is left out of the loop's training, with a warning naming it.
    """
    kept: dict[str, list[str]] = {"train": [], "validation": []}
    foreign = set()
    for line in (snapshot / "preferences.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        task_id = int(row["id"].split("-", 1)[0][1:])  # "t{task_id}-r{i}-r{j}", rlhfv.store.export
        if task_id not in questions:
            foreign.add(task_id)
            continue
        side = "validation" if random.Random(sides[task_id]).random() < validation else "train"
        kept[side].append(
            json.dumps({**row, **pair_answers(row["responses"], row["preferred"], questions[task_id])})
        )
    if foreign:
        logger.warning(
            "%s: labels on %d task(s) the loop does not track (task ids %s) are kept in the store but "
            "not trained on", snapshot, len(foreign), sorted(foreign)[:10],
        )  # fmt: skip
    for name, lines in (("loop_preferences", kept["train"] + kept["validation"]),
                        ("loop_train", kept["train"]), ("loop_validation", kept["validation"])):  # fmt: skip
        (snapshot / f"{name}.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return {"pairs": len(kept["train"]) + len(kept["validation"]), "train_pairs": len(kept["train"]),
            "validation_pairs": len(kept["validation"])}  # fmt: skip


def retrain_grm(
    cfg: ActiveLoopConfig, state: dict[str, Any], run_dir: Path, source: str, held_out: Any
) -> dict[str, Any]:
    """Step 6: train a candidate GRM from the starting one on the labelled training pairs mixed
    with replay, pick its best checkpoint on the validation pairs, and serve it only if it does
    at least as well there as the GRM served now. Returns the served GRM's path ("grm"), the
    decision and its reason, and the held-out accuracies for the round's report."""
    r, history = state["round"], state["history"]
    served_accuracy = history[-1]["grm/accuracy"] if history else float("nan")  # nan: not scored yet
    unchanged = {"grm": state["grm"], "grm/accuracy": served_accuracy, "grm/decision": "kept"}
    new_pairs = state["pairs"] - (history[-1]["labels/pairs"] if history else 0)
    if new_pairs == 0:
        reason = f"round {r}'s labels give no new preference pair (all ties, flagged or none)"
        logger.warning("round %d: %s; the served GRM is kept", r, reason)
        return {**unchanged, "grm/reason": reason}
    if state["train_pairs"] == 0:
        reason = f"all {state['pairs']} labelled pairs are validation pairs; none to train on yet"
        return {**unchanged, "grm/reason": reason}
    validation = None
    if cfg.retrain.validation > 0:
        if state["validation_pairs"] == 0:
            reason = f"no validation pair yet among {state['pairs']} labelled pairs to check a new GRM on"
            return {**unchanged, "grm/reason": reason}
        validation_pairs = {"_component_": "rlhfv.data.pairs.AnsweredPairs",
                            "path": str(Path(state["snapshot"]) / "loop_validation.jsonl")}  # fmt: skip
        eval_node = OmegaConf.to_container(cfg.grm_train, resolve=True)["eval_data"]
        validation = instantiate(OmegaConf.create({**eval_node, "pairs": validation_pairs}))
    plan = training_plan(cfg, state["train_pairs"])
    stage = grm_stage(cfg, state, run_dir, plan)
    recipe = validate_recipe(OmegaConf.create(stage), f"{source}: grm_train, round {r}")
    from rlhfv.pipelines import sft

    sft.main(recipe, held_out=validation, evaluate_before=validation is not None)
    report = {"grm/steps": plan["steps"], "grm/lr": plan["lr"], "grm/replayed": plan["replayed"]}
    if validation is None:  # retrain.validation = 0: the last checkpoint is served, unchecked
        candidate, best = str(run_dir / "final"), {}
    else:
        candidate, best = best_checkpoint(cfg, state, run_dir, plan["steps"])
    eval_args = (
        cfg.grm_train.get("eval_batch_size", 32),
        cfg.grm_train.get("max_new_tokens", 24),
        cfg.run.device,
    )
    if math.isnan(served_accuracy):  # nothing trained yet: the starting GRM is served, the loop's baseline
        served_accuracy = score(state["grm_start"], held_out, *eval_args)
        report["grm/accuracy_before"] = served_accuracy
    candidate_accuracy = score(candidate, held_out, *eval_args)
    report["grm/candidate_accuracy"] = candidate_accuracy
    if validation is None:
        return {**report, "grm": candidate, "grm/accuracy": candidate_accuracy, "grm/decision": "replaced",
                "grm/reason": "retrain.validation = 0: the round's last checkpoint is served unchecked"}  # fmt: skip
    served_validation = (
        best["start"] if state["grm"] == state["grm_start"] else score(state["grm"], validation, *eval_args)
    )
    report.update({"grm/validation": best["accuracy"], "grm/served_validation": served_validation,
                   "grm/best_step": best["step"]})  # fmt: skip
    checked = (
        f"step {best['step']} of {plan['steps']} scores {best['accuracy']:.3f} on "
        f"{state['validation_pairs']} validation pairs, the served GRM {served_validation:.3f}"
    )
    if candidate == state["grm"]:
        return {
            **report,
            **unchanged,
            "grm/accuracy": served_accuracy,
            "grm/reason": f"{checked}: the served GRM is the best",
        }
    if best["accuracy"] >= served_validation:
        return {**report, "grm": candidate, "grm/accuracy": candidate_accuracy, "grm/decision": "replaced",
                "grm/reason": checked}  # fmt: skip
    return {**report, **unchanged, "grm/accuracy": served_accuracy, "grm/reason": checked}


def training_plan(cfg: ActiveLoopConfig, train_pairs: int) -> dict[str, Any]:
    """Steps and learning rate for a round, scaled to its data: ceil(epochs × items / batch)
    steps within [min_steps, grm_train.steps], and lr × sqrt(pairs / full_lr_pairs) below
    `full_lr_pairs` labelled pairs (a few dozen pairs at the full rate overwrite what the GRM knew)."""
    rt = cfg.retrain
    replayed = 0
    if rt.replay is not None:
        replayed = min(len(instantiate(rt.replay)), round(rt.replay_ratio * train_pairs))
    batch = cfg.grm_train.get("batch_size", 16) * cfg.grm_train.get("grad_accum", 1)
    most = cfg.grm_train.get("steps", 200)
    steps = min(most, max(rt.min_steps, math.ceil(rt.epochs * (train_pairs + replayed) / batch)))
    optimizer = cfg.grm_train.get("optimizer", {"lr": 1e-3})
    lr = optimizer.get("lr", 1e-3) * math.sqrt(min(1.0, train_pairs / rt.full_lr_pairs))
    return {"steps": steps, "lr": lr, "replayed": replayed}


def grm_stage(
    cfg: ActiveLoopConfig, state: dict[str, Any], run_dir: Path, plan: dict[str, Any]
) -> dict[str, Any]:
    """The round's SFT recipe: from the starting GRM, on the labelled training pairs (plus replay),
    scored on the validation pairs every steps/checks steps, each such checkpoint kept."""
    grm_train = OmegaConf.to_container(cfg.grm_train, resolve=True)
    labelled = {
        "_component_": "rlhfv.data.pairs.JudgeTask",
        **cfg.judge_task,
        "pairs": {"_component_": "rlhfv.data.pairs.AnsweredPairs",
                  "path": str(Path(state["snapshot"]) / "loop_train.jsonl")},
    }  # fmt: skip
    train_data = labelled
    if cfg.retrain.replay is not None:
        replay = OmegaConf.to_container(cfg.retrain, resolve=True)["replay"]
        train_data = {"_component_": "rlhfv.data.replay.ReplayMix", "new": labelled, "replay": replay,
                      "ratio": cfg.retrain.replay_ratio, "seed": cfg.run.seed * 100_003 + state["round"]}  # fmt: skip
    every = max(1, plan["steps"] // cfg.retrain.checks)
    return {
        "pipeline": "rlhfv.pipelines.sft.main",
        **grm_train,
        "steps": plan["steps"],
        "eval_every": every,
        "optimizer": {**grm_train.get("optimizer", {"_component_": "torch.optim.AdamW"}), "lr": plan["lr"]},
        "policy": {"_component_": "rlhfv.models.base.load_model", "path": state["grm_start"]},
        "train_data": train_data,
        "run": {
            "dir": str(run_dir),
            "resume": "auto",
            "seed": cfg.run.seed,
            "device": cfg.run.device,
            "cpu_threads": cfg.run.cpu_threads,
            "save_every": every,
            "keep_last": 0,
        },  # fmt: skip
    }


def best_checkpoint(
    cfg: ActiveLoopConfig, state: dict[str, Any], run_dir: Path, steps: int
) -> tuple[str, dict[str, Any]]:
    """The round's checkpoint (step 0: the starting GRM) that scored best on the validation pairs;
    among equal scores the earliest, which moved least from the starting GRM. A checkpoint other
    than the last is written out as `best/`."""
    from rlhfv.training.checkpoint import load_checkpoint
    from rlhfv.training.metrics import read_metrics

    scores = {
        row["step"]: row["eval/accuracy"]
        for row in read_metrics(run_dir / "metrics.jsonl")
        if "eval/accuracy" in row
    }  # fmt: skip  (a resumed run's repeated steps: the last row)
    step = max(sorted(scores), key=lambda s: scores[s])  # max keeps the first of equal scores
    best = {"step": step, "accuracy": scores[step], "start": scores.get(0, float("nan"))}
    if step == steps:
        return str(run_dir / "final"), best
    if step == 0:
        return state["grm_start"], best
    model = load_model(state["grm_start"])
    model.module.load_state_dict(load_checkpoint(run_dir / f"step_{step}")[1]["model"])
    save_model(model, run_dir / "best")
    return str(run_dir / "best"), best


def score(path: str, dataset: Any, batch_size: int, max_new_tokens: int, device: str) -> float:
    """Accuracy of the GRM saved at `path` on `dataset` (greedy, `evaluate_accuracy`)."""
    from rlhfv.training.evaluation import evaluate_accuracy
    from rlhfv.training.run import pick_device

    model = load_model(path)
    model.module.to(pick_device(device)).eval()
    return evaluate_accuracy(model, dataset, batch_size, max_new_tokens)["eval/accuracy"]


def train_policy(cfg: ActiveLoopConfig, state: dict[str, Any], run_dir: Path, source: str) -> dict[str, Any]:
    """Step 7: GRPO of the current policy, rewarded by the current GRM's grouped comparisons."""
    from rlhfv.pipelines import grpo

    policy = (
        {"_component_": "rlhfv.models.base.load_model", "path": state["policy"]}
        if state.get("policy")
        else cfg.policy
    )
    stage = {
        "pipeline": "rlhfv.pipelines.grpo.main",
        **OmegaConf.to_container(cfg.policy_train, resolve=True),
        "policy": OmegaConf.to_container(OmegaConf.create(policy), resolve=True),
        "reward": {
            "_component_": "rlhfv.rewards.grouped.GroupedComparisonReward",
            "judge": {
                "_component_": "rlhfv.rewards.grm.GRMJudge",
                "model": {"_component_": "rlhfv.models.base.load_model", "path": state["grm"]},
                "max_new_tokens": cfg.judge_max_new_tokens,
                "reading": cfg.judge_reading,
            },
        },
        "run": {
            "dir": str(run_dir),
            "resume": "auto",
            "seed": cfg.run.seed,
            "device": cfg.run.device,
            "cpu_threads": cfg.run.cpu_threads,
            "save_every": max(1, cfg.policy_train.get("steps", 100) // 4),
        },  # fmt: skip
    }
    return grpo.main(
        validate_recipe(OmegaConf.create(stage), f"{source}: policy_train, round {state['round']}")
    )


def stopping_reason(cfg: ActiveLoopConfig, r: int, labels: int, accuracy: float) -> str:
    """Why the loop stops after round r ("" to go on)."""
    if cfg.target_accuracy and accuracy >= cfg.target_accuracy:
        return f"GRM held-out accuracy {accuracy:.3f} reached target_accuracy {cfg.target_accuracy}"
    if cfg.label_budget and labels >= cfg.label_budget:
        return f"{labels} labels reached label_budget {cfg.label_budget}"
    if r >= cfg.rounds:
        return f"all {cfg.rounds} rounds done"
    return ""
