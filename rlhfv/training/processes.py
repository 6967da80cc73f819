"""The processes of one launch: which one writes, and how all of them agree before they work.

Under `torchrun` or `accelerate launch` every process runs the same recipe. Global rank 0 is the
writer: it alone creates run folders and writes checkpoints, metrics, summaries and final models.
The other processes must reach the same decisions (where a run resumes, whether an input exists),
and a check that fails on one process only must stop all of them: a process that raised while
the others wait in a collective leaves them waiting. So every check runs on every process and the
results are compared: `agree` raises the same error on every rank, naming each rank that found a
problem and its host (on several nodes, a folder that one node cannot see points at a filesystem
that is not shared).

The collectives here move small Python objects (`all_gather_object`, `broadcast_object_list`),
which torch sends through the CPU backend of the process group. Without a process group (one
process, or a pipeline run in-process) every function is local.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

import torch


class ProcessesDisagree(RuntimeError):
    """A check failed on at least one process of a launch; every process raises it."""


def in_process_group() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(global rank, number of processes); from the launcher's environment before the group exists."""
    if in_process_group():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def join_process_group(device: torch.device) -> None:
    """Join the process group the launcher describes in the environment (no-op for one process).

    On GPUs the group is NCCL for CUDA tensors and gloo for CPU ones (the objects compared here
    travel on the CPU); on CPU it is gloo. accelerate and DeepSpeed take a group that exists.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) == 1 or in_process_group():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        torch.distributed.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        torch.distributed.init_process_group(backend="gloo")


def where(rank: int | None = None) -> str:
    """'rank R on HOST': how errors name a process."""
    rank = rank_and_world()[0] if rank is None else rank
    return f"rank {rank} on {socket.gethostname()}"


def agree(problem: str | None) -> None:
    """Compare one check across processes; raise on every process if any process found a problem.

    Also a barrier: no process returns before every process has called it.

    Args:
        problem: What this process found wrong, or None.
    Raises:
        ProcessesDisagree: naming each rank (and host) with a problem, and the problem.
    """
    if not in_process_group():
        if problem:
            raise ProcessesDisagree(problem)
        return
    rank, world = rank_and_world()
    found: list[Any] = [None] * world
    torch.distributed.all_gather_object(found, (socket.gethostname(), problem))
    lines = [f"rank {r} on {host}: {p}" for r, (host, p) in enumerate(found) if p]
    if lines:
        raise ProcessesDisagree("\n".join(lines))


def check_same_everywhere(text: str, what: str) -> None:
    """Stop every process unless `text` (e.g. the resolved recipe) is the same on all of them.

    Processes compare a SHA-256 of the text, so this costs one small collective at any size.
    """
    if not in_process_group():
        return
    _, world = rank_and_world()
    digests: list[Any] = [None] * world
    torch.distributed.all_gather_object(digests, hashlib.sha256(text.encode()).hexdigest())
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise ProcessesDisagree(
            f"the {what} differs between processes: rank(s) {differ} differ from rank 0 "
            f"(of {world}); start every process with the same recipe file and the same key=value overrides"
        )


def from_writer(value: Any) -> Any:
    """Rank 0's `value` on every process (what rank 0 decided; the others pass anything)."""
    if not in_process_group():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
