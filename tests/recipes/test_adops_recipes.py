"""The ADOPS recipes: validation, the MiniGrid comparison's tiny variant with its table and plot,
the Montezuma smoke run, and bad environments refused before training."""

from pathlib import Path

import pytest

from rlhfv.cli import main as cli
from rlhfv.config import load_recipe

ROOT = Path(__file__).resolve().parents[2]
MINIGRID = str(ROOT / "recipes" / "adops_minigrid.yaml")
MONTEZUMA = str(ROOT / "recipes" / "adops_montezuma.yaml")
METHODS = ["ppo", "rnd", "pbrs", "pbim", "grm_d1", "pies", "adops", "adopes", "adops_w2"]


def test_adops_recipes_validate_and_name_every_method():
    cfg = load_recipe(MINIGRID)
    assert list(cfg.methods) == METHODS and len(cfg.seeds) >= 3
    assert load_recipe(MONTEZUMA).env_id == "ALE/MontezumaRevenge-v5"


def test_a_misspelled_shaping_argument_is_caught_by_validation():
    from rlhfv.config import RecipeError

    with pytest.raises(RecipeError, match="epsilon"):
        load_recipe(MONTEZUMA, ["shaping.epsilom=0.1"])


@pytest.mark.slow
def test_minigrid_comparison_tiny_variant_writes_table_and_plot(tmp_path):
    # 4 envs × 64 steps × 4 rollouts per run: every env reaches DoorKey-5x5's 250-step limit.
    args = [
        "run",
        MINIGRID,
        "train.total_steps=1024",
        "train.num_envs=4",
        "train.num_steps=64",
        "train.obs_norm_warmup_steps=2",
        "workers=1",
        "seeds=[0]",
        f"run.dir={tmp_path}",
    ]
    assert cli(args) == 0
    table = (tmp_path / "results.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in table
        assert (tmp_path / method / "seed0" / "summary.json").is_file()
    png = (tmp_path / "returns.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    # A rerun reuses the finished runs instead of training again.
    before = (tmp_path / "adops" / "seed0" / "metrics.jsonl").stat().st_mtime_ns
    assert cli(args) == 0
    assert (tmp_path / "adops" / "seed0" / "metrics.jsonl").stat().st_mtime_ns == before


@pytest.mark.slow
def test_montezuma_recipe_smoke_runs_on_cpu(tmp_path):
    args = [
        "run",
        MONTEZUMA,
        "num_envs=2",
        "num_steps=16",
        "total_steps=64",
        "async_envs=false",
        "obs_norm_warmup_steps=2",
        "run.device=cpu",
        f"run.dir={tmp_path}",
    ]
    assert cli(args) == 0
    assert (
        '"charts/frames": 256' in (tmp_path / "metrics.jsonl").read_text()
    )  # 2 rollouts × 32 steps × skip 4


@pytest.mark.parametrize(
    "override, message",
    [("env_id=ALE/NoSuchGame-v5", "NoSuchGame"), ("env_id=Pendulum-v1", "not Discrete")],
)
def test_bad_environments_fail_before_training_with_a_clear_message(tmp_path, capsys, override, message):
    assert cli(["run", MONTEZUMA, override, "run.device=cpu", f"run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "env.id" in err
    assert not (tmp_path / "metrics.jsonl").exists()
