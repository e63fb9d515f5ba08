"""The worker tests run engine work in-process beside threads (heartbeat, reaper) and, on this 2-core
machine, beside other test processes: one torch thread avoids OpenMP threads spinning against each
other (the same setting the worker processes get from OMP_NUM_THREADS in the end-to-end tests)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
