"""Several processes through `accelerate`: DDP, DeepSpeed ZeRO-2/3 or FSDP2, chosen in the recipe.

Two recipe keys choose the strategy (`check_strategy` validates them before any model loads):
- `strategy`: "auto" (the default), "ddp", "deepspeed" or "fsdp";
- `zero_stage`: 0, 2 or 3. With "auto", 2 or 3 means DeepSpeed ZeRO at that stage, and 0 means DDP
  when several processes run (one process: plain PyTorch, nothing wraps the model). With
  "deepspeed" it must be 2 or 3. With "fsdp" it picks what FSDP2 shards: 0 or 3 the parameters,
  gradients and optimizer state (`reshard_after_forward=True`, as ZeRO-3), 2 gradients and
  optimizer state only (the parameters stay gathered between forward and backward, as ZeRO-2).

Launch K processes on one node with `torchrun --nproc_per_node K -m rlhfv.cli run recipe.yaml`
or `accelerate launch --num_processes K -m rlhfv.cli run recipe.yaml`; on several nodes add
`--nnodes M --node_rank R --master_addr HOST`. Every process runs the same recipe. GPUs talk over
NCCL, CPU processes over gloo. On CPU use torchrun: `accelerate launch --cpu` starts one process.
accelerate reaches DeepSpeed and FSDP only on accelerators, so on CPU `build_accelerator` sets up
the gloo group itself and tells accelerate to take it (see `_cpu_group`): that is how the tests on
CPU run the same code paths as a GPU node.

Batch sizes in recipes are global: each of W processes takes its 1/W slice (`rank_slice`).
ZeRO-3 and FSDP shard parameters, so every forward pass (generation included) is a collective:
all processes run the same number of forward calls (`generate(..., synced_gpus=True)`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

STRATEGIES = ("auto", "ddp", "deepspeed", "fsdp")
T = TypeVar("T")


def check_strategy(strategy: str, zero_stage: int) -> None:
    """Refuse a `strategy` / `zero_stage` pair that cannot work, naming both keys."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy = {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if zero_stage not in (0, 2, 3):
        raise ValueError(f"zero_stage = {zero_stage}; choose 0 (no ZeRO), 2 or 3")
    if strategy == "deepspeed" and zero_stage == 0:
        raise ValueError("strategy = 'deepspeed' needs zero_stage 2 or 3")
    if strategy == "ddp" and zero_stage:
        raise ValueError(
            f"strategy = 'ddp' with zero_stage = {zero_stage}: DDP shards nothing; set zero_stage=0"
        )


def resolved_strategy(strategy: str, zero_stage: int, world_size: int) -> str:
    """What runs: "none" (one process, nothing wraps the model), "ddp", "deepspeed" or "fsdp"."""
    if strategy == "auto":
        if zero_stage:
            return "deepspeed"
        return "ddp" if world_size > 1 else "none"
    if strategy == "ddp" and world_size == 1:
        return "none"
    return strategy


def world() -> tuple[int, int]:
    """(rank, world size) of this process, from the launcher's environment before the group exists."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def check_global_batch(world_size: int, **sizes: int) -> None:
    """Every batch size of a recipe is global: each must split evenly over the processes."""
    for name, size in sizes.items():
        if size % world_size:
            raise ValueError(
                f"{name} = {size} is the global batch, split over the {world_size} processes; "
                f"{world_size} does not divide {size}: use a multiple of {world_size} or another world size"
            )


def rank_slice(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's contiguous share of a global batch: rank r of W takes the r-th of W equal slices."""
    share = len(items) // world_size
    return list(items[rank * share : (rank + 1) * share])


def build_accelerator(
    strategy: str,
    zero_stage: int,
    device: torch.device,
    dtype: str = "float32",
    max_grad_norm: float = 1.0,
) -> Any:
    """The `accelerate.Accelerator` for this process, joined to the launcher's process group.

    Gradient accumulation is left to the caller (`rlhfv.training.step`): it marks the last
    micro-batch of each optimizer step, so a step may have any number of micro-batches (DAPO's
    dynamic sampling) as long as every process runs the same number. Mixed precision is autocast in
    the pipelines, except under DeepSpeed, whose config holds it (bf16/fp16 with fp32 master weights).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    rank, size = world()
    kind = resolved_strategy(strategy, zero_stage, size)
    # accelerate keeps its state in process-wide singletons: a second stage in the same process
    # (a multi-stage recipe, the tests) chooses its strategy again
    AcceleratorState._reset_state(reset_partial_state=True)
    for key in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"):
        os.environ.pop(key, None)
    on_cpu = device.type == "cpu"
    if kind == "none":
        return Accelerator(cpu=on_cpu)
    if kind == "ddp":
        if on_cpu:
            return Accelerator(cpu=True)  # MULTI_CPU: DDP over gloo
        return Accelerator()
    if kind == "deepspeed":
        from accelerate import DeepSpeedPlugin

        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        if on_cpu:
            _skip_deepspeed_shm_build()
        config = {
            # one micro-batch per `engine.step` as DeepSpeed counts them; `rlhfv.training.step` marks
            # the accumulation boundary itself, so these only satisfy DeepSpeed's batch arithmetic
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "train_batch_size": size,
            "gradient_clipping": max_grad_norm,
            "zero_optimization": {"stage": zero_stage, "stage3_gather_16bit_weights_on_model_save": True},
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": dtype == "bfloat16"},
            "fp16": {"enabled": dtype == "float16"},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        plugin = DeepSpeedPlugin(hf_ds_config=config)
        return Accelerator(deepspeed_plugin=plugin, **_cpu_group(on_cpu))
    from accelerate import FullyShardedDataParallelPlugin

    os.environ["ACCELERATE_USE_FSDP"] = "true"
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, reshard_after_forward=zero_stage != 2, state_dict_type="FULL_STATE_DICT"
    )
    return Accelerator(fsdp_plugin=plugin, **_cpu_group(on_cpu))


def _cpu_group(on_cpu: bool) -> dict[str, Any]:
    """On CPU, start accelerate's state over gloo and mark it as a multi-device run: accelerate
    only enables DeepSpeed and FSDP on accelerators, and would otherwise either ignore the plugin
    (`cpu=True`) or see one process of one. On GPUs accelerate does all of this itself."""
    if not on_cpu:
        return {}
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    PartialState(backend="gloo")
    if PartialState._shared_state["distributed_type"] == DistributedType.NO:  # not DeepSpeed
        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU
    return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}


def _skip_deepspeed_shm_build() -> None:
    # DeepSpeed compiles a shared-memory all-reduce for CPU on first use (a C++ build); gloo
    # alone is all the CPU path needs
    import deepspeed.comm.torch as ds_comm

    ds_comm.build_shm_op = lambda: None


def strategy_of(accelerator: Any) -> str:
    """ "none", "ddp", "deepspeed" or "fsdp": what `build_accelerator` set up."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return "deepspeed"
    if kind == DistributedType.FSDP:
        return "fsdp"
    return "none" if accelerator.num_processes == 1 else "ddp"


def shards_parameters(accelerator: Any) -> bool:
    """True when every forward pass is a collective (ZeRO-3, FSDP with several processes): then
    all processes must run the same number of forward calls, generation included."""
    if accelerator.num_processes == 1:
        return False
    kind = strategy_of(accelerator)
    if kind == "deepspeed":
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return kind == "fsdp"


def mean_metrics(accelerator: Any, values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over processes, on the training device (NCCL takes CUDA tensors only).

    Keys are the union over processes: a key that only some processes logged (a monitor that fired
    on one rank) is averaged over the processes that have it. One process: `values` unchanged.
    """
    if accelerator.num_processes == 1:
        return values
    from accelerate.utils import gather_object

    keys = sorted({k for ks in gather_object([sorted(values)]) for k in ks})
    sums = torch.zeros(2, len(keys), dtype=torch.float64, device=accelerator.device)  # [value, present]
    for i, k in enumerate(keys):
        if k in values:
            sums[0, i], sums[1, i] = float(values[k]), 1.0
    sums = accelerator.reduce(sums, reduction="sum")
    return {k: float(sums[0, i] / sums[1, i]) for i, k in enumerate(keys)}


def all_processes_agree(accelerator: Any, flag: bool) -> bool:
    """True only if `flag` is True on every process (a collective; one process: `flag`)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() == 0)


def smallest_over_processes(accelerator: Any, value: int) -> int:
    """The smallest `value` any process holds (a collective; one process: `value`)."""
    if accelerator.num_processes == 1:
        return value
    t = torch.tensor([float(value)], device=accelerator.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return int(t.item())


def sum_over_processes(accelerator: Any, value: float) -> float:
    """`value` summed over processes (a collective; one process: `value`)."""
    if accelerator.num_processes == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(t, reduction="sum").item())


def gathered_model(accelerator: Any, model: Any, prepared: torch.nn.Module, rebuild: Any) -> Any:
    """The model a run saves at its end. One process or DDP: `model` itself. ZeRO and FSDP: a
    collective that gathers the full weights on the main process only (the others get no copy),
    which loads them into a fresh unsharded build of the architecture, `rebuild()`."""
    kind = strategy_of(accelerator)
    if kind in ("none", "ddp"):
        return model
    weights = accelerator.get_state_dict(prepared)  # every process takes part; rank 0 gets them
    if not accelerator.is_main_process:
        return model
    final = rebuild()
    target = getattr(final, "module", final)
    target.load_state_dict(weights)
    return final


def gathered_training_state(accelerator: Any, model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """What a multi-process checkpoint holds besides the scheduler and summary: the full model and
    optimizer state dicts on the main process (the others get empty ones; FSDP gathers its shards,
    to host memory on the main process only) and every process's RNG states. A collective.
    DeepSpeed is not covered (`rlhfv.training.step.check_training_config` refuses it)."""
    from accelerate.utils import gather_object
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from rlhfv.training.checkpoint import rng_state

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optimizer_state = get_state_dict(model, _inner(optimizer), options=options)
    return {"model": model_state, "optimizer": optimizer_state, "rng_processes": gather_object([rng_state()])}


def restore_training_state(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any] | None,
    step: int,
) -> int:
    """Every process takes up the checkpoint the main process read (`state`, None elsewhere and on
    a fresh run): weights and optimizer state broadcast from it, the scheduler, and each process
    its own RNG states. Returns the step to continue after (0 for a fresh run). A collective."""
    from accelerate.utils import broadcast_object_list
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from rlhfv.training.checkpoint import set_rng_state

    # tensors read from a checkpoint do not survive pickling: the RNG states travel as plain lists
    rng_lists = _tensors_as_lists(state["rng_processes"]) if state is not None else None
    small = [step, state["scheduler"], rng_lists] if state is not None else [0, None, None]
    step, scheduler_state, rng_lists = broadcast_object_list(small)  # from the main process
    if not step:
        return 0
    # model and optimizer separately: with the empty dicts of the other processes, `set_state_dict`
    # would take them for an optimizer-only load there and skip the model's broadcast
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, state["model"] if state is not None else {}, options=options)
    set_optimizer_state_dict(
        model, _inner(optimizer), state["optimizer"] if state is not None else {}, options=options
    )
    scheduler.load_state_dict(scheduler_state)
    set_rng_state(_lists_as_tensors(rng_lists[accelerator.process_index]))
    return int(step)


def _tensors_as_lists(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return {"__tensor__": x.tolist(), "dtype": str(x.dtype).removeprefix("torch.")}
    if isinstance(x, dict):
        return {k: _tensors_as_lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_tensors_as_lists(v) for v in x]
    return x


def _lists_as_tensors(x: Any) -> Any:
    if isinstance(x, dict):
        if "__tensor__" in x:
            return torch.tensor(x["__tensor__"], dtype=getattr(torch, x["dtype"]))
        return {k: _lists_as_tensors(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_lists_as_tensors(v) for v in x]
    return x


def main_process_value(accelerator: Any, value: T) -> T:
    """`value` as the main process holds it, on every process (a collective; one process: `value`)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
