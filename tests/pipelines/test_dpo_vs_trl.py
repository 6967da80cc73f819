"""Our DPO loss and gradients against TRL's `DPOTrainer` on the same tiny model and batch.

TRL tokenizes the pairs itself (its standard format: the prompt text already chat-templated, EOS
appended to each response), collates them with its own collator and computes the loss with its
own `compute_loss`; we score the same pairs with `rlhfv.pipelines.dpo.pair_logprobs`. The token
sequences are checked to be the same first, so a disagreement in the loss is one of maths.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rlhfv.algorithms.preference import PreferenceLogprobs, preference_loss
from rlhfv.models.text_lm import tiny_text_lm
from rlhfv.pipelines.dpo import pair_logprobs
from rlhfv.training.batching import tokenize_completions
from rlhfv.types import PreferencePair, Prompt

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

PAIRS = [  # prompts and responses of different lengths, so padding is exercised on both sides
    ("What colour is the circle?", "The circle is red.", "It is blue."),
    ("How many shapes are there?", "There are 3 shapes.", "Two."),
    ("Is the square left of the triangle?", "Yes.", "No, the square is to the right of it."),
]
BETA = 0.3


@pytest.mark.parametrize("loss_type, smoothing", [("sigmoid", 0.0), ("robust", 0.1), ("ipo", 0.0)])
def test_dpo_loss_and_gradients_agree_with_trl_dpo_trainer(tmp_path, monkeypatch, loss_type, smoothing):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ours = tiny_text_lm(seed=3, hidden_size=48, num_heads=3)
    ours.module.train()
    reference = copy.deepcopy(ours.module).eval().requires_grad_(False)
    # Step the policy away from the reference once, so the log-ratios are not all zero
    with torch.no_grad():
        for p in ours.module.parameters():
            p.add_(0.02 * torch.randn_like(p))
    trl_policy, trl_reference = copy.deepcopy(ours.module), copy.deepcopy(reference)
    tok = ours.tokenizer
    pairs = [PreferencePair(Prompt(q), [good, bad], 0) for q, good, bad in PAIRS]

    # TRL: its own tokenization, collation and loss
    templated = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q, _, _ in PAIRS
    ]
    rows = [
        {"prompt": t, "chosen": good, "rejected": bad}
        for t, (_, good, bad) in zip(templated, PAIRS, strict=True)
    ]
    args = trl.DPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to=[],
        beta=BETA,
        loss_type=[loss_type],
        label_smoothing=smoothing,
        per_device_train_batch_size=len(PAIRS),
        max_length=None,
        bf16=False,  # TRL's default is bf16 autocast, which moves the loss by ~1e-3; compare in float32
    )
    trainer = trl.DPOTrainer(
        model=trl_policy,
        ref_model=trl_reference,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tok,
    )
    examples = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    batch = trainer.data_collator(examples)
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    # the same token sequences on both sides
    prompt_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in templated]
    chosen_ids, chosen_mask = tokenize_completions(ours, [good for _, good, _ in PAIRS])
    for i, example in enumerate(examples):
        assert example["prompt_ids"] == prompt_ids[i]
        assert example["chosen_ids"] == chosen_ids[i][chosen_mask[i].bool()].tolist()

    # ours
    summed, tokens = pair_logprobs(ours, ours, pairs, torch.device("cpu"))
    with torch.no_grad():
        ref_summed, _ = pair_logprobs(reference, ours, pairs, torch.device("cpu"))
    lp = PreferenceLogprobs(*summed.chunk(2), *ref_summed.chunk(2), *tokens.chunk(2))
    loss, metrics = preference_loss(lp, BETA, loss_type, smoothing)
    loss.backward()

    assert abs(metrics["reward/margin"]) > 1e-3  # the comparison is not the trivial one at h = 0
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
    theirs = dict(trainer.model.named_parameters())
    compared = 0
    for name, p in ours.module.named_parameters():
        assert p.grad is not None and theirs[name].grad is not None, name
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-4, atol=1e-6, msg=name)
        compared += 1
    assert compared == len(theirs)
