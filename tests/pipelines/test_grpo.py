import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlhfv.cli import main as cli
from rlhfv.training.checkpoint import load_checkpoint
from rlhfv.training.metrics import read_metrics

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "grpo_shapes.yaml")

# The tiny variant: a random tiny Qwen2-VL instead of an SFT checkpoint, a few steps.
TINY = [
    "train_data.size=64",
    "eval_data.size=4",
    "steps=2",
    "prompts_per_step=2",
    "group_size=3",
    "max_new_tokens=5",
    "eval_every=0",
    "log_rollouts_every=1",
    "run.save_every=1",
    "run.device=cpu",
]


def tiny_recipe(folder: Path, policy: dict | None = None, drop_eval: bool = False) -> str:
    """grpo_shapes.yaml's GRPO stage alone, with its policy node replaced (overrides can merge
    keys, not drop them)."""
    recipe = OmegaConf.load(RECIPE)
    cfg = recipe.stages.grpo
    cfg.run = recipe.run
    cfg.policy = policy or {"_component_": "rlhfv.models.hf_vlm.tiny_qwen2_vl", "seed": 0}
    if drop_eval:
        del cfg["eval_data"]
    path = folder / "grpo_tiny.yaml"
    OmegaConf.save(cfg, path)
    return str(path)


def run(tmp_path, *extra, policy=None):
    recipe = tiny_recipe(tmp_path, policy)
    code = cli(["run", recipe, *TINY, f"run.dir={tmp_path / 'run'}", *extra])
    assert code == 0
    return read_metrics(tmp_path / "run" / "metrics.jsonl")


@pytest.mark.slow
def test_tiny_grpo_shapes_runs_logs_rollouts_and_saves_a_loadable_model(tmp_path):
    rows = run(tmp_path, "micro_batch_size=3", "kl_coef=0.05", "updates_per_batch=2")
    assert rows[0]["step"] == 0 and "eval/accuracy" in rows[0]
    last = rows[-1]
    for key in (
        "loss/policy",
        "loss/kl",
        "reward/mean",
        "reward/std",
        "perf/tokens_per_s",
        "perf/step_s",
        "completion/length_mean",
        "completion/incomplete_frac",
        "eval/accuracy",
    ):
        assert key in last, key
    out = tmp_path / "run"
    lines = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 1, 2, 2]
    assert len(lines[0]["completions"]) == 3 and len(lines[0]["rewards"]) == 3
    assert (out / lines[0]["images"][0]).is_file()
    from rlhfv.models.base import load_model

    assert load_model(str(out / "final")).module is not None


def text_length(prompts, completions, labels):
    return [float(len(c)) for c in completions]  # random completions differ in length: non-zero advantages


def test_one_grpo_step_changes_the_policy_weights(tmp_path):
    reward = [
        "reward._component_=rlhfv.rewards.rules.CallableReward",
        "reward.function=tests.pipelines.test_grpo.text_length",
    ]
    run(tmp_path, "steps=1", "optimizer.lr=0.01", *reward)
    changed = moved_parameters(tmp_path)
    assert any("language_model" in k for k in changed) and any("visual" in k for k in changed)


def test_frozen_parameters_do_not_move_and_a_pattern_matching_nothing_is_named(tmp_path):
    reward = [
        "reward._component_=rlhfv.rewards.rules.CallableReward",
        "reward.function=tests.pipelines.test_grpo.text_length",
    ]
    run(tmp_path, "steps=1", "optimizer.lr=0.01", "freeze=[visual]", *reward)
    changed = moved_parameters(tmp_path)
    assert changed and not any("visual" in k for k in changed)
    with pytest.raises(ValueError, match="freeze: pattern 'vision_tower' matches no parameter"):
        cli(["run", tiny_recipe(tmp_path), *TINY, f"run.dir={tmp_path / 'run2'}", "freeze=[vision_tower]"])


def moved_parameters(tmp_path) -> list[str]:
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    before = tiny_qwen2_vl(seed=0).module.state_dict()
    after = load_checkpoint(tmp_path / "run" / "step_1")[1]["model"]
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_grouped_comparison_reward_runs_in_the_pipeline_and_its_verdicts_reach_rollouts_jsonl(tmp_path):
    reward = [
        "reward._component_=rlhfv.rewards.grouped.GroupedComparisonReward",
        "reward.judge._component_=rlhfv.rewards.grouped.FormatJudge",
        "reward.both_orders=true",
        "stop_strings=[e]",  # a common letter: random completions end early, so most are complete
        "max_new_tokens=12",
    ]
    text = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
    rows = run(tmp_path, "steps=1", "run.save_every=0", *reward, policy=text)
    assert "reward/mean" in rows[-1]
    lines = [json.loads(x) for x in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    judged = [j for line in lines for j in line["judgments"]]
    assert judged, "no complete pair was judged"
    # each ordered pair of complete completions judged once, the judge's text kept; both orders present
    for line in lines:
        pairs = {(j["a"], j["b"]) for j in line["judgments"]}
        assert len(pairs) == len(line["judgments"]) and all((b, a) in pairs for a, b in pairs)
    assert all(j["text"].startswith("Scores: \\boxed{") and len(j["scores"]) == 2 for j in judged)


def test_a_judge_that_reads_first_trains_on_its_readings_too_and_logs_them(tmp_path):
    """GRM RL with `JudgeTask(reading='self')`: each sampled judgement starts with the judge's own
    answer to the question, written from the question alone; GRPO credits both parts."""
    recipe = tiny_recipe(tmp_path, drop_eval=True)
    cfg = OmegaConf.load(recipe)
    cfg.train_data = {
        "_component_": "rlhfv.data.pairs.JudgeTask",
        "analysis": "compare",
        "reading": "self",
        "pairs": {"_component_": "rlhfv.data.pairs.ShapesPairs", "size": 16},
    }
    cfg.reward = {"_component_": "rlhfv.rewards.grm.JudgeRuleReward"}
    OmegaConf.save(cfg, recipe)
    assert (
        cli(
            [
                "run",
                recipe,
                *TINY[2:],
                "eval_every=0",
                "steps=1",
                "run.save_every=0",
                f"run.dir={tmp_path / 'run'}",
            ]
        )
        == 0
    )
    line = json.loads((tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()[0])
    assert len(line["readings"]) == len(line["completions"]) == 3
    assert read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]["rollout/logprob_gap"] < 1e-4  # both parts on-policy
    with pytest.raises(ValueError, match="updates_per_batch 1 only"):
        cli(["run", recipe, *TINY[2:], "steps=1", "updates_per_batch=2", f"run.dir={tmp_path / 'run2'}"])
    # the paper's KL term covers the reading too: once the judge has moved, both parts pay it
    kl_run = ["eval_every=0", "steps=2", "run.save_every=0", "kl_coef=0.5", "optimizer.lr=0.05",
              "reward._component_=rlhfv.rewards.rules.CallableReward",
              "reward.function=tests.pipelines.test_grpo.text_length"]  # fmt: skip
    assert cli(["run", recipe, *TINY[2:], *kl_run, f"run.dir={tmp_path / 'run3'}"]) == 0
    kl = [r["loss/kl"] for r in read_metrics(tmp_path / "run3" / "metrics.jsonl") if "loss/kl" in r]
    assert len(kl) == 2 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 0


def test_sampling_stays_on_policy_whatever_the_checkpoint_generation_config_says(tmp_path):
    """A model folder that ships sampling settings (Qwen2-VL-Instruct folders ship
    repetition_penalty 1.05) and dropout: the sampler must still draw from the policy that the
    loss's ratio assumes, and π_old must be computed without dropout, as the sampler ran."""
    from rlhfv.models.base import save_model
    from rlhfv.models.text_lm import tiny_text_lm

    folder = tmp_path / "policy"
    save_model(tiny_text_lm(seed=0), folder)
    gen = json.loads((folder / "generation_config.json").read_text())
    gen.update(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3, top_k=5)
    (folder / "generation_config.json").write_text(json.dumps(gen))
    config = json.loads((folder / "config.json").read_text())
    config["attention_dropout"] = 0.3
    (folder / "config.json").write_text(json.dumps(config))
    reward = [
        "reward._component_=rlhfv.rewards.rules.CallableReward",
        "reward.function=tests.pipelines.test_grpo.text_length",
    ]
    policy = {"_component_": "rlhfv.models.base.load_model", "path": str(folder)}
    rows = run(tmp_path, "run.save_every=0", "updates_per_batch=2", "micro_batch_size=3",
               "max_new_tokens=8", *reward, policy=policy)  # fmt: skip
    gaps = [r["rollout/logprob_gap"] for r in rows if "rollout/logprob_gap" in r]
    assert len(gaps) == 2 and max(gaps) < 1e-4, gaps


def flat_for_counting(prompts, completions, labels):
    """Equal rewards within every "How many" group (zero advantage), varied ones elsewhere."""
    return [
        1.0 if p.startswith("How many") else float(len(c)) for p, c in zip(prompts, completions, strict=True)
    ]


def test_dynamic_sampling_trains_only_groups_whose_rewards_differ(tmp_path):
    reward = [
        "reward._component_=rlhfv.rewards.rules.CallableReward",
        "reward.function=tests.pipelines.test_grpo.flat_for_counting",
    ]
    text = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
    extra = ["run.save_every=0", "prompts_per_step=3", "steps=2", "micro_batch_size=3"]
    rows = run(tmp_path, *extra, "dynamic_sampling=6", *reward, policy=text)
    lines = [json.loads(x) for x in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert lines and all(not x["prompt"].startswith("How many") and len(set(x["rewards"])) > 1 for x in lines)
    assert [r["rollout/trained_groups"] for r in rows if "rollout/trained_groups" in r] == [3.0, 3.0]
    assert all(r["rollout/logprob_gap"] < 1e-4 for r in rows if "rollout/logprob_gap" in r)
    # off: the flat groups train too (and show up in rollouts.jsonl)
    (tmp_path / "off").mkdir()
    run(tmp_path / "off", *extra, "log_rollouts_prompts=3", *reward, policy=text)
    lines = [json.loads(x) for x in (tmp_path / "off" / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert any(x["prompt"].startswith("How many") for x in lines)


def bf16_only(prompts, completions, labels):
    """A reward that refuses to run outside bf16 autocast (the recipe imports it by path, so it
    reports by raising: the run then stops with the reward's error)."""
    if not (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        raise RuntimeError("the reward ran without the run's bf16 autocast")
    return [float(len(c)) for c in completions]


def test_a_model_based_reward_runs_under_the_runs_bf16_autocast(tmp_path):
    """A GRM judges under run.dtype's autocast like the policy samples: in float32 the pretrained
    MLLM's judge generated 1.7x slower."""
    reward = [
        "reward._component_=rlhfv.rewards.rules.CallableReward",
        "reward.function=tests.pipelines.test_grpo.bf16_only",
    ]
    rows = run(tmp_path, "steps=1", "run.save_every=0", "run.dtype=bfloat16", *reward)
    assert "reward/mean" in rows[-1]
