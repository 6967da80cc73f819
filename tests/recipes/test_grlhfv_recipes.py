"""The Generative RLHF-V recipes: the real-model ones validate and run through the same code path
with tiny random models of the same architectures; the flagship's tiny variant runs all stages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhfv.cli import main as cli
from rlhfv.config import RecipeError, load_recipe, resolve_target, stages_of, validate_recipe
from rlhfv.data.shapes import ShapesVQA

ROOT = Path(__file__).resolve().parents[2]
REAL = ["grlhfv_qwen_gpu.yaml", "grlhfv_qwen_lora.yaml"]


def data_files(tmp_path: Path) -> tuple[Path, Path]:
    """A preference file and a prompt file with real images, like a user's."""
    shapes = ShapesVQA(6, split="test")
    prefs, prompts = tmp_path / "preferences.jsonl", tmp_path / "prompts.jsonl"
    with prefs.open("w") as pf, prompts.open("w") as qf:
        for i in range(6):
            pair = shapes.preference_pair(i)
            pair.prompt.images[0].save(tmp_path / f"{i}.png")
            row = {
                "prompt": pair.prompt.text,
                "images": [f"{i}.png"],
                "responses": pair.responses,
                "preferred": pair.preferred,
            }
            pf.write(json.dumps(row) + "\n")
            qf.write(json.dumps({"prompt": pair.prompt.text, "images": [f"{i}.png"]}) + "\n")
    return prefs, prompts


def data_overrides(prefs: Path, prompts: Path) -> list[str]:
    return [f"stages.grm_rl.train_data.pairs.path={prefs}", f"stages.policy_rl.train_data.path={prompts}"]


@pytest.mark.parametrize("name", REAL)
def test_real_model_recipe_validates_and_names_missing_data(name, tmp_path):
    with pytest.raises(
        RecipeError, match=r"stages.grm_rl.train_data.pairs.path = 'data/preferences.jsonl': no such file"
    ):
        load_recipe(ROOT / "recipes" / name)
    cfg = load_recipe(ROOT / "recipes" / name, data_overrides(*data_files(tmp_path)))
    assert [n for n, _ in stages_of(cfg)] == ["grm_rl", "policy_rl"]
    assert cfg.stages.grm_rl.group_size == 8 and cfg.stages.policy_rl.group_size == 5  # paper Table 5
    assert cfg.stages.grm_rl.kl_coef == 0.02


@pytest.mark.slow
def test_lora_recipe_runs_with_tiny_qwen_models_of_the_same_architectures(tmp_path):
    prefs, prompts = data_files(tmp_path)
    raw = OmegaConf.load(ROOT / "recipes" / "grlhfv_qwen_lora.yaml")
    raw.run.dir = str(tmp_path / "run")
    raw.run.dtype = "float32"
    grm, policy = raw.stages.grm_rl, raw.stages.policy_rl
    grm.policy = {"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_5_vl", "lora": {"r": 4, "alpha": 8}}
    policy.policy = {"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl", "lora": {"r": 4, "alpha": 8}}
    grm.train_data.pairs.path, policy.train_data.path = str(prefs), str(prompts)
    for stage in (grm, policy):
        stage.update(
            {"steps": 1, "prompts_per_step": 2, "micro_batch_size": 0, "max_new_tokens": 6, "warmup_steps": 0}
        )
    grm.group_size, policy.group_size = 2, 3
    policy.reward.reward.judge.model.dtype = "float32"
    policy.reward.reward.judge.max_new_tokens = 6
    cfg = validate_recipe(raw, "grlhfv_qwen_lora.yaml (tiny)")
    for _, stage in stages_of(cfg):
        summary = resolve_target(str(stage.pipeline))(stage)
        assert "final_reward" in summary
    assert (tmp_path / "run" / "policy_rl" / "final" / "rlhfv_model.json").is_file()
    rows = [
        json.loads(line)
        for line in (tmp_path / "run" / "policy_rl" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("monitor/length_drift" in r for r in rows)


def tiny_flagship(run_dir: Path | str) -> list[str]:
    """Overrides that cut the flagship to a few steps a stage (every stage still runs)."""
    return [
        f"run.dir={run_dir}",
        "stages.policy_sft.steps=2",
        "stages.policy_sft.train_data.size=16",
        "stages.policy_sft.eval_data.size=2",
        "stages.policy_sft.batch_size=2",
        "stages.policy_sft.eval_every=0",
        "stages.grm_drill.steps=1",
        "stages.grm_drill.batch_size=2",
        "stages.grm_drill.eval_data.size=2",
        "stages.grm_warmup.steps=1",
        "stages.grm_warmup.batch_size=2",
        "stages.grm_warmup.eval_data.pairs.size=2",
        "stages.grm_warmup.max_new_tokens=4",
        "stages.grm_sft.steps=1",
        "stages.grm_sft.batch_size=2",
        "stages.grm_sft.eval_data.pairs.size=2",
        "stages.grm_sft.max_new_tokens=4",
        "stages.grm_refine.steps=1",
        "stages.grm_refine.batch_size=2",
        "stages.grm_refine.eval_data.pairs.size=2",
        "stages.grm_refine.max_new_tokens=4",
        "stages.grm_rl.steps=1",
        "stages.grm_rl.prompts_per_step=1",
        "stages.grm_rl.group_size=2",
        "stages.grm_rl.max_new_tokens=4",
        *(
            f"stages.grm_rl.{part}.pairs.{key}"
            for part in ("train_data", "eval_data")
            for key in (
                "data._component_=tests.data.test_pairs.ParityGraded",  # answers a 2-step policy splits
                "data.size=6",
                "max_new_tokens=4",
            )
        ),
        "stages.grm_rl.eval_every=0",
        "stages.grm_rl.log_rollouts_every=1",
        "stages.policy_rl.steps=1",
        "stages.policy_rl.prompts_per_step=1",
        "stages.policy_rl.group_size=3",
        "stages.policy_rl.eval_data.size=2",
        "stages.policy_rl.eval_every=0",
        "stages.policy_rl.max_new_tokens=4",
        "stages.policy_rl.reward.reward.judge.max_new_tokens=4",
        "stages.policy_rl.reward.every=1",
        "stages.policy_rl.log_rollouts_every=1",
    ]


@pytest.mark.slow
def test_quickstart_is_the_flagship_and_its_tiny_variant_runs_every_stage(tmp_path, caplog):
    quickstart = ROOT / "recipes" / "quickstart.yaml"
    assert quickstart.resolve() == (ROOT / "recipes" / "grlhfv_shapes.yaml").resolve()
    overrides = tiny_flagship(tmp_path)
    with caplog.at_level("INFO", logger="rlhfv"):
        assert cli(["run", str(quickstart), *overrides]) == 0
    table = caplog.text[caplog.text.index("held-out accuracy by stage") :]
    assert "grm_rl" in table and "policy_rl" in table  # the GRM's and the policy's, before -> after
    for stage in ("policy_sft", "grm_drill", "grm_warmup", "grm_sft", "grm_refine", "grm_rl", "policy_rl"):
        assert json.loads((tmp_path / stage / "summary.json").read_text())
    judge_row = json.loads((tmp_path / "grm_rl" / "rollouts.jsonl").read_text().splitlines()[0])
    assert len(judge_row["readings"]) == 2  # the GRM wrote its own answer before each judgement
    row = json.loads((tmp_path / "policy_rl" / "rollouts.jsonl").read_text().splitlines()[0])
    assert len(row["completions"]) == len(row["rewards"]) == 3
    assert (
        len(row["judgments"]) <= 3
    )  # C(3,2) pairs at most: completions cut by the length limit are not judged
    metrics = [
        json.loads(line) for line in (tmp_path / "policy_rl" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("monitor/self_praise_rate" in m for m in metrics)
    assert any("monitor/judge_decisive_pairs" in m for m in metrics)  # the agreement monitor ran


def test_gpu_check_overrides_of_the_quickstart_still_validate():
    """benchmarks/gpu_check.sh runs only where a GPU is lent; its cut-short quickstart must not
    name keys the recipe has lost."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    block = script[script.index("== 3. quickstart") :]
    block = block[: block.index('echo "quickstart (short)')]
    overrides = re.findall(r"\b(stages\.[\w.]+=\S+)", block)
    assert any(o.startswith("stages.grm_rl.") for o in overrides)
    load_recipe(ROOT / "recipes" / "quickstart.yaml", [o.strip('"') for o in overrides if "$" not in o])
