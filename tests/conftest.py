"Shared tiny fixtures: a synthetic linear regression and a small two-class problem."
import os
os.environ.setdefault('MPLBACKEND', 'Agg')

import pytest
import torch
from torch import nn

from minilearn.data import DataLoaders


def regression_data(n=64, seed=0):
    "y = 3x - 1 plus a little noise, x and y of shape (n, 1)."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g)
    return x, 3 * x - 1 + 0.01 * torch.randn(n, 1, generator=g)


def blobs(n=100, seed=0):
    "Two Gaussian blobs in 2-D, labels 0/1."
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(n, 2, generator=g) + 2, torch.randn(n, 2, generator=g) - 2])
    return x, torch.cat([torch.zeros(n), torch.ones(n)]).long()


@pytest.fixture(autouse=True, scope='session')
def one_thread():
    "One torch thread: bit-identical results across processes, and on a shared 2-core machine no waiting."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def reg_dls():
    x, y = regression_data()
    return DataLoaders.from_tensors(x, y, valid_pct=0.25, bs=16, seed=0)


@pytest.fixture
def clf_dls():
    x, y = blobs()
    return DataLoaders.from_tensors(x, y, valid_pct=0.2, bs=32, seed=0)


def silent(learn):
    "Silence a learner's printing (returns it)."
    learn.logger = lambda *a, **k: None
    return learn
