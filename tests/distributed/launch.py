"""Start `rlhfv.cli` under torchrun as a user would, with every torch.distributed collective checked.

`python tests/distributed/launch.py run recipe.yaml ...` is what each torchrun process runs: it wraps
the collectives so that one receiving a tensor on another device than the training device
(`RLHFV_EXPECTED_DEVICE`, default cpu) raises, then hands over to `rlhfv.cli`. On a GPU node that is
the NCCL rule (CUDA tensors only); on CPU it keeps host tensors from sneaking in once the tests run
on GPUs.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter_tensor",
    "broadcast",
    "reduce",
)


def check_devices(expected: torch.device) -> None:
    """Make every collective in `COLLECTIVES` refuse tensors that are not on `expected`."""
    dist = torch.distributed

    def checked(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for arg in [*args, *kwargs.values()]:
                for t in arg if isinstance(arg, (list, tuple)) else [arg]:
                    if isinstance(t, torch.Tensor) and t.device.type != expected.type:
                        raise AssertionError(
                            f"torch.distributed.{name} got a tensor on {t.device}, not {expected}"
                        )
            return fn(*args, **kwargs)

        return wrapper

    for name in COLLECTIVES:
        setattr(dist, name, checked(name, getattr(dist, name)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], processes: int = 2, timeout: int = 300) -> None:
    """`torchrun --nproc_per_node processes` of `rlhfv.cli` with `args`; fails the test on error."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master_port", str(free_port()), str(Path(__file__).resolve()), *args]  # fmt: skip
    run(cmd, timeout)


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run(cmd: list[str], timeout: int = 300) -> None:
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]


if __name__ == "__main__":
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` shows where a rank hangs
    check_devices(torch.device(os.environ.get("RLHFV_EXPECTED_DEVICE", "cpu")))
    from rlhfv.cli import main

    sys.exit(main(sys.argv[1:]))
