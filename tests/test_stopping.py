"When to stop: EarlyStopping driven by chosen values, Budget limits, TerminateOnNaN, ReduceLROnPlateau, SaveBestModel."
import math, re, time

import pytest
import torch
from torch import nn

from minilearn.core import Callback, CancelStepException
from minilearn.data import DataLoaders, TensorLoader
from minilearn.learner import Learner
from minilearn.stopping import (Budget, EarlyStopping, ReduceLROnPlateau, SaveBestModel, TerminateOnNaN,
                                TrackerCallback)


# ----- fixtures ------------------------------------------------------------------------------------


class Feed(Callback):
    "Overwrites the recorded `name` with `values[:epoch + 1]` after the Recorder (-10), before the trackers (30)."
    order = -5
    def __init__(self, values, name='valid_loss'): self.values, self.monitor = values, name
    def after_epoch(self): self.learn.recorder.history[self.monitor] = list(self.values[:self.learn.epoch + 1])


class Snapshots(Callback):
    "A copy of the model's state dict at the end of every epoch."
    order = 40
    def before_fit(self): self.sds = []
    def after_epoch(self): self.sds.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})


class Slow(Callback):
    "Sleeps `train` seconds in every training batch and `valid` in every validation batch."
    def __init__(self, train, valid=0.): self.train, self.valid = train, valid
    def after_batch(self): time.sleep(self.train if self.learn.training else self.valid)


class Log(list):
    "A learner logger that keeps the lines."
    def __call__(self, *args, **kwargs): self.append(' '.join(map(str, args)))


def learner(cbs=(), n=64, bs=8, model=None, **kwargs):
    "y = 3x - 1: `n` training samples in batches of `bs` (8 steps an epoch by default), 16 validation samples."
    torch.manual_seed(0)
    x = torch.randn(n + 16, 1)
    y = 3 * x - 1
    dls = DataLoaders(TensorLoader(x[:n], y[:n], bs=bs), TensorLoader(x[n:], y[n:], bs=bs))
    learn = Learner(model or nn.Linear(1, 1), dls, nn.MSELoss(), lr=1e-2, cbs=list(cbs), **kwargs)
    learn.logger = Log()
    return learn


def epochs_run(learn): return len(learn.recorder.history['epoch'])


def fit_with(values, n_epoch=None, name='valid_loss', **kwargs):
    "Fit with EarlyStopping(**kwargs) reading `values`; returns the learner."
    learn = learner([Feed(values, name), EarlyStopping(name, **kwargs)])
    learn.fit(n_epoch or len(values))
    return learn


# ----- EarlyStopping: exact epochs ------------------------------------------------------------------
@pytest.mark.parametrize('patience,values,expected', [
    (1, [5, 4, 3, 3.5, 2, 1], 4),                       # epoch 3 is the first without improvement
    (3, [5, 4, 3, 3.5, 3.2, 3.1, 2, 1], 6),             # epochs 3, 4, 5
    (3, [5, 4, 3, 3.5, 3.2, 2.9, 3, 3, 3, 1], 9),       # 2.9 at epoch 5 restarts the count
    (0, [5, 4, 4, 3], 3),                               # 0 acts as 1
])
def test_patience_stops_at_exact_epoch(patience, values, expected):
    learn = fit_with(values, patience=patience)
    assert epochs_run(learn) == expected
    wait = max(patience, 1)
    best = min(values[:expected])
    assert learn.stop_reason == (f'EarlyStopping: valid_loss did not improve for {wait} epoch{"s" * (wait > 1)} '
                                 f'(best {best:g} at epoch {values.index(best)})')
    assert 'stopped: ' + learn.stop_reason in learn.logger


def test_min_delta_counts_small_gains_as_none():
    values = [5, 4, 3.8, 3.6, 3.4, 3.2]
    assert epochs_run(fit_with(values, patience=2)) == 6                    # each epoch improves a little
    learn = fit_with(values, patience=2, min_delta=0.5)
    assert epochs_run(learn) == 4                                           # 3.8, 3.6 are not 0.5 better than 4
    assert learn.early_stopping.best == 4 and learn.early_stopping.best_epoch == 1


def test_mode_min_max_auto():
    values = [0.5, 0.6, 0.7, 0.65, 0.8, 0.9]
    assert epochs_run(fit_with(values, name='accuracy', mode='max')) == 4    # falls at epoch 3
    assert epochs_run(fit_with(values, name='accuracy', mode='min')) == 2    # rises at epoch 1
    assert epochs_run(fit_with(values, name='accuracy')) == 4                # auto: accuracy is maximised
    assert epochs_run(fit_with(values, name='valid_loss')) == 2              # auto: a loss is minimised
    assert epochs_run(fit_with(values, name='error_rate')) == 2
    assert epochs_run(fit_with(values, name='my_score')) == 4                # unknown words: maximised
    assert [TrackerCallback(m).maximize for m in ('train_loss', 'mse', 'mae', 'rmse', 'accuracy')] == \
           [False, False, False, False, True]


def test_baseline_not_beaten_within_patience_stops_while_improving():
    learn = fit_with([5, 4, 3, 2.5, 1], patience=2, baseline=2)
    assert epochs_run(learn) == 2
    assert learn.stop_reason == 'EarlyStopping: valid_loss did not beat the baseline 2 in 2 epochs (best 4 at epoch 1)'


def test_baseline_beaten_then_patience_as_usual():
    learn = fit_with([5, 1.5, 1.4, 1.45, 1.43, 1.42, 1], patience=2, baseline=2)
    assert epochs_run(learn) == 5
    assert learn.stop_reason == 'EarlyStopping: valid_loss did not improve for 2 epochs (best 1.4 at epoch 2)'
    # with patience 1 the first epoch, worse than the baseline, is enough to stop
    assert epochs_run(fit_with([5, 1.5, 1], patience=1, baseline=2)) == 1


def test_target_stops_right_after_the_first_epoch_reaching_it():
    learn = fit_with([0.5, 0.8, 0.92, 0.95, 0.97], name='accuracy', target=0.9, patience=10)
    assert epochs_run(learn) == 3
    assert learn.stop_reason == 'EarlyStopping: accuracy reached the target 0.9 (0.92 at epoch 2)'
    learn = fit_with([1.0, 0.3, 0.1, 0.05], target=0.1, patience=10)          # minimised: at most the target
    assert epochs_run(learn) == 3 and 'reached the target 0.1 (0.1 at epoch 2)' in learn.stop_reason


def test_start_from_epoch_ignores_earlier_epochs():
    values = [1, 2, 3, 4, 5, 4, 6]
    assert epochs_run(fit_with(values)) == 2
    learn = fit_with(values, start_from_epoch=3)
    assert epochs_run(learn) == 5
    assert learn.stop_reason == 'EarlyStopping: valid_loss did not improve for 1 epoch (best 4 at epoch 3)'


def test_a_fit_that_runs_all_epochs_has_no_stop_reason():
    learn = learner([Feed([5, 4, 3, 2]), EarlyStopping(patience=1), Budget(max_steps=1000)])
    learn.fit(4)
    assert epochs_run(learn) == 4 and learn.stop_reason is None
    assert not any(line.startswith('stopped') for line in learn.logger)
    # patience running out at the end of the last epoch leaves nothing to stop
    learn = fit_with([5, 4, 3, 4])
    assert epochs_run(learn) == 4 and learn.stop_reason is None


def test_unknown_monitor_fails_at_end_of_first_epoch_listing_names():
    learn = learner([EarlyStopping('val_loss')])
    with pytest.raises(ValueError, match=r"monitor='val_loss' is not recorded.*epoch, train_loss, valid_loss, time"):
        learn.fit(3)
    assert epochs_run(learn) == 1


def test_no_recorder_is_a_clear_error():
    learn = learner([EarlyStopping()], default_cbs=False)
    with pytest.raises(ValueError, match='no Recorder'): learn.fit(1)


# ----- EarlyStopping: restore_best_weights and resuming ---------------------------------------------
def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def test_restore_best_weights_parameters_and_buffers():
    learn = learner([Feed([5, 4, 3, 3.5, 4, 4.5]), EarlyStopping(patience=2, restore_best_weights=True), Snapshots()],
                    model=bn_model())
    learn.fit(6)
    assert epochs_run(learn) == 5
    best, last = learn.snapshots.sds[2], learn.snapshots.sds[-1]
    sd = learn.model.state_dict()
    assert set(sd) == set(best) and '1.running_mean' in sd
    for k in sd: assert torch.equal(sd[k], best[k]), k
    assert not torch.equal(best['1.running_mean'], last['1.running_mean'])     # the buffers did change
    assert 'EarlyStopping: restored the weights of epoch 2 (valid_loss 3)' in learn.logger


def test_restore_best_weights_after_an_exception():
    class Boom(Callback):
        order = 50
        def after_epoch(self):
            if self.learn.epoch == 3: raise RuntimeError('boom')
    learn = learner([Feed([5, 4, 3, 3.5, 4]), EarlyStopping(patience=5, restore_best_weights=True), Snapshots(), Boom()])
    with pytest.raises(RuntimeError, match='boom'): learn.fit(5)
    for k, v in learn.model.state_dict().items(): assert torch.equal(v, learn.snapshots.sds[2][k])


class LoadState(Callback):
    "Loads `state` into `cb` right after every before_fit, as a resumed fit does."
    order = 99
    def __init__(self, cb, state): self.cb, self.state = cb, state
    def before_fit(self): self.cb.load_state_dict(self.state)


def test_early_stopping_state_carries_into_a_resumed_fit():
    first = learner([Feed([5, 4, 4.5]), EarlyStopping(patience=3, restore_best_weights=True)])
    first.fit(3)
    state = first.early_stopping.state_dict()
    assert (state['best'], state['best_epoch'], state['wait'], state['stopped']) == (4, 1, 1, None)
    assert set(state['best_weights']) == {'weight', 'bias'}
    es = EarlyStopping(patience=3, restore_best_weights=True)
    second = learner([Feed([4.6, 4.7, 1, 1]), es, LoadState(es, state)])
    second.fit(4)
    assert epochs_run(second) == 2                   # the count went on: 1 + 2 epochs without improvement
    assert second.stop_reason == 'EarlyStopping: valid_loss did not improve for 3 epochs (best 4 at epoch 1)'
    for k, v in second.model.state_dict().items(): assert torch.equal(v, state['best_weights'][k])


# ----- Budget --------------------------------------------------------------------------------------
def test_max_steps_takes_exactly_that_many_steps():
    learn = learner([Budget(max_steps=37)])
    learn.fit(10)
    assert learn.train_iter == 37 and len(learn.recorder.losses) == 37
    assert learn.stop_reason == 'Budget: max_steps 37 reached (spent 37 steps)'
    assert epochs_run(learn) == 5 and math.isfinite(learn.recorder.history['valid_loss'][-1])   # cut epoch scored


def test_max_steps_counts_optimizer_steps_under_gradient_accumulation():
    class Accumulate(Callback):
        def before_step(self):
            if self.learn.iter % 4 != 3: raise CancelStepException
    learn = learner([Accumulate(), Budget(max_steps=7)])
    learn.fit(10)
    assert learn.train_iter == 7 and len(learn.recorder.losses) == 28


def test_max_samples_rounds_up_to_a_whole_batch():
    learn = learner([Budget(max_samples=100)])
    learn.fit(10)
    assert len(learn.recorder.losses) * 8 == 104 == learn.budget.samples
    assert learn.stop_reason == 'Budget: max_samples 100 reached (spent 104 samples)'


def test_a_limit_reached_at_the_end_of_an_epoch():
    learn = learner([Budget(max_steps=16)])
    learn.fit(2)                                      # reached with the last step of the fit: nothing to stop
    assert learn.train_iter == 16 and learn.stop_reason is None
    learn = learner([Budget(max_steps=16)])
    learn.fit(3)                                      # the third epoch is not started
    assert learn.train_iter == 16 and epochs_run(learn) == 2
    assert learn.stop_reason == 'Budget: max_steps 16 reached (spent 16 steps)'


def timed_fit(learn, n_epoch):
    start = time.perf_counter()
    learn.fit(n_epoch)
    return time.perf_counter() - start


SLACK = 1.0   # seconds, for a loaded machine; the fits below would otherwise take 10 s or more


def test_max_time_returns_within_one_batch_and_one_validation_pass():
    batch, valid_batch = 0.05, 0.05        # 8 training batches and 2 validation batches: 0.5 s an epoch
    learn = learner([Slow(batch, valid_batch), Budget(max_time=1.0)])
    took = timed_fit(learn, 30)            # 15 s without the budget
    assert 1.0 <= took <= 1.0 + batch + 2 * valid_batch + SLACK, took
    assert re.fullmatch(r'Budget: max_time 1 reached \(spent 1(\.\d+)? s\)', learn.stop_reason), learn.stop_reason
    assert len(learn.recorder.losses) < 30 * 8 and math.isfinite(learn.recorder.history['valid_loss'][-1])


def test_max_time_running_out_in_validation_finishes_the_pass():
    valid_batch = 0.3                      # a 0.6 s validation pass, short training passes
    learn = learner([Slow(0.01, valid_batch), Budget(max_time=1.0)])
    took = timed_fit(learn, 30)
    assert 1.0 <= took <= 1.0 + 0.01 + 2 * valid_batch + SLACK, took
    h = learn.recorder.history
    assert all(math.isfinite(v) for v in h['valid_loss'])
    assert len(learn.recorder.losses) == 8 * epochs_run(learn)          # no training pass was cut


def test_max_cost_is_a_time_limit_at_the_hourly_price():
    budget = Budget(max_cost=0.005, cost_per_hour=36)                   # 0.005 / 36 hours = 0.5 s
    assert budget.time_limit == pytest.approx(0.5)
    learn = learner([Slow(0.05), budget])
    took = timed_fit(learn, 30)
    assert 0.5 <= took <= 0.5 + 0.05 + SLACK, took
    m = re.fullmatch(r'Budget: max_cost 0\.005 reached \(spent ([\d.]+) at 36/hour\)', learn.stop_reason)
    assert m and 0.005 <= float(m[1]) < 0.005 + 0.05 * 36 / 3600 + SLACK * 36 / 3600, learn.stop_reason


def test_whole_epochs_does_not_start_an_epoch_it_cannot_finish():
    learn = learner([Budget(max_steps=25)], n=80)                      # 10 steps an epoch
    learn.fit(10)
    assert learn.train_iter == 25 and len(learn.recorder.losses) % 10 == 5    # without: half an epoch
    learn = learner([Budget(max_steps=25, whole_epochs=True)], n=80)
    learn.fit(10)
    assert learn.train_iter == 20 and epochs_run(learn) == 2
    assert learn.stop_reason == ('Budget: max_steps 25 would run out during epoch 2 (spent 20 steps, about 10 steps '
                                 'an epoch), so it was not started (whole_epochs)')


def test_whole_epochs_with_time():
    learn = learner([Slow(0.1), Budget(max_time=1.0, whole_epochs=True)], n=32)   # 4 batches: 0.4 s an epoch
    took = timed_fit(learn, 10)
    assert epochs_run(learn) == 2 and len(learn.recorder.losses) == 8        # a third would end after 1.2 s
    assert learn.stop_reason.startswith('Budget: max_time 1 '), learn.stop_reason
    assert took <= 1.0 + SLACK


def test_budget_spending_carries_into_a_resumed_fit():
    first = learner([Budget(max_steps=40)])
    first.fit(3)                                                      # 24 steps, all epochs: no stop
    state = first.budget.state_dict()
    assert (state['steps'], state['samples'], state['epochs'], state['stopped']) == (24, 192, 3, None)
    budget = Budget(max_steps=40)
    second = learner([budget, LoadState(budget, state)])
    second.fit(10)
    assert second.train_iter == 16 and budget.steps == 40               # 40 in all
    assert second.stop_reason == 'Budget: max_steps 40 reached (spent 40 steps)'


def test_budget_time_carries_into_a_resumed_fit():
    budget = Budget(max_time=1.0)
    state = {'elapsed': 0.7, 'steps': 0, 'samples': 0, 'epochs': 0, 'stopped': None}
    learn = learner([Slow(0.05), budget, LoadState(budget, state)])
    took = timed_fit(learn, 30)
    assert 0.3 <= took <= 0.3 + 0.05 + SLACK, took
    assert budget.state_dict()['elapsed'] == pytest.approx(0.7 + took, abs=0.1)


# ----- TerminateOnNaN ------------------------------------------------------------------------------
class NaNAt(nn.Module):
    "A linear model whose `at`-th training call returns NaN."
    def __init__(self, at):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.at, self.calls = nn.Linear(1, 1), at, 0
    def forward(self, x):
        self.calls += self.training
        out = self.lin(x)
        return out * float('nan') if self.calls == self.at else out


def test_terminate_on_nan_stops_at_that_batch_before_the_step():
    learn = learner([TerminateOnNaN()], model=NaNAt(at=11))     # 8 batches an epoch: epoch 1, batch 2
    learn.fit(3)
    assert learn.stop_reason == 'TerminateOnNaN: the loss is nan at epoch 1, batch 2; stopped before the optimizer step'
    assert learn.train_iter == 10
    assert all(p.isfinite().all() for p in learn.model.parameters())
    assert learn.terminate_on_nan is learn.cbs.cbs[0]
    # without it the NaN reaches the weights
    learn = learner(model=NaNAt(at=11))
    learn.fit(3)
    assert not all(p.isfinite().all() for p in learn.model.parameters())


# ----- several stoppers ----------------------------------------------------------------------------
def test_first_stop_wins():
    # EarlyStopping decides after epoch 1 (16 steps); the budget of 20 steps would have stopped later
    learn = learner([Feed([5, 6, 7, 8, 9]), EarlyStopping(), Budget(max_steps=20)])
    learn.fit(5)
    assert learn.stop_reason.startswith('EarlyStopping') and learn.train_iter == 16
    # the budget cuts epoch 1 at 10 steps; EarlyStopping would also stop after that epoch, but is second
    learn = learner([Feed([5, 6, 7, 8, 9]), EarlyStopping(), Budget(max_steps=10)])
    learn.fit(5)
    assert learn.stop_reason == 'Budget: max_steps 10 reached (spent 10 steps)' and learn.train_iter == 10
    assert [line for line in learn.logger if line.startswith('stopped')] == ['stopped: ' + learn.stop_reason]


# ----- ReduceLROnPlateau ---------------------------------------------------------------------------
class LRLog(Callback):
    order = 40
    def before_fit(self): self.lrs = []
    def after_epoch(self): self.lrs.append(self.learn.opt.param_groups[0]['lr'])


def test_reduce_lr_on_plateau():
    rlr = ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.002)
    learn = learner([Feed([5, 4, 4, 4, 4, 4, 3, 3, 3]), rlr, LRLog()])
    learn.fit(9)
    assert learn.lr_log.lrs == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025, 0.0025, 0.002])
    assert any(line.startswith('ReduceLROnPlateau: valid_loss did not improve for 2 epochs; lr 0.01 -> 0.005')
               for line in learn.logger)
    assert rlr.state_dict() == {'best': 3, 'best_epoch': 6, 'wait': 0}      # reset by the last reduction


# ----- SaveBestModel -------------------------------------------------------------------------------
def test_save_best_model_saves_the_best_epoch_and_loads_it_at_end(tmp_path):
    learn = learner([Feed([5, 4, 3, 3.5, 4]), SaveBestModel(at_end=True), Snapshots()], path=tmp_path)
    learn.fit(5)
    assert sorted(p.name for p in (tmp_path / 'models').iterdir()) == ['best.pth']
    saved = torch.load(tmp_path / 'models' / 'best.pth', weights_only=True)
    assert set(saved) == {'model'}                                      # no optimizer state by default
    for k, v in saved['model'].items(): assert torch.equal(v, learn.snapshots.sds[2][k])
    for k, v in learn.model.state_dict().items(): assert torch.equal(v, learn.snapshots.sds[2][k])


def test_save_best_model_every_epoch(tmp_path):
    learn = learner([Feed([5, 3, 4]), SaveBestModel(every_epoch=True, at_end=True), Snapshots()], path=tmp_path)
    learn.fit(3)
    assert sorted(p.name for p in (tmp_path / 'models').iterdir()) == ['best_0.pth', 'best_1.pth', 'best_2.pth']
    for k, v in learn.model.state_dict().items(): assert torch.equal(v, learn.snapshots.sds[1][k])
    assert learn.save_best_model.best_file() == 'best_1'


# ----- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize('make,message', [
    (lambda: EarlyStopping(mode='up'), "mode must be 'auto', 'min' or 'max', got 'up'"),
    (lambda: EarlyStopping(patience=-1), 'patience must be a non-negative int, got -1'),
    (lambda: EarlyStopping(patience=1.5), 'patience must be a non-negative int'),
    (lambda: EarlyStopping(min_delta=-0.1), 'min_delta must be a non-negative number'),
    (lambda: EarlyStopping(baseline=float('nan')), 'baseline must be a finite number or None'),
    (lambda: EarlyStopping(start_from_epoch=-2), 'start_from_epoch must be a non-negative int'),
    (lambda: Budget(), 'Budget needs a limit'),
    (lambda: Budget(max_cost=1.0), 'max_cost needs cost_per_hour'),
    (lambda: Budget(max_time=10, cost_per_hour=3.0), 'cost_per_hour is only used with max_cost'),
    (lambda: Budget(max_time=-1), 'max_time must be a positive number, got -1'),
    (lambda: Budget(max_steps=0), 'max_steps must be a positive int, got 0'),
    (lambda: Budget(max_samples=10.5), 'max_samples must be a positive int'),
    (lambda: ReduceLROnPlateau(factor=2), 'factor must be between 0 and 1'),
    (lambda: ReduceLROnPlateau(patience=-1), 'patience must be a non-negative int'),
    (lambda: SaveBestModel(fname=''), 'fname must be a file name'),
])
def test_bad_inputs_raise_clear_errors(make, message):
    with pytest.raises(ValueError) as e: make()
    assert message in str(e.value)
