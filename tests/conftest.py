"""Shared test fixtures."""
from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Small tensors: one torch thread is faster and kinder to the shared cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
