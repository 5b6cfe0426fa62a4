import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# OpenMP threads that spin while waiting make torch 10-50x slower when another process holds a core (measured on a
# shared 2-core machine: 0.66-3.7 s per step with spinning, 0.11 s passive). Read when torch loads, so set it first;
# subprocesses started by the tests inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)
