import os

import pytest
import torch

from rlhfv.cli import main as cli
from rlhfv.models.text_lm import tiny_text_lm
from rlhfv.rewards import RewardError
from rlhfv.training.checkpoint import latest_checkpoint, load_checkpoint
from rlhfv.training.metrics import read_metrics
from tests.pipelines.test_grpo import tiny_recipe

TEXT = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
FAST = [
    "train_data.size=32",
    "train_data.image_size=24",
    "~eval",
    "prompts_per_step=2",
    "group_size=3",
    "max_new_tokens=4",
    "log_rollouts_every=0",
    "run.device=cpu",
    "optimizer.lr=0.01",
    "reward._component_=rlhfv.rewards.rules.CallableReward",
    "reward.function=tests.pipelines.test_grpo.text_length",
]


def run(tmp_path, name, *extra, policy=TEXT):
    recipe = tiny_recipe(tmp_path, policy, drop_eval=True)
    return cli(["run", recipe, *[a for a in FAST if a != "~eval"], f"run.dir={tmp_path / name}", *extra])


@pytest.mark.slow
def test_a_resumed_run_continues_exactly_like_an_uninterrupted_one(tmp_path):
    assert run(tmp_path, "a", "steps=3", "run.save_every=1") == 0
    assert run(tmp_path, "b", "steps=2", "run.save_every=1") == 0
    assert run(tmp_path, "b", "steps=3", "run.save_every=1", "run.resume=auto") == 0
    a, b = read_metrics(tmp_path / "a/metrics.jsonl"), read_metrics(tmp_path / "b/metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3]
    for key in ("reward/mean", "loss/policy", "completion/length_mean"):
        assert a[-1][key] == pytest.approx(b[-1][key], rel=1e-6), key
    wa, wb = (
        load_checkpoint(tmp_path / "a/step_3")[1]["model"],
        load_checkpoint(tmp_path / "b/step_3")[1]["model"],
    )
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


CALLS = {"n": 0}


def fails_on_second_call(prompts, completions, labels):
    CALLS["n"] += 1
    if CALLS["n"] == 2:
        raise ZeroDivisionError("no judge available")
    return [float(len(c)) for c in completions]


def test_a_failing_reward_stops_the_step_naming_the_reward_and_leaves_the_checkpoint_intact(tmp_path):
    CALLS["n"] = 0
    with pytest.raises(
        RewardError, match=r"fails_on_second_call raised ZeroDivisionError: no judge available"
    ):
        run(
            tmp_path,
            "r",
            "steps=3",
            "run.save_every=1",
            "reward.function=tests.pipelines.test_grpo_resume_and_errors.fails_on_second_call",
        )
    ckpt = latest_checkpoint(tmp_path / "r")
    assert ckpt.name == "step_1"
    assert load_checkpoint(ckpt)[0] == 1


def nan_when_training(seed: int = 0):
    """A tiny LM whose forward passes give NaN logits with grad enabled (sampling still works)."""
    model = tiny_text_lm(seed=seed)

    def poison(module, args, output):
        if torch.is_grad_enabled():
            output.logits = output.logits * float("nan")
        return output

    model.module.register_forward_hook(poison)
    return model


def test_a_non_finite_loss_stops_the_run_with_the_step_and_the_cause(tmp_path):
    policy = {"_component_": "tests.pipelines.test_grpo_resume_and_errors.nan_when_training"}
    with pytest.raises(FloatingPointError, match=r"step 1: GRPO loss is nan: policy log-probs hold NaN/inf"):
        run(tmp_path, "n", "steps=2", policy=policy)


def test_a_non_finite_loss_skips_the_batch_when_the_recipe_says_so(tmp_path):
    policy = {"_component_": "tests.pipelines.test_grpo_resume_and_errors.nan_when_training"}
    assert run(tmp_path, "s", "steps=2", "on_nonfinite=skip", "run.save_every=2", policy=policy) == 0
    rows = read_metrics(tmp_path / "s/metrics.jsonl")
    assert [r["skipped/nonfinite"] for r in rows] == [1.0, 1.0]
    before = tiny_text_lm(seed=0).module.state_dict()
    after = load_checkpoint(tmp_path / "s/step_2")[1]["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def counted(seed: int = 0, lora: bool = False):
    # the recipe loader imports this file under another module name than pytest does: count in the environment
    os.environ["RLHFV_TEST_BUILDS"] = str(int(os.environ.get("RLHFV_TEST_BUILDS", "0")) + 1)
    if not lora:
        return tiny_text_lm(seed=seed)
    from rlhfv.models.hf_vlm import tiny_qwen2_vl

    return tiny_qwen2_vl(seed=seed, lora={"r": 4})


@pytest.mark.parametrize(("kl", "lora", "builds"), [(0.0, False, 1), (0.1, False, 2), (0.1, True, 1)])
def test_the_reference_is_loaded_only_for_kl_and_never_copied_with_lora(tmp_path, kl, lora, builds):
    os.environ["RLHFV_TEST_BUILDS"] = "0"
    policy = {"_component_": "tests.pipelines.test_grpo_resume_and_errors.counted", "lora": lora}
    assert run(tmp_path, "k", "steps=1", f"kl_coef={kl}", policy=policy) == 0
    assert os.environ.pop("RLHFV_TEST_BUILDS") == str(builds)
    if kl:
        assert "loss/kl" in read_metrics(tmp_path / "k/metrics.jsonl")[-1]
