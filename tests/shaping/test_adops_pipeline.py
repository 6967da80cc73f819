"""The PPO + RND pipeline on CartPole: it learns, and it resumes from a checkpoint."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhfv.pipelines.adops_ppo import AdopsPPOConfig, comparison_table, main
from rlhfv.training.metrics import read_metrics


def config(tmp_path, **overrides):
    base = {
        "env_id": "CartPole-v1",
        "num_envs": 4,
        "num_steps": 64,
        "hidden": 32,
        "rnd_dim": 16,
        "obs_norm_warmup_steps": 2,
        "run": {"dir": str(tmp_path), "device": "cpu"},
    }
    return OmegaConf.merge(OmegaConf.structured(AdopsPPOConfig), base, overrides)


@pytest.mark.slow
def test_ppo_with_adops_learns_cartpole(tmp_path):
    cfg = config(
        tmp_path,
        total_steps=12288,
        learning_rate=1e-3,
        ent_coef=0.0,
        shaping={"_component_": "rlhfv.shaping.methods.ADOPS"},
    )
    summary = main(cfg)
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "charts/episodic_return" in r]
    first = rows[0]["charts/episodic_return"]
    assert first < 40  # a random policy balances ~20 steps
    assert summary["return_last100"] > 2 * first
    assert {"losses/policy", "losses/value_ext", "losses/value_int", "losses/rnd"} <= set(rows[-1])


def test_training_resumes_from_the_last_checkpoint(tmp_path):
    main(config(tmp_path, total_steps=512, run={"save_every": 1}))  # 2 rollouts of 4 × 64
    resumed = main(config(tmp_path, total_steps=1024, run={"save_every": 1, "resume": "auto"}))
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4] and resumed["frames"] == 1024
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == 1024


def test_comparison_table_averages_the_late_episodes_of_each_seed():
    curves = {"a": [[(10, 0.0), (90, 0.4), (100, 0.6)], [(50, 0.0), (100, 0.0)]], "b": [[]]}
    table = comparison_table(curves, final_fraction=0.2)
    # seed 0: mean of returns at frames >= 80 = 0.5; seed 1: 0.0 → mean 0.25, std 0.25
    assert table["a"]["final_mean"] == pytest.approx(0.25) and table["a"]["final_std"] == pytest.approx(0.25)
    assert table["a"]["seeds_with_success"] == 1 and table["b"]["final_mean"] == 0.0


def test_a_non_episodic_intrinsic_stream_changes_only_the_intrinsic_targets(tmp_path):
    """Same seed, same rollouts: cutting the intrinsic GAE at episode ends or not (RND) gives other
    intrinsic returns; the extrinsic stream stays episodic either way."""
    losses = {}
    for episodic in (True, False):
        folder = tmp_path / str(episodic)
        main(config(folder, total_steps=256, episodic_intrinsic=episodic, update_epochs=1, num_minibatches=1))
        losses[episodic] = read_metrics(folder / "metrics.jsonl")[0]
    assert losses[True]["losses/value_ext"] == pytest.approx(losses[False]["losses/value_ext"])
    assert losses[True]["losses/value_int"] != pytest.approx(losses[False]["losses/value_int"])


def test_the_montezuma_recipe_follows_ppo_rnd():
    from rlhfv.config import load_recipe

    cfg = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "adops_montezuma.yaml")
    assert cfg.obs_norm_warmup_steps == 50 * cfg.num_steps  # 50 rollouts of random actions
    assert not cfg.episodic_intrinsic and cfg.shaping.ext_weight == 1.0
    assert AdopsPPOConfig().obs_norm_warmup_steps == 50 * 128
