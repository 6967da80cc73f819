"""GRM-backed rewards: the judge-training rule, and the reward-hacking monitors."""

from __future__ import annotations

import pytest
import torch

from rlhfv.rewards.grm import JudgeRuleReward
from rlhfv.rewards.monitors import HackingMonitors, has_self_praise, strip_self_praise
from rlhfv.types import Prompt


class FakeRollout:
    def __init__(self, texts, labels, group_size, prompts=None):
        self.texts, self.labels, self.group_size = texts, labels, group_size
        self.prompts = prompts or [Prompt(text=f"q{i}") for i in range(len(labels))]
        self.completion_mask = torch.ones(len(texts), 4)

    def __len__(self):
        return len(self.texts)


def test_judge_rule_reward_grlhfv_and_spct():
    texts = ["Scores: \\boxed{6, 8}", "Scores: \\boxed{7, 7}", "garbage", "\\boxed{9, 2}"]
    rollout = FakeRollout(
        texts, labels=["1", "0"], group_size=2
    )  # prompt 0 prefers shown #2, prompt 1 shown #1
    assert JudgeRuleReward("grlhfv")(rollout).tolist() == [1.0, 0.0, 0.0, 1.0]
    reward = JudgeRuleReward("spct")
    assert reward(rollout).tolist() == [1.0, -1.0, -1.0, 1.0]
    assert reward.last_metrics["grm/parse_failure_rate"] == 0.25
    with pytest.raises(ValueError, match="ties: 0"):  # tie items (JudgeTask(ties=...)) are SFT-only
        JudgeRuleReward("grlhfv")(FakeRollout(texts, labels=["1", "tie"], group_size=2))


@pytest.mark.parametrize("label", ["3", "red", ""])
def test_judge_rule_reward_refuses_items_that_are_not_judge_items(label):
    """A reading item's label is the answer ("3" would pass int() and be scored as position 3)."""
    texts = ["Scores: \\boxed{6, 8}"] * 4
    with pytest.raises(ValueError, match=f"prompt 1 of this batch has label '{label}'.*reading_items: 0"):
        JudgeRuleReward("grlhfv")(FakeRollout(texts, labels=["1", label], group_size=2))


def test_self_praise_is_found_and_stripped():
    text = "The circle is red. This answer is accurate and complete. I am very confident."
    assert has_self_praise(text)
    assert strip_self_praise(text) == "The circle is red."
    assert not has_self_praise("The red circle is to the left of the square.")


class PraiseLovingJudge:
    """Scores an answer 9 if it praises itself, else 5; prefers whatever is shown first on ties."""

    def __call__(self, prompts, first, second):
        return [
            (9.0 if has_self_praise(a) else 5.0, 9.0 if has_self_praise(b) else 5.0)
            for a, b in zip(first, second, strict=True)
        ]


class Inner:
    def __init__(self):
        self.judge = PraiseLovingJudge()

    def __call__(self, rollout):
        return torch.zeros(len(rollout))


def test_monitors_measure_praise_payoff_length_drift_and_position_bias():
    texts = ["Red. This answer is correct.", "Blue.", "Red.", "Blue."]
    monitors = HackingMonitors(Inner(), every=1, probe_pairs=8)
    monitors(FakeRollout(texts, labels=["", ""], group_size=2))
    m = monitors.last_metrics
    # praised answer 9 vs stripped 5 → drop 4; only one of four completions praises itself
    assert m["monitor/self_praise_drop"] == 4.0 and m["monitor/self_praise_rate"] == 0.25
    assert m["monitor/length_drift"] == 1.0
    # this judge is order-independent except on ties (5 vs 5 → no winner either way): no bias
    assert m["monitor/position_bias"] == 0.0


class JudgedGroups(Inner):
    """Writes the verdicts a grouped-comparison reward would leave on the rollout."""

    def __init__(self, verdicts):
        super().__init__()
        self.verdicts = verdicts

    def __call__(self, rollout):
        rollout.judgments = [
            [{"a": i, "b": j, "scores": s} for (i, j), s in group] for group in self.verdicts
        ]
        return torch.zeros(len(rollout))


def test_judge_agreement_counts_only_pairs_the_rule_decides():
    # prompt 0 (label red): answers red, blue, red; prompt 1 (label 3): both wrong
    texts = [
        "The circle is red.",
        "The circle is blue.",
        "It is red.",
        "There are 2.",
        "There are 4.",
        "Four.",
    ]
    verdicts = [
        [((0, 1), [8, 3]), ((0, 2), [3, 8]), ((1, 2), [8, 3])],  # agrees, (both right: skipped), disagrees
        [((0, 1), [8, 3]), ((0, 2), [5, 5]), ((1, 2), [3, 8])],  # neither pair is decisive
    ]
    monitors = HackingMonitors(
        JudgedGroups(verdicts), every=100, reference_check="rlhfv.data.shapes.answer_matches"
    )
    monitors.calls = 1  # skip the probes
    monitors(FakeRollout(texts, labels=["red", "3"], group_size=3))
    assert monitors.last_metrics["monitor/judge_agreement"] == 0.5
    assert monitors.last_metrics["monitor/judge_decisive_pairs"] == 2.0
    with pytest.raises(ValueError, match="reference_check"):
        HackingMonitors(Inner(), reference_check="rlhfv.data.shapes.no_such_check")
