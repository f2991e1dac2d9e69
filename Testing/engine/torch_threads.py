"""A module-scoped fixture that runs torch on one thread (import it into a test module to use it).

On a shared 2-core machine two torch threads are often many times slower than one (they wait on
each other while other processes hold the cores), and one thread makes float sums reproducible.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
