"""Models named by Hugging Face Hub ID resolve through the huggingface_hub cache, offline too."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from rlhfv.cli import main as cli
from rlhfv.models import hub
from rlhfv.models.base import save_model
from rlhfv.models.hf_vlm import tiny_qwen2_vl

REVISION = "0123456789abcdef0123456789abcdef01234567"


def put_in_hub_cache(folder: Path, cache: Path, repo_id: str, tag: str = "main") -> Path:
    """Lay `folder` out as huggingface_hub's cache does after a download: content-addressed blobs,
    `snapshots/<commit>/` linking to them, and `refs/<tag>` naming the commit. Returns the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in folder.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snapshot / file.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("../" * len(link.relative_to(repo).parts[1:]), "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / tag).write_text(REVISION)
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """A Hub cache holding a tiny Qwen2-VL as `tiny-org/qwen2-vl`, with HF_HUB_OFFLINE=1."""
    saved = tmp_path / "saved"
    save_model(tiny_qwen2_vl(seed=0, hidden_size=36), saved)
    cache = tmp_path / "hf-cache"
    put_in_hub_cache(saved, cache, "tiny-org/qwen2-vl")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_a_hub_id_resolves_to_its_cached_snapshot_offline(offline_hub):
    folder = hub.resolve_model("tiny-org/qwen2-vl")
    assert folder.parent.name == "snapshots" and folder.name == REVISION
    assert hub.resolve_model("tiny-org/qwen2-vl", revision=REVISION) == folder
    assert json.loads((folder / "config.json").read_text())["model_type"] == "qwen2_vl"


def test_an_unknown_hub_id_names_the_id_and_the_cache_folder(offline_hub):
    with pytest.raises(FileNotFoundError) as err:
        hub.resolve_model("tiny-org/no-such-model")
    assert "'tiny-org/no-such-model'" in str(err.value) and str(offline_hub) in str(err.value)
    assert "HF_HUB_OFFLINE=1" in str(err.value)


def test_an_unknown_revision_of_a_cached_id_is_an_error_naming_it(offline_hub):
    with pytest.raises(FileNotFoundError, match=r"'tiny-org/qwen2-vl' \(revision v9\)"):
        hub.resolve_model("tiny-org/qwen2-vl", revision="v9")


def test_a_missing_relative_folder_is_still_reported_as_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no folder"):
        hub.resolve_model("./models/absent")


@pytest.mark.slow
def test_a_recipe_naming_a_hub_id_trains_two_steps_offline(offline_hub, tmp_path):
    recipe = tmp_path / "sft_hub.yaml"
    recipe.write_text(
        "pipeline: rlhfv.pipelines.sft.main\n"
        f"run: {{name: sft_hub, dir: {tmp_path / 'run'}, seed: 0}}\n"
        "policy: {_component_: rlhfv.models.hf_vlm.load_hf_vlm, path: tiny-org/qwen2-vl, revision: main}\n"
        "train_data: {_component_: rlhfv.data.shapes.ShapesVQA, size: 8, split: train}\n"
        "optimizer: {_component_: torch.optim.AdamW, lr: 0.001}\n"
        "steps: 2\nbatch_size: 2\nwarmup_steps: 1\nlog_every: 1\neval_every: 0\n"
    )
    assert cli(["run", str(recipe)]) == 0
    assert (tmp_path / "run" / "final" / "rlhfv_model.json").is_file()


@pytest.mark.slow
def test_the_hub_dpo_recipe_trains_offline_on_a_cached_model_and_a_local_trl_pair_file(offline_hub, tmp_path):
    import datasets

    said = [{"role": "assistant", "content": [{"type": "text", "text": t}]} for t in ("red", "blue")]
    ask = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    image = Image.new("RGB", (96, 96), "red")
    rows = {
        "images": [[image]] * 4,
        "prompt": [ask] * 4,
        "chosen": [said[:1]] * 4,
        "rejected": [said[1:]] * 4,
    }
    for name in ("pairs", "held_out"):
        datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / f"{name}.parquet"))
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "dpo_rlaifv_hub.yaml"
    overrides = [f"run.dir={tmp_path / 'run'}", "run.dtype=float32", "policy.path=tiny-org/qwen2-vl",
                 "policy.dtype=float32", f"train_data.path={tmp_path / 'pairs.parquet'}",
                 f"eval_pairs.path={tmp_path / 'held_out.parquet'}", "eval_pairs.split=train", "steps=2",
                 "batch_size=2", "log_every=1", "eval_every=0", "eval_batch_size=2"]  # fmt: skip
    assert cli(["run", str(recipe), *overrides]) == 0
    assert (tmp_path / "run" / "final" / "adapter" / "adapter_config.json").is_file()
