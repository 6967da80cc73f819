"""`rlhfv annotate import`: every problem of a row is listed, and importing nothing is a failure."""

from __future__ import annotations

import json

from rlhfv.store import cli


def test_import_lists_every_problem_of_a_row_and_exits_non_zero_when_nothing_is_imported(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"promt": "q", "responses": ["a", ""], "gold": 5}) + "\n")
    db = f"sqlite:///{tmp_path / 'store.db'}"
    assert cli.main(["import", "jsonl", str(tasks), "--db", db]) == 1
    captured = capsys.readouterr()
    line = next(x for x in captured.out.splitlines() if "tasks.jsonl:1" in x)
    # the misspelled key, the missing prompt, the empty response and the bad gold, in one line
    assert "unknown task key 'promt'; did you mean 'prompt'" in line
    assert (
        "also field 'prompt'" in line and "also field 'responses[1]'" in line and "also field 'gold'" in line
    )
    assert "imported no task" in captured.err
    tasks.write_text(json.dumps({"prompt": "q", "responses": ["a", "b"]}) + "\n")
    assert cli.main(["import", "jsonl", str(tasks), "--db", db]) == 0
    assert cli.main(["import", "jsonl", str(tasks), "--db", db]) == 0  # already present: nothing is lost
