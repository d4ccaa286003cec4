"""Fits over a dataset with random augmentation, loaded by from_dsets in worker processes (issue 18).

    python tests/_workers_script.py straight DIR WORKERS     an uninterrupted fit; writes DIR/final.pt
    python tests/_workers_script.py killed DIR WORKERS       checkpoints every 3 steps and SIGKILLs itself after step 10
    python tests/_workers_script.py resume DIR WORKERS       resumes the newest checkpoint in DIR; writes DIR/final.pt
"""
import os, signal, sys
from pathlib import Path

import torch
from torch import nn

from minilearn.core import Callback
from minilearn.data import DataLoaders
from minilearn.learner import Learner
from minilearn.checkpoint import Checkpoint


class Noisy(torch.utils.data.Dataset):
    "Regression items with augmentation drawn from torch's global generator, as a transform would."
    def __init__(self, n=96):
        g = torch.Generator().manual_seed(0)
        self.x, self.w = torch.randn(n, 4, generator=g), torch.randn(4, 1, generator=g)
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        x = self.x[i] + 0.1 * torch.randn(4)             # random augmentation inside the dataset
        return x, x @ self.w


class KillAt(Callback):
    order = 200                                          # after Checkpoint wrote
    def after_batch(self):
        if self.learn.training and self.learn.train_iter == 10: os.kill(os.getpid(), signal.SIGKILL)


def make(folder, workers):
    torch.manual_seed(0)
    dls = DataLoaders.from_dsets(Noisy(), Noisy(32), bs=16, seed=3, num_workers=workers)
    learn = Learner(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), dls, nn.MSELoss(), path=folder)
    learn.logger = lambda *a, **k: None
    return learn


if __name__ == '__main__':
    torch.set_num_threads(1)
    mode, folder, workers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    learn = make(folder, workers)
    if mode == 'straight': learn.fit(3)
    elif mode == 'killed': learn.fit(3, cbs=[Checkpoint(every_epochs=None, every_steps=3), KillAt()])
    elif mode == 'resume': learn.fit(3, cbs=[Checkpoint(every_epochs=None, every_steps=3)], resume=True)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in learn.model.state_dict().items()}, folder / 'final.pt')
