import math

import pytest
import torch

from rlhfv.rewards import RewardError, checked_rewards
from rlhfv.rewards.grouped import FormatJudge, GroupedComparisonReward
from rlhfv.rewards.rules import CallableReward, ExactAnswerReward, FormatReward, WeightedSum
from rlhfv.rollout import Rollout
from rlhfv.types import Prompt


def rollout(texts, group_size, labels=(), complete=None):
    n = len(texts)
    b = n // group_size
    return Rollout(
        prompts=[Prompt(f"question {i}") for i in range(b)],
        labels=list(labels) or [""] * b,
        prompt_batch={},
        completion_ids=torch.zeros(n, 1, dtype=torch.long),
        completion_mask=torch.ones(n, 1, dtype=torch.long),
        texts=list(texts),
        complete=torch.tensor(complete if complete is not None else [True] * n),
        group_size=group_size,
    )


def test_exact_answer_reward_uses_the_label_of_each_prompt():
    r = rollout(["It is red.", "blue", "There are 3 shapes.", "red or blue"], 2, labels=["red", "3"])
    assert ExactAnswerReward()(r).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_exact_answer_reward_can_refuse_answers_cut_by_the_length_limit():
    r = rollout(
        ["It is red.", "It is red and", "3", "3 3"],
        2,
        labels=["red", "3"],
        complete=[True, False, True, False],
    )
    assert ExactAnswerReward(require_complete=True)(r).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert ExactAnswerReward()(r).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_format_reward_wants_a_complete_short_single_line():
    r = rollout(["Red.", "one two three four five", "a\nb", "Red."], 2, complete=[True, True, True, False])
    assert FormatReward(max_words=4)(r).tolist() == [1.0, 0.0, 0.0, 0.0]


def brevity(prompts, completions, labels):
    return [1.0 / (1 + len(c)) for c in completions]


def test_a_users_own_function_is_called_with_plain_lists():
    r = rollout(["a", "abc"], 2)
    assert CallableReward("tests.rewards.test_rewards.brevity")(r).tolist() == [0.5, 0.25]


def test_weighted_sum_adds_rewards():
    r = rollout(["It is red.", "one two three four five six"], 2, labels=["red"])
    total = WeightedSum([ExactAnswerReward(), FormatReward(max_words=4)], [1.0, 0.5])(r)
    assert total.tolist() == [1.5, 0.0]


class TableJudge:
    """Spec §7 item 4's verdicts, keyed by the completion texts '1', '2', '3'."""

    table = {("1", "2"): (6.0, 8.0), ("1", "3"): (7.0, 5.0), ("2", "3"): (9.0, 4.0)}

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, first, second):
        self.calls.append(len(first))
        out = []
        for a, b in zip(first, second, strict=True):
            out.append(self.table[(a, b)] if (a, b) in self.table else self.table[(b, a)][::-1])
        self.last_texts = [f"{a} vs {b}" for a, b in zip(first, second, strict=True)]
        return out


def test_grouped_comparison_reward_gives_the_hand_worked_rewards_in_one_batched_judge_call():
    judge = TableJudge()
    r = rollout(["1", "2", "3", "1", "2", "3"], 3, complete=[True, True, True, True, True, False])
    rewards = GroupedComparisonReward(judge)(r)
    assert rewards.tolist() == [6.5, 8.5, 4.5, 6.0, 8.0, 0.0]
    assert judge.calls == [3 + 1]  # both prompts' pairs in one call
    assert r.judgments[1] == [{"a": 0, "b": 1, "text": "1 vs 2", "scores": [6.0, 8.0]}]


def test_grouped_comparison_in_both_orders_judges_twice_as_many_pairs():
    judge = TableJudge()
    rewards = GroupedComparisonReward(judge, both_orders=True)(rollout(["1", "2", "3"], 3))
    assert judge.calls == [6] and rewards.tolist() == [6.5, 8.5, 4.5]


class UnreadableOn3(TableJudge):
    """TableJudge, except that no verdict involving completion '3' can be read."""

    def __call__(self, prompts, first, second):
        out = super().__call__(prompts, first, second)
        return [None if "3" in (a, b) else v for v, a, b in zip(out, first, second, strict=True)]


@pytest.mark.parametrize(
    "uncompared, lone, unreadable",
    [(0.0, 0.0, 0.0), (5.5, 5.5, 5.5), (None, 0.0, 7.0)],  # null: the group's mean of scored ones
)
def test_a_complete_completion_no_verdict_scored_gets_the_uncompared_reward(uncompared, lone, unreadable):
    # group 0: '1' is the only complete completion; group 1: '3' is complete, every verdict on it unreadable
    r = rollout(["1", "2", "3", "1", "2", "3"], 3, complete=[True, False, False, True, True, True])
    reward = GroupedComparisonReward(UnreadableOn3(), uncompared=uncompared)
    assert reward(r).tolist() == [lone, 0.0, 0.0, 6.0, 8.0, unreadable]  # truncated ones stay at 0
    assert reward.last_metrics["grm/uncompared_frac"] == pytest.approx(2 / 6)
    # counted as zero scores, unreadable verdicts do score: '3' gets its mean of zeros
    zero = GroupedComparisonReward(UnreadableOn3(), on_unparsable="zero", uncompared=5.5)(r)
    assert zero.tolist()[3:] == [3.0, 4.0, 0.0]


def test_format_judge_prefers_the_short_answer_and_writes_a_boxed_verdict():
    judge = FormatJudge(max_words=2)
    verdicts = judge([Prompt("q")], ["Red."], ["It is a very red circle"])
    assert verdicts == [(10.0, 6.0)]
    assert judge.last_texts == ["Scores: \\boxed{10, 6}"]
    r = rollout(["Red.", "It is a very red circle", ""], 3)
    assert GroupedComparisonReward(FormatJudge(max_words=2), aggregator="borda")(r).tolist() == [
        1.0,
        0.5,
        0.0,
    ]


def raising(rollout):
    raise KeyError("label")


def test_a_reward_that_raises_is_named_in_the_error():
    with pytest.raises(RewardError, match=r"test_rewards\.raising raised KeyError"):
        checked_rewards(raising, rollout(["a", "b"], 2))


def test_a_reward_returning_nan_or_the_wrong_length_is_refused_with_its_name():
    r = rollout(["a", "b"], 2)
    with pytest.raises(RewardError, match=r"non-finite values \[nan\] at completions \[1\]"):
        checked_rewards(lambda _: torch.tensor([1.0, math.nan]), r)
    with pytest.raises(RewardError, match="3 values for 2 completions"):
        checked_rewards(lambda _: [1.0, 2.0, 3.0], r)
    with pytest.raises(RewardError, match="my.reward"):
        bad = CallableReward("tests.rewards.test_rewards.brevity")
        bad.name, bad.function = "my.reward", lambda *a: [0.0]
        checked_rewards(bad, r)
