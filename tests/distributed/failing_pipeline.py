"""A pipeline that raises on one rank while the others wait in a collective (for test_stages.py)."""

from dataclasses import dataclass, field

import torch

from rlhfv.config import RunConfig
from rlhfv.training.processes import rank_and_world
from rlhfv.training.run import start_run


@dataclass
class FailingConfig:
    run: RunConfig = field(default_factory=RunConfig)
    fail_on_rank: int = 1


def main(cfg: FailingConfig) -> dict[str, float]:
    run = start_run(cfg)
    if rank_and_world()[0] == cfg.fail_on_rank:
        raise RuntimeError("this rank fails on purpose")
    torch.distributed.barrier()  # the failed rank never arrives: this must not hang
    return run.finish(None, {})
