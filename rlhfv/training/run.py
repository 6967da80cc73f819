"""A run's folder: resolved recipe, metrics, checkpoints, resume, seeding and device choice.

Every pipeline starts with `run = start_run(cfg)` and then
- `run.start_step` / `run.state`: where to continue (0 / None for a fresh run);
- `run.log(step, metrics)`: one metrics row;
- `run.maybe_save(step, state_fn)`: a checkpoint every `run.save_every` steps;
- `run.finish(model, summary)`: the final model under `<dir>/final`, then `summary.json`.

With several processes only the writer, global rank 0 (`run.writes`), touches the folder. Before
each stage, `agree_on_run_folder` (called by `rlhfv.cli` on every process) lets rank 0 decide
whether to refuse, resume or overwrite, and checks that every process sees the checkpoint it
chose, so `start_run` needs no collective: a pipeline may call it on rank 0 alone, or on every
process, where the others read the same checkpoint, seed with `run.seed + rank`, and `log`,
`maybe_save` and `finish` write nothing. `summary.json` is written last, in one rename: it marks a
finished run, and a later stage reads an earlier stage's folder only once it is there.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlhfv.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    write_atomic,
)
from rlhfv.training.metrics import MetricsLogger
from rlhfv.training.processes import agree, from_writer, rank_and_world

logger = logging.getLogger(__name__)

FINISHED = "summary.json"  # written last: its presence means the run, final model included, is complete


class RunExistsError(RuntimeError):
    """The run folder already has checkpoints and the recipe did not say to resume or overwrite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"run.device = {name!r} but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(name)


class Run:
    """State of one run folder (see module docstring)."""

    def __init__(self, cfg: DictConfig):
        rc = cfg.run
        rank, _ = rank_and_world()
        self.writes = rank == 0
        self.dir = Path(rc.dir)
        self.save_every = int(rc.save_every)
        self.keep_last = int(rc.keep_last)
        self.device = pick_device(rc.device)
        self.dtype = str(rc.dtype)
        self.seed = int(rc.seed)
        self.start_step = 0
        self.state: dict[str, Any] | None = None
        if self.writes:
            name = open_run_folder(self.dir, str(rc.resume))
            ckpt = self.dir / name if name else None
        else:  # `agree_on_run_folder` has checked that every process sees what rank 0 decided
            ckpt = latest_checkpoint(self.dir) if self.dir.exists() else None
        if rc.cpu_threads > 0:
            torch.set_num_threads(int(rc.cpu_threads))
        seed_everything(self.seed + rank)  # rank 0 keeps the single-process seed
        if ckpt is not None:
            self.start_step, self.state = load_checkpoint(ckpt)
            self._set_resumed_rng(rank)
            logger.info("resuming %s from %s", self.dir, ckpt.name)
        self.metrics: MetricsLogger | None = None
        if self.writes:
            (self.dir / "recipe.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            self.metrics = MetricsLogger(
                self.dir, bool(rc.tensorboard), self.start_step if ckpt else None, list(rc.report_to), rc.name
            )

    def _set_resumed_rng(self, rank: int) -> None:
        """Rank 0 continues the random streams its checkpoint saved. The other processes' streams
        are not in the checkpoint (only rank 0 saves): they restart from a seed fixed by the rank
        and the step, the same on every resume from that step."""
        assert self.state is not None
        if rank == 0:
            set_rng_state(self.state["rng"])
        else:
            seed_everything(self.seed + rank + 1_000_003 * self.start_step)

    def restore(self, module: torch.nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
        """Load model, optimizer and scheduler from the checkpoint being resumed, set every RNG
        again (model builders reseed after `start_run` restored them), and return the saved summary."""
        assert self.state is not None, "restore() is for resumed runs"
        module.load_state_dict(self.state["model"])
        optimizer.load_state_dict(self.state["optimizer"])
        scheduler.load_state_dict(self.state["scheduler"])
        self._set_resumed_rng(rank_and_world()[0])
        return dict(self.state.get("summary", {}))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.log(step, metrics)

    def maybe_save(self, step: int, state_fn: Callable[[], dict[str, Any]], force: bool = False) -> None:
        """Checkpoint at every `save_every` steps (or when forced); `state_fn` builds the state.
        Only the writer saves (and points `latest` at it, and prunes old checkpoints)."""
        if self.writes and (force or (self.save_every > 0 and step % self.save_every == 0)):
            from rlhfv.training.checkpoint import rng_state

            save_checkpoint(self.dir, step, {**state_fn(), "rng": rng_state()}, self.keep_last)

    def finish(self, model: Any | None, summary: dict[str, Any]) -> dict[str, Any]:
        """Save the final model (a ChatModel, if any) and then the run summary, which marks the
        run finished; the writer only."""
        if not self.writes:
            return summary
        if model is not None:
            from rlhfv.models.base import save_model

            save_model(model, self.dir / "final")
        write_atomic(self.dir / FINISHED, json.dumps(summary, indent=2, default=float))
        assert self.metrics is not None
        self.metrics.close()
        return summary


def agree_on_run_folder(cfg: DictConfig) -> None:
    """Before a stage, on every process: rank 0 prepares the run folder (`open_run_folder`) and
    every process checks that it sees the checkpoint rank 0 will resume from, so `start_run` then
    starts all of them at the same step without a collective of its own (pipelines may call it
    on every process or on rank 0 alone). A refusal (`run.resume: never`) stops every process."""
    rank, _ = rank_and_world()
    run_dir = Path(cfg.run.dir)
    decision: tuple[str | None, str | None] = (None, None)
    if rank == 0:
        try:
            decision = (open_run_folder(run_dir, str(cfg.run.resume)), None)
        except RunExistsError as e:
            decision = (None, str(e))
    name, refused = from_writer(decision)
    if refused:
        raise RunExistsError(refused)
    seen = latest_checkpoint(run_dir) if run_dir.exists() else None
    agree(
        None
        if (seen.name if seen else None) == name
        else f"rank 0 resumes {run_dir} from {name or 'nothing (a fresh run)'} but this process sees "
        f"{seen.name if seen else 'no checkpoint'}; every process loads it, so run.dir must be on a "
        "filesystem that all nodes share"
    )


def open_run_folder(run_dir: Path, resume: str) -> str | None:
    """Prepare a run folder for writing (the writer only): refuse, clear or keep what is there,
    drop the leftovers of killed saves and the finished mark, and name the checkpoint to resume."""
    ckpt = latest_checkpoint(run_dir) if run_dir.exists() else None
    if ckpt is not None and resume == "never":
        raise RunExistsError(
            f"{run_dir} already holds checkpoint {ckpt.name}; pass run.resume=auto to continue it "
            "or run.resume=overwrite to start again"
        )
    if resume == "overwrite" and run_dir.exists():
        shutil.rmtree(run_dir)
        ckpt = None
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".tmp_step_*"):  # a save that was killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    (run_dir / FINISHED).unlink(missing_ok=True)  # the run is writing again: not finished until it says so
    return ckpt.name if ckpt is not None else None


def training_state(
    module: torch.nn.Module, optimizer: Any, scheduler: Any, summary: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """What a training checkpoint holds besides the RNG states (see `Run.restore`)."""
    return {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "summary": summary,
        **extra,
    }


def start_run(cfg: DictConfig) -> Run:
    """Create or resume the run folder named by `cfg.run`."""
    return Run(cfg)
