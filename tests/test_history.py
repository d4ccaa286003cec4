"A history you can trust (issue 17): every batch counted once, every stop recorded, files and callbacks where they belong."
import copy, csv, functools, math, os, signal, stat, threading

import numpy as np
import pytest
import torch
from torch import nn

from minilearn.core import (Callback, CancelBatchException, CancelEpochException, CancelFitException,
                            CancelTrainException, CancelValidException)
from minilearn.data import DataLoaders, TensorLoader
from minilearn.learner import Learner
from minilearn.learner import atomic_save
from minilearn.metrics import RMSE, accuracy, mae
from minilearn.checkpoint import Checkpoint
from minilearn.loggers import CSVLogger
from minilearn.schedule import ParamScheduler, sched_lin
from minilearn.stopping import Budget, EarlyStopping, ReduceLROnPlateau, SaveBestModel, TerminateOnNaN
from conftest import regression_data, silent


def learner(n=72, bs=8, valid_pct=1 / 9, cbs=(), metrics=(), **kwargs):
    "y = 3x - 1: 64 training rows in 8 batches of 8, 8 validation rows in one batch."
    x, y = regression_data(n)
    torch.manual_seed(0)
    dls = DataLoaders.from_tensors(x, y, valid_pct=valid_pct, bs=bs, seed=0)
    return silent(Learner(nn.Linear(1, 1), dls, nn.MSELoss(), cbs=list(cbs), metrics=list(metrics), **kwargs))


class RaiseAt(Callback):
    "Raises `exc` at `event` when `when(learn)` is true (once)."
    def __init__(self, event, exc, when=lambda learn: True, order=0):
        self.event, self.exc, self.when, self.order, self.done = event, exc, when, order, False
    def _maybe(self):
        if not self.done and self.when(self.learn):
            self.done = True
            raise self.exc()


def raise_at(event, exc, when=lambda learn: True, order=0):
    "A callback class with a method named `event` (the registry reads events from the class)."
    cls = type(f'Raise{event.title().replace("_", "")}', (RaiseAt,), {event: lambda self: self._maybe()})
    return cls(event, exc, when, order)


def assert_consistent(learn):
    rec = learn.recorder
    assert len(rec.losses) == len(rec.lrs), (len(rec.losses), len(rec.lrs))
    assert all(math.isfinite(v) for v in rec.losses)
    assert len({len(col) for col in rec.history.values()}) == 1


# ----- 1. a cancelled batch is simply not recorded -------------------------------------------------------
@pytest.mark.parametrize('event', ['before_batch', 'after_pred', 'after_batch'])
@pytest.mark.parametrize('batch', [0, 3])
def test_a_cancelled_training_batch_is_not_recorded(event, batch):
    cb = raise_at(event, CancelBatchException, lambda l: l.training and l.iter == batch, order=-20)
    learn = learner(cbs=[cb])
    learn.fit(1)                                          # nothing escapes, even from after_batch
    assert len(learn.recorder.losses) == len(learn.recorder.lrs) == 7
    assert_consistent(learn)


@pytest.mark.parametrize('event', ['before_batch', 'after_pred'])
def test_a_cancelled_validation_batch_reaches_no_metric(event):
    x, y = regression_data(80)
    dls = DataLoaders(TensorLoader(x[:64], y[:64], bs=8), TensorLoader(x[64:], y[64:], bs=8))   # 2 valid batches
    torch.manual_seed(0)
    cb = raise_at(event, CancelBatchException, lambda l: not l.training and l.iter == 1)
    learn = silent(Learner(nn.Linear(1, 1), dls, nn.MSELoss(), cbs=[cb], metrics=[mae]))
    learn.fit(1)
    with torch.no_grad(): pred = learn.model(x[64:72])      # only the first validation batch counts
    assert learn.recorder.history['valid_loss'][0] == pytest.approx(nn.functional.mse_loss(pred, y[64:72]).item(), rel=1e-6)
    assert learn.recorder.history['mae'][0] == pytest.approx((pred - y[64:72]).abs().mean().item(), rel=1e-6)


# ----- 2. a callback ordered before the Recorder that cancels a pass ---------------------------------------
@pytest.mark.parametrize('event,exc', [('before_train', CancelTrainException), ('before_validate', CancelValidException),
                                       ('before_epoch', CancelEpochException)])
@pytest.mark.parametrize('epoch', [0, 1])
def test_cancelling_a_pass_before_the_recorder_runs(event, exc, epoch):
    learn = learner(cbs=[raise_at(event, exc, lambda l: l.epoch == epoch, order=-20)])
    learn.fit(3)
    h, rec = learn.recorder.history, learn.recorder
    assert_consistent(learn)
    if exc is CancelTrainException:
        assert math.isnan(h['train_loss'][epoch]) and len(rec.losses) == 2 * 8 and len(h['epoch']) == 3
    if exc is CancelValidException:
        assert math.isnan(h['valid_loss'][epoch]) and len(rec.losses) == 3 * 8 and len(h['epoch']) == 3
    if exc is CancelEpochException:          # the skipped epoch is a row of NaN (after_epoch fires), nothing stale
        assert len(rec.losses) == 2 * 8 and h['epoch'] == [0, 1, 2]
        assert math.isnan(h['train_loss'][epoch]) and math.isnan(h['valid_loss'][epoch])
    others = [e for e in range(3) if e != epoch]
    assert all(math.isfinite(h['train_loss'][e]) and math.isfinite(h['valid_loss'][e]) for e in others)
    valid = [v for v in h['valid_loss'] if math.isfinite(v)]
    assert not set(valid) & set(rec.losses)                # no validation loss among the training losses


# ----- 3. a fit stopped in the middle of an epoch ----------------------------------------------------------
def test_a_fit_cancelled_mid_epoch_keeps_its_losses_and_a_row(tmp_path):
    stop = raise_at('after_batch', CancelFitException, lambda l: l.training and l.epoch == 1 and l.iter == 3)
    learn = learner(cbs=[stop], path=tmp_path)
    learn.fit(3, cbs=[CSVLogger()])
    rec, h = learn.recorder, learn.recorder.history
    assert len(rec.losses) == len(rec.lrs) == 8 + 4
    assert h['epoch'] == [0, 1] and math.isnan(h['valid_loss'][1])
    sizes = [8, 8, 8, 8]
    assert h['train_loss'][1] == pytest.approx(sum(rec.losses[8:]) / 4)
    rows = CSVLogger(tmp_path / 'history.csv').read()
    assert [r['epoch'] for r in rows] == [0, 1] and math.isnan(rows[1]['valid_loss'])


def test_terminate_on_nan_records_where_it_diverged(tmp_path):
    class Poison(Callback):
        order = -30
        def after_loss(self):
            if self.learn.training and self.learn.epoch == 1 and self.learn.iter == 2: self.learn.loss = self.learn.loss * math.nan
    learn = learner(cbs=[Poison(), TerminateOnNaN()], path=tmp_path)
    learn.fit(3, cbs=[CSVLogger()])
    assert learn.recorder.history['epoch'] == [0, 1] and len(learn.recorder.losses) == len(learn.recorder.lrs) == 10
    assert 'TerminateOnNaN' in learn.stop_reason
    assert [r['epoch'] for r in CSVLogger(tmp_path / 'history.csv').read()] == [0, 1]


def test_ctrl_c_mid_epoch_keeps_the_record_consistent():
    learn = learner(cbs=[raise_at('after_batch', KeyboardInterrupt, lambda l: l.training and l.epoch == 2 and l.iter == 5)])
    with pytest.raises(KeyboardInterrupt): learn.fit(4)
    assert len(learn.recorder.losses) == len(learn.recorder.lrs) == 16 + 6 and learn.recorder.history['epoch'] == [0, 1, 2]


def test_budget_mid_epoch_and_the_lr_finder_leave_a_consistent_record():
    learn = learner(cbs=[Budget(max_steps=11)])
    learn.fit(3)
    assert learn.train_iter == 11 and len(learn.recorder.losses) == len(learn.recorder.lrs) == 11
    assert learn.recorder.history['epoch'] == [0, 1]       # the cut epoch is a row
    learn.lr_find(num_it=20, show_plot=False)
    assert len(learn.recorder.losses) == len(learn.recorder.lrs) == 11   # and the finder left no trace


# ----- 4. validate()/get_preds() from a callback during a fit ---------------------------------------------
@pytest.mark.parametrize('method', ['validate', 'get_preds'])
def test_validate_or_get_preds_inside_a_fit_is_refused(method):
    class Peek(Callback):
        def after_batch(self):
            if self.learn.training and self.learn.iter == 1: getattr(self.learn, method)()
    learn = learner(cbs=[Peek()])
    with pytest.raises(RuntimeError, match='during a fit'): learn.fit(1)
    learn.remove_cb(learn.peek)
    learn.fit(1)
    assert learn.train_iter == 8                             # the learner trains normally afterwards


# ----- 5. lr_find on a learner with stoppers ---------------------------------------------------------------
def test_lr_find_does_not_run_stoppers():
    plain = learner().lr_find(num_it=40, show_plot=False)
    learn = learner(cbs=[EarlyStopping(patience=0), Budget(max_steps=3), TerminateOnNaN(), ReduceLROnPlateau(patience=0)])
    sugg = learn.lr_find(num_it=40, show_plot=False)
    assert len(learn.recorder.lr_find_lrs) == 40 and sugg == plain


# ----- 6. schedules over a loader without len() ------------------------------------------------------------
def test_a_schedule_refuses_a_loader_without_a_length():
    x, y = regression_data(64)
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter(zip(x, y))
    learn = silent(Learner(nn.Linear(1, 1), DataLoaders(torch.utils.data.DataLoader(Stream(), batch_size=8)), nn.MSELoss()))
    w = learn.model.weight.detach().clone()
    with pytest.raises(ValueError, match='no len'): learn.fit_one_cycle(2, 1e-2)
    assert torch.equal(learn.model.weight, w)


# ----- 7. metric names -----------------------------------------------------------------------------------
def _fbeta(pred, targ, beta=1.): return mae(pred, targ) * beta

def test_metric_names_are_unique_and_readable():
    learn = learner(metrics=[functools.partial(_fbeta, beta=2.), functools.partial(_fbeta, beta=.5)])
    learn.fit(1)
    h = learn.recorder.history
    assert h['_fbeta(beta=2.0)'][0] == pytest.approx(4 * h['_fbeta(beta=0.5)'][0])
    def valid_loss(pred, targ): return mae(pred, targ)
    def time(pred, targ): return mae(pred, targ)
    for metrics, msg in [([lambda p, t: mae(p, t), lambda p, t: mae(p, t)], 'lambda'), ([valid_loss], 'valid_loss'),
                         ([time], "'time'"), ([mae, mae], "'mae'")]:
        with pytest.raises(ValueError, match=msg): learner(metrics=metrics)


# ----- 8. every after_fit runs -------------------------------------------------------------------------------
def test_an_after_fit_error_skips_no_other_after_fit():
    ran = []
    class Fails(Callback):
        order = -50
        def after_fit(self): raise RuntimeError('first failure')
    class AlsoFails(Callback):
        def after_fit(self): raise ValueError('second failure')
    class Cleans(Callback):
        order = 50
        def after_fit(self): ran.append(True)
    learn = learner(cbs=[Fails(), AlsoFails(), Cleans()], opt_func=torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match='first failure') as info:
        learn.fit_one_cycle(1, 1e-2)
    assert ran == [True] and any('second failure' in n for n in info.value.__notes__)
    assert learn.opt.param_groups[0]['lr'] == 0.1                  # the scheduler put the lr back


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason='signal handlers need the main thread')
def test_two_checkpoints_leave_no_signal_handler_behind(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    other = Checkpoint(fname='other')
    other.name = 'other_checkpoint'
    learner(path=tmp_path).fit(1, cbs=[Checkpoint(), other])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    class Fails(Callback):
        def after_fit(self): raise RuntimeError('boom')
    with pytest.raises(RuntimeError): learner(path=tmp_path).fit(1, cbs=[Fails(), Checkpoint()])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ----- 9. resume ---------------------------------------------------------------------------------------------
def test_lr_with_resume_is_refused(tmp_path):
    learner(path=tmp_path).fit(1, cbs=[Checkpoint()])
    learn = learner(path=tmp_path)
    with pytest.raises(ValueError, match='resume continues'): learn.fit(2, lr=0.5, resume=True)
    assert learn.opt is None


def test_a_metric_added_on_resume_is_recorded_from_then_on(tmp_path):
    learner(path=tmp_path).fit(3, cbs=[Checkpoint(), raise_at('after_epoch', CancelFitException, lambda l: l.epoch == 1, order=200)])
    learn = learner(path=tmp_path, metrics=[mae])
    learn.fit(3, resume=True)
    h = learn.recorder.history
    assert h['epoch'] == [0, 1, 2] and math.isnan(h['mae'][0]) and math.isnan(h['mae'][1]) and math.isfinite(h['mae'][2])


@pytest.mark.parametrize('append', [False, True])
def test_csv_logger_continues_its_file_on_resume(tmp_path, append):
    stop = lambda: raise_at('after_batch', CancelFitException, lambda l: l.training and l.epoch == 2 and l.iter == 4, order=200)
    first = learner(path=tmp_path)
    first.fit(4, cbs=[Checkpoint(every_epochs=1), CSVLogger(append=append), stop()])   # checkpoint after epoch 1
    assert [r['epoch'] for r in CSVLogger(tmp_path / 'history.csv').read()] == [0, 1, 2]   # 2: the cut epoch
    resumed = learner(path=tmp_path)
    resumed.fit(4, cbs=[Checkpoint(every_epochs=1), CSVLogger(append=append)], resume=True)
    rows = CSVLogger(tmp_path / 'history.csv').read()
    h = resumed.recorder.history
    assert [r['epoch'] for r in rows] == h['epoch'] == [0, 1, 2, 3]
    assert [r['train_loss'] for r in rows] == pytest.approx(h['train_loss'])


def test_a_plain_dataloader_with_its_own_generator_resumes_exactly(tmp_path):
    def make(path, seed=0):
        learn = learner(path=path)
        x, y = regression_data(64, seed=1)
        g = torch.Generator().manual_seed(5)
        learn.dls = DataLoaders(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8,
                                                            shuffle=True, generator=g))
        torch.manual_seed(seed)
        learn.model = nn.Linear(1, 1)
        return learn
    straight = make(tmp_path / 'straight')
    straight.fit(3)
    make(tmp_path).fit(3, cbs=[Checkpoint(), raise_at('after_epoch', CancelFitException, lambda l: l.epoch == 0, order=200)])
    torch.randn(100)                                       # the global generator moved on meanwhile
    resumed = make(tmp_path, seed=1)
    resumed.fit(3, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(straight.model.parameters(), resumed.model.parameters()))


# ----- 10, 11. where a callback belongs ---------------------------------------------------------------------
def test_a_callback_belongs_to_one_learner(tmp_path):
    cb = Checkpoint()
    a = learner(cbs=[cb], path=tmp_path / 'a')
    with pytest.raises(ValueError, match='another Learner'): learner(cbs=[cb], path=tmp_path / 'b')
    a.remove_cb(cb)
    learner(cbs=[cb], path=tmp_path / 'b')                 # once removed, it may move


def test_a_fit_callback_may_remove_itself():
    seen = []
    class Once(Callback):
        def after_batch(self):
            seen.append(self.learn.iter)
            self.learn.remove_cb(self)
    learn = learner()
    learn.fit(2, cbs=[Once()])
    assert seen == [0] and not hasattr(learn, 'once') and learn.train_iter == 16


# ----- 12. learn.load -------------------------------------------------------------------------------------
def test_load_takes_a_plain_state_dict(tmp_path):
    learn = learner(path=tmp_path)
    other = nn.Linear(1, 1)
    torch.save(other.state_dict(), tmp_path / 'plain.pth')
    learn.load(tmp_path / 'plain.pth')
    assert torch.equal(learn.model.weight, other.weight)


def test_load_refuses_another_optimizers_state_and_changes_nothing(tmp_path):
    sgd = learner(path=tmp_path, opt_func=torch.optim.SGD)
    sgd.fit(1)
    sgd.save('sgd')
    adam = learner(path=tmp_path)
    adam.fit(1)
    w, st = adam.model.weight.detach().clone(), copy.deepcopy(adam.opt.state_dict())
    with pytest.raises(ValueError, match='another optimizer'): adam.load('sgd')
    assert torch.equal(adam.model.weight, w) and adam.opt.state_dict()['param_groups'] == st['param_groups']


def test_load_refuses_non_dense_tensors_before_changing_anything(tmp_path):
    model = nn.Sequential(nn.Linear(1, 4), nn.Linear(4, 1))
    learn = silent(Learner(model, learner().dls, nn.MSELoss(), path=tmp_path))
    sd = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    sd['1.bias'] = sd['1.bias'].to_sparse()
    torch.save({'model': sd}, tmp_path / 'crafted.pth')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match='non-dense'): learn.load(tmp_path / 'crafted.pth')
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----- 13. files ---------------------------------------------------------------------------------------------
def test_saved_files_get_the_usual_mode(tmp_path):
    umask = os.umask(0); os.umask(umask)
    p = atomic_save({'a': torch.zeros(1)}, tmp_path / 'x.pth')
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    os.chmod(p, 0o644)
    atomic_save({'a': torch.ones(1)}, p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_save_cleans_what_a_killed_save_left_and_spares_a_live_writer(tmp_path):
    learn = learner(path=tmp_path)
    folder = tmp_path / 'models'
    folder.mkdir()
    dead, live = folder / '.m.pth.999999999.abcd1234.tmp', folder / f'.m.pth.{os.getppid()}.abcd1234.tmp'
    old_format = folder / '.m.pth.abcd1234.tmp'
    for p in (dead, live, old_format): p.write_bytes(b'half')
    learn.save('m')
    assert sorted(p.name for p in folder.iterdir()) == sorted(['m.pth', live.name])


@pytest.mark.parametrize('name', ['', '.pth', 'x' * 300])
def test_impossible_file_names_are_refused_when_given(tmp_path, name):
    learn = learner(path=tmp_path)
    with pytest.raises(ValueError, match='file name'): learn.save(name)
    with pytest.raises(ValueError, match='file name'): Checkpoint(fname=name)
    with pytest.raises(ValueError, match='file name'): SaveBestModel(fname=name)


# ----- 14. messages ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('value', [0.5, None, np.float32(0.5)])
def test_a_metric_that_returns_no_tensor_is_named(value):
    def odd(pred, targ): return value
    learn = learner(metrics=[odd])
    with pytest.raises(TypeError, match="metric 'odd' returned"): learn.fit(1)


@pytest.mark.parametrize('loss', [lambda p, t: 0.5, lambda p, t: (nn.functional.mse_loss(p, t), 0)])
def test_a_loss_that_returns_no_tensor_is_named(loss):
    learn = silent(Learner(nn.Linear(1, 1), learner().dls, loss))
    w = learn.model.weight.detach().clone()
    with pytest.raises(TypeError, match='the loss function returned'): learn.fit(1)
    assert torch.equal(learn.model.weight, w)


def test_a_metric_class_and_an_empty_validation_loader_are_refused_at_once():
    with pytest.raises(TypeError, match=r'RMSE\(\)'): learner(metrics=[RMSE])
    x, y = regression_data(16)
    empty = TensorLoader(x[:0], y[:0], bs=4)
    with pytest.raises(ValueError, match='validation loader is empty'):
        Learner(nn.Linear(1, 1), DataLoaders(TensorLoader(x, y, bs=4), empty), nn.MSELoss())


def test_save_best_model_every_n_epochs(tmp_path):
    learn = learner(path=tmp_path)
    learn.fit(4, cbs=[SaveBestModel(every_epoch=2)])
    assert sorted(p.name for p in (tmp_path / 'models').iterdir()) == ['best_0.pth', 'best_2.pth']
    with pytest.raises(ValueError, match='every_epoch'): SaveBestModel(every_epoch=2, at_end=True)


def test_reduce_lr_on_plateau_refuses_an_lr_schedule():
    learn = learner()
    with pytest.raises(ValueError, match='ReduceLROnPlateau and ParamScheduler'):
        learn.fit_one_cycle(2, 1e-2, cbs=[ReduceLROnPlateau()])


# ----- the property: any cancellations, anywhere, leave a true record ------------------------------------
from hypothesis import given, settings, strategies as st
from minilearn.core import EVENTS, CancelBackwardException, CancelStepException

CANCELS = [CancelFitException, CancelEpochException, CancelTrainException, CancelValidException, CancelBatchException,
           CancelStepException, CancelBackwardException]


class Chaos(Callback):
    "Raises each planned exception once, at its event, epoch, batch and pass."
    def __init__(self, plan, order, name):
        self.plan, self.order, self.name = list(plan), order, name
for _ev in EVENTS:
    def _handler(self, ev=_ev):
        learn = self.learn
        for i, (event, exc, epoch, it, training) in enumerate(self.plan):
            if event == ev and learn.epoch == epoch and (ev not in ('before_batch', 'after_pred', 'after_loss', 'after_batch',
                    'after_cancel_batch') or (learn.iter == it and learn.training == training)):
                del self.plan[i]
                raise exc()
    setattr(Chaos, _ev, _handler)


class Witness(Callback):
    "Right after the Recorder: notes the loss of every batch that reached after_batch uncancelled, per epoch and pass."
    order = -9
    def __init__(self): self.seen, self.cancelled = {}, False
    def after_cancel_batch(self): self.cancelled = True
    def after_batch(self):
        if not self.cancelled:
            self.seen.setdefault((self.learn.epoch, self.learn.training), []).append(self.learn.loss.item())
        self.cancelled = False


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(EVENTS[:-1]), st.sampled_from(CANCELS), st.integers(0, 2), st.integers(0, 3),
                          st.booleans(), st.booleans()), max_size=4))
def test_any_cancellations_leave_a_usable_learner_and_a_true_record(plan):
    early = [p[:5] for p in plan if p[5]]
    late = [p[:5] for p in plan if not p[5]]
    x, y = regression_data(40)
    torch.manual_seed(0)
    dls = DataLoaders(TensorLoader(x[:32], y[:32], bs=8), TensorLoader(x[32:], y[32:], bs=8))   # 4 train, 1 valid batch
    witness = Witness()
    learn = silent(Learner(nn.Linear(1, 1), dls, nn.MSELoss(), opt_func=torch.optim.SGD, lr=0.01,
                           cbs=[Chaos(early, -20, 'early'), Chaos(late, 50, 'late'), witness]))
    try: learn.fit(3)
    except tuple(CANCELS): pass          # a cancel raised outside its own phase ends the fit like any error
    rec, h = learn.recorder, learn.recorder.history
    assert len(rec.losses) == len(rec.lrs)
    assert len({len(col) for col in h.values()}) <= 1 and h.get('epoch', []) == sorted(set(h.get('epoch', [])))
    train = [v for e in sorted({e for e, t in witness.seen if t}) for v in witness.seen[(e, True)]]
    assert rec.losses == pytest.approx(train)                         # every training batch counted once, no other
    for i, e in enumerate(h.get('epoch', [])):                         # no stale or borrowed value in any row
        for key, training in (('train_loss', True), ('valid_loss', False)):
            vals = witness.seen.get((e, training), [])
            if math.isfinite(h[key][i]): assert vals and h[key][i] == pytest.approx(sum(vals) / len(vals), rel=1e-5)
    learn.remove_cbs([learn.early, learn.late])                       # and the learner trains on as usual
    n = len(rec.losses)
    learn.fit(1)
    assert len(rec.losses) == len(rec.lrs) == n + 4 and all(math.isfinite(v) for v in rec.history['train_loss'])
