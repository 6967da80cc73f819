"""A run's folder: resolved recipe, metrics, checkpoints, resume, seeding and device choice.

Every pipeline starts with `run = start_run(cfg)` and then
- `run.start_step` / `run.state`: where to continue (0 / None for a fresh run);
- `run.log(step, metrics)`: one metrics row;
- `run.maybe_save(step, state_fn)`: a checkpoint every `run.save_every` steps;
- `run.finish(model)`: the final model under `<dir>/final` and `summary.json`.
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

from rlhfv.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from rlhfv.training.metrics import MetricsLogger

logger = logging.getLogger(__name__)


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
        self.dir = Path(rc.dir)
        self.save_every = int(rc.save_every)
        self.keep_last = int(rc.keep_last)
        self.device = pick_device(rc.device)
        self.dtype = str(rc.dtype)
        self.start_step = 0
        self.state: dict[str, Any] | None = None
        ckpt = latest_checkpoint(self.dir) if self.dir.exists() else None
        if ckpt is not None and rc.resume == "never":
            raise RunExistsError(
                f"{self.dir} already holds checkpoint {ckpt.name}; pass run.resume=auto to continue it "
                "or run.resume=overwrite to start again"
            )
        if rc.resume == "overwrite" and self.dir.exists():
            shutil.rmtree(self.dir)
            ckpt = None
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".tmp_step_*"):  # a save that was killed half-way
            shutil.rmtree(stale, ignore_errors=True)
        if rc.cpu_threads > 0:
            torch.set_num_threads(int(rc.cpu_threads))
        seed_everything(int(rc.seed))
        if ckpt is not None:
            self.start_step, self.state = load_checkpoint(ckpt)
            set_rng_state(self.state["rng"])
            logger.info("resuming %s from %s", self.dir, ckpt.name)
        (self.dir / "recipe.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        self.metrics = MetricsLogger(
            self.dir, bool(rc.tensorboard), self.start_step if ckpt else None, list(rc.report_to), rc.name
        )

    def restore(self, module: torch.nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
        """Load model, optimizer and scheduler from the checkpoint being resumed, set every RNG
        again (model builders reseed after `start_run` restored them), and return the saved summary."""
        assert self.state is not None, "restore() is for resumed runs"
        module.load_state_dict(self.state["model"])
        optimizer.load_state_dict(self.state["optimizer"])
        scheduler.load_state_dict(self.state["scheduler"])
        set_rng_state(self.state["rng"])
        return dict(self.state.get("summary", {}))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.metrics.log(step, metrics)

    def maybe_save(self, step: int, state_fn: Callable[[], dict[str, Any]], force: bool = False) -> None:
        """Checkpoint at every `save_every` steps (or when forced); `state_fn` builds the state."""
        if force or (self.save_every > 0 and step % self.save_every == 0):
            from rlhfv.training.checkpoint import rng_state

            save_checkpoint(self.dir, step, {**state_fn(), "rng": rng_state()}, self.keep_last)

    def finish(self, model: Any | None, summary: dict[str, Any]) -> dict[str, Any]:
        """Save the final model (a ChatModel, if any) and the run summary."""
        if model is not None:
            from rlhfv.models.base import save_model

            save_model(model, self.dir / "final")
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        self.metrics.close()
        return summary


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
