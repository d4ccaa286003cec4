"From a trained model to a used one (issue 19): parameter groups, freezing, fine_tune, weight decay, a model-following optimizer, export, seeds, summary."
import math, os, subprocess, sys

import pytest
import torch
from torch import nn

from minilearn.core import Callback
from minilearn.data import DataLoaders, set_seed
from minilearn.learner import Learner
from minilearn.metrics import accuracy
from minilearn.use import load_exported
from conftest import silent


def blobs(n=240, classes=(0, 1, 2), seed=0):
    "Points around one centre per class in 4-d; the same centres for every call."
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 4, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.tensor(classes)[torch.randint(0, len(classes), (n,), generator=g)]
    return centres[y] + torch.randn(n, 4, generator=g), y


class Net(nn.Module):
    def __init__(self, n_out=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, n_out)
    def forward(self, x): return self.head(self.body(x))

body_head = lambda m: [list(m.body.parameters()), list(m.head.parameters())]


class Snap(Callback):
    "After each epoch: which parameters changed during it, and each group's lr at every training batch."
    order = 50
    def before_fit(self): self.changed, self.lrs, self._w = [], [], self._now()
    def _now(self): return {k: v.detach().clone() for k, v in self.learn.model.state_dict().items()}
    def before_batch(self):
        if self.learn.training: self.lrs.append([g['lr'] for g in self.learn.opt.param_groups])
    def after_epoch(self):
        now = self._now()
        self.changed.append({k for k in now if not torch.equal(now[k], self._w[k])})
        self._w = now


def one_cycle_lr(pct, lr_max, div, div_final=1e5, pct_start=0.25):
    if pct < pct_start: lo, hi, p = lr_max / div, lr_max, pct / pct_start
    else: lo, hi, p = lr_max, lr_max / div_final, (pct - pct_start) / (1 - pct_start)
    return lo + (1 - math.cos(math.pi * p)) * (hi - lo) / 2


def test_fine_tune_freezes_the_body_then_trains_everything_at_fastais_rates():
    torch.manual_seed(0)
    pre = silent(Learner(Net(), DataLoaders.from_tensors(*blobs(classes=(0, 1, 2)), bs=32), nn.CrossEntropyLoss(), lr=1e-2))
    pre.fit(2)                                                            # a "pretrained" body, on classes 0-2
    model = Net()
    model.body.load_state_dict(pre.model.body.state_dict())
    learn = silent(Learner(model, DataLoaders.from_tensors(*blobs(classes=(3, 4, 5), seed=1), bs=32), nn.CrossEntropyLoss(),
                           splitter=body_head, metrics=[accuracy]))
    learn.model.head = nn.Linear(16, 6)                                   # six outputs: classes 3-5 of six
    snaps = []
    class Phase(Snap):
        def after_fit(self): snaps.append((self.changed, self.lrs))
    learn.add_cb(Phase())
    learn.fine_tune(2, base_lr=2e-3, freeze_epochs=1)
    (frozen_changed, frozen_lrs), (free_changed, free_lrs) = snaps
    body_weights = {'body.0.weight', 'body.0.bias'}
    assert not frozen_changed[0] & body_weights                           # the body's Linear did not move...
    assert {'body.1.weight', 'body.1.bias', 'head.weight', 'head.bias'} <= frozen_changed[0]   # ...its norm and the head did
    assert all(body_weights | {'head.weight'} <= c for c in free_changed) # then everything trains
    n = len(learn.dls.train)
    for i, lrs in enumerate(frozen_lrs):                                  # slice(2e-3): 2e-4 body, 2e-3 head; pct_start 0.99
        pct = i / n
        assert lrs[0] == pytest.approx(one_cycle_lr(pct, 2e-4, 25, pct_start=0.99), abs=1e-9)
        assert lrs[-1] == pytest.approx(one_cycle_lr(pct, 2e-3, 25, pct_start=0.99), abs=1e-9)
    for i, lrs in enumerate(free_lrs):                                    # slice(1e-3 / 100, 1e-3), div 5, pct_start 0.3
        pct = i / (2 * n)
        assert lrs[0] == pytest.approx(one_cycle_lr(pct, 1e-5, 5, pct_start=0.3), abs=1e-9)
        assert lrs[-1] == pytest.approx(one_cycle_lr(pct, 1e-3, 5, pct_start=0.3), abs=1e-9)
    assert learn.recorder.history['accuracy'][-1] > 0.4                # it learned something (chance: 1/3)


def test_slice_and_list_lrs_in_fit_one_cycle():
    for lr_max, want in [(slice(1e-4, 1e-2), [1e-4, 1e-2]), ([3e-3, 3e-2], [3e-3, 3e-2]), (slice(1e-2), [1e-3, 1e-2])]:
        learn = silent(Learner(Net(), DataLoaders.from_tensors(*blobs(n=320), bs=32), nn.CrossEntropyLoss(), splitter=body_head))
        snap = Snap()                                                     # 256 training rows: 8 batches
        learn.fit_one_cycle(1, lr_max, cbs=[snap])
        peak = snap.lrs[len(learn.dls.train) // 4]                         # pct_start 0.25: the peak is batch 2
        assert peak == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match='3 learning rates for 2'):
        Learner(Net(), DataLoaders.from_tensors(*blobs()), nn.CrossEntropyLoss(), splitter=body_head, lr=[1e-3] * 3)


def test_a_new_head_after_a_fit_is_trained_and_said():
    learn = Learner(Net(), DataLoaders.from_tensors(*blobs(), bs=32), nn.CrossEntropyLoss())
    msgs = []
    learn.logger = msgs.append
    learn.fit(1)
    learn.model.head = nn.Linear(16, 3)
    w = learn.model.head.weight.detach().clone()
    kept = {id(p) for p in learn.model.body.parameters()}
    learn.fit(1)
    assert not torch.equal(learn.model.head.weight, w)
    assert any('a new optimizer was made' in m for m in msgs)
    assert all(learn.opt.state[p] for p in learn.model.body.parameters() if id(p) in kept)   # Adam's moments kept


def test_weight_decay_leaves_biases_and_norms_out():
    model = Net()
    learn = silent(Learner(model, DataLoaders.from_tensors(*blobs()), nn.CrossEntropyLoss(), wd=0.1))
    learn.fit(1)
    decay = {id(p): g['weight_decay'] for g in learn.opt.param_groups for p in g['params']}
    assert decay[id(model.body[0].weight)] == decay[id(model.head.weight)] == 0.1
    for p in (model.body[0].bias, model.body[1].weight, model.body[1].bias, model.head.bias): assert decay[id(p)] == 0
    everything = silent(Learner(Net(), DataLoaders.from_tensors(*blobs()), nn.CrossEntropyLoss(), wd=0.1, wd_bn_bias=True))
    everything.fit(1)
    assert all(g['weight_decay'] == 0.1 for g in everything.opt.param_groups)


def test_export_loads_in_a_fresh_process_without_the_model_class(tmp_path):
    learn = silent(Learner(Net(), DataLoaders.from_tensors(*blobs(), bs=32), nn.CrossEntropyLoss(), path=tmp_path,
                           vocab=['ant', 'bee', 'cat']))
    learn.fit(1)
    path = learn.export()
    x = torch.randn(7, 4)
    torch.save(x, tmp_path / 'x.pt')
    code = ('import sys, torch; from minilearn.use import load_exported; '
            f'm = load_exported({str(path)!r}); x = torch.load({str(tmp_path / "x.pt")!r}); '
            'probs, labels = m.predict(x); torch.save({"out": m(x), "probs": probs, "labels": labels}, '
            f'{str(tmp_path / "out.pt")!r}); print(sorted(k for k in sys.modules if "test_use" in k or "conftest" in k))')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == '[]'                                       # the model's module was never imported
    got = torch.load(tmp_path / 'out.pt')
    learn.model.eval()
    with torch.no_grad(): want = learn.model(x)
    assert torch.allclose(got['out'], want, atol=1e-5) and torch.allclose(got['probs'], want.softmax(-1), atol=1e-5)
    assert got['labels'] == [['ant', 'bee', 'cat'][i] for i in want.argmax(-1).tolist()]


def test_a_hostile_export_file_is_refused_and_runs_nothing(tmp_path):
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {tmp_path}/pwned',))
    torch.save({'format': 'minilearn.export', 'version': 1, 'program': Evil(), 'meta': '{}'}, tmp_path / 'evil.pt2')
    with pytest.raises(ValueError, match='could run code'): load_exported(tmp_path / 'evil.pt2')
    assert not (tmp_path / 'pwned').exists()


def test_set_seed_changes_the_split_and_the_same_seed_repeats_the_fit():
    x, y = blobs()
    def fit(seed):
        set_seed(seed)
        learn = silent(Learner(Net(), DataLoaders.from_tensors(x, y, bs=32), nn.CrossEntropyLoss()))
        learn.fit(1)
        return learn.dls.valid.idxs, learn.model.state_dict()
    try:
        (s1, w1), (s2, _), (s1b, w1b) = fit(1), fit(2), fit(1)
        assert not torch.equal(s1, s2) and torch.equal(s1, s1b)
        assert all(torch.equal(w1[k], w1b[k]) for k in w1)
        set_seed(2)
        assert torch.equal(DataLoaders.from_tensors(x, y, seed=1).valid.idxs, s1)   # an explicit seed still wins
    finally: set_seed(0)


def test_summary_counts_and_changes_nothing():
    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv2d(2, 5, 3, padding=1), nn.BatchNorm2d(5), nn.Linear(5 * 6 * 6, 4)
        def forward(self, x): return self.head(self.bn(self.conv(x)).relu().flatten(1))
    g = torch.Generator().manual_seed(0)
    learn = silent(Learner(CNN(), DataLoaders.from_tensors(torch.randn(50, 2, 6, 6, generator=g),
                                                           torch.randint(0, 4, (50,), generator=g), bs=16),
                           nn.CrossEntropyLoss()))
    learn.fit(1)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    rng, loop = torch.get_rng_state(), (learn.training, learn.xb, learn.yb, learn.n_targ)
    text = learn.summary()
    assert (learn.training, learn.xb, learn.yb, learn.n_targ) == loop
    rows = {l.split()[0]: l.split()[1:] for l in text.splitlines() if l.split() and l.split()[0] in ('conv', 'bn', 'head')}
    assert rows['conv'] == ['Conv2d', '10', 'x', '5', 'x', '6', 'x', '6', str(5 * 2 * 9 + 5)]
    assert rows['bn'][-1] == '10' and rows['head'] == ['Linear', '10', 'x', '4', str(180 * 4 + 4)]
    assert f'parameters: {95 + 10 + 724:,} ({95 + 10 + 724:,} trainable, 0 frozen)' in text
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())

def test_an_export_that_cannot_trace_says_why_and_writes_nothing_to_stderr(tmp_path, capfd):
    class Branchy(nn.Linear):                      # data-dependent control flow: torch.export cannot trace it
        def forward(self, x): return super().forward(x) if x.sum() > 0 else -super().forward(x)
    learn = Learner(Branchy(3, 2), DataLoaders.from_tensors(torch.randn(20, 3), torch.randint(0, 2, (20,)), bs=4),
                    nn.CrossEntropyLoss(), path=tmp_path)
    capfd.readouterr()
    with pytest.raises(ValueError, match='learn.save') as e: learn.export()
    assert capfd.readouterr().err == ''           # torch printed its partial graph to stderr; it is on the cause instead
    assert hasattr(e.value.__cause__, 'partial_fx_graph')
    assert not list(tmp_path.glob('*.pt2'))
