"""TRL's GRPOTrainer trains against `rlhfv serve grm` through `rlhfv.integrations.trl`."""

from __future__ import annotations

import pytest
import torch

from rlhfv.integrations.trl import GroupedComparison, message_text
from tests.serve.judges import grm_server
from tests.serve.test_grm_server import GROUPS, in_process_grouped


def test_message_text_reads_plain_and_conversational_prompts():
    assert message_text("Hi?") == "Hi?"
    assert message_text([{"role": "user", "content": "Hi?"}]) == "Hi?"
    parts = [{"type": "image"}, {"type": "text", "text": "What is shown?"}]
    assert message_text([{"role": "user", "content": parts}]) == "What is shown?"
    two = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert message_text(two) == "system: Be brief.\nuser: Hi?"


@pytest.mark.slow
def test_grpo_trainer_trains_two_steps_with_the_grouped_comparison_reward(
    tmp_path, judge_folder, judge_model, monkeypatch
):
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlhfv.models.text_lm import tiny_text_lm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    policy = tiny_text_lm(seed=1)
    folder = tmp_path / "policy"
    policy.module.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    with grm_server(judge_folder) as url:
        reward = GroupedComparison(url)
        # GRPOTrainer's call: each prompt repeated G times, conversational prompts and completions
        g = len(GROUPS[0][1])
        prompts = [[{"role": "user", "content": q}] for q, _ in GROUPS for _ in range(g)]
        completions = [[{"role": "assistant", "content": t}] for _, texts in GROUPS for t in texts]
        expected = [r for group in in_process_grouped(judge_model, GROUPS) for r in group]
        assert reward(prompts=prompts, completions=completions, completion_ids=None) == expected

        model = AutoModelForCausalLM.from_pretrained(folder)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        questions = ["What is 2 + 2?", "Name a colour.", "Is the sky green?", "Count to three."]
        config = GRPOConfig(
            output_dir=str(tmp_path / "trl"), use_cpu=True, report_to=[], max_steps=2,
            per_device_train_batch_size=4, num_generations=4, max_completion_length=6,
            learning_rate=1e-2, beta=0.0, logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[reward],
            args=config,
            train_dataset=Dataset.from_dict(
                {"prompt": [[{"role": "user", "content": q}] for q in questions]}
            ),
            processing_class=AutoTokenizer.from_pretrained(folder, padding_side="left"),
        )
        trainer.train()
    logs = [row for row in trainer.state.log_history if "rewards/rlhfv_grouped_comparison/mean" in row]
    assert len(logs) == 2 and trainer.state.global_step == 2
    assert all(1.0 <= row["rewards/rlhfv_grouped_comparison/mean"] <= 10.0 for row in logs)
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
