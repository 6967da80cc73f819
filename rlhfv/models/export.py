"""`rlhfv export RUN/final --to DIR [--merge-lora | --adapter-only] [--push-to-hub REPO]`.

A run's `final/` folder (`rlhfv.models.base.save_model`) becomes a folder other tools load:

- a Hugging Face model (`load_hf_vlm`, `load_text_lm`): weights with LoRA merged in, config,
  tokenizer / processor and chat template; `AutoModelForImageTextToText.from_pretrained(DIR)`
  (image-text-to-text families) or `AutoModelForCausalLM.from_pretrained(DIR)` (text LMs) load it,
  and so does vLLM (`LLM(model=DIR)`). This is the default, `--merge-lora` says so explicitly.
- `--adapter-only`: the LoRA adapters alone (peft's `adapter_config.json` and
  `adapter_model.safetensors`), for `PeftModel.from_pretrained(<base model>, DIR)`; the base is
  the model the run loaded (`base_model_name_or_path` in the adapter config).
- a custom MLLM (`rlhfv.models.clip_lm`: a CLIP or CNN tower, a projector and a causal LM) has no
  transformers class; it is written in its own format, which the exported README documents:
  `clip_lm.json` (the tower's spec, the LM's config, the image token id), `model.safetensors`
  (every weight, LoRA merged) and the tokenizer files, loaded by
  `rlhfv.models.clip_lm.load_clip_lm(DIR)` (or `rlhfv.models.base.load_model(DIR)`).

The target must not exist (nothing is overwritten). `--push-to-hub REPO` then uploads the folder
with huggingface_hub (a token from `hf auth login` or HF_TOKEN).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from rlhfv.models.base import ADAPTER_DIR, MODEL_CARD

logger = logging.getLogger(__name__)

HF_LOADERS = {"rlhfv.models.hf_vlm.load_hf_vlm": "AutoModelForImageTextToText",
              "rlhfv.models.text_lm.load_text_lm": "AutoModelForCausalLM"}  # fmt: skip
CLIP_LM_LOADER = "rlhfv.models.clip_lm.load_clip_lm"


class ExportError(ValueError):
    """The folder cannot be exported as asked; the message says why and what to do."""


def export_model(source: str | Path, target: str | Path, adapter_only: bool = False) -> Path:
    """Write `source` (a folder `save_model` wrote) to the new folder `target`; returns `target`.

    Raises:
        ExportError: `target` exists, `source` is no rlhfv model folder, or `adapter_only` for a
            model without (loadable) adapters.
    """
    source, target = Path(source), Path(target)
    if target.exists():
        raise ExportError(f"export target {target} already exists; choose a new folder (nothing was written)")
    card = source / MODEL_CARD
    if not card.is_file():
        raise ExportError(
            f"{source} is not a saved rlhfv model (no {MODEL_CARD}); give a run's final/ or step folder"
        )
    loader = json.loads(card.read_text())["loader"]
    if adapter_only:
        return _copy_adapter(source, target)
    if loader in HF_LOADERS:
        ignore = shutil.ignore_patterns(MODEL_CARD, ADAPTER_DIR)
        _copy(source, target, ignore)
        (target / "README.md").write_text(_card_text(source, HF_LOADERS[loader]))
    elif loader == CLIP_LM_LOADER:
        _copy(source, target, shutil.ignore_patterns(ADAPTER_DIR))  # its card names its loader
        (target / "README.md").write_text(CLIP_LM_README)
    else:
        raise ExportError(f"{source}: no export for models loaded by {loader}")
    logger.info("exported %s to %s", source, target)
    return target


def _copy(source: Path, target: Path, ignore: object) -> None:
    """Copy into `target.tmp`, renamed to `target` when complete (a failed copy leaves nothing)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=ignore)  # type: ignore[arg-type]
    tmp.rename(target)


def _copy_adapter(source: Path, target: Path) -> Path:
    adapter = source / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"{source} holds no LoRA adapters ({adapter} is missing): the run trained every "
                          "weight, so export the whole model (leave out --adapter-only)")  # fmt: skip
    base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ExportError(f"{adapter}: the adapters' base model is unknown (it was built in memory, not "
                          "loaded from a folder or Hub ID); export the merged model instead")  # fmt: skip
    _copy(adapter, target, None)
    (target / "README.md").write_text(
        f"# LoRA adapters\n\nBase model: `{base}`. Load with\n\n```python\nfrom peft import PeftModel\n"
        f"model = PeftModel.from_pretrained(<the base model>, {str(target)!r})\n```\n"
    )
    logger.info("exported the adapters of %s (base %s) to %s", source, base, target)
    return target


def _card_text(source: Path, auto_class: str) -> str:
    return (
        f"# Model trained with rlhfv\n\nExported from `{source}` with LoRA adapters merged.\n\n"
        f"```python\nfrom transformers import {auto_class}, AutoProcessor\n"
        f"model = {auto_class}.from_pretrained(PATH)\nprocessor = AutoProcessor.from_pretrained(PATH)\n```\n\n"
        "vLLM serves it as well: `vllm serve PATH`.\n"
    )


CLIP_LM_README = """# rlhfv ClipLM (a vision tower, a projector and a causal LM)

This folder is not a transformers architecture; it is rlhfv's own format:

- `clip_lm.json`: `vision` (the tower: an open_clip ViT config, or `kind: timm` with the timm
  model name, feature layer, grid, image size and normalisation), `lm_config` (the causal LM's
  transformers config), `feature` ("patch" or "pooled+patch") and `image_token_id`;
- `model.safetensors`: every weight (`vision.*`, `projector.*`, `lm.*`), LoRA merged in;
- the tokenizer files, with the `<image>` placeholder token and the chat template;
- `rlhfv_model.json`: the loader's dotted path.

Load it with

```python
from rlhfv.models.clip_lm import load_clip_lm
model = load_clip_lm(PATH)   # a ChatModel: model.module, model.tokenizer, model.encoder
```
"""


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload `folder` to the Hub model repository `repo_id` (created when missing); returns its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, commit_message="Upload model exported by rlhfv"
    )
    return f"https://huggingface.co/{repo_id}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlhfv export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="a saved model folder: a run's final/ (or step_N/ model)")
    parser.add_argument("--to", required=True, help="the new folder to write (must not exist)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--merge-lora", action="store_true", help="LoRA merged into the weights (the default)")
    mode.add_argument("--adapter-only", action="store_true", help="only the LoRA adapters, for peft")
    parser.add_argument("--push-to-hub", metavar="REPO", help="then upload the folder to this Hub repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository private")
    args = parser.parse_args(argv)
    try:
        folder = export_model(args.source, args.to, adapter_only=args.adapter_only)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported to {folder}")
    if args.push_to_hub:
        print(f"uploaded to {push_to_hub(folder, args.push_to_hub, args.private)}")
    return 0
