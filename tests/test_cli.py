"""The command line: listing recipes and runs, and clear errors for bad recipes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rlhfv.cli import accuracy_table
from rlhfv.cli import main as cli
from rlhfv.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def test_ls_lists_recipes_with_purpose_and_runs_with_status(tmp_path, capsys):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.yaml").write_text("# Train something small.\npipeline: x\n")
    (tmp_path / "recipes" / "quick.yaml").symlink_to("a.yaml")
    run = tmp_path / "checkpoints" / "r1"
    (run / "step_4").mkdir(parents=True)
    (run / "recipe.yaml").write_text("{}")
    done = tmp_path / "checkpoints" / "r2"
    done.mkdir()
    (done / "recipe.yaml").write_text("{}")
    (done / "summary.json").write_text(json.dumps({}))
    assert cli(["ls", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recipes/a.yaml" in out and "Train something small." in out
    assert "recipes/quick.yaml" in out and "(= a.yaml) Train something small." in out
    assert "last checkpoint step 4" in out and "finished" in out


def test_missing_recipe_is_an_error_naming_it(capsys):
    assert cli(["validate", "nowhere.yaml"]) == 2
    assert "recipe not found: nowhere.yaml" in capsys.readouterr().err


def test_every_recipe_opens_with_a_purpose_and_its_command():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# ") and len(lines[0]) > 10, (
            f"{path.name}: first line must state its purpose"
        )
        assert any(line.startswith("# rlhfv run ") or line.startswith("# torchrun") for line in lines[:4]), (
            f"{path.name}: the opening comments must give the command that runs it"
        )


@dataclasses.dataclass
class NoteConfig:
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    word: str = ""


def note(cfg: NoteConfig) -> dict[str, str]:
    """A stage that only writes its word into its run folder."""
    Path(cfg.run.dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.run.dir) / "word.txt").write_text(cfg.word)
    return {"word": cfg.word}


def test_run_stages_runs_only_the_named_stages_and_refuses_unknown_names(tmp_path, capsys):
    stage = "{pipeline: tests.test_cli.note, word: %s}"
    recipe = tmp_path / "two.yaml"
    recipe.write_text(f"stages:\n  first: {stage % 'a'}\n  second: {stage % 'b'}\n")
    assert cli(["run", str(recipe), "--stages", "second", f"run.dir={tmp_path / 'out'}"]) == 0
    assert (tmp_path / "out" / "second" / "word.txt").read_text() == "b"
    assert not (tmp_path / "out" / "first").exists()
    assert cli(["run", str(recipe), f"run.dir={tmp_path / 'out'}", "--stages", "third"]) == 2
    assert "--stages names ['third']; the recipe's stages are ['first', 'second']" in capsys.readouterr().err


def test_accuracy_table_lines_up_each_stage_before_and_after():
    results = {
        "policy_sft": {
            "before/accuracy": 0.0,
            "after/accuracy": 0.63,
            "before/accuracy_count": 0.0,
            "after/accuracy_count": 0.67,
            "before/accuracy_colour": 0.0,
            "after/accuracy_colour": 0.76,
        },
        "grm_sft": {"before/accuracy": 0.31, "after/accuracy": 0.695, "after/accuracy_judge": 0.695},
        "grm_rl": {"after/accuracy": 0.7},  # resumed after its evaluation before training
        "export": {"rows": 12},  # a stage without held-out accuracy is left out
    }
    lines = accuracy_table(results)
    assert lines[0].startswith("held-out accuracy by stage")
    assert lines[1].split() == [
        "policy_sft",
        "0.000",
        "->",
        "0.630",
        "(colour",
        "0.00",
        "->",
        "0.76,",
        "count",
        "0.00",
        "->",
        "0.67)",
    ]
    assert lines[2].split() == ["grm_sft", "0.310", "->", "0.695"]  # one family: no detail
    assert lines[3].split() == ["grm_rl", "-", "->", "0.700"]
    assert len(lines) == 4
    assert accuracy_table({"a": {"rows": 1}, "b": {}}) == []


def test_a_stage_whose_earlier_stage_is_unfinished_stops_naming_the_folder(tmp_path, capsys):
    half_written = tmp_path / "sft" / "final"
    half_written.mkdir(parents=True)  # a killed SFT run: final/ begun, no summary.json
    args = ["run", str(ROOT / "recipes" / "grpo_shapes.yaml"), "--stages", "grpo", f"run.dir={tmp_path}"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert f"stage 'grpo' needs {half_written} (policy.path), which stage 'sft' has not finished" in err
    assert not (tmp_path / "grpo").exists()


def test_a_recipe_that_shards_otherwise_than_its_accelerate_config_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `accelerate launch` sets from
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")  # recipes/accelerate/deepspeed_zero3.yaml
    assert cli(["run", str(ROOT / "recipes" / "grpo_shapes.yaml"), f"run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "DeepSpeed ZeRO-3 config, but stages.sft.zero_stage = 0; set zero_stage=3" in err  # sft shards too
    assert not (tmp_path / "sft").exists()
