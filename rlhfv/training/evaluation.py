"""Held-out answer accuracy, shared by the training pipelines."""

from __future__ import annotations

from typing import Any

import torch

from rlhfv.models.base import ChatModel


@torch.no_grad()
def evaluate_accuracy(
    model: ChatModel, dataset: Any, batch_size: int, max_new_tokens: int, synced_gpus: bool = False
) -> dict[str, float]:
    """Greedy accuracy with the data set's own `is_correct(text, example)` rule, overall and per task.

    Args:
        dataset: Indexable `Example`s with an `is_correct` method (ShapesVQA, JudgeTask, JsonlExamples …).
        synced_gpus: Keep ZeRO-3 processes in step while generating.
    """
    from rlhfv.rollout import generate

    was_training = model.module.training
    model.module.eval()
    correct: dict[str, list[bool]] = {}
    for start in range(0, len(dataset), batch_size):
        examples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        texts = generate(
            model, [e.prompt for e in examples], 1, max_new_tokens, greedy=True, synced_gpus=synced_gpus
        ).texts
        for example, text in zip(examples, texts, strict=True):
            correct.setdefault(example.task or "all", []).append(bool(dataset.is_correct(text, example)))
    model.module.train(was_training)
    every = [c for values in correct.values() for c in values]
    metrics = {"eval/accuracy": sum(every) / max(1, len(every))}
    if len(correct) > 1:
        metrics.update({f"eval/accuracy_{task}": sum(v) / len(v) for task, v in sorted(correct.items())})
    return metrics
