"""Every test and every shared fixture starts from the same random state, whatever ran before it.

A function-scoped fixture runs right after the per-test seed, so its random draws are fixed. A module- or
session-scoped fixture is built lazily by the first test that asks for it, so without a seed of its own its
random weights would depend on which tests ran earlier (and on the order ``pytest -p randomly`` picks).
"""
import os
import random

import numpy as np
import pytest
import torch

SEED = 0

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: one thread each (children inherit it) instead of every
    # worker spreading over every core and the workers fighting for them.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.scope != "function":
        seed_everything()
    yield


@pytest.fixture(autouse=True)
def _seed():
    seed_everything()
