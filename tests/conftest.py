"""Shared fixtures: everything runs on the CPU from files made here, never from ../shared."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_threads():
    torch.set_num_threads(1)  # tests are many small ops: threads only add noise
    yield
