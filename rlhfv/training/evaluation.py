"""Held-out answer accuracy, shared by the training pipelines."""

from __future__ import annotations

from typing import Any

import torch

from rlhfv.models.base import ChatModel


@torch.no_grad()
def graded_answers(
    model: ChatModel, dataset: Any, batch_size: int, max_new_tokens: int, synced_gpus: bool = False
) -> list[tuple[str, str, bool]]:
    """(task, greedy answer, correct by the data set's `is_correct(text, example)`) for every example,
    in order; the model is left in the training mode it had.

    Args:
        dataset: Indexable `Example`s with an `is_correct` method (ShapesVQA, JudgeTask, JsonlExamples …).
        synced_gpus: Keep ZeRO-3 processes in step while generating.
    """
    from rlhfv.rollout import generate

    was_training = model.module.training
    model.module.eval()
    graded = []
    for start in range(0, len(dataset), batch_size):
        examples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        texts = generate(
            model, [e.prompt for e in examples], 1, max_new_tokens, greedy=True, synced_gpus=synced_gpus
        ).texts
        graded += [
            (e.task or "all", text, bool(dataset.is_correct(text, e)))
            for e, text in zip(examples, texts, strict=True)
        ]
    model.module.train(was_training)
    return graded


def evaluate_accuracy(
    model: ChatModel, dataset: Any, batch_size: int, max_new_tokens: int, synced_gpus: bool = False
) -> dict[str, float]:
    """Greedy accuracy (`graded_answers`), overall and per task."""
    correct: dict[str, list[bool]] = {}
    for task, _, right in graded_answers(model, dataset, batch_size, max_new_tokens, synced_gpus):
        correct.setdefault(task, []).append(right)
    every = [c for values in correct.values() for c in values]
    metrics = {"eval/accuracy": sum(every) / max(1, len(every))}
    if len(correct) > 1:
        metrics.update({f"eval/accuracy_{task}": sum(v) / len(v) for task, v in sorted(correct.items())})
    return metrics


def accuracy_summary(metrics: dict[str, float], moment: str) -> dict[str, float]:
    """The held-out accuracy entries of `metrics` ("eval/accuracy", "eval/accuracy_<task>") under
    the run summary's names for `moment` ("before" or "after" training)."""
    return {f"{moment}/{k[len('eval/') :]}": v for k, v in metrics.items() if k.startswith("eval/accuracy")}
