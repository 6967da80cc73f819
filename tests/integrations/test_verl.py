"""verl's custom reward function signature, served by `rlhfv serve grm`."""

from __future__ import annotations

import pytest

from rlhfv.grm.judge import JudgeItem, judge
from rlhfv.integrations import verl
from tests.serve.judges import grm_server
from tests.serve.test_grm_server import GROUPS, in_process_grouped


@pytest.fixture(scope="module")
def url(judge_folder):
    with grm_server(judge_folder) as address:
        yield address


def test_compute_score_is_the_judges_pointwise_score_of_one_response(url, judge_model):
    kwargs = {"url": url}  # what verl passes from custom_reward_function.reward_kwargs
    got = [
        verl.compute_score("gsm8k", a, "4", {"question": "What is 2 + 2?"}, **kwargs) for a in ("4", "five")
    ]
    [j1, j2] = judge(judge_model, [JudgeItem("What is 2 + 2?", ["4"]), JudgeItem("What is 2 + 2?", ["five"])],
                     k=1, greedy=True, max_new_tokens=4, force=True)  # fmt: skip
    assert got == [j1.scores[0][0], j2.scores[0][0]]


def test_compute_score_batch_groups_responses_by_question_for_the_grouped_comparison(url, judge_model):
    order = [(q, t) for q, texts in GROUPS for t in texts][::-1]  # groups interleaved in any order
    got = verl.compute_score_batch(
        ["src"] * len(order),
        [t for _, t in order],
        [None] * len(order),
        [{"question": q} for q, _ in order],
        url=url,
    )
    # the grouped comparison is over each group in first-seen order; reversed, each group is reversed too
    reversed_groups = [(q, texts[::-1]) for q, texts in GROUPS[::-1]]
    expected = [r for group in in_process_grouped(judge_model, reversed_groups) for r in group]
    assert got == expected


def test_a_missing_question_names_the_key_to_set(url):
    with pytest.raises(KeyError, match="question_key"):
        verl.compute_score("src", "4", "4", {"prompt": "What is 2 + 2?"}, url=url)
