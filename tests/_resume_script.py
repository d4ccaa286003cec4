"""Fits for the checkpoint tests, run in fresh processes (the leading underscore keeps pytest from collecting it).

    python tests/_resume_script.py resume N_EPOCH DIR=FIT...  for each DIR, resume the newest checkpoint in DIR/models with
                                                            learn.fit or learn.fit_one_cycle (FIT: fit, one_cycle);
                                                            write DIR/resumed.pth
    python tests/_resume_script.py sigterm DIR              a long fit with Checkpoint; prints READY after 5 steps
    python tests/_resume_script.py killloop DIR N SEED      N fits, each resuming the last and killed with SIGKILL at random

The test modules import `make_learner`, `StopAt`, `summary` and `assert_same_fit` from here, so both sides build
the same fit and compare it the same way.
"""
import json, os, random, signal, sys, time, traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minilearn.core import Callback, CancelFitException
from minilearn.data import DataLoaders
from minilearn.learner import Learner, safe_load
from minilearn.metrics import accuracy
from minilearn.checkpoint import Checkpoint, newest_checkpoint

N_BATCHES = 12     # training batches per epoch of make_learner's data


class Jitter(Callback):
    "Adds noise drawn from Python's and numpy's global generators to each training batch (both must be restored)."
    def before_batch(self):
        if self.learn.training: self.learn.xb = self.learn.xb + 0.01 * (random.random() + float(np.random.rand()))


class StopAt(Callback):
    "Cancels the fit after `steps` optimizer steps or `epochs` epochs; runs after Checkpoint has written."
    order = 200
    def __init__(self, steps=None, epochs=None): self.steps, self.epochs = steps, epochs
    def after_batch(self):
        if self.steps is not None and self.learn.train_iter == self.steps: raise CancelFitException()
    def after_epoch(self):
        if self.epochs is not None and self.learn.epoch + 1 == self.epochs: raise CancelFitException()


class Ready(Callback):
    "After `n` steps, prints READY and waits until the Checkpoint's handler has seen a signal; then the batch goes on."
    def __init__(self, n=5): self.n = n
    def after_step(self):
        if self.learn.train_iter == self.n:
            print('READY', flush=True)
            # not signal.pause(): a signal that arrives between the print and the pause would leave it waiting forever
            deadline = time.monotonic() + 60
            while self.learn.checkpoint._signal is None and time.monotonic() < deadline: time.sleep(0.01)


def make_learner(path, seed=0, cbs=()):
    "A small classifier with BatchNorm (buffers), Dropout (torch RNG) and Jitter (Python and numpy RNGs); Adam."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch.manual_seed(seed); random.seed(seed); np.random.seed(seed)
    model = nn.Sequential(nn.Linear(6, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Dropout(0.25), nn.Linear(24, 3))
    learn = Learner(model, DataLoaders.from_tensors(x, y, bs=16, seed=0), nn.CrossEntropyLoss(), lr=3e-3,
                    metrics=[accuracy], path=path, cbs=[Jitter(), *cbs])
    learn.logger = lambda *a, **k: None
    return learn


def summary(learn) -> dict:
    "What must be equal between a straight fit and a resumed one."
    rec = learn.recorder
    return {'model': learn.model.state_dict(), 'opt': learn.opt.state_dict(), 'train_iter': learn.train_iter,
            'history': {k: v for k, v in rec.history.items() if k != 'time'}, 'losses': rec.losses, 'lrs': rec.lrs}


def assert_same_fit(a: dict, b: dict):
    "Every parameter, buffer and optimizer state tensor torch.equal; the same history, losses and lrs."
    assert a['train_iter'] == b['train_iter']
    assert a['model'].keys() == b['model'].keys()
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    sa, sb = a['opt']['state'], b['opt']['state']
    assert sa.keys() == sb.keys() and len(sa) == 6
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for k in sa[i]: assert torch.equal(sa[i][k], sb[i][k]), (i, k)
    assert a['opt']['param_groups'] == b['opt']['param_groups']
    assert repr(a['history']) == repr(b['history'])        # repr: exact for floats, and nan equals nan
    assert a['losses'] == b['losses'] and a['lrs'] == b['lrs']


def _kill_child(folder: Path):
    resume = True if newest_checkpoint(folder / 'models') else None
    learn = make_learner(folder, seed=0 if resume is None else 1)   # a resumed fit gets its weights from the file
    learn.fit(10**5, cbs=[Checkpoint(every_epochs=None, every_steps=1)], resume=resume)


def kill_loop(folder: Path, n: int, seed: int) -> list[dict]:
    "Fork `n` fits one after another; each resumes the newest checkpoint and is killed with SIGKILL at random."
    make_learner(folder / 'warm-up').fit(1)    # the first fit imports torch._dynamo (seconds): not in every child
    rng, out = random.Random(seed), []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:                                   # the child: never returns into the parent's code
            code = 3                                   # 3: the fit ended by itself, which it should not
            try: _kill_child(folder)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        tmp_left = any(p.suffix == '.tmp' for p in (folder / 'models').glob('.*'))
        ck = newest_checkpoint(folder / 'models')
        out.append({'killed': os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
                    'exit': os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, 'tmp_left': tmp_left,
                    'train_iter': None if ck is None else safe_load(ck)['train_iter']})
    return out


if __name__ == '__main__':
    torch.set_num_threads(1)
    mode = sys.argv[1]
    folder = Path(sys.argv[2])                     # (resume: N_EPOCH)
    if mode == 'resume':
        import minilearn.schedule                     # attaches fit_one_cycle
        for spec in sys.argv[3:]:
            folder, how = spec.split('=')
            learn = make_learner(folder, seed=1)     # other initial weights: the checkpoint must replace them
            n_epoch = int(sys.argv[2])
            if how == 'one_cycle': learn.fit_one_cycle(n_epoch, 1e-2, resume=True)
            else: learn.fit(n_epoch, resume=True)
            torch.save(summary(learn), Path(folder) / 'resumed.pth')
    elif mode == 'sigterm':
        learn = make_learner(folder, cbs=[Ready()])
        learn.logger = lambda *a, **k: print(*a, file=sys.stderr, flush=True)
        learn.progress.show_bar = False
        learn.fit(10**5, cbs=[Checkpoint(every_epochs=None)])
    elif mode == 'killloop':
        print(json.dumps(kill_loop(folder, int(sys.argv[3]), int(sys.argv[4]))))
    else: sys.exit(f'unknown mode {mode!r}')
