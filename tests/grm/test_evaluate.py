"""`rlhfv eval grm`: metric arithmetic with scripted judges, batching, and the CLI end to end as a
user meets it: a table on stdout, strict JSON, honest intervals, one-line errors with non-zero exits."""

from __future__ import annotations

import json

import pytest

from rlhfv.grm import evaluate
from rlhfv.grm.eval_report import mean_ci, subset_groups, summary_table
from rlhfv.grm.evaluate import EvalItem, evaluate_grm
from rlhfv.grm.judge import JudgeItem, Judgement
from rlhfv.grm.parsing import ParsedScores
from rlhfv.grm.voting import unshuffle_scores

ITEMS = [
    EvalItem(
        JudgeItem(f"q{i}", ["good", "bad"] if i % 2 == 0 else ["bad", "good"]),
        i % 2,
        "even" if i % 2 == 0 else "odd",
        str(i),
    )
    for i in range(6)
]


def scripted_judge(rule):
    """A fake `judge` whose display-order scores come from rule(shown_responses, sample_index)."""

    def fake(model, items, k=1, rng=None, orders=None, **kwargs):
        out = []
        for b, item in enumerate(items):
            n = len(item.responses)
            item_orders = [
                list(orders[b][j]) if orders else (rng.sample(range(n), n) if rng else list(range(n)))
                for j in range(k)
            ]
            shown = [[item.responses[o] for o in order] for order in item_orders]
            parsed = [rule(s, j) for j, s in enumerate(shown)]
            scores = [unshuffle_scores(p.scores, order) for p, order in zip(parsed, item_orders, strict=True)]
            out.append(Judgement(["text"] * k, item_orders, parsed, scores, [True] * k))
        return out

    return fake


def test_a_judge_that_knows_the_answer_scores_one_and_is_position_consistent(monkeypatch):
    monkeypatch.setattr(
        evaluate,
        "judge",
        scripted_judge(lambda shown, j: ParsedScores([9.0 if r == "good" else 2.0 for r in shown])),
    )
    m = evaluate_grm(None, ITEMS, ks=(1, 4), progress=False)["metrics"]
    assert m["all"]["greedy/accuracy"]["mean"] == 1.0 and m["all"]["greedy/position_consistency"] == 1.0
    assert (
        m["all"]["voting@4/accuracy"]["mean"] == 1.0
        and m["subset/odd"]["greedy/strict_accuracy"]["mean"] == 1.0
    )


def test_a_judge_that_always_prefers_the_first_shown_response_is_at_chance_and_inconsistent(monkeypatch):
    monkeypatch.setattr(
        evaluate, "judge", scripted_judge(lambda shown, j: ParsedScores([8.0] + [3.0] * (len(shown) - 1)))
    )
    m = evaluate_grm(None, ITEMS, ks=(), progress=False)["metrics"]["all"]
    # Each item is judged in both orders: right once, wrong once → accuracy exactly 0.5.
    assert m["greedy/accuracy"]["mean"] == 0.5 and m["greedy/position_consistency"] == 0.0


def test_ties_and_parse_failures_earn_a_random_pick_and_are_counted(monkeypatch):
    rule = lambda shown, j: ParsedScores([5.0, 5.0]) if j == 0 else ParsedScores(None, "no \\boxed{...}")  # noqa: E731
    monkeypatch.setattr(evaluate, "judge", scripted_judge(rule))
    result = evaluate_grm(None, ITEMS, ks=(2,), progress=False)
    m = result["metrics"]["all"]
    assert m["greedy/accuracy"]["mean"] == 0.5 and m["greedy/strict_accuracy"]["mean"] == 0.0
    assert m["greedy/tie_rate"] == 1.0 and m["greedy/parse_failure_rate"] == 0.5
    assert m["sampled/parse_failure_rate"] == 0.5
    assert result["failure_reasons"]["no \\boxed{...}"] == 6
    assert len(result["examples"]) == 3 and result["examples"][0]["greedy_texts"] == ["text", "text"]


def test_k_samples_of_a_judgement_share_one_generate_call():
    from rlhfv.models.text_lm import tiny_text_lm

    model = tiny_text_lm(seed=0)
    calls = []
    original = model.module.generate
    model.module.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or original(**kw)
    result = evaluate_grm(
        model, ITEMS[:2], ks=(1, 4), max_new_tokens=3, batch_size=8, greedy=False, progress=False
    )
    assert calls == [8]  # 2 items × 4 samples in one batched call, not 8 calls
    assert result["metrics"]["all"]["sampled/parse_failure_rate"] == 1.0  # a random model never writes a box


@pytest.mark.slow
def test_cli_evaluates_llmbar_with_a_tiny_judge_and_writes_json(shared_data, tmp_path):
    out = tmp_path / "r.json"
    code = evaluate.main(
        [
            "grm",
            "--model",
            "tiny",
            "--format",
            "llmbar",
            "--data",
            str(shared_data / "llmbar/Natural/dataset.json"),
            "--limit",
            "3",
            "--k",
            "2",
            "--max-new-tokens",
            "2",
            "--out",
            str(out),
        ]
    )
    results = json.loads(out.read_text())
    assert code == 0 and results["items"] == 3 and "subset/Natural" in results["metrics"]
    assert results["metrics"]["all"]["greedy/accuracy"]["mean"] == 0.5  # every parse fails → random picks


def test_forcing_appends_the_score_line_to_judgements_without_one_and_is_reported():
    from rlhfv.grm.judge import FORCED_SCORE_LINE, judge
    from rlhfv.models.text_lm import tiny_text_lm

    model = tiny_text_lm(seed=0)
    calls = []
    original = model.module.generate
    model.module.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or original(**kw)
    plain = judge(model, [ITEMS[0].item], k=2, greedy=True, max_new_tokens=3)[0]
    forced = judge(model, [ITEMS[0].item], k=2, greedy=True, max_new_tokens=3, force=True)[0]
    assert plain.forced == [False, False] and all("\\boxed{" not in t for t in plain.texts)
    assert forced.forced == [True, True]
    for before, after in zip(plain.texts, forced.texts, strict=True):  # greedy: same free-running start
        assert after.startswith(before.rstrip() + FORCED_SCORE_LINE)
    assert calls == [2, 2, 2]  # the forced continuation is one extra call over both rows
    # the grammar makes a random model's forced line parse: two whole scores in 1..10
    assert all(p.ok and all(1 <= x <= 10 and x == int(x) for x in p.scores) for p in forced.parsed)

    result = evaluate_grm(
        model, ITEMS[:2], ks=(2,), max_new_tokens=3, batch_size=4, progress=False, force=True
    )
    assert result["metrics"]["all"]["greedy/forced_rate"] == 1.0
    assert result["metrics"]["all"]["sampled/forced_rate"] == 1.0


def test_a_prefill_starts_the_assistant_turn():
    from rlhfv.models.text_lm import tiny_text_lm
    from rlhfv.types import Prompt

    model = tiny_text_lm(seed=0)
    ids = model.encoder([Prompt("which is better?", prefill="Scores: \\boxed{")])["input_ids"][0]
    assert model.tokenizer.decode(ids).endswith("assistant\nScores: \\boxed{")


def test_the_score_line_grammar_accepts_exactly_the_well_formed_lines():
    from rlhfv.grm.judge import ScoreLineGrammar
    from rlhfv.models.text_lm import tiny_text_lm

    tokenizer = tiny_text_lm(seed=0).tokenizer
    grammar = ScoreLineGrammar(tokenizer, [2], 1, 10, eos=0)
    for prefix in ["", "1", "10", "7,", "7, ", "7, 1", "7, 10", "7, 10}", "3,4}"]:
        assert grammar.valid(prefix, 2), prefix
    for bad in ["0", "11", "01", "7}", "7, 3, ", "7, 3, 1", "7,, 3", "7, 0}", "a", " 7", "7, 3}}", "7, 3} "]:
        assert not grammar.valid(bad, 2), bad
    ids = tokenizer("7, 3}", add_special_tokens=False)["input_ids"]
    import torch

    assert grammar(0, torch.tensor(ids)) == [0]  # a finished line allows only EOS


def test_the_engines_score_line_regex_accepts_the_complete_lines_the_grammar_accepts():
    """`score_line_regex` (what a vLLM engine is constrained by) and `ScoreLineGrammar` (the HF
    path) must allow the same finished lines, for two and three scores."""
    import itertools
    import re

    from rlhfv.grm.judge import ScoreLineGrammar, score_line_regex
    from rlhfv.models.text_lm import tiny_text_lm

    tokenizer = tiny_text_lm(seed=0).tokenizer
    pieces = ["0", "1", "7", "10", "11", "01", ",", ", ", ",,", " "]
    for n in (2, 3):
        grammar, pattern = (
            ScoreLineGrammar(tokenizer, [n], 1, 10, eos=0),
            re.compile(score_line_regex(n, 1, 10)),
        )
        agree = 0
        for length in range(1, 6):
            for parts in itertools.product(pieces, repeat=length):
                line = "".join(parts) + "}"
                assert bool(pattern.fullmatch(line)) == grammar.valid(line, n), (n, line)
                agree += grammar.valid(line, n)
        assert agree > 10  # the comparison covered accepted lines, not only rejected ones
    assert re.fullmatch(score_line_regex(2, 0, 10**6), "123, 0}")
    assert not re.fullmatch(score_line_regex(2, 0, 10**6), "0123, 0}")


def test_a_reading_judge_answers_each_question_once_before_it_sees_the_responses():
    """`reading=True`: one greedy reading per distinct question and image (shared by both orders of
    an item), then the judgements, whose prompts show that reading after the responses."""
    from rlhfv.grm.judge import judge
    from rlhfv.models.text_lm import tiny_text_lm

    model = tiny_text_lm(seed=0)
    seen = []
    original = model.module.generate
    model.module.generate = lambda **kw: seen.append(kw["input_ids"].shape[0]) or original(**kw)
    items = [JudgeItem("How many?", ["2.", "3."]), JudgeItem("What colour?", ["red.", "blue."])]
    orders = [[[0, 1], [1, 0]]] * 2
    judged = judge(model, items, k=2, orders=orders, greedy=True, max_new_tokens=3, reading=True)
    assert seen == [2, 4]  # two readings (one per question), then 2 items × 2 orders
    assert len(judged) == 2 and all(len(j.texts) == 2 for j in judged)
    seen.clear()
    evals = [EvalItem(item, 0, "all", str(i)) for i, item in enumerate(items)]
    result = evaluate_grm(model, evals, ks=(), max_new_tokens=3, progress=False, reading=True)
    assert seen == [2, 4] and result["items"] == 2


VOTES = "prompt=instruction,a=response1,b=response2,label=annotator1+annotator2+annotator3"


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def knowing_judge(monkeypatch):
    """A judge that always scores the response starting with 'right' higher; no model is built."""
    rule = lambda shown, j: ParsedScores([9.0 if r.startswith("right") else 2.0 for r in shown])  # noqa: E731
    monkeypatch.setattr(evaluate, "judge", scripted_judge(rule))
    monkeypatch.setattr(evaluate, "build_judge", lambda spec, dtype: object())


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_wilson_interval_is_honest_when_every_pair_ties_and_at_the_edges():
    # n = 6, z = 1.96: centre (0.5 + z²/12) / (1 + z²/6) = 0.5; half = z·sqrt(0.25/6 + z²/144) / 1.6403 = 0.3124.
    tied = mean_ci([0.5] * 6)
    assert tied["mean"] == 0.5 and tied["ci95_low"] == pytest.approx(0.1876, abs=1e-4)
    assert tied["ci95_high"] == pytest.approx(0.8124, abs=1e-4)
    perfect = mean_ci([1.0] * 6)  # centre 0.8048, half 0.1952: [0.6097, 1]
    assert perfect["ci95_low"] == pytest.approx(0.6097, abs=1e-4) and perfect["ci95_high"] == pytest.approx(
        1.0
    )
    assert mean_ci([])["mean"] is None  # nothing measured is null in JSON, not NaN


def test_subsets_nest_and_rm_bench_levels_are_reported_across_subsets():
    assert subset_groups("chat/hard") == ["subset/chat", "subset/chat/hard", "level/hard"]
    assert subset_groups("Pairwise_set/Harmlessness") == [
        "subset/Pairwise_set",
        "subset/Pairwise_set/Harmlessness",
    ]
    assert subset_groups("Natural") == ["subset/Natural"]


def test_rm_bench_is_reported_per_subset_and_per_difficulty(knowing_judge, tmp_path, capsys):
    styles = ("a", "b", "c")
    rows = [
        {
            "id": i,
            "subset": s,
            "prompt": f"q{i}",
            "chosen": [f"right {x}" for x in styles],
            "rejected": [f"wrong {x}" for x in styles],
        }
        for i, s in enumerate(["chat", "math", "chat", "safety-refuse"])
    ]
    data = write_jsonl(tmp_path / "rm.jsonl", rows)
    out = tmp_path / "r.json"
    code = evaluate.main(
        [
            "grm",
            "--model",
            "x",
            "--format",
            "rm-bench",
            "--data",
            str(data),
            "--limit",
            "3",
            "--k",
            "--out",
            str(out),
        ]
    )
    results = strict_json(out.read_text())
    m = results["metrics"]
    assert code == 0 and results["items"] == 27  # three prompts, nine style pairs each
    assert {m[f"level/{lv}"]["greedy/accuracy"]["n"] for lv in ("easy", "normal", "hard")} == {9}
    assert (
        sum(
            m[f"subset/{s}"]["greedy/accuracy"]["n"]
            for s in ("chat", "math", "safety-refuse")
            if f"subset/{s}" in m
        )
        == 27
    )
    table = capsys.readouterr().out
    assert (
        "level/hard" in table
        and "95% CI" in table
        and table.splitlines()[2].split()[:3] == ["all", "27", "1.000"]
    )


def test_a_multi_annotator_file_is_evaluated_through_map_and_its_ties_counted_not_scored(
    knowing_judge, tmp_path, capsys
):
    votes = [(1, 1, 2), (2, 2, 0), (1, 2, 0), (7, 1, 1)]
    rows = [
        {
            "instruction": f"q{i}",
            "response1": "right one",
            "response2": "wrong one",
            **{f"annotator{k + 1}": v for k, v in enumerate(vs)},
        }
        for i, vs in enumerate(votes)
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "r.json"
    code = evaluate.main(
        [
            "grm",
            "--model",
            "x",
            "--format",
            "generic",
            "--map",
            VOTES,
            "--data",
            str(data),
            "--k",
            "--out",
            str(out),
        ]
    )
    results = strict_json(out.read_text())
    # Row 1 prefers the right one (judge agrees), row 2 the wrong one (judge disagrees), row 3 ties.
    assert code == 0 and results["items"] == 2 and results["tied_pairs"] == 1
    assert results["metrics"]["all"]["greedy/accuracy"]["mean"] == 0.5
    assert "1 tied pairs not scored, 1 rows skipped" in capsys.readouterr().out
    assert results["skipped_rows"] == 1 and results["row_errors"][0].startswith(
        f"{data}:4: field 'annotator1'"
    )


def test_all_failed_parses_still_write_strict_json(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluate, "judge", scripted_judge(lambda shown, j: ParsedScores(None, "no box")))
    results = evaluate_grm(None, ITEMS, ks=(), progress=False)
    text = json.dumps(results, allow_nan=False)  # position consistency with no parse is null, not NaN
    assert strict_json(text)["metrics"]["all"]["greedy/position_consistency"] is None
    header, overall = summary_table(results)[1:3]
    # Strict accuracy leads: nothing parsed is 0, not a chance-looking 0.5. Wilson for 0 of 6:
    # centre (0 + z²/12) / (1 + z²/6) = 0.1952 = half-width, so 0.000-0.390. Then the interval's
    # kind, ties (0 of 0 parsed), unparsed 1.0, forced 0, no position consistency, ties-½ accuracy.
    assert overall.split() == [
        "all",
        "6",
        "0.000",
        "0.000-0.390",
        "wilson",
        "0.000",
        "1.000",
        "0.000",
        "-",
        "0.500",
    ]
    assert header.index("strict") + len("strict") == overall.index("0.000") + len("0.000")  # columns align


def test_the_progress_bar_counts_items_and_shows_an_eta(monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "judge", scripted_judge(lambda shown, j: ParsedScores([1.0, 2.0])))
    evaluate_grm(None, ITEMS, ks=(2,), batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "greedy" in err and "6/6" in err and "item/s" in err and "<00:00" in err  # elapsed<remaining


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "csv", "--data", "{data}"], "unknown data format 'csv'; known: hh-rlhf"),
        (["--format", "llmbar", "--data", "{tmp}/nope.json"], "data file not found: {tmp}/nope.json"),
        (
            [
                "--format",
                "generic",
                "--map",
                "prompt=question,a=response1,b=response2,label=annotator1",
                "--data",
                "{data}",
            ],
            "field 'question' is bad in 1 of 1 rows",
        ),
        (["--format", "generic", "--map", "promt=instruction", "--data", "{data}"], "did you mean 'prompt'"),
    ],
)
def test_bad_input_is_one_line_naming_it_with_exit_two(tmp_path, capsys, args, message):
    data = write_jsonl(
        tmp_path / "d.jsonl", [{"instruction": "q", "response1": "a", "response2": "b", "annotator1": 1}]
    )
    args = [a.format(data=data, tmp=tmp_path) for a in args]
    assert evaluate.main(["grm", "--model", "tiny", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(tmp=tmp_path) in err


def test_an_unknown_model_is_one_line_saying_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RLHFV_HOME", str(tmp_path / "home"))
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    code = evaluate.main(
        ["grm", "--model", "smollm2-135m-instruct", "--format", "generic", "--data", str(data)]
    )
    err = capsys.readouterr().err
    assert (
        code == 2
        and err.count("\n") == 1
        and str(tmp_path / "home" / "models" / "smollm2-135m-instruct") in err
    )
    assert "rlhfv models pull smollm2-135m-instruct" in err


def test_a_file_with_no_usable_row_exits_non_zero(tmp_path, capsys):
    data = write_jsonl(tmp_path / "ties.jsonl", [{"q": "p", "x": "a", "y": "b", "w": 0}] * 3)
    code = evaluate.main(
        [
            "grm",
            "--model",
            "tiny",
            "--format",
            "generic",
            "--map",
            "prompt=q,a=x,b=y,label=w",
            "--data",
            str(data),
        ]
    )
    assert code == 1 and "no usable item (0 rows skipped, 3 tied pairs)" in capsys.readouterr().err


def test_help_lists_every_format_with_its_fields(capsys):
    from rlhfv.data.formats import describe_formats

    with pytest.raises(SystemExit):
        evaluate.main(["grm", "--help"])
    out = capsys.readouterr().out
    for name in describe_formats():
        assert f"  {name} " in out
    assert "output_1, output_2" in out and "annotator votes" in out and "--map" in out


def test_textchecks_is_a_format_without_a_data_file_and_prints_each_way_of_judging(
    monkeypatch, capsys, tmp_path
):
    """`--format textchecks` generates test pairs; the table lists greedy, one verdict and each voting@k."""
    from rlhfv.grm import verdict

    monkeypatch.setattr(evaluate, "judge", scripted_judge(lambda shown, j: ParsedScores([5.0, 5.0])))
    monkeypatch.setattr(
        verdict,
        "one_verdicts",
        lambda model, items, preferred: [verdict.OneVerdict([p, p], 1.0, True) for p in preferred],
    )
    argv = ["grm", "--model", "tiny", "--format", "textchecks", "--limit", "14", "--k", "1", "2", "--verdict"]
    argv += ["--no-greedy", "--out", str(tmp_path / "r.json")]
    assert evaluate.main(argv) == 0
    out = capsys.readouterr().out
    assert "textchecks/add" in out and "textchecks/caps" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["verdict"][0] == "1.000"  # the scripted verdicts are all right
    # every vote ties: strictly wrong, a coin flip with ties as ½
    assert lines["voting@1"][:2] == lines["voting@2"][:2] == ["0.000", "0.500"]
    per_item = json.loads((tmp_path / "r.json").read_text())["per_item"]  # for paired comparisons
    assert len(per_item) == 14 and all(r["verdict"] == 1.0 and r["voting@2"] == 0.5 for r in per_item)


def test_the_one_verdict_baseline_reads_one_letter_per_order_on_a_real_tokenizer():
    from rlhfv.grm.verdict import one_verdicts
    from rlhfv.models.text_lm import tiny_text_lm

    items = [JudgeItem("What is 2 + 2?", ["4.", "5."]), JudgeItem("What is 3 + 3?", ["7.", "6."])]
    preferred = [0, 1]
    verdicts = one_verdicts(tiny_text_lm(seed=0), items, preferred)
    for v, best in zip(verdicts, preferred, strict=True):
        assert set(v.picks) <= {0, 1} and len(v.picks) == 2
        assert v.credit == sum(p == best for p in v.picks) / 2
        assert v.consistent == (v.picks[0] == v.picks[1])


def test_a_compact_judge_sees_the_request_and_responses_without_the_instructions():
    """`GRMJudge(compact=True)` prompts as `JudgeTask(compact=True)` trained: no instructions, the
    same request and response blocks (and the judge's own reading last)."""
    from rlhfv.grm.prompts import POINTWISE_INSTRUCTIONS
    from rlhfv.models.text_lm import tiny_text_lm
    from rlhfv.rewards.grm import GRMJudge
    from rlhfv.types import Prompt

    model = tiny_text_lm(seed=0)
    shown = []
    original = model.module.generate
    model.module.generate = lambda **kw: shown.extend(kw["input_ids"].tolist()) or original(**kw)
    opening = POINTWISE_INSTRUCTIONS.split(".")[0]  # "You are a careful reviewer"
    for compact in (False, True):
        shown.clear()
        GRMJudge(model, max_new_tokens=3, device="cpu", compact=compact, reading=True)(
            [Prompt("How many shapes?")], ["There are 2."], ["There are 3."]
        )
        texts = [model.tokenizer.decode(row, skip_special_tokens=True) for row in shown]
        judging = texts[-1]  # after the reading
        assert "[Response 2]" in judging and "[Your own answer" in judging
        assert (opening in judging) is not compact


def test_a_judge_that_parses_half_its_judgements_heads_the_table_with_strict_accuracy_at_most_half(
    monkeypatch,
):
    """Each item: the stored order parses and is right, the reversed one does not parse. Strict
    credit (1 + 0) / 2 = 0.5 per item; with the failure as a coin flip (1 + 0.5) / 2 = 0.75."""

    def rule(shown, j):
        if j == 1:
            return ParsedScores(None, "no box")
        return ParsedScores([9.0 if r == "good" else 2.0 for r in shown])

    monkeypatch.setattr(evaluate, "judge", scripted_judge(rule))
    table = summary_table(evaluate_grm(None, ITEMS, progress=False))
    assert table[0].startswith("greedy strict accuracy over 6 items")
    header, overall = table[1].split(), table[2].split()
    assert header[:3] == ["subset", "n", "strict"] and header[-1] == "ties=1/2"
    assert overall[0] == "all" and float(overall[2]) <= 0.5 and overall[2] == "0.500"
    assert overall[6] == "0.500" and overall[-1] == "0.750"  # unparsed share, then ties as ½
    assert any("strict accuracy: right only when" in line for line in table)  # the legend names each column


def test_a_clustered_interval_is_wider_by_the_design_effect_on_20_prompts_of_9_pairs():
    """20 prompts × 9 pairs, 10 prompts all right and 10 all wrong: p = 0.5. Independent variance
    0.25/180 = 0.0013889; cluster-robust 20/19 · 20·(9·0.5)² / 180² = 0.013158; DEFF = 9.474
    (= 9 · 20/19), so the interval is Wilson's at n = 180 / 9.474 = 19 prompts' worth."""
    from rlhfv.grm.eval_report import design_effect, wilson

    values = [1.0] * 90 + [0.0] * 90
    clusters = [c for c in range(20) for _ in range(9)]
    assert design_effect(values, clusters) == pytest.approx(9 * 20 / 19)
    naive, clustered = mean_ci(values), mean_ci(values, clusters)
    assert (
        naive["interval"] == "wilson" and clustered["interval"] == "clustered" and clustered["clusters"] == 20
    )
    assert (clustered["ci95_low"], clustered["ci95_high"]) == pytest.approx(wilson(0.5, 19.0))
    # Wilson half-widths at p = 0.5: n = 180 → 0.0723, n = 19 → 0.2051, 2.84× (√DEFF = 3.08 for a normal interval)
    ratio = (clustered["ci95_high"] - clustered["ci95_low"]) / (naive["ci95_high"] - naive["ci95_low"])
    assert ratio == pytest.approx(0.2051 / 0.0723, rel=1e-3)
    # Items that do not depend on their prompt (right and wrong alternate inside each) gain nothing.
    assert design_effect([float(i % 2) for i in range(180)], clusters) == 1.0


def rm_bench_rule(shown, j):
    """Prompt A's judge is right unless the chosen answer is concise against a longer rejected one;
    prompt B's only when both have the same style. Responses read '<prompt> right|wrong <style>'."""
    (prompt, side0, style0), (_, _, style1) = (r.split() for r in shown)
    chosen, rejected = (style0, style1) if side0 == "right" else (style1, style0)
    right = not (chosen == "0" and rejected != "0") if prompt == "A" else chosen == rejected
    first_wins = right == (side0 == "right")
    return ParsedScores([9.0, 2.0] if first_wins else [2.0, 9.0])


def test_rm_bench_scores_follow_the_benchmarks_matrix_on_a_two_prompt_example(monkeypatch, tmp_path, capsys):
    """Cell (i, j) averaged over the two prompts:
    A: right except (0,1), (0,2);  B: right only on the diagonal.
    matrix = [[1, 0, 0], [.5, 1, .5], [.5, .5, 1]]
    hard   = (0 + 0 + .5) / 3 = 0.1667   (above the diagonal: the chosen answer plainer)
    normal = (1 + 1 + 1) / 3 = 1
    easy   = (.5 + .5 + .5) / 3 = 0.5
    average = 5 / 9 = 0.5556"""
    monkeypatch.setattr(evaluate, "judge", scripted_judge(rm_bench_rule))
    monkeypatch.setattr(evaluate, "build_judge", lambda spec, dtype: object())
    rows = [
        {"id": p, "subset": "chat", "prompt": f"q{p}", "chosen": [f"{p} right {s}" for s in "012"],
         "rejected": [f"{p} wrong {s}" for s in "012"]}
        for p in "AB"
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "rm.jsonl", rows)
    out = tmp_path / "r.json"
    assert (
        evaluate.main(["grm", "--model", "x", "--format", "rm-bench", "--data", str(data), "--out", str(out)])
        == 0
    )
    bench = strict_json(out.read_text())["benchmark"]
    assert bench["matrices"]["chat"] == [[1.0, 0.0, 0.0], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]]
    scores = bench["scores"]
    assert scores["chat/hard"] == pytest.approx(1 / 6) and scores["chat/normal"] == 1.0
    assert scores["chat/easy"] == 0.5 and scores["average"] == pytest.approx(5 / 9)
    table = capsys.readouterr().out
    assert "RM-Bench scores" in table and "2 prompts" in table  # nine pairs of two prompts: clustered


def test_a_text_judge_on_an_image_file_warns_once_and_ignore_images_silences_it(
    monkeypatch, tmp_path, caplog
):
    from types import SimpleNamespace

    from PIL import Image

    from rlhfv.models.text_lm import TextPromptEncoder

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / name)
    rows = [
        {"q": f"What is shown {i}?", "x": "right", "y": "wrong", "img": ["a.png", "b.png", None][i]}
        for i in range(3)
    ]
    rows[2].pop("img")
    data = write_jsonl(tmp_path / "img.jsonl", rows)
    seen = []

    def judge_recording(model, items, **kwargs):
        seen.extend(len(item.images) for item in items)
        return scripted_judge(lambda shown, j: ParsedScores([9.0, 2.0]))(model, items, **kwargs)

    monkeypatch.setattr(evaluate, "judge", judge_recording)
    args = [
        "grm",
        "--model",
        "x",
        "--format",
        "generic",
        "--map",
        "prompt=q,chosen=x,rejected=y,images=img",
        "--data",
        str(data),
    ]
    for encoder, extra, warnings, images in [
        (TextPromptEncoder(None), [], 1, [1, 1, 0]),
        (TextPromptEncoder(None), ["--ignore-images"], 0, [0, 0, 0]),
        (object(), [], 0, [1, 1, 0]),  # a multimodal judge: no warning, and it gets the images
    ]:
        monkeypatch.setattr(
            evaluate, "build_judge", lambda spec, dtype, e=encoder: SimpleNamespace(encoder=e)
        )
        caplog.clear()
        seen.clear()
        with caplog.at_level("WARNING"):
            assert evaluate.main(args + extra) == 0
        said = [r.getMessage() for r in caplog.records if "text-only judge" in r.getMessage()]
        assert len(said) == warnings and sorted(seen) == sorted(images)
        assert not said or said[0].startswith("2 of 3 items have images")


def test_help_shows_every_default():
    _, grm = evaluate.build_parser()
    text = " ".join(grm.format_help().split())
    options = [a for a in grm._actions if a.option_strings and a.dest != "help"]
    for action in options:
        assert f"(default: {action.default})" in text, action.dest
    assert "--k [K ...] voting@k values" in text and "(default: [])" in text  # greedy only unless --k
    assert "--cpu-threads CPU_THREADS" in text and "run.cpu_threads" in text


def test_usage_errors_are_eval_grms_and_the_format_list_is_complete(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["grm", "--model", "tiny", "--format", "llmbar"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage: rlhfv eval grm" in err and "--data is required" in err
    assert evaluate.main(["grm", "--model", "tiny", "--format", "csv", "--data", "x"]) == 2
    err = capsys.readouterr().err
    assert "shapes" in err and "textchecks" in err and "generic" in err


def test_skipped_rows_are_counted_per_evaluated_slice(knowing_judge, tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "right", "rejected": "wrong"} for i in range(10)]
    rows += [{"prompt": f"bad{i}", "chosen": "right"} for i in range(10)]  # no rejected response
    data = write_jsonl(tmp_path / "half_bad.jsonl", rows)
    out = tmp_path / "r.json"
    argv = ["grm", "--model", "x", "--format", "generic", "--data", str(data), "--out", str(out)]
    assert evaluate.main([*argv, "--limit", "5"]) == 0
    results = strict_json(out.read_text())
    # 5 of the 10 prompts evaluated: half of the file's 10 bad rows, 5, belong to this slice
    assert results["items"] == 5 and results["skipped_rows"] == 5 and results["skipped_rows_in_file"] == 10
    assert evaluate.main(argv) == 0 and strict_json(out.read_text())["skipped_rows"] == 10


def test_subset_names_are_kept_whole(knowing_judge, tmp_path):
    rows = [
        {"prompt": f"q{i}", "chosen": "right", "rejected": "wrong", "source": "bigcode/humanevalpack"}
        for i in range(2)
    ]
    data = write_jsonl(tmp_path / "code.jsonl", rows)
    out = tmp_path / "r.json"
    argv = [
        "grm",
        "--model",
        "x",
        "--format",
        "generic",
        "--map",
        "subset=source",
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    assert evaluate.main(argv) == 0
    assert set(strict_json(out.read_text())["metrics"]) == {"all", "subset/bigcode/humanevalpack"}
    from rlhfv.grm.eval_report import item_groups

    rmb = [EvalItem(JudgeItem("q", ["a", "b"]), 0, path, str(i)) for i, path in enumerate(
        ["Pairwise_set/Harmlessness/S1/crime", "Pairwise_set/Harmlessness/S2/fraud", "Pairwise_set/Helpfulness/Code/py"])]  # fmt: skip
    # Pairwise_set holds every item, and S1, S2, Helpfulness and Helpfulness/Code each hold only
    # the one path under them: none says anything new, so the whole paths stand for them
    assert list(item_groups(rmb, nested=True)) == [
        "all",
        "subset/Pairwise_set/Harmlessness",
        "subset/Pairwise_set/Harmlessness/S1/crime",
        "subset/Pairwise_set/Harmlessness/S2/fraud",
        "subset/Pairwise_set/Helpfulness/Code/py",
    ]


def test_the_jsonl_reader_refuses_unknown_keys_with_a_did_you_mean(tmp_path):
    from rlhfv.data.formats import load_preference_data

    data = write_jsonl(tmp_path / "own.jsonl", [
        {"prompt": "q", "responses": ["a", "b"], "preferred": 0},
        {"prompt": "q", "responses": ["a", "b"], "preffered": 1},
    ])  # fmt: skip
    rows, errors = load_preference_data("jsonl", data)
    assert len(rows) == 1 and errors[0].line == 2 and errors[0].field == "preffered"
    assert "did you mean 'preferred'?" in errors[0].message
