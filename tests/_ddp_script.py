"One process of a 2-process test in tests/test_distributed.py: python _ddp_script.py SCENARIO OUT_DIR."
import os, sys
from pathlib import Path

import torch
from torch import nn

from minilearn.core import Callback, CancelFitException
from minilearn.data import DataLoaders
from minilearn.learner import Learner
from minilearn.metrics import accuracy

torch.set_num_threads(1)
scenario, out = sys.argv[1], Path(sys.argv[2])
rank = int(os.environ.get('RANK', '0'))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(320, 4, generator=g)
    y = (x @ torch.randn(4, 3, generator=g)).argmax(1)
    return x, y


def learner(bs=16, dropout=False, **kw):
    x, y = data()
    torch.manual_seed(0)
    dls = DataLoaders.from_tensors(x, y, valid_pct=0.2, bs=bs, seed=0)
    model = nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 3)) if dropout else nn.Linear(4, 3)
    return Learner(model, dls, nn.CrossEntropyLoss(), opt_func=torch.optim.SGD, lr=0.1,
                   metrics=[accuracy], path=out, **kw)


def result(learn, **extra):
    return {'model': learn.model.state_dict(), 'history': learn.recorder.history, 'train_iter': learn.train_iter,
            'stop_reason': learn.stop_reason, 'validate': learn.validate(), **extra}


class StopOnRank1(Callback):
    "A decision only one rank makes: rank 1 ends the fit after its 3rd training batch of epoch 1."
    def after_batch(self):
        if rank == 1 and self.learn.training and self.learn.epoch == 1 and self.learn.iter == 2:
            self.learn.stop_reason = 'rank 1 said stop'
            raise CancelFitException()


class NanOnRank1(Callback):
    "Rank 1's loss becomes NaN at batch 3 of the fit: only that rank sees it."
    def after_pred(self):
        if rank == 1 and self.learn.training and self.learn.iter == 3: self.learn.pred = self.learn.pred * float('nan')


class FailOnRank1(Callback):
    def after_loss(self):
        if rank == 1 and self.learn.iter == 3: raise RuntimeError('rank 1 failed')


if scenario == 'reference':            # one process, batch 32: what two ranks of batch 16 must reproduce
    learn = learner(bs=32)
    learn.fit(3)
    torch.save(result(learn), out / 'reference.pt')
elif scenario == 'weights':
    from minilearn.loggers import CSVLogger
    learn = learner()
    learn.path = out / f'files{rank}'          # only rank 0 may write anything here
    import minilearn.schedule                  # noqa: F401 (Learner.lr_find)
    suggested = learn.lr_find(num_it=12, show_plot=False)   # leaves no trace, so the fit below is unchanged
    learn.fit(3, cbs=[CSVLogger()])
    torch.save(result(learn, suggested=suggested.valley), out / f'rank{rank}.pt')
elif scenario == 'stops':
    from minilearn.stopping import Budget
    learn = learner()
    learn.fit(5, cbs=[Budget(max_steps=7)])
    first = (learn.train_iter, learn.stop_reason)
    learn.add_cb(StopOnRank1())
    learn.fit(5)
    second = (learn.train_iter, learn.stop_reason, learn.epoch)
    learn.remove_cb(learn.stop_on_rank1)
    from minilearn.stopping import EarlyStopping, TerminateOnNaN
    learn.fit(10, cbs=[EarlyStopping(monitor='accuracy', target=0.5)])
    third = (learn.train_iter, learn.stop_reason)
    learn.fit(2, cbs=[TerminateOnNaN(), NanOnRank1()])
    fourth = (learn.train_iter, learn.stop_reason, all(p.isfinite().all() for p in learn.model.parameters()))
    torch.save({'budget': first, 'rank1': second, 'early': third, 'nan': fourth, 'model': learn.model.state_dict()},
               out / f'rank{rank}.pt')
elif scenario == 'checkpoint':         # straight 4 epochs vs 2 epochs (last checkpoint mid-epoch) + resume
    from minilearn.checkpoint import Checkpoint
    straight = learner(dropout=True)
    straight.fit(4)
    class Rank0Count(Callback):                                        # a logger's kind: rank 0 only, with state
        main_process_only = True
        def __init__(self): self.n = 0
        def after_batch(self): self.n += 1
        def state_dict(self): return {'n': self.n}
        def load_state_dict(self, state): self.n = state['n']
    part = learner(dropout=True)
    part.fit(2, cbs=[Checkpoint(every_epochs=None, every_steps=5), Rank0Count()])   # last written at step 15: epoch 1, batch 6
    resumed = learner(dropout=True)
    resumed.fit(4, resume=True, cbs=[Rank0Count()])              # rank 1 has no Rank0Count state to load, and resumes
    opt_equal = all(torch.equal(a, b) for sa, sb in zip(straight.opt.state_dict()['state'].values(),
                                                         resumed.opt.state_dict()['state'].values())
                    for a, b in zip(sa.values(), sb.values()))
    torch.save({'straight': result(straight), 'resumed': result(resumed), 'opt_equal': opt_equal,
                'files': sorted(p.name for p in (out / 'models').iterdir())}, out / f'rank{rank}.pt')
elif scenario == 'accumulate':         # 2 ranks x batch 8 x 2 accumulated == 1 process x batch 32
    from minilearn.precision import GradientAccumulation
    syncs = []
    class CountSyncs(Callback):
        "Counts DDP's gradient all-reduces with a communication hook (installed after Distributed set DDP up)."
        def before_fit(self):
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
            def hook(state, bucket):
                syncs.append(1)
                return allreduce_hook(state, bucket)
            self.learn.distributed.ddp.register_comm_hook(None, hook)
    learn = learner(bs=8)
    learn.fit(3, cbs=[GradientAccumulation(2), CountSyncs()])
    torch.save(result(learn, syncs=len(syncs)), out / f'rank{rank}.pt')
elif scenario == 'workers':            # the reference's data through from_dsets, loaded by a worker process per rank
    x, y = data()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_valid = round(len(x) * 0.2)
    tr, va = perm[n_valid:], perm[:n_valid].sort().values
    learn = learner()
    TD = torch.utils.data.TensorDataset
    learn.dls = DataLoaders.from_dsets(TD(x[tr], y[tr]), TD(x[va], y[va]), bs=16, seed=0, num_workers=1)
    learn.fit(3)
    torch.save(result(learn), out / f'rank{rank}.pt')
elif scenario == 'error':
    learn = learner(cbs=[FailOnRank1()])
    learn.fit(3)
else:
    raise SystemExit(f'unknown scenario {scenario}')

# leave together: a rank that exits while the other still holds the connection can abort in gloo's threads
import torch.distributed as dist
if dist.is_available() and dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
