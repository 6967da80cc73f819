"""One metrics logger: JSON lines always; TensorBoard, Weights & Biases and MLflow on request.

`metrics.jsonl` in the run folder stays the record the app's dashboard reads. `run.report_to`
names trackers that receive the same scalars every logged step, and a sample table whenever the
pipeline appends rows to the run folder's `rollouts.jsonl` (GRPO's `log_rollouts_every`): the
prompt, an image thumbnail, the completions with their rewards and the GRM's critiques and scores.
Each tracker's library is imported only when named, and a missing one is reported before training.

- `wandb`: `wandb.init(dir=<run>)`, so an offline run (`WANDB_MODE=offline`) lands in `<run>/wandb/`;
  the project is `$WANDB_PROJECT` or "rlhfv".
- `mlflow`: `$MLFLOW_TRACKING_URI`, or a file store in `<run>/mlruns`; the experiment is
  `$MLFLOW_EXPERIMENT_NAME` or "rlhfv"; tables are artifacts `samples/step_N.json`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# tracker -> (module that must import, the pip package that provides it)
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
THUMBNAIL = 128  # longest side of a sample table's image, in pixels


def check_trackers(names: list[str] | tuple[str, ...]) -> None:
    """Refuse an unknown or uninstalled tracker by name, with the package that provides it.

    Raises:
        ValueError: unknown name. ImportError: its library is not installed.
    """
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"run.report_to: unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ImportError(
                f"run.report_to names {name!r}, but its library is not installed: "
                f"pip install {package}  (or pip install 'rlhfv[trackers]')"
            )


class MetricsLogger:
    """Appends `{"step": N, **metrics}` lines to `metrics.jsonl`, flushed at every write, and
    hands the same rows (and new `rollouts.jsonl` rows, as sample tables) to `report_to` trackers.

    On resume the file is cut back to the checkpoint's step, so steps logged after the last
    checkpoint by a killed run are not duplicated.
    """

    def __init__(
        self,
        run_dir: str | Path,
        tensorboard: bool = False,
        resume_step: int | None = None,
        report_to: list[str] | tuple[str, ...] = (),
        name: str = "run",
    ):
        report_to = list(dict.fromkeys([*report_to, *(["tensorboard"] if tensorboard else [])]))
        check_trackers(report_to)
        self.run_dir = Path(run_dir)
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        elif self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        self._wandb = self._mlflow = None
        if "wandb" in report_to:
            import wandb

            project = os.environ.get("WANDB_PROJECT", "rlhfv")
            self._wandb = wandb.init(project=project, name=name, dir=str(self.run_dir), reinit="create_new")
        if "mlflow" in report_to:
            import mlflow

            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:  # the run folder keeps its own record, as wandb's offline folder does
                uri = (self.run_dir / "mlruns").absolute().as_uri()
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 asks for this opt-in
            self._mlflow = mlflow.MlflowClient(tracking_uri=uri)
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "rlhfv")
            found = self._mlflow.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self._mlflow.create_experiment(experiment)
            self._mlflow_run = self._mlflow.create_run(experiment_id, run_name=name).info.run_id
        rollouts = self.run_dir / "rollouts.jsonl"  # rows already there were reported by an earlier run
        self._rollouts_seen = rollouts.stat().st_size if rollouts.exists() else 0
        self._step = resume_step or 0  # the last step logged: trackers take steps in order

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._step = step
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        scalars = {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, int | float)}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._mlflow is not None:
            from mlflow.entities import Metric

            now = int(1000 * time.time())
            metrics_now = [Metric(k, v, now, step) for k, v in scalars.items() if math.isfinite(v)]
            self._mlflow.log_batch(self._mlflow_run, metrics=metrics_now)
        self._report_samples(step)

    def _report_samples(self, step: int) -> None:
        """Send the rollouts.jsonl rows written since the last call as one sample table."""
        if self._wandb is None and self._mlflow is None:
            return
        path = self.run_dir / "rollouts.jsonl"
        if not path.exists() or path.stat().st_size <= self._rollouts_seen:
            return
        with path.open("r", encoding="utf-8") as f:
            f.seek(self._rollouts_seen)
            lines = f.readlines()
        whole = [line for line in lines if line.endswith("\n")]  # a half-written row waits
        self._rollouts_seen += sum(len(line.encode("utf-8")) for line in whole)
        rows = [sample_row(json.loads(line), self.run_dir) for line in whole if line.strip()]
        if not rows:
            return
        columns = list(rows[0])
        if self._wandb is not None:
            import wandb

            data = [
                [wandb.Image(v) if k == "image" and v is not None else v for k, v in r.items()] for r in rows
            ]
            self._wandb.log({"samples": wandb.Table(columns=columns, data=data)}, step=step)
        if self._mlflow is not None:
            table = {k: [r[k] for r in rows] for k in columns}
            self._mlflow.log_table(self._mlflow_run, data=table, artifact_file=f"samples/step_{step}.json")

    def close(self) -> None:
        self._report_samples(self._step)  # rows written after the last log
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.set_terminated(self._mlflow_run)


def sample_row(rollout: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One prompt of `rollouts.jsonl` as a table row: a thumbnail of its first image, each
    completion with its reward, and the GRM's verdicts ("1 vs 2: <critique> [scores]")."""
    from PIL import Image

    image = None
    if rollout.get("images"):
        with Image.open(run_dir / rollout["images"][0]) as im:
            image = im.convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
    rewards = rollout.get("rewards") or []
    completions = "\n\n".join(
        f"[{i + 1}] (reward {rewards[i]:.3f}) {text}" if i < len(rewards) else f"[{i + 1}] {text}"
        for i, text in enumerate(rollout.get("completions") or [])
    )
    critiques = "\n\n".join(
        f"{j['a'] + 1} vs {j['b'] + 1}: {j.get('text', '')} [scores {j.get('scores')}]"
        for j in rollout.get("judgments") or []
        if isinstance(j, dict) and "a" in j and "b" in j
    )
    return {"step": rollout.get("step"), "prompt": rollout.get("prompt", ""), "image": image,
            "completions": completions, "critiques": critiques}  # fmt: skip


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the fact visible
    return value


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only rows with step <= last_step (and drop a half-written last line)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= last_step:
            kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    tmp.replace(path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl (a torn last line is skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
