"""The closed loop: labels exported from the store train a GRM with the GRM RL stage, and that
run's logged rollouts come back into the store as tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhfv.cli import main as cli
from rlhfv.store.export import export_snapshot
from rlhfv.store.ingest import import_rollouts, import_shapes
from rlhfv.store.store import Store
from rlhfv.training.metrics import read_metrics


@pytest.mark.slow
def test_an_exported_snapshot_trains_the_grm_rl_stage_and_its_rollouts_come_back(
    tmp_path: Path, database_url
):
    store = Store(database_url, media_dir=tmp_path / "media")
    import_shapes(store, n=6, seed=5, overlap=1)
    gold = store.gold()
    ann = store.add_user("ann", "ann-password").id
    while (view := store.next_task(ann)) is not None:
        store.submit(ann, view.id, gold[view.id])  # a careful annotator
    snap = export_snapshot(store, tmp_path / "exports")
    assert snap.pairs == 6
    # The grm_rl stage of the GRLHF-V recipe, reading the snapshot instead of generated pairs.
    stage = {
        "pipeline": "rlhfv.pipelines.grpo.main",
        "policy": {"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl", "seed": 0},
        "train_data": {
            "_component_": "rlhfv.data.pairs.JudgeTask",
            "pairs": {
                "_component_": "rlhfv.data.formats.PreferenceData",
                "format": "jsonl",
                "path": str(snap.path / "preferences.jsonl"),
            },
        },
        "reward": {"_component_": "rlhfv.rewards.grm.JudgeRuleReward", "rule": "grlhfv"},
        "optimizer": {"_component_": "torch.optim.AdamW", "lr": 1e-3},
        "steps": 2,
        "prompts_per_step": 2,
        "group_size": 3,
        "max_new_tokens": 6,
        "log_rollouts_every": 1,
        "run": {"dir": str(tmp_path / "checkpoints" / "grm-rl"), "device": "cpu"},
    }
    recipe = tmp_path / "grm_rl.yaml"
    OmegaConf.save(OmegaConf.create(stage), recipe)
    assert cli(["run", str(recipe)]) == 0
    rows = read_metrics(tmp_path / "checkpoints" / "grm-rl" / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss/policy" in r] == [1, 2]
    report = import_rollouts(store, tmp_path / "checkpoints" / "grm-rl", overlap=1)
    assert report.added + len(report.errors) == 4  # 2 steps x 2 logged prompts
    assert all(e.field == "completions" for e in report.errors)  # only groups with <2 distinct answers
    if report.added:
        view = store.next_task(store.add_user("bob", "bob-password").id)
        assert view.images and all(p.is_file() for p in view.images)
