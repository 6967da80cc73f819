"""Published benchmarks' own scores from per-item strict credits, against hand-worked examples."""

from __future__ import annotations

import pytest

from rlhfv.grm.benchmark_scores import benchmark_scores, rm_bench_matrix, rm_bench_scores


def test_rm_bench_levels_are_the_triangles_and_the_diagonal_of_the_matrix():
    # One prompt, right only where the chosen style is at least as detailed as the rejected one (i >= j):
    # lower triangle and diagonal 1, upper 0 → hard 0, normal 1, easy 1, average 6/9.
    m = rm_bench_matrix([(i, j, float(i >= j)) for i in range(3) for j in range(3)])
    assert (m["hard"], m["normal"], m["easy"]) == (0.0, 1.0, 1.0) and m["average"] == pytest.approx(6 / 9)


def test_rm_bench_merges_the_safety_domains_and_averages_over_domains():
    ids = [f"{p}-{i}{j}" for p in ("c", "s1", "s2") for i in range(3) for j in range(3)]
    subsets = [f"{d}/{'hard' if i < j else 'normal' if i == j else 'easy'}"
               for d in ("chat", "safety-refuse", "safety-response") for i in range(3) for j in range(3)]  # fmt: skip
    credits = [1.0] * 9 + [0.0] * 9 + [1.0] * 9  # chat all right; safety: one prompt right, one wrong
    scores = rm_bench_scores(ids, subsets, credits)["scores"]
    assert set(k.split("/")[0] for k in scores if "/" in k) == {"chat", "safety"}
    assert (
        scores["safety/hard"] == 0.5 and scores["chat/hard"] == 1.0 and scores["hard"] == 0.75
    )  # (1 + .5) / 2
    # without ids the levels are the same figures (every prompt has one pair per cell), with no matrix
    no_ids = rm_bench_scores([""] * 27, subsets, credits)
    assert no_ids["scores"] == pytest.approx(scores) and no_ids["matrices"]["chat"] is None


def test_rmb_scores_each_category_path_its_top_category_and_the_whole_set():
    subsets = ["BoN_set/Helpfulness/Code/py", "BoN_set/Helpfulness/Code/py", "BoN_set/Harmlessness/S1/crime"]
    bench = benchmark_scores("rmb-bon", ["a", "b", "c"], subsets, [1.0, 0.0, 1.0])
    assert bench["benchmark"] == "RMB best-of-N"
    assert bench["scores"] == {
        "all": pytest.approx(2 / 3),
        "BoN_set/Harmlessness/S1/crime": 1.0,
        "BoN_set/Helpfulness/Code/py": 0.5,
        "Harmlessness": 1.0,
        "Helpfulness": 0.5,
    }


def test_rewardbench_sections_weight_subsets_by_the_published_counts():
    # Chat: alpacaeval-easy 3/4 (count 100), mt-bench-easy 1/2 (count 28): (75 + 14) / 128 = 0.6953.
    # Reasoning: math-prm 1/2 (count 984), hep-python 1 (count 164): (492 + 164) / 1148 = 0.5714.
    # Score: the mean of the two sections present, 0.6334; a subset of no section is left out.
    subsets = ["alpacaeval-easy"] * 4 + ["mt-bench-easy"] * 2 + ["math-prm"] * 2 + ["hep-python", "other"]
    credits = [1, 1, 0, 1, 1, 0, 1, 0, 1, 0]
    scores = benchmark_scores("rewardbench", [""] * 10, subsets, [float(c) for c in credits])["scores"]
    assert scores["Chat"] == pytest.approx(89 / 128) and scores["Reasoning"] == pytest.approx(656 / 1148)
    assert scores["score"] == pytest.approx((89 / 128 + 656 / 1148) / 2) and set(scores) == {
        "score",
        "Chat",
        "Reasoning",
    }
    assert benchmark_scores("rewardbench", [""], ["mine"], [1.0]) is None
    assert benchmark_scores("llmbar", [""], ["Natural"], [1.0]) is None
