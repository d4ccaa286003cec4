"""The framework's own cost per batch: `Learner` against the raw loop when the model, loss and optimizer cost ~nothing.

python bench/overhead.py          # 15 interleaved pairs, CPU time, prints µs per batch

With a real model the framework's few microseconds per batch hide under the model's time and the
machine's noise. Here the model returns its input, the loss is a fixed leaf tensor, and the optimizer
does nothing, so what is left is the loop itself: iteration, events, to_device, the Recorder and the
ProgressCallback. Both loops run in this process, interleaved; the clock is `time.process_time()`.
"""
import statistics, sys, time

import torch
from torch import nn

from minilearn.data import DataLoaders
from minilearn.learner import Learner

N_TRAIN, N_VALID, BS, EPOCHS = 2000, 500, 16, 3


class FreeOpt:
    "An optimizer that does nothing (the same interface the loop uses)."
    def __init__(self, params, lr): self.param_groups = [{'lr': lr, 'params': list(params)}]
    def step(self): pass
    def zero_grad(self, set_to_none=True): pass


class Identity(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
    def forward(self, x): return x


LEAF = torch.zeros((), requires_grad=True)
def free_loss(pred, targ): return LEAF           # backward of a leaf: the same few µs in both loops
def free_metric(pred, targ): return LEAF.detach()

def batches(n):
    return [(torch.zeros(BS, 8), torch.zeros(BS, 1)) for _ in range(n)]

def raw(train, valid):
    model = Identity()
    opt = FreeOpt(model.parameters(), 1e-3)
    t = time.process_time()
    for epoch in range(EPOCHS):
        model.train()
        for xb, yb in train:
            loss = free_loss(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        losses, metrics, sizes = [], [], []
        with torch.no_grad():
            for xb, yb in valid:
                pred = model(xb)
                losses.append(free_loss(pred, yb))
                metrics.append(free_metric(pred, yb))
                sizes.append(len(yb))
    return time.process_time() - t

def learner(train, valid, default_cbs=True):
    learn = Learner(Identity(), DataLoaders(train, valid), free_loss, opt_func=FreeOpt, metrics=[free_metric],
                    default_cbs=default_cbs)
    if default_cbs: learn.progress.show_bar = False
    t = time.process_time()
    with learn.no_logging(): learn.fit(EPOCHS)
    return time.process_time() - t

def main(repeats: int = 15):
    torch.set_num_threads(1)
    train, valid = batches(N_TRAIN), batches(N_VALID)
    n = EPOCHS * (N_TRAIN + N_VALID)
    full, bare = [], []
    for i in range(repeats):
        a, b, c = raw(train, valid), learner(train, valid), learner(train, valid, default_cbs=False)
        full.append((b - a) / n * 1e6)
        bare.append((c - a) / n * 1e6)
    for name, xs in (('Learner, default callbacks', full), ('Learner, no callbacks', bare)):
        print(f'{name}: {statistics.median(xs):.1f} µs/batch more than the raw loop '
              f'(median of {repeats}; min {min(xs):.1f}, max {max(xs):.1f})')

if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
