"Events, callbacks, the registry and the seven cancel exceptions, through the Learner as users drive it."
import pytest
import torch
from torch import nn

from minilearn.core import (EVENTS, Callback, CancelBackwardException, CancelBatchException, CancelEpochException,
                            CancelFitException, CancelStepException, CancelTrainException, CancelValidException,
                            callback_name)
from minilearn.data import DataLoaders
from minilearn.learner import Learner
from conftest import regression_data


class Transcript(Callback):
    "Records every event it sees, with the pass for batch events."
    def __init__(self): self.events = []
for _ev in EVENTS:
    setattr(Transcript, _ev, lambda self, ev=_ev: self.events.append(ev))


def tiny_learner(*cbs, n=8, bs=4, valid_pct=0.5, **kw):
    x, y = regression_data(n)
    dls = DataLoaders.from_tensors(x, y, valid_pct=valid_pct, bs=bs, seed=0)
    return Learner(nn.Linear(1, 1), dls, nn.MSELoss(), cbs=list(cbs), default_cbs=False, **kw)


TRAIN_BATCH = ['before_batch', 'after_pred', 'after_loss', 'before_backward', 'after_backward',
               'before_step', 'after_step', 'after_batch']
VALID_BATCH = ['before_batch', 'after_pred', 'after_loss', 'after_batch']


def test_event_order_two_epochs():
    t = Transcript()
    tiny_learner(t, n=16, bs=4).fit(2)   # 8 train samples -> 2 batches, 8 valid -> 2 batches
    epoch = ['before_epoch', 'before_train', *TRAIN_BATCH * 2, 'after_train',
             'before_validate', *VALID_BATCH * 2, 'after_validate', 'after_epoch']
    assert t.events == ['before_fit', *epoch * 2, 'after_fit']


def _phase_events(cancel_at, exc):
    class Canceller(Transcript):
        pass
    def raise_it(self, ev=cancel_at):
        self.events.append(ev)
        if not getattr(self, 'done', False):
            self.done = True
            raise exc()
    setattr(Canceller, cancel_at, raise_it)
    t = Canceller()
    tiny_learner(t).fit(1)      # 1 train batch, 1 valid batch
    return t.events


@pytest.mark.parametrize('cancel_at,exc,expected', [
    ('before_fit', CancelFitException, ['before_fit', 'after_cancel_fit', 'after_fit']),
    ('before_epoch', CancelEpochException, ['before_fit', 'before_epoch', 'after_cancel_epoch', 'after_epoch', 'after_fit']),
    ('before_train', CancelTrainException,
     ['before_fit', 'before_epoch', 'before_train', 'after_cancel_train', 'after_train',
      'before_validate', *VALID_BATCH, 'after_validate', 'after_epoch', 'after_fit']),
    ('before_validate', CancelValidException,
     ['before_fit', 'before_epoch', 'before_train', *TRAIN_BATCH, 'after_train',
      'before_validate', 'after_cancel_validate', 'after_validate', 'after_epoch', 'after_fit']),
    ('after_pred', CancelBatchException,
     ['before_fit', 'before_epoch', 'before_train', 'before_batch', 'after_pred', 'after_cancel_batch', 'after_batch',
      'after_train', 'before_validate', *VALID_BATCH, 'after_validate', 'after_epoch', 'after_fit']),
    ('before_step', CancelStepException,
     ['before_fit', 'before_epoch', 'before_train', 'before_batch', 'after_pred', 'after_loss', 'before_backward',
      'after_backward', 'before_step', 'after_cancel_step', 'after_step', 'after_batch', 'after_train',
      'before_validate', *VALID_BATCH, 'after_validate', 'after_epoch', 'after_fit']),
    ('before_backward', CancelBackwardException,
     ['before_fit', 'before_epoch', 'before_train', 'before_batch', 'after_pred', 'after_loss', 'before_backward',
      'after_cancel_backward', 'after_backward', 'before_step', 'after_step', 'after_batch', 'after_train',
      'before_validate', *VALID_BATCH, 'after_validate', 'after_epoch', 'after_fit']),
])
def test_each_cancel_skips_exactly_its_phase(cancel_at, exc, expected):
    assert _phase_events(cancel_at, exc) == expected


def test_cancel_step_keeps_weights_and_gradients():
    class NoStep(Callback):
        def before_step(self): raise CancelStepException()
    learn = tiny_learner(NoStep())
    w0 = learn.model.weight.detach().clone()
    learn.fit(1)
    assert torch.equal(learn.model.weight, w0)        # never stepped
    assert learn.model.weight.grad is not None         # and the gradients were not zeroed
    assert learn.train_iter == 0                       # a cancelled step is not counted


@pytest.mark.parametrize('exc', [RuntimeError('boom'), KeyboardInterrupt()])
def test_exception_in_batch_runs_after_fit_then_propagates(exc):
    class Boom(Transcript):
        def after_loss(self):
            self.events.append('after_loss')
            raise exc
    t = Boom()
    learn = tiny_learner(t)
    seen = {}
    class Cleanup(Callback):
        def after_fit(self): seen['exc'] = self.learn.fit_exception
    learn.add_cb(Cleanup())
    with pytest.raises(type(exc)) as info:
        learn.fit(1)
    assert info.value is exc                            # propagated unchanged
    assert seen['exc'] is exc                           # after_fit saw it
    assert t.events[-2:] == ['after_loss', 'after_fit']  # no inner after_* events on the way out


def test_error_in_cleanup_is_noted_and_does_not_swallow_the_original():
    class Boom(Callback):
        def after_pred(self): raise ValueError('original')
    class BadCleanup(Callback):
        def after_fit(self): raise RuntimeError('cleanup failed')
    ran = []
    class GoodCleanup(Callback):
        order = 10
        def after_fit(self): ran.append(True)
    learn = tiny_learner(Boom(), BadCleanup(), GoodCleanup())
    with pytest.raises(ValueError, match='original') as info:
        learn.fit(1)
    assert any('cleanup failed' in n for n in info.value.__notes__)
    assert ran == [True]                                 # later callbacks still cleaned up


def test_order_then_insertion():
    calls = []
    def make(tag, order):
        cls = type(f'C{tag}', (Callback,), {'order': order, 'before_fit': lambda self: calls.append(tag)})
        return cls()
    tiny_learner(make('a', 5), make('b', -1), make('c', 5), make('d', 0)).fit(0)
    assert calls == ['b', 'd', 'a', 'c']


def test_run_valid_false_skips_validation_batches():
    class TrainOnly(Callback):
        run_valid = False
        def __init__(self): self.n = 0
        def after_batch(self): self.n += 1
        def after_validate(self): self.validated = True   # outer events still run
    cb = TrainOnly()
    tiny_learner(cb, n=16, bs=4).fit(1)
    assert cb.n == 2 and cb.validated


def test_changing_loss_and_pred_takes_effect():
    class ZeroLoss(Callback):
        def after_loss(self): self.learn.loss = self.learn.loss * 0
    learn = tiny_learner(ZeroLoss(), opt_func=torch.optim.SGD)
    w0 = learn.model.weight.detach().clone()
    learn.fit(1)
    assert torch.equal(learn.model.weight, w0)          # zero loss -> zero gradient -> SGD leaves weights

    class BigPred(Callback):
        def after_pred(self): self.learn.pred = self.learn.pred + 100.
    learn = tiny_learner(BigPred(), n=16, bs=4)
    learn2 = tiny_learner(n=16, bs=4)
    from minilearn.recorder import Recorder
    r1, r2 = learn.add_cb(Recorder()), learn2.add_cb(Recorder())
    learn.fit(1); learn2.fit(1)
    assert r1.history['valid_loss'][0] > 100 * r2.history['valid_loss'][0]


def test_misspelt_event_is_an_error_with_suggestion():
    class Typo(Callback):
        def before_batchh(self): pass
    learn = tiny_learner()
    with pytest.raises(AttributeError, match='did you mean before_batch'):
        learn.add_cb(Typo())
    assert not any(isinstance(c, Typo) for c in learn.cbs)


def test_callback_names_and_duplicates():
    class ProgressCallback(Callback): pass
    class EarlyStopping(Callback): pass
    assert callback_name(ProgressCallback) == 'progress' and callback_name(EarlyStopping) == 'early_stopping'
    class Thing(Callback): pass
    learn = tiny_learner(Thing())
    assert isinstance(learn.thing, Thing)
    with pytest.raises(ValueError, match='already registered'):
        learn.add_cb(Thing())
    other = Thing(); other.name = 'thing2'
    learn.add_cb(other)
    assert learn.thing2 is other
    learn.remove_cb(other)
    assert not hasattr(learn, 'thing2')
    class Model(Callback): pass
    with pytest.raises(ValueError, match='clashes'):
        learn.add_cb(Model())


def test_added_and_removed_cbs_context_managers():
    class Thing(Callback): pass
    cb = Thing()
    learn = tiny_learner()
    with learn.added_cbs([cb]):
        assert cb in learn.cbs.cbs and learn.thing is cb
    assert cb not in learn.cbs.cbs
    learn.add_cb(cb)
    with learn.removed_cbs([cb]):
        assert cb not in learn.cbs.cbs
    assert cb in learn.cbs.cbs
    learn.fit(1, cbs=[Transcript()])                 # fit(cbs=...) adds them for that fit only
    assert not hasattr(learn, 'transcript')


def test_state_dict_default():
    assert Callback().state_dict() == {}
