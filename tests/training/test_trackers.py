"""`run.report_to`: W&B (offline) and MLflow (local file store) receive scalars and sample tables."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from rlhfv.training import metrics
from rlhfv.training.metrics import MetricsLogger, read_metrics

ROLLOUT = {
    "step": 2,
    "prompt": "What colour is the square?",
    "images": ["rollout_images/step2_p0_0.png"],
    "completions": ["red", "blue"],
    "rewards": [1.0, 0.0],
    "judgments": [{"a": 0, "b": 1, "text": "Response 1 names the colour shown.", "scores": [9.0, 2.0]}],
}


def run_two_steps(run_dir: Path, report_to: list[str]) -> None:
    """Log two steps; between them the pipeline appends a rollout row, as GRPO's write_rollouts does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = MetricsLogger(run_dir, report_to=report_to, name="tiny")
    logger.log(1, {"loss/policy": 0.5, "reward/mean": 0.25})
    (run_dir / "rollout_images").mkdir()
    Image.new("RGB", (300, 200), "red").save(run_dir / ROLLOUT["images"][0])
    (run_dir / "rollouts.jsonl").write_text(json.dumps(ROLLOUT) + "\n")
    logger.log(2, {"loss/policy": 0.375, "reward/mean": 0.75})
    logger.close()


@pytest.mark.slow
def test_wandb_offline_run_folder_holds_the_metrics_and_a_sample_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where media wait for upload
    run_two_steps(tmp_path / "run", ["wandb"])
    tmp_path, data_dir = tmp_path / "run", tmp_path / "wandb-data"
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    # The run's records (protobuf: keys and JSON values) reach run-*.wandb from wandb's service
    # process, which flushes on its own schedule after finish().
    history_file, deadline = next(folder.glob("run-*.wandb")), time.monotonic() + 90
    while b"0.375" not in history_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(1)
    history = history_file.read_bytes()
    assert b"reward/mean" in history and b"0.375" in history
    (table_file,) = (folder / "files" / "media" / "table").glob("samples_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["step", "prompt", "image", "completions", "critiques"]
    step, prompt, image, completions, critiques = table["data"][0]
    assert (step, prompt) == (2, "What colour is the square?")
    assert "(reward 1.000) red" in completions and "1 vs 2: Response 1 names" in critiques
    assert image == "Image"  # the table's image column; the pixels travel in a run artifact
    thumbnails = [
        Image.open(f).size for f in data_dir.rglob("*") if f.is_file() and f.read_bytes()[:4] == b"\x89PNG"
    ]
    assert (128, 85) in thumbnails  # the 300×200 image as a 128-pixel thumbnail
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]  # the dashboard's file


@pytest.mark.slow
def test_mlflow_file_store_holds_the_metrics_and_a_sample_table(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_two_steps(tmp_path, ["mlflow"])
    (run,) = [p for p in (tmp_path / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    rewards = (run / "metrics" / "reward" / "mean").read_text().split("\n")
    assert [line.split()[1:] for line in rewards if line] == [["0.25", "1"], ["0.75", "2"]]  # value, step
    table = json.loads((run / "artifacts" / "samples" / "step_2.json").read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert row["prompt"] == "What colour is the square?" and "[scores [9.0, 2.0]]" in row["critiques"]
    assert list((run / "artifacts" / "table_images").rglob("*.png"))  # the thumbnail


def test_a_tracker_that_is_not_installed_is_named_with_its_package_before_anything_is_written(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(metrics.TRACKERS, "wandb", ("rlhfv_no_such_module", "wandb"))
    with pytest.raises(ImportError, match=r"names 'wandb'.*pip install wandb"):
        MetricsLogger(tmp_path / "run", report_to=["wandb"])
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="unknown tracker 'comet'; known: tensorboard, wandb, mlflow"):
        metrics.check_trackers(["comet"])


@pytest.mark.slow
def test_a_grpo_run_reports_its_rollouts_to_mlflow_as_sample_tables(tmp_path, monkeypatch):
    from tests.pipelines.test_grpo import run as run_grpo

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_grpo(tmp_path, "run.report_to=[mlflow]")  # log_rollouts_every=1: a table per step
    (run,) = [p for p in (tmp_path / "run" / "mlruns").glob("*/*") if (p / "metrics").is_dir()]
    assert (run / "metrics" / "reward" / "mean").is_file()
    tables = sorted((run / "artifacts" / "samples").glob("step_*.json"))
    rows = [r for t in tables for r in json.loads(t.read_text())["data"]]
    assert len(rows) == 4  # 2 steps × 2 prompts, as rollouts.jsonl holds them
