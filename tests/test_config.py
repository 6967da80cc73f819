"""Recipe validation fails fast and names the file, the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhfv.cli import main as cli
from rlhfv.config import RecipeError, instantiate, load_recipe

ROOT = Path(__file__).resolve().parents[1]
SFT_RECIPE = ROOT / "recipes" / "sft_shapes.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


BASE = """
pipeline: rlhfv.pipelines.sft.main
run: {name: t}
train_data: {_component_: rlhfv.data.shapes.ShapesVQA, size: 8}
"""


def test_valid_recipe_fills_defaults(tmp_path):
    cfg = load_recipe(write(tmp_path, BASE))
    assert cfg.steps == 200 and cfg.run.dir == "checkpoints/t"


def test_misspelled_top_level_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(RecipeError, match=r"recipe.yaml: unknown key 'stesp'; did you mean 'steps'"):
        load_recipe(write(tmp_path, BASE + "stesp: 3\n"))


def test_misspelled_run_key_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key 'run.sed'.*'seed'"):
        load_recipe(write(tmp_path, BASE.replace("{name: t}", "{name: t, sed: 1}")))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(RecipeError, match=r"key 'steps'.*many"):
        load_recipe(write(tmp_path, BASE + "steps: many\n"))


def test_misspelled_component_argument_is_named(tmp_path):
    text = BASE.replace("size: 8", "sise: 8")
    with pytest.raises(
        RecipeError,
        match=r"unknown key 'train_data.sise' for rlhfv.data.shapes.ShapesVQA; did you mean 'size'",
    ):
        load_recipe(write(tmp_path, text))


def test_component_argument_of_wrong_type_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"train_data.size = 'big': expected int"):
        load_recipe(write(tmp_path, BASE.replace("size: 8", "size: big")))


def test_unknown_component_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"train_data._component_ = 'rlhfv.data.shapes.Circles'"):
        load_recipe(write(tmp_path, BASE.replace("ShapesVQA", "Circles")))


def test_missing_data_file_is_named(tmp_path):
    text = BASE.replace(
        "{_component_: rlhfv.data.shapes.ShapesVQA, size: 8}",
        "{_component_: rlhfv.data.jsonl.JsonlExamples, path: /nope/data.jsonl}",
    )
    with pytest.raises(RecipeError, match=r"train_data.path = '/nope/data.jsonl': no such file"):
        load_recipe(write(tmp_path, text))


def test_bad_resume_mode_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"run.resume = 'sometimes'"):
        load_recipe(write(tmp_path, BASE), ["run.resume=sometimes"])


def test_override_changes_a_value(tmp_path):
    assert load_recipe(write(tmp_path, BASE), ["steps=7", "run.seed=3"]).steps == 7


def test_stages_get_their_own_run_folders_and_can_refer_to_each_other(tmp_path):
    text = """
run: {name: two}
stages:
  first:
    pipeline: rlhfv.pipelines.sft.main
  second:
    pipeline: rlhfv.pipelines.sft.main
    policy: {_component_: rlhfv.models.base.load_model, path: "${stages.first.run.dir}/final"}
"""
    cfg = load_recipe(write(tmp_path, text))
    assert cfg.stages.second.run.dir == "checkpoints/two/second"
    assert cfg.stages.second.policy.path == "checkpoints/two/first/final"


def test_broken_interpolation_fails_before_work(tmp_path):
    with pytest.raises(RecipeError, match="recipe.yaml"):
        load_recipe(write(tmp_path, BASE + "batch_size: ${nowhere.size}\n"))


def test_validate_command_exits_nonzero_and_names_the_key(tmp_path, capsys):
    path = write(tmp_path, SFT_RECIPE.read_text().replace("batch_size:", "bach_size:"))
    assert cli(["validate", str(path)]) != 0
    assert "bach_size" in capsys.readouterr().err


def test_every_recipe_validates():
    """Real-model recipes need the user's data files (tests/recipes validates them with stand-ins);
    recipes on ../shared/data need that folder, which a user's fresh clone does not have."""
    shared_present = (ROOT.parent / "shared" / "data").is_dir()
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        if "_gpu" in path.stem or "_lora" in path.stem:
            continue
        if "../shared/" in path.read_text() and not shared_present:
            continue
        load_recipe(path)


def test_instantiate_builds_nested_components_and_passes_runtime_args():
    import torch

    node = {"_component_": "torch.optim.SGD", "lr": 0.5}
    opt = instantiate(node, [torch.nn.Parameter(torch.zeros(2))])
    assert opt.param_groups[0]["lr"] == 0.5


def test_a_recipe_that_evaluates_on_data_it_trains_on_is_refused(tmp_path, capsys):
    """The ReasonGRM recipe trains on the `train` part of its file and holds out the `test` part;
    the same split on both sides, or `all` on one, shares items and is refused at validate."""
    data = tmp_path / "hh.jsonl"
    data.write_text("{}\n")  # validate checks that the file exists; it does not read it
    recipe = tmp_path / "reasongrm.yaml"
    text = (ROOT / "recipes" / "reasongrm_hh.yaml").read_text()
    recipe.write_text(
        text.replace("../shared/data/hh_rlhf_harmless_test/harmless-base_test.jsonl.gz", str(data))
    )
    assert cli(["validate", str(recipe)]) == 0
    for override in ("stages.hard_rl.eval_data.pairs.split=train", "stages.rstar_sft.task.pairs.split=all"):
        assert cli(["validate", str(recipe), override]) == 2
        err = capsys.readouterr().err
        assert "stages.hard_rl.eval_data.pairs" in err and str(data) in err and "share items" in err, err
    # synthetic data sets without a file: the same generator and split
    shapes = str(ROOT / "recipes" / "grpo_shapes.yaml")
    assert cli(["validate", shapes]) == 0
    with pytest.raises(
        RecipeError, match="held-out data stages.grpo.eval_data both read rlhfv.data.shapes.ShapesVQA"
    ):
        load_recipe(shapes, ["stages.grpo.eval_data.split=train"])


def test_held_out_preference_pairs_count_as_held_out_data():
    """DPO's `eval_pairs` are held out like `eval_data`: on split test they are accepted, on train refused."""
    dpo = str(ROOT / "recipes" / "dpo_shapes.yaml")
    assert cli(["validate", dpo]) == 0
    with pytest.raises(RecipeError, match="held-out data stages.dpo.eval_pairs.data"):
        load_recipe(dpo, ["stages.dpo.eval_pairs.data.split=train"])
