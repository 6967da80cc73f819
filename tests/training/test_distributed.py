"""The distributed layer's checks and collectives, without launching processes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rlhfv.training import distributed


def test_a_world_size_that_does_not_divide_the_global_batch_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"prompts_per_step = 6 .* 4 does not divide 6"):
        distributed.check_global_batch(4, prompts_per_step=6)
    distributed.check_global_batch(3, prompts_per_step=6)


@pytest.mark.parametrize(
    ("strategy", "zero_stage", "message"),
    [("zero", 0, "strategy = 'zero'"), ("deepspeed", 0, "zero_stage 2 or 3"), ("ddp", 2, "DDP shards nothing"),
     ("auto", 1, "zero_stage = 1")],
)  # fmt: skip
def test_strategy_keys_that_cannot_work_are_refused(strategy, zero_stage, message):
    with pytest.raises(ValueError, match=message):
        distributed.check_strategy(strategy, zero_stage)


def test_auto_is_plain_pytorch_alone_ddp_with_others_and_deepspeed_with_a_zero_stage():
    assert distributed.resolved_strategy("auto", 0, 1) == "none"
    assert distributed.resolved_strategy("auto", 0, 2) == "ddp"
    assert distributed.resolved_strategy("auto", 3, 2) == "deepspeed"
    assert distributed.resolved_strategy("fsdp", 0, 2) == "fsdp"


def test_ranks_take_consecutive_slices_that_together_are_the_global_batch():
    batch = list(range(8))
    assert distributed.rank_slice(batch, 0, 2) + distributed.rank_slice(batch, 1, 2) == batch


class MetaAccelerator:
    """Two processes whose training device is `meta`: a tensor made on the host (no `device=`)
    would be on cpu, which NCCL refuses on a GPU; here the fake collectives refuse it."""

    num_processes = 2
    device = torch.device("meta")
    seen: list[torch.device] = []

    def reduce(self, t: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        self.seen.append(t.device)
        assert t.device == self.device, f"a collective got a tensor on {t.device}"
        return torch.ones(t.shape, dtype=t.dtype)  # every process sent 1s


def test_metric_collectives_send_tensors_on_the_training_device(monkeypatch):
    acc = MetaAccelerator()
    monkeypatch.setattr("accelerate.utils.gather_object", lambda x: [*x, ["only/on_rank_1"]])
    monkeypatch.setattr(
        torch.distributed, "all_reduce", lambda t, op=None: acc.reduce(t) and None, raising=False
    )
    out = distributed.mean_metrics(acc, {"loss/policy": 2.0})
    assert set(out) == {"loss/policy", "only/on_rank_1"}  # the union of the ranks' keys
    distributed.all_processes_agree(acc, True)
    distributed.sum_over_processes(acc, 3.0)
    assert acc.seen and all(d == torch.device("meta") for d in acc.seen)


def test_a_key_missing_on_a_rank_is_averaged_over_the_ranks_that_have_it(monkeypatch):
    # rank 0 logged a = 1, rank 1 logged a = 3 and b = 5; the reduction sums [value, present]
    acc = SimpleNamespace(num_processes=2, device=torch.device("cpu"))
    monkeypatch.setattr("accelerate.utils.gather_object", lambda x: [["a"], ["a", "b"]])
    rank1 = torch.tensor([[3.0, 5.0], [1.0, 1.0]], dtype=torch.float64)
    acc.reduce = lambda t, reduction="sum": t + rank1
    assert distributed.mean_metrics(acc, {"a": 1.0}) == {"a": 2.0, "b": 5.0}
