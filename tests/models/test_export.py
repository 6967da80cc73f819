"""`rlhfv export`: the exported folder gives the trained model's logits, merged and adapter-only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from rlhfv.cli import main as cli
from rlhfv.models.base import ChatModel, save_model
from rlhfv.models.clip_lm import load_clip_lm, tiny_clip_lm
from rlhfv.models.export import ExportError, export_model
from rlhfv.models.hf_vlm import load_hf_vlm, tiny_qwen2_vl
from rlhfv.models.text_lm import tiny_text_lm
from rlhfv.types import Prompt

PROMPTS = [Prompt("What colour is the square?", [Image.new("RGB", (96, 96), "red")]), Prompt("And this?", [Image.new("RGB", (96, 96), "blue")])]  # fmt: skip


def logits_of(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(**batch).logits  # [B, P, V]


@pytest.fixture
def trained_lora_policy(tmp_path) -> tuple[ChatModel, dict, torch.Tensor]:
    """A tiny Qwen2-VL loaded from a folder with LoRA, its adapters moved off zero as training would."""
    save_model(tiny_qwen2_vl(seed=0), tmp_path / "base")
    policy = load_hf_vlm(str(tmp_path / "base"), lora={"r": 4, "alpha": 8})
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for name, p in policy.module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = policy.encoder(PROMPTS)
    return policy, batch, logits_of(policy.module, batch)


def test_merged_and_adapter_only_exports_give_the_trained_logits(tmp_path, trained_lora_policy):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    policy, batch, trained = trained_lora_policy
    save_model(policy, tmp_path / "run" / "final")
    assert (
        cli(["export", str(tmp_path / "run" / "final"), "--to", str(tmp_path / "merged"), "--merge-lora"])
        == 0
    )
    merged = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "merged"))
    assert torch.allclose(logits_of(merged, batch), trained, atol=1e-5)
    assert not (tmp_path / "merged" / "rlhfv_model.json").exists()  # a plain HF folder

    assert (
        cli(["export", str(tmp_path / "run" / "final"), "--to", str(tmp_path / "adapter"), "--adapter-only"])
        == 0
    )
    base = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "base"))
    assert not torch.allclose(logits_of(base, batch), trained, atol=1e-3)  # the adapters matter
    adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))  # wraps `base` in place
    assert torch.allclose(logits_of(adapted, batch), trained, atol=1e-5)


def test_an_existing_target_is_refused_and_left_as_it_was(tmp_path, capsys):
    save_model(tiny_text_lm(seed=0), tmp_path / "final")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert cli(["export", str(tmp_path / "final"), "--to", str(tmp_path / "out")]) == 2
    assert (
        "already exists" in capsys.readouterr().err and (tmp_path / "out" / "keep.txt").read_text() == "mine"
    )


def test_a_text_lm_exports_for_auto_model_for_causal_lm_and_full_training_has_no_adapters(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_text_lm(seed=0)
    batch = {
        "input_ids": torch.tensor([[5, 17, 42, 9]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
    }
    trained = logits_of(model.module, batch)
    save_model(model, tmp_path / "final")
    exported = AutoModelForCausalLM.from_pretrained(str(export_model(tmp_path / "final", tmp_path / "hf")))
    assert torch.allclose(logits_of(exported, batch), trained, atol=1e-5)
    with pytest.raises(ExportError, match="holds no LoRA adapters"):
        export_model(tmp_path / "final", tmp_path / "adapter", adapter_only=True)


def test_a_clip_lm_exports_in_its_documented_format_with_its_loader(tmp_path):
    model = tiny_clip_lm(seed=0)
    prompts = [Prompt("Colour?", [Image.new("RGB", (64, 64), "green")])]
    batch = model.encoder(prompts)
    trained = logits_of(model.module, batch)
    save_model(model, tmp_path / "final")
    folder = export_model(tmp_path / "final", tmp_path / "out")
    assert "load_clip_lm(PATH)" in (folder / "README.md").read_text()
    assert torch.allclose(logits_of(load_clip_lm(str(folder)).module, batch), trained, atol=1e-5)


def test_push_to_hub_uploads_the_exported_folder_to_the_named_repository(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class RecordingApi:  # stands in for the Hub, which tests cannot reach
        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload_folder", sorted(p.name for p in Path(folder_path).iterdir()), repo_id))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    save_model(tiny_text_lm(seed=0), tmp_path / "final")
    args = ["export", str(tmp_path / "final"), "--to", str(tmp_path / "out"), "--push-to-hub", "me/tiny"]
    assert cli(args) == 0
    assert calls[0] == ("create_repo", "me/tiny", False, True)
    assert calls[1][0] == "upload_folder" and calls[1][2] == "me/tiny" and "config.json" in calls[1][1]
    assert "uploaded to https://huggingface.co/me/tiny" in capsys.readouterr().out
