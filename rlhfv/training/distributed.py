"""DeepSpeed ZeRO glue for the RL pipelines: start the process group, wrap policy + optimizer.

Launch several processes with `torchrun --nproc_per_node K` (one node) or
`torchrun --nnodes M --node_rank R --master_addr HOST --nproc_per_node K` (several nodes), or with
the `deepspeed` launcher; every process runs the same recipe. On CPU the processes talk over gloo,
on GPUs over NCCL. With `zero_stage` 0 and a single process nothing here is used.

ZeRO-2 shards optimizer state and gradients; ZeRO-3 also shards the parameters, so every forward
pass, generation included, is a collective: all processes must run the same number of forward
calls (`generate(..., synced_gpus=True)` keeps them in step).
"""

from __future__ import annotations

import os
from typing import Any

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when not launched by torchrun/deepspeed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> None:
    """Join the process group that the launcher set up in the environment (no-op for one process)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.distributed.is_initialized():
        import deepspeed

        if device.type == "cpu":
            # DeepSpeed compiles a shared-memory all-reduce for CPU on first use (minutes of C++
            # build); gloo alone is all the CPU path needs, so skip it.
            import deepspeed.comm.torch as ds_comm

            ds_comm.build_shm_op = lambda: None
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def deepspeed_engine(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    zero_stage: int,
    micro_batch_size: int,
    grad_accum: int,
    max_grad_norm: float,
    dtype: str,
) -> Any:
    """Wrap a module and its optimizer in a DeepSpeed engine with ZeRO stage 2 or 3.

    The engine steps the optimizer once every `grad_accum` calls of `engine.step()`, clips the
    gradient norm to `max_grad_norm`, and averages gradients over processes.
    """
    import deepspeed

    _, size = world()
    config = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * size,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=config)
    return engine


def mean_across_processes(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over all processes (identity for one process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    t /= torch.distributed.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def full_state_dict(engine: Any) -> dict[str, torch.Tensor]:
    """The whole model's weights on every process (ZeRO-3 gathers its shards first)."""
    import deepspeed

    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(
        params, modifier_rank=None, enabled=engine.zero_optimization_stage() == 3
    ):
        return {k: v.detach().cpu().clone() for k, v in engine.module.state_dict().items()}


def unsharded_model(engine: Any, model: Any, rebuild: Any, writes: bool) -> Any:
    """The model a run saves at its end: `model` itself, or under ZeRO a fresh, unsharded copy of
    the architecture (`rebuild()`) holding the gathered weights. Under ZeRO this is a collective:
    every process calls it, and only the one that `writes` builds the copy."""
    if engine is None:
        return model
    weights = full_state_dict(engine)
    if not writes:
        return model
    final = rebuild()
    final.module.load_state_dict(weights)
    return final
