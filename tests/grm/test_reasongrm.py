"""ReasonGRM pieces: A/B task, tiered reward on rollouts, outcome filters, R*-selected SFT stage."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from rlhfv.cli import main as cli
from rlhfv.pipelines import reasongrm
from rlhfv.pipelines.reasongrm import OutcomeFilter, VerdictReward, VerdictTask
from rlhfv.types import PreferencePair, Prompt

ROOT = Path(__file__).resolve().parents[2]


class Pairs:
    def __init__(self, n: int):
        self.pairs = [PreferencePair(Prompt(f"question {i}"), ["good", "bad"], 0, str(i)) for i in range(n)]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return self.pairs[i]


def test_verdict_task_labels_follow_the_shuffled_position_of_the_better_answer():
    task = VerdictTask(Pairs(20), seed=3)
    labels = set()
    for i in range(20):
        e = task[i]
        a_is_good = "[Answer A]\ngood" in e.prompt.text
        assert e.label == ("A" if a_is_good else "B")
        assert task.is_correct(f"thinking</think>[[{e.label}]]", e)
        labels.add(e.label)
    assert labels == {"A", "B"}  # both orders occur


def test_verdict_reward_scores_a_rollout_with_configurable_tiers():
    rollout = SimpleNamespace(
        texts=["r</think>[[A]]", "r</think>so [[A]]", "r</think>[[B]]", "r</think>[[A]]"],
        labels=["A", "B"],
        complete=torch.tensor([True, True, True, False]),
        group_size=2,
    )
    # Rows 0-1 have label A, rows 2-3 label B.
    assert VerdictReward()(rollout).tolist() == pytest.approx([1.0, 0.1, 1.0, -1.0])
    assert VerdictReward(wrong=-2.0, unfinished=-3.0)(rollout).tolist()[3] == -3.0


def test_outcome_filter_keeps_mixed_or_not_all_correct_questions(monkeypatch):
    counts = [0, 2, 4, 3]  # correct answers out of K = 4 for four questions
    monkeypatch.setattr(reasongrm, "sample_outcomes", lambda *args: ([], counts, []))
    model = SimpleNamespace(module=torch.nn.Linear(1, 1))
    task = VerdictTask(Pairs(4))
    assert OutcomeFilter(task, model, samples=4, keep="mixed").indices == [1, 3]
    assert OutcomeFilter(task, model, samples=4, keep="not_all_correct").indices == [0, 1, 3]
    with pytest.raises(ValueError, match="keep = 'some'"):
        OutcomeFilter(task, model, keep="some")


@pytest.mark.slow
def test_rstar_stage_keeps_one_correct_path_per_question_and_trains(tmp_path, monkeypatch):
    task = VerdictTask(Pairs(2), seed=0)
    wrong = {"A": "B", "B": "A"}
    texts = []
    for q in range(2):  # G = 3 paths per question: two correct (short / long reasoning), one wrong
        label = task[q].label
        texts += [
            f"ok</think>[[{label}]]",
            f"the red circle is better</think>[[{label}]]",
            f"x</think>[[{wrong[label]}]]",
        ]
    monkeypatch.setattr(reasongrm, "sample_outcomes", lambda *args: (texts, [2, 2], [True] * 6))
    recipe = OmegaConf.load(ROOT / "recipes" / "reasongrm_hh.yaml").stages.rstar_sft
    recipe.model = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 1}
    recipe.scorer = None
    recipe.task = {"_component_": f"{__name__}.tiny_task"}
    path = tmp_path / "rstar.yaml"
    path.write_text("# tiny variant\n" + OmegaConf.to_yaml(recipe))
    args = [
        "run",
        str(path),
        f"run.dir={tmp_path / 'run'}",
        "paths_per_question=3",
        "steps=2",
        "batch_size=2",
        "log_every=1",
    ]
    assert cli(args) == 0
    chosen = [json.loads(line) for line in (tmp_path / "run" / "rstar_paths.jsonl").read_text().splitlines()]
    assert [c["question"] for c in chosen] == [0, 1]
    assert all(task.is_correct(c["text"], task[c["question"]]) and 0 < c["r_star"] < 1 for c in chosen)
    assert (tmp_path / "run" / "final" / "rlhfv_model.json").is_file()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rstar/complete_correct_paths"] == 4 and summary["rstar/mean_chosen_tokens"] > 0

    # The ablation trains on a random pick from the same candidates, sampling nothing.
    monkeypatch.setattr(reasongrm, "sample_outcomes", lambda *args: pytest.fail("paths_from samples nothing"))
    ablation = [*args, f"run.dir={tmp_path / 'random'}", "selection=random", f"paths_from={tmp_path / 'run'}"]
    assert cli(ablation) == 0
    picked = [
        json.loads(line) for line in (tmp_path / "random" / "rstar_paths.jsonl").read_text().splitlines()
    ]
    assert [c["question"] for c in picked] == [0, 1] and all(c["text"] in texts for c in picked)
    with pytest.raises(FileNotFoundError, match="rstar_candidates.jsonl does not exist"):
        cli([*args, f"run.dir={tmp_path / 'none'}", f"paths_from={tmp_path / 'random'}"])


def tiny_task() -> VerdictTask:
    return VerdictTask(Pairs(2), seed=0)


def test_rstar_selection_keeps_only_complete_paths_with_think_end_and_a_verdict_after_it(monkeypatch):
    """Correct-looking paths that R* must not pick: cut by the length limit, no `</think>`, or a
    verdict only before `</think>`; with them only, a question gets no path at all."""
    from rlhfv.models.text_lm import tiny_text_lm

    task = VerdictTask(Pairs(2), seed=0)
    a, b = task[0].label, task[1].label
    texts = [
        f"short</think>[[{a}]]",  # q0: the one good path
        f"a much longer reasoning that was cut</think>[[{a}]]",  # truncated (complete False)
        f"[[{a}]]",  # no </think>
        f"[[{b}]] so</think>",  # q1: verdict before </think> only
        f"fine</think>[[{b}]]",  # truncated
        f"[[{b}]]",  # no </think>
    ]
    complete = [True, False, True, True, False, True]
    monkeypatch.setattr(reasongrm, "sample_outcomes", lambda *args: (texts, [3, 3], complete))
    cfg = reasongrm.ReasonGRMConfig(paths_per_question=3, batch_prompts=4)
    candidates, stats = reasongrm.sample_candidates(tiny_text_lm(seed=1), task, cfg)
    assert [(c["question"], c["text"]) for c in candidates] == [(0, texts[0])] and candidates[0]["r_star"] > 0
    assert stats["rstar/complete_correct_paths"] == 1


def test_random_selection_draws_from_the_same_pool_and_questions_as_rstar():
    pool = [
        {"question": q, "text": f"q{q} path {i}", "r_star": r}
        for q, scores in ((0, [0.2, 0.9, 0.4]), (1, [0.0]), (2, [0.5, 0.1]))
        for i, r in enumerate(scores)
    ]
    best = reasongrm.choose_paths(pool, "rstar", seed=0)
    assert [c["text"] for c in best] == ["q0 path 1", "q2 path 0"]  # q1's only path has R* 0
    draws = [reasongrm.choose_paths(pool, "random", seed=s) for s in range(20)]
    assert all([c["question"] for c in d] == [0, 2] for d in draws)
    assert {c["text"] for d in draws for c in d} == {c["text"] for c in pool if c["r_star"] > 0}
    assert reasongrm.choose_paths(pool, "random", seed=3) == draws[3]  # seeded
    with pytest.raises(ValueError, match="selection = 'longest'"):
        reasongrm.choose_paths(pool, "longest", seed=0)


def test_paths_from_another_task_are_refused(tmp_path):
    task = VerdictTask(Pairs(2), seed=0)
    row = {"question": 1, "prompt_crc": reasongrm.prompt_crc(task, 1), "text": "t", "r_star": 0.5}
    (tmp_path / reasongrm.CANDIDATES).write_text(json.dumps(row) + "\n")
    assert reasongrm.read_candidates(str(tmp_path), task) == [row]
    other = VerdictTask(Pairs(2), seed=0)
    other.pairs.pairs[1] = PreferencePair(Prompt("another question"), ["good", "bad"], 0, "1")
    with pytest.raises(ValueError, match="question 1 was sampled for another prompt"):
        reasongrm.read_candidates(str(tmp_path), other)


def test_format_paths_close_the_models_reasoning_with_the_right_verdict_on_the_unhinted_prompt():
    from rlhfv.models.text_lm import tiny_text_lm

    task = VerdictTask(Pairs(6), seed=0)
    paths = reasongrm.FormatPaths(task, tiny_text_lm(seed=0), max_new_tokens=6, batch_prompts=4)
    assert len(paths) == 6
    for i in range(6):
        e = paths[i]
        assert e.prompt == task[i].prompt and "(The better answer" not in e.prompt.text
        assert e.answer.endswith(f"</think>\n\n[[{task[i].label}]]") and task.is_correct(e.answer, task[i])


def test_whole_sentences_keeps_the_reasoning_up_to_its_last_full_sentence():
    assert reasongrm.whole_sentences("A is right. B adds wrong. So") == "A is right. B adds wrong."
    assert reasongrm.whole_sentences("A is right.</think>[[A]] more") == "A is right."
    assert reasongrm.whole_sentences("no sentence ends") == "no sentence ends"
    assert reasongrm.whole_sentences("  ") == ""


def test_hard_rl_stage_runs_with_its_held_out_split_and_dynamic_sampling(tmp_path):
    """The recipe's last stage, tiny: GRPO with dynamic sampling and held-out accuracy before/after."""
    stage = OmegaConf.load(ROOT / "recipes" / "reasongrm_hh.yaml").stages.hard_rl
    assert stage.dynamic_sampling > 0 and stage.eval_data.pairs.split == "test"
    stage.run = {"dir": str(tmp_path / "run"), "device": "cpu"}
    stage.policy = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
    pairs = {"_component_": f"{__name__}.Pairs", "n": 6}
    stage.train_data = {"_component_": "rlhfv.pipelines.reasongrm.VerdictTask", "pairs": pairs}
    stage.eval_data.pairs = pairs
    path = tmp_path / "hard_rl.yaml"
    OmegaConf.save(stage, path)
    overrides = ["steps=1", "prompts_per_step=2", "group_size=2", "max_new_tokens=4", "eval_batch_size=6"]
    assert cli(["run", str(path), *overrides]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "before/accuracy" in summary and "after/accuracy" in summary


@pytest.mark.slow
def test_the_cold_start_stage_teaches_a_model_to_close_its_reasoning_with_a_verdict(tmp_path):
    """The TextChecks recipe's first stage, tiny: SFT on format paths until the model, answering
    its training questions greedily, ends each with `</think>` and the right verdict."""
    stage = OmegaConf.load(ROOT / "recipes" / "reasongrm_textchecks.yaml").stages.cold_start
    tiny = {"_component_": "rlhfv.models.text_lm.tiny_text_lm", "seed": 0}
    stage.policy = stage.train_data.model = tiny
    stage.train_data.task.pairs = {"_component_": f"{__name__}.Pairs", "n": 2}
    stage.train_data.max_new_tokens = 3
    stage.eval_data = stage.train_data.task
    stage.run = {"dir": str(tmp_path / "run"), "device": "cpu"}
    path = tmp_path / "cold_start.yaml"
    OmegaConf.save(stage, path)
    overrides = ["steps=60", "batch_size=2", "warmup_steps=0", "optimizer.lr=0.01", "max_new_tokens=40"]
    assert cli(["run", str(path), *overrides]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["before/accuracy"] == 0.0 and summary["after/accuracy"] == 1.0
