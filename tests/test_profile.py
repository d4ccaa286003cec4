"Tests of minilearn.profile: Learner.show_training_loop and the Profile callback."
import time

import pytest
import torch
from torch import nn

from minilearn.core import EVENTS, Callback, CancelBatchException
from minilearn.data import DataLoaders
from minilearn.learner import Learner
from minilearn.profile import Profile   # also attaches Learner.show_training_loop


def _learner(n=512, bs=32, **kw):
    torch.manual_seed(0)
    x = torch.randn(n, 8); y = x @ torch.randn(8, 1)
    learn = Learner(nn.Linear(8, 1), DataLoaders.from_tensors(x, y, bs=bs), nn.MSELoss(), **kw)
    learn.logger = lambda *a, **k: None
    return learn


def _loop_lines(learn, **kw):
    lines = []
    old, learn.logger = learn.logger, lines.append
    try: learn.show_training_loop(**kw)
    finally: learn.logger = old
    return lines


def test_show_training_loop_lists_every_default_callback():
    learn = _learner()
    lines = _loop_lines(learn)
    assert [l.strip().split(':')[0] for l in lines] == list(EVENTS)
    by_event = {l.strip().split(':')[0]: l.split(': ')[1].split(', ') if ': ' in l else [] for l in lines}
    for cb in learn.cbs:
        for ev in EVENTS:
            assert (type(cb).__name__ in by_event[ev]) == hasattr(cb, ev), (cb, ev)
    assert by_event['after_batch'] == ['Recorder', 'ProgressCallback']          # in order
    assert lines[EVENTS.index('after_pred')].startswith('      after_pred')        # indented by phase


def test_show_training_loop_marks_passes_and_extra_cbs():
    class TrainOnly(Callback):
        run_valid = False
        def after_batch(self): pass
    learn = _learner()
    lines = _loop_lines(learn, cbs=[TrainOnly()])
    assert lines[EVENTS.index('after_batch')].endswith('after_batch: Recorder, TrainOnly [train only], ProgressCallback')
    assert not hasattr(learn, 'train_only')                          # the extra callback was removed again


def test_profile_totals_match_wall_time():
    torch.set_num_threads(1)
    learn = _learner(n=2048)
    learn.fit(1)                                                     # the optimizer exists: fit's own set-up is tiny
    prof = Profile()
    t = time.perf_counter()
    learn.fit(4, cbs=[prof])
    wall = time.perf_counter() - t
    d = prof.data
    assert abs(d['total_s'] - wall) <= 0.1 * wall, (d['total_s'], wall)
    assert sum(r['total_ns'] for r in d['rows']) / 1e9 == pytest.approx(d['total_s'])
    assert sum(r['share'] for r in d['rows']) == pytest.approx(1)
    assert d['n_train_batches'] == 4 * len(learn.dls.train) and d['n_valid_batches'] == 4 * len(learn.dls.valid)
    rows = {(r['pass'], r['what']): r for r in d['rows']}
    for step in ('data', 'forward', 'loss', 'backward', 'step'):
        assert rows['train', step]['total_ns'] > 0
    assert rows['train', 'forward']['calls'] == d['n_train_batches'] == rows['train', 'Recorder.after_batch']['calls']
    assert rows['valid', 'Recorder.after_batch']['calls'] == d['n_valid_batches']
    assert ('valid', 'backward') not in rows
    cb = sum(r['share'] for r in d['rows'] if r['kind'] == 'callback')
    assert d['callbacks_share'] == pytest.approx(cb) and 0 < d['callbacks_share'] < d['framework_share'] < 1


def test_profile_restores_tables_and_keeps_semantics():
    class SkipOdd(Callback):                                         # cancels every other batch
        def before_batch(self):
            if self.learn.training and self.learn.iter % 2: raise CancelBatchException()
    learn = _learner(cbs=[SkipOdd()])
    before = {ev: list(fs) for ev, fs in learn.cbs.train.items()}
    learn.add_cb(Profile())
    learn.fit(2)
    steps = learn.train_iter
    assert steps == 2 * ((len(learn.dls.train) + 1) // 2)
    d = learn.profile.report()
    assert d['complete'] and d['n_train_batches'] == 2 * len(learn.dls.train)
    assert {ev: fs for ev, fs in learn.cbs.train.items() if ev != 'before_fit' and ev != 'after_fit'} == \
        {ev: fs for ev, fs in before.items() if ev != 'before_fit' and ev != 'after_fit'}
    assert all(getattr(f, '__self__', None) is not None for fs in learn.cbs.train.values() for f in fs)


def test_profile_after_an_exception():
    class Boom(Callback):
        def after_epoch(self):
            if self.learn.epoch == 1: raise RuntimeError('boom')
    prof = Profile()
    learn = _learner(cbs=[Boom()])
    with pytest.raises(RuntimeError, match='boom'): learn.fit(3, cbs=[prof])
    assert prof.data is not None and prof.data['n_train_batches'] == 2 * len(learn.dls.train)
    assert all(hasattr(f, '__self__') for fs in learn.cbs.train.values() for f in fs)   # no stamps left behind


def test_profile_notes_callbacks_added_during_the_fit():
    class Adder(Callback):
        def after_epoch(self):
            if self.learn.epoch == 0: self.learn.add_cb(Callback())
    prof = Profile()
    lines = []
    learn = _learner(cbs=[Adder()])
    learn.fit(2, cbs=[prof])
    learn.logger = lines.append
    prof.learn = learn
    d = prof.report()
    assert not d['complete'] and any('timing stopped' in l for l in lines)


def test_profile_bad_inputs():
    with pytest.raises(RuntimeError, match='no timings yet'): Profile().report()
    with pytest.raises(TypeError, match='cuda_sync'): Profile(cuda_sync=1)
