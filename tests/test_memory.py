"Memory: `from_tensors` holds no copy of the data; per-batch recording keeps small detached tensors, not graphs."
import gc, weakref

import torch
from torch import nn

from minilearn.core import Callback
from minilearn.data import DataLoaders, TensorLoader
from minilearn.learner import Learner


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([[1.], [-2.], [0.5]]) + 0.1


def test_from_tensors_shares_the_tensors():
    x, y = _data()
    dls = DataLoaders.from_tensors(x, y, valid_pct=0.25, bs=8)
    for dl in (dls.train, dls.valid):
        assert dl.x.data_ptr() == x.data_ptr() and dl.y.data_ptr() == y.data_ptr()
        assert dl.x.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    # no copy means a change to x shows in the next batches served
    x[:] = 7.
    assert all((xb == 7.).all() for xb, _ in dls.train) and all((xb == 7.).all() for xb, _ in dls.valid)


def test_unshuffled_whole_loader_serves_views():
    x, y = _data(20)
    xb, yb = next(iter(TensorLoader(x, y, bs=8)))
    assert xb._base is x and yb._base is y                       # slices of the tensors, no indexing copy
    assert xb.data_ptr() == x.data_ptr() and yb.data_ptr() == y.data_ptr()


class _Probe(Callback):
    "After the Recorder (order -10): keeps weak references to every training loss and checks what was recorded."
    order = 0
    def before_fit(self): self.refs, self.checked, self.graphs = [], [], []
    def after_batch(self):
        if not self.learn.training: return
        self.refs.append(weakref.ref(self.learn.loss))
        self.graphs.append(self.learn.loss.grad_fn is not None)
        if self.learn.iter + 1 < self.learn.n_iter: return
        # the last batch of the pass: read the Recorder's per-batch buffer (the thing under test) before
        # its after_train consumes it
        rec = self.learn.recorder._losses
        assert len(rec) == self.learn.n_iter
        for t in rec:
            assert isinstance(t, torch.Tensor) and t.numel() == 1
            assert t.grad_fn is None and not t.requires_grad
        self.checked.append(len(rec))


def test_recording_keeps_no_graph():
    x, y = _data()
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 1))
    probe = _Probe()
    learn = Learner(model, DataLoaders.from_tensors(x, y, bs=8), nn.MSELoss(), cbs=[probe])
    with learn.no_logging(): learn.fit(2)
    assert probe.checked == [len(learn.dls.train)] * 2
    assert all(probe.graphs)                     # the loss of a training batch carries its graph...
    gc.collect()
    alive = [r for r in probe.refs if r() is not None]
    assert len(probe.refs) == 2 * len(learn.dls.train)
    # ...yet once the loop moves on, no earlier batch's loss (and so its graph) is kept alive
    assert len(alive) <= 1, f'{len(alive)} training losses (with their graphs) are still referenced'
    assert len(learn.recorder.losses) == len(probe.refs) and all(isinstance(v, float) for v in learn.recorder.losses)
