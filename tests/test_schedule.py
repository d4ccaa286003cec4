"Tests of minilearn.schedule: schedules, ParamScheduler, fit_one_cycle/fit_flat_cos, lr_find and its suggestions."
import copy, math, os, random

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from minilearn.core import Callback
from minilearn.data import DataLoaders, TensorLoader
from minilearn.learner import Learner
from minilearn.schedule import (LRFinder, ParamScheduler, SuggestedLRs, combine_scheds, minimum, one_cycle_scheds,
                                sched_cos, sched_exp, sched_lin, sched_no, slide, steep, valley)


# ----- fixtures --------------------------------------------------------------------------------------
def quiet(learn):
    learn.logger = lambda *a, **k: None
    return learn

def line_learner(opt_func=torch.optim.SGD, lr=0.1, n=160, bs=16, model=None, **kwargs):
    "y = 3x - 1 + noise; 128 training rows in batches of 16: 8 batches per epoch."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, generator=g)
    y = 3 * x - 1 + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(0)
    return quiet(Learner(model or nn.Linear(1, 1), DataLoaders.from_tensors(x, y, valid_pct=0.2, bs=bs),
                         nn.MSELoss(), opt_func=opt_func, lr=lr, **kwargs))

def regression_learner(lr=0.1, seed=0):
    "8 standard-normal features, a linear target, SGD: the MSE Hessian is about 2I, so good lrs are about 0.2-0.5."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(512, 1, generator=g)
    torch.manual_seed(seed)
    return quiet(Learner(nn.Linear(8, 1), DataLoaders.from_tensors(x, y, valid_pct=0.25, bs=32), nn.MSELoss(),
                         opt_func=torch.optim.SGD, lr=lr))

def bn_learner(path='.', seed=1):
    "A BatchNorm1d model trained with Adam (defaults): running stats, num_batches_tracked, Adam moments; dropout draws from torch's RNG."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([[1.], [-2.], [0.5], [3.]]) + 0.1
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))
    return quiet(Learner(model, DataLoaders.from_tensors(x, y, bs=32), nn.MSELoss(), path=path))

class Spy(Callback):
    "Records pct_train and a copy of every param group before each training batch (after the scheduler)."
    def before_fit(self): self.seen = []
    def before_batch(self):
        if self.learn.training:
            self.seen.append((self.learn.pct_train, [dict(g, params=None) for g in self.learn.opt.param_groups]))

class BatchCounter(Callback):
    "Counts what it sees into lists owned by the test (outside the learner, so the restore cannot undo them)."
    def __init__(self, log): self.log, self.count = log, 0
    def before_epoch(self): self.log.append('epoch')
    def after_batch(self):
        self.count += 1
        random.random(), np.random.rand()                  # draws from the global Python and numpy RNGs
        self.log.append('train' if self.learn.training else 'valid')

class Interrupt(Callback):
    "Raises `exc` in `event` at the `at`-th lr_find batch."
    def __init__(self, exc, at, event='after_batch', log=None):
        self.exc, self.at, self.event, self.log, self.n = exc, at, event, log if log is not None else [], 0
    def _maybe(self, event):
        if event != self.event or getattr(self.learn, 'lr_finder', None) is None or not self.learn.training: return
        if event in ('after_batch', 'before_batch'): self.n += 1
        if self.n >= self.at or event not in ('after_batch', 'before_batch'):
            self.log.append(len(self.learn.lr_finder.lrs))
            raise self.exc
    def before_batch(self): self._maybe('before_batch')
    def after_batch(self): self._maybe('after_batch')
    def before_step(self): self._maybe('before_step')
    def after_loss(self): self._maybe('after_loss')

def listing(*dirs):
    return [sorted((os.path.relpath(r, d), sorted(ds), sorted(fs)) for r, ds, fs in os.walk(d)) for d in dirs]

def state_of(learn):
    "Everything lr_find must leave as it was, as comparable copies."
    opt = learn.opt
    return dict(
        model={k: v.clone() for k, v in learn.model.state_dict().items()},
        grads=[None if p.grad is None else p.grad.clone() for p in learn.model.parameters()],
        modes=[m.training for m in learn.model.modules()],
        opt=None if opt is None else {
            'groups': [{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups],
            'state': [{k: v.clone() for k, v in s.items()} for s in opt.state.values()]},
        opt_id=id(opt),
        recorder=copy.deepcopy(learn.recorder.state_dict()),
        last_valid=dict(learn.recorder.last_valid),
        counters={k: getattr(learn, k) for k in ('epoch', 'n_epoch', 'iter', 'n_iter', 'train_iter', 'pct_train',
                                                  'training', 'stop_reason', 'fit_exception', 'start_epoch',
                                                  'start_iter', 'resume', 'lr', 'logger')},
        cbs=list(learn.cbs), attrs=sorted(learn.__dict__),
        loader=learn.dls.train.state_dict(),
        rng=(torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()))

def assert_same(a, b):
    assert a.keys() == b.keys()
    assert a['model'].keys() == b['model'].keys()
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    assert len(a['grads']) == len(b['grads'])
    for x, y in zip(a['grads'], b['grads']): assert (x is None and y is None) or torch.equal(x, y)
    assert a['modes'] == b['modes']
    assert (a['opt'] is None) == (b['opt'] is None)
    if a['opt'] is not None:
        assert a['opt']['groups'] == b['opt']['groups']
        assert len(a['opt']['state']) == len(b['opt']['state'])
        for s, t in zip(a['opt']['state'], b['opt']['state']):
            assert s.keys() == t.keys()
            for k in s: assert torch.equal(s[k], t[k]), k
    assert a['opt_id'] == b['opt_id']
    assert a['recorder'] == b['recorder'] and a['last_valid'] == b['last_valid']
    assert a['counters'] == b['counters']
    assert all(x is y for x, y in zip(a['cbs'], b['cbs'])) and len(a['cbs']) == len(b['cbs'])
    assert a['attrs'] == b['attrs']
    assert a['loader']['pos'] == b['loader']['pos'] and torch.equal(a['loader']['rng'], b['loader']['rng'])
    assert torch.equal(a['rng'][0], b['rng'][0]) and a['rng'][1] == b['rng'][1]
    assert np.array_equal(a['rng'][2], b['rng'][2])

@pytest.fixture
def dirs(tmp_path, monkeypatch):
    "learn.path and the working directory, both fresh, for the no-new-file checks."
    path, cwd = tmp_path / 'learn', tmp_path / 'cwd'
    path.mkdir(); cwd.mkdir()
    (path / 'models').mkdir()
    monkeypatch.chdir(cwd)
    return path, cwd

@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close('all')


# ----- schedules -------------------------------------------------------------------------------------
def test_schedules_follow_their_formulas():
    for pct in (0., 0.1, 0.5, 0.9, 1.):
        assert sched_lin(2., 6.)(pct) == pytest.approx(2 + 4 * pct, abs=1e-12)
        assert sched_cos(2., 6.)(pct) == pytest.approx(2 + 4 * (1 - math.cos(math.pi * pct)) / 2, abs=1e-12)
        assert sched_exp(1e-4, 1e-1)(pct) == pytest.approx(1e-4 * 1000 ** pct, rel=1e-12)
        assert sched_no(3., 9.)(pct) == 3.
    assert sched_cos(2., 6.)(-0.5) == 2. and sched_cos(2., 6.)(1.5) == 6.     # pct is clipped
    per_group = sched_lin([1e-3, 1e-2], [1e-1, 1.])(0.5)
    assert isinstance(per_group, np.ndarray) and np.allclose(per_group, [0.0505, 0.505], atol=1e-15)

def test_schedules_refuse_bad_values():
    with pytest.raises(ValueError, match='start must be positive'): sched_exp(0., 1.)
    with pytest.raises(ValueError, match='end must be positive'): sched_exp(1., -1.)
    with pytest.raises(TypeError, match='must be a number'): sched_lin('0.1', 1.)
    with pytest.raises(ValueError, match='finite'): sched_cos(math.nan, 1.)
    with pytest.raises(ValueError, match='flat, non-empty'): sched_lin([[1., 2.]], 1.)

def test_combine_scheds_boundaries():
    f = combine_scheds([0.3, 0.7], [sched_lin(0., 1.), sched_lin(10., 20.)])
    assert f(0.) == 0.
    assert f(math.nextafter(0.3, 0.)) == pytest.approx(1., abs=1e-12)      # the end of the first phase
    assert f(0.3) == 10.                                                   # the boundary: the second phase starts
    assert f(0.65) == pytest.approx(15., abs=1e-12)
    assert f(1.) == 20. and f(1.2) == 20.
    three = combine_scheds([0.25, 0., 0.75], [sched_no(1.), sched_no(2.), sched_no(3.)])
    assert [three(p) for p in (0., 0.2, 0.25, 0.9, 1.)] == [1., 1., 3., 3., 3.]   # the empty phase never shows
    ends_empty = combine_scheds([1., 0.], [sched_lin(0., 1.), sched_no(5.)])
    assert ends_empty(1.) == 1.

def test_combine_scheds_refuses_bad_fractions():
    with pytest.raises(ValueError, match='add up to 1'): combine_scheds([0.5, 0.6], [sched_no(1.), sched_no(1.)])
    with pytest.raises(ValueError, match='one fraction per schedule'): combine_scheds([1.], [sched_no(1.), sched_no(1.)])
    with pytest.raises(ValueError, match='between 0 and 1'): combine_scheds([-0.5, 1.5], [sched_no(1.), sched_no(1.)])
    with pytest.raises(TypeError, match='callable'): combine_scheds([1.], [3.])


# ----- ParamScheduler, fit_one_cycle, fit_flat_cos ---------------------------------------------------
def one_cycle_lr(pct, lr_max, div=25., div_final=1e5, pct_start=0.25):
    "The 1cycle formula, written out independently."
    if pct < pct_start:
        p, lo, hi = pct / pct_start, lr_max / div, lr_max
    else:
        p, lo, hi = (pct - pct_start) / (1 - pct_start), lr_max, lr_max / div_final
    return lo + (hi - lo) * (1 - math.cos(math.pi * p)) / 2

def one_cycle_mom(pct, moms=(0.95, 0.85, 0.95), pct_start=0.25):
    if pct < pct_start: p, lo, hi = pct / pct_start, moms[0], moms[1]
    else: p, lo, hi = (pct - pct_start) / (1 - pct_start), moms[1], moms[2]
    return lo + (hi - lo) * (1 - math.cos(math.pi * p)) / 2

def test_one_cycle_start_peak_end_match_the_formulas():
    learn, spy = line_learner(lr=0.2), Spy()
    learn.fit_one_cycle(2, lr_max=0.2, pct_start=0.25, cbs=[spy])        # 16 batches: the peak is batch 4
    assert len(spy.seen) == 16
    (p0, g0), (p4, g4), (p15, g15) = spy.seen[0], spy.seen[4], spy.seen[15]
    assert (p0, p4, p15) == (0., 0.25, 15 / 16)
    assert abs(g0[0]['lr'] - 0.2 / 25) < 1e-9 and abs(g0[0]['momentum'] - 0.95) < 1e-9
    assert abs(g4[0]['lr'] - 0.2) < 1e-9 and abs(g4[0]['momentum'] - 0.85) < 1e-9
    assert abs(g15[0]['lr'] - one_cycle_lr(15 / 16, 0.2)) < 1e-9
    assert abs(g15[0]['momentum'] - one_cycle_mom(15 / 16)) < 1e-9
    for pct, groups in spy.seen:                                           # and every batch in between
        assert abs(groups[0]['lr'] - one_cycle_lr(pct, 0.2)) < 1e-9
        assert abs(groups[0]['momentum'] - one_cycle_mom(pct)) < 1e-9
    scheds = one_cycle_scheds(0.2)                                         # the end of the fit, pct = 1
    assert abs(scheds['lr'](1.) - 0.2 / 1e5) < 1e-9 and abs(scheds['mom'](1.) - 0.95) < 1e-9
    assert learn.recorder.lrs == [g[0]['lr'] for _, g in spy.seen]
    assert learn.recorder.hps['mom'] == [g[0]['momentum'] for _, g in spy.seen]
    assert learn.opt.param_groups[0]['lr'] == 0.2 and learn.opt.param_groups[0]['momentum'] == 0   # put back

def test_one_cycle_sets_adam_beta1_and_lr_max_defaults_to_learn_lr():
    learn, spy = line_learner(opt_func=torch.optim.Adam, lr=0.01), Spy()
    learn.fit_one_cycle(1, moms=(0.9, 0.8, 0.9), cbs=[spy])              # 8 batches: the peak is batch 2
    assert spy.seen[0][1][0]['betas'] == (0.9, 0.999)
    assert abs(spy.seen[2][1][0]['betas'][0] - 0.8) < 1e-9 and spy.seen[2][1][0]['betas'][1] == 0.999
    assert abs(spy.seen[2][1][0]['lr'] - 0.01) < 1e-9
    assert learn.opt.param_groups[0]['betas'] == (0.9, 0.999)

def test_fit_flat_cos():
    learn, spy = line_learner(lr=0.05), Spy()
    learn.fit_flat_cos(2, pct_start=0.5, cbs=[spy])
    lrs = [g[0]['lr'] for _, g in spy.seen]
    assert lrs[:8] == [0.05] * 8
    for pct, groups in spy.seen[8:]:
        p = (pct - 0.5) / 0.5
        assert abs(groups[0]['lr'] - (0.05 + (0.05 / 1e5 - 0.05) * (1 - math.cos(math.pi * p)) / 2)) < 1e-12
    assert 'mom' not in learn.recorder.hps or not learn.recorder.hps['mom']

def two_group_learner():
    model = nn.Sequential(nn.Linear(1, 4), nn.Linear(4, 1))
    opt_func = lambda params, lr: torch.optim.SGD([{'params': model[0].parameters()},
                                                   {'params': model[1].parameters()}], lr=lr, momentum=0.9)
    return line_learner(opt_func=opt_func, lr=0.01, model=model)

def test_per_group_lrs():
    learn, spy = two_group_learner(), Spy()
    learn.fit_one_cycle(1, lr_max=[1e-3, 1e-2], cbs=[spy])
    for pct, (body, head) in spy.seen:
        assert abs(body['lr'] - one_cycle_lr(pct, 1e-3)) < 1e-12
        assert abs(head['lr'] - one_cycle_lr(pct, 1e-2)) < 1e-12
        assert body['momentum'] == head['momentum']
    assert spy.seen[2][1][0]['lr'] == pytest.approx(1e-3, abs=1e-15) and spy.seen[2][1][1]['lr'] == pytest.approx(1e-2, abs=1e-15)
    learn.fit(1, cbs=[ParamScheduler({'lr': sched_lin([1e-4, 2e-4], [1e-3, 2e-3]), 'weight_decay': sched_no(1e-2)}), spy])
    for pct, (body, head) in spy.seen:
        assert abs(head['lr'] - 2 * body['lr']) < 1e-15 and body['weight_decay'] == head['weight_decay'] == 1e-2
    with pytest.raises(ValueError, match='gives 3 values but the optimizer has 2 parameter groups'):
        learn.fit(1, cbs=[ParamScheduler({'lr': sched_no([1e-3, 1e-3, 1e-3])})])
    assert learn.opt.param_groups[0]['lr'] == 0.01      # a refused schedule leaves the values as they were

def test_param_scheduler_depends_only_on_pct_train_and_records_hps():
    learn = line_learner()
    learn.fit(1)                                        # an earlier fit with no momentum schedule
    sched = combine_scheds([0.4, 0.6], [sched_lin(0.5, 0.9), sched_exp(0.9, 0.1)])
    spy = Spy()
    learn.fit(2, cbs=[ParamScheduler({'mom': sched}), spy])
    assert [g[0]['momentum'] for _, g in spy.seen] == [sched(p) for p, _ in spy.seen]
    moms = learn.recorder.hps['mom']
    assert len(moms) == len(learn.recorder.lrs) == 24
    assert all(math.isnan(m) for m in moms[:8]) and moms[8:] == [sched(p) for p, _ in spy.seen]
    fig = learn.recorder.plot_sched()
    assert [ax.get_ylabel() for ax in fig.axes] == ['lr', 'mom']

def test_param_scheduler_refuses_bad_input():
    learn = line_learner()
    with pytest.raises(ValueError, match="has no hyper-parameter 'betas2'"):
        learn.fit(1, cbs=[ParamScheduler({'betas2': sched_no(0.9)})])
    with pytest.raises(TypeError, match='non-empty dict'): ParamScheduler({})
    with pytest.raises(TypeError, match="schedule for 'lr' must be a callable"): ParamScheduler({'lr': 0.1})
    fresh = line_learner()
    for kwargs, msg in [({'pct_start': 1.5}, 'pct_start'), ({'div': 0}, 'div must be'),
                        ({'moms': (0.9, 0.8)}, 'moms must be three'), ({'lr_max': -1.}, 'lr_max must be positive'),
                        ({'lr_max': [1e-3, math.inf]}, 'finite')]:
        with pytest.raises(ValueError, match=msg): fresh.fit_one_cycle(1, **kwargs)
    with pytest.raises(ValueError, match='n_epoch'): fresh.fit_one_cycle(-1)
    with pytest.raises(ValueError, match='pct_start'): fresh.fit_flat_cos(1, pct_start=-0.1)
    assert fresh.opt is None and fresh.recorder.lrs == []       # refused before anything changed


def test_param_scheduler_cleans_up_when_an_earlier_callback_fails():
    class Fails(Callback):
        order = -30
        def before_fit(self): raise ValueError('no')
    learn = line_learner()
    with pytest.raises(ValueError, match='no') as info: learn.fit_one_cycle(1, cbs=[Fails()])
    assert not getattr(info.value, '__notes__', None)       # the scheduler's after_fit had nothing to undo
    assert learn.opt.param_groups[0]['lr'] == 0.1


# ----- lr_find: exact restore ------------------------------------------------------------------------
def test_lr_find_restores_everything_after_a_bn_adam_fit(dirs):
    path, cwd = dirs
    learn = bn_learner(path)
    log = []
    learn.add_cb(BatchCounter(log))
    learn.fit(2)
    before, files, count = state_of(learn), listing(path, cwd), learn.batch_counter.count
    log.clear()
    sugg = learn.lr_find(num_it=40, show_plot=False)
    assert_same(before, state_of(learn))
    assert listing(path, cwd) == files
    assert learn.batch_counter.count == count                 # the callback's own state is back too
    assert not hasattr(learn, 'lr_finder')
    n = len(learn.recorder.lr_find_lrs)
    assert log.count('train') == n and 'valid' not in log     # user callbacks saw the finder's batches
    assert learn.recorder.lr_find_lrs[0] == 1e-7 and len(learn.recorder.lr_find_losses) == n
    assert sugg._fields == ('valley',) and learn.recorder.lr_find_suggestions == sugg

def test_lr_find_leaves_no_trace_on_the_next_fit(dirs):
    "Oracle: a learner that ran lr_find trains exactly like its twin that did not."
    path, _ = dirs
    a, b = bn_learner(path), bn_learner(path)
    for learn in (a, b):
        torch.manual_seed(2)                                # the twins share the global RNG (dropout)
        learn.fit(1)
    torch.manual_seed(3)
    a.lr_find(num_it=30, show_plot=False)
    a.fit(1)
    torch.manual_seed(3)
    b.fit(1)
    sa, sb = a.recorder.state_dict(), b.recorder.state_dict()
    sa['history'].pop('time'), sb['history'].pop('time')
    assert sa == sb
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()): assert torch.equal(x, y)

@pytest.mark.parametrize('exc, event, at', [(KeyboardInterrupt, 'after_batch', 10), (KeyboardInterrupt, 'before_step', 1),
                                            (RuntimeError('boom'), 'after_loss', 1), (KeyboardInterrupt, 'before_batch', 25)])
def test_lr_find_restores_everything_when_interrupted(dirs, exc, event, at):
    path, cwd = dirs
    learn = bn_learner(path)
    learn.fit(1)
    log = []
    learn.add_cb(Interrupt(exc, at, event, log))
    before, files = state_of(learn), listing(path, cwd)
    with pytest.raises(exc if isinstance(exc, type) else type(exc)):
        learn.lr_find(num_it=50, show_plot=False)
    assert log == [at - 1]           # it ran up to that batch (the finder records a batch after this callback)
    assert_same(before, state_of(learn))
    assert listing(path, cwd) == files
    assert learn.interrupt.n == 0 and not hasattr(learn.recorder, 'lr_find_lrs')

def test_lr_find_on_a_fresh_learner_leaves_no_optimizer(dirs):
    path, cwd = dirs
    learn = bn_learner(path)
    before, files = state_of(learn), listing(path, cwd)
    learn.lr_find(num_it=20, show_plot=False, offload=True)
    assert learn.opt is None
    assert_same(before, state_of(learn))
    assert listing(path, cwd) == files
    assert learn.recorder.history == {} and learn.recorder.losses == []

def test_lr_find_and_one_cycle_without_a_recorder():
    learn = line_learner(default_cbs=False)
    sugg = learn.lr_find(num_it=40, show_plot=True)
    assert math.isfinite(sugg.valley) and learn.opt is None
    ax = plt.gcf().axes[0]                                  # drawn from the finder's own curve
    assert len(ax.get_lines()) == 1 and len(ax.collections) == 1
    spy = Spy()
    learn.fit_one_cycle(1, lr_max=0.1, cbs=[spy])
    assert abs(spy.seen[2][1][0]['lr'] - 0.1) < 1e-12

def test_lr_find_cycles_a_short_loader_and_skips_validation():
    x = torch.linspace(-1, 1, 48).unsqueeze(1)
    dls = DataLoaders(TensorLoader(x, 2 * x, bs=16, shuffle=True), TensorLoader(x, 2 * x, bs=16))
    torch.manual_seed(0)
    learn = quiet(Learner(nn.Linear(1, 1), dls, nn.MSELoss(), opt_func=torch.optim.SGD))
    log = []
    learn.add_cb(BatchCounter(log))
    learn.lr_find(start_lr=1e-5, end_lr=1e-2, num_it=10, stop_div=False, show_plot=False)
    lrs = learn.recorder.lr_find_lrs
    assert len(lrs) == 10 and log.count('epoch') == 4 and log.count('train') == 10 and 'valid' not in log
    for i, lr in enumerate(lrs): assert lr == pytest.approx(1e-5 * 1000 ** (i / 9), rel=1e-12)
    assert learn.recorder.lr_find_lrs[-1] == pytest.approx(1e-2, rel=1e-12)

def test_lr_find_stops_when_the_loss_diverges():
    learn = regression_learner()
    learn.lr_find(end_lr=1e3, num_it=100, show_plot=False)
    losses = learn.recorder.lr_find_losses
    assert 20 < len(losses) < 100                          # stopped early, before the last lr
    assert losses[-1] > 4 * min(losses[:-1])
    assert learn.stop_reason is None                        # the finder's stop reason was undone

def test_valley_is_near_the_best_lr_of_a_regression():
    "The known good lr: the best of a grid of lrs, each used for one epoch of SGD from the same start."
    results = {}
    for lr in np.logspace(-3, 0.5, 15):
        learn = regression_learner(float(lr))
        learn.fit(1)
        results[float(lr)] = learn.recorder.history['valid_loss'][-1]
    best = min(results, key=results.get)
    assert 0.1 < best < 1                                   # what the Hessian (about 2I) predicts
    sugg = regression_learner().lr_find(show_plot=False, suggest_funcs=(valley, slide, minimum, steep))
    assert best / 10 <= sugg.valley <= best * 10
    for lr in sugg: assert 1e-3 < lr < 2


# ----- suggestions, SuggestedLRs, plot ---------------------------------------------------------------
def made_up_curve():
    "Flat to point 20, falling to the minimum at point 60, then rising faster and faster."
    xs = np.logspace(-6, 0, 100)
    fall = np.linspace(2., 0.5, 41)[:-1] - np.linspace(0, 0.05, 40) ** 2
    return xs, np.concatenate([np.full(20, 2.), fall, 0.5 + 0.1 * (np.exp(np.linspace(0, 3, 40)) - 1)])

def test_suggestion_functions():
    xs, y = made_up_curve()
    assert valley(xs, y) == xs[40]                          # the middle of the fall from 20 to 60
    assert minimum(xs, y) == xs[60] / 10
    assert steep(xs, y) == xs[int(np.argmin(np.gradient(y, np.log(xs))))]
    assert 20 < np.flatnonzero(xs == steep(xs, y))[0] < 60
    assert 20 < np.flatnonzero(xs == slide(xs, y))[0] < 60   # left of the blow-up
    noisy = y + np.where(np.arange(100) < 20, np.linspace(0, -0.01, 100), 0)   # a slight slope on the plateau
    assert valley(xs, noisy) == xs[40]                     # tiny drops on the plateau are not a valley

def test_suggested_lrs_has_only_the_requested_fields():
    s = SuggestedLRs(steep=1e-2, valley=1e-3)
    assert s._fields == ('steep', 'valley') and s.valley == 1e-3 and type(s).__name__ == 'SuggestedLRs'
    learn = regression_learner()
    got = learn.lr_find(num_it=40, show_plot=False, suggest_funcs=(minimum, steep))
    assert got._fields == ('minimum', 'steep')

def test_plot_lr_find(tmp_path):
    learn = regression_learner()
    with pytest.raises(ValueError, match='run learn.lr_find'): learn.recorder.plot_lr_find()
    n_figs = len(plt.get_fignums())
    sugg = learn.lr_find(show_plot=True, suggest_funcs=(valley, slide, minimum, steep))
    assert len(plt.get_fignums()) == n_figs + 1             # show_plot drew it (and did not block)
    fig = learn.recorder.plot_lr_find()
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 1 and ax.get_xscale() == 'log'
    assert len(ax.collections) == 4
    for c, (name, lr) in zip(ax.collections, sugg._asdict().items()):
        assert c.get_offsets()[0][0] == pytest.approx(lr) and c.get_label().startswith(name)
    line_x = ax.get_lines()[0].get_xdata()
    assert len(line_x) == len(learn.recorder.lr_find_lrs) - 5
    assert len(learn.recorder.plot_lr_find(suggestions=False).axes[0].collections) == 0
    fig.savefig(tmp_path / 'lr_find.png')
    assert (tmp_path / 'lr_find.png').read_bytes()[:4] == b'\x89PNG'


# ----- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, err, msg', [
    (dict(start_lr=1e-2, end_lr=1e-3), ValueError, 'start_lr must be smaller than end_lr'),
    (dict(start_lr=1., end_lr=1.), ValueError, 'start_lr must be smaller than end_lr'),
    (dict(start_lr=0.), ValueError, 'start_lr must be a positive number'),
    (dict(end_lr=math.inf), ValueError, 'end_lr must be a positive number'),
    (dict(num_it=1), ValueError, 'num_it must be an int of at least 2'),
    (dict(num_it=10.), ValueError, 'num_it must be an int of at least 2'),
    (dict(stop_div='yes'), TypeError, 'stop_div must be True or False'),
    (dict(suggest_funcs=valley), TypeError, 'suggest_funcs must be a tuple'),
    (dict(suggest_funcs=(lambda lrs, losses: 1e-3,)), TypeError, 'named function'),
    (dict(suggest_funcs=(valley, valley)), ValueError, "names 'valley' twice"),
])
def test_lr_find_refuses_bad_input_before_changing_anything(dirs, kwargs, err, msg):
    path, cwd = dirs
    learn = bn_learner(path)
    before = state_of(learn)
    with pytest.raises(err, match=msg): learn.lr_find(show_plot=False, **kwargs)
    assert_same(before, state_of(learn))
    with pytest.raises(ValueError, match='start_lr must be smaller'): LRFinder(start_lr=1., end_lr=0.1)
    with pytest.raises(ValueError, match=r'beta .* must be in \[0, 1\)'): LRFinder(beta=1.)


def test_lr_find_does_not_run_callbacks_that_write_files(tmp_path):
    "A learner carrying file-writing callbacks (CSV log, best-model saver) still leaves no file behind."
    from minilearn.data import DataLoaders
    from minilearn.learner import Learner
    from minilearn.loggers import CSVLogger
    from minilearn.stopping import SaveBestModel
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    dls = DataLoaders.from_tensors(x, x.sum(1, keepdim=True), bs=8)
    learn = Learner(torch.nn.Linear(2, 1), dls, torch.nn.MSELoss(), path=tmp_path, cbs=[CSVLogger(), SaveBestModel()])
    learn.logger = lambda *a, **k: None
    learn.lr_find(num_it=12, show_plot=False)
    assert list(tmp_path.rglob('*')) == []
    assert isinstance(learn.csv_logger, CSVLogger) and isinstance(learn.save_best_model, SaveBestModel)
    learn.fit(1)
    assert (tmp_path / 'history.csv').exists() and (tmp_path / 'models' / 'best.pth').exists()
