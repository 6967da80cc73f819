"""Shaping tests train tiny networks: one torch thread is faster, and on a busy 2-core machine two
threads spin-wait for each other (about 20× the CPU time was measured)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
