"Tests of minilearn.loggers: CSVLogger, TensorBoardLogger, ShowGraph, and the Logger interface (MLflowLogger: test_mlflow.py)."
import importlib.util, json, math, os, subprocess, sys, textwrap, warnings

import pytest
import torch
from torch import nn

from minilearn.core import Callback, CancelFitException
from minilearn.data import DataLoaders
from minilearn.learner import Learner
from minilearn.checkpoint import Checkpoint
from minilearn.loggers import CSVLogger, Logger, ShowGraph, TensorBoardLogger, fit_params
from minilearn.metrics import accuracy
from minilearn.stopping import EarlyStopping


def _dls(n=200, bs=32):
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(n // 2, 2, generator=g) + 2, torch.randn(n // 2, 2, generator=g) - 2])
    y = torch.cat([torch.zeros(n // 2), torch.ones(n // 2)]).long()
    return DataLoaders.from_tensors(x, y, valid_pct=0.2, bs=bs, seed=0)


def _learner(tmp_path, **kw):
    torch.manual_seed(0)
    learn = Learner(nn.Linear(2, 2), _dls(), nn.CrossEntropyLoss(), lr=1e-2, metrics=[accuracy], path=tmp_path, **kw)
    learn.logger = lambda *a, **k: None
    return learn


def _same(a, b):
    return a == b and type(a) is type(b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_csv_rows_equal_history(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(3, cbs=[log := CSVLogger()])
    rows, h = log.read(), learn.recorder.history
    assert log.path == tmp_path / 'history.csv'
    assert len(rows) == 3 and all(list(r) == list(h) for r in rows)
    assert all(_same(r[k], h[k][i]) for i, r in enumerate(rows) for k in h)   # exact floats, ints stay ints


def test_csv_killed_fit_keeps_finished_epochs(tmp_path):
    script = textwrap.dedent(f'''
        import json, os, signal, torch
        from torch import nn
        from minilearn.core import Callback
        from minilearn.data import DataLoaders
        from minilearn.learner import Learner
        from minilearn.loggers import CSVLogger
        x = torch.randn(200, 2); y = (x[:, 0] > 0).long()
        class Kill(Callback):
            order = 50
            def after_epoch(self):
                if self.learn.epoch == 1:
                    print(json.dumps(self.learn.recorder.history), flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
        learn = Learner(nn.Linear(2, 2), DataLoaders.from_tensors(x, y, bs=32), nn.CrossEntropyLoss(),
                        path={str(tmp_path)!r}, cbs=[CSVLogger(), Kill()])
        learn.fit(50)
        ''')
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    history = json.loads(r.stdout.strip().splitlines()[-1])
    rows = CSVLogger(tmp_path / 'history.csv').read()
    assert len(rows) == 2
    assert all(list(row) == list(history) for row in rows)
    assert all(_same(row[k], history[k][i]) for i, row in enumerate(rows) for k in history)
    assert (tmp_path / 'history.csv').read_text().endswith('\n')


def test_csv_append_continues_without_header(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(2, cbs=[CSVLogger()])
    learn.fit(1, cbs=[log := CSVLogger(append=True)])
    assert [r['epoch'] for r in log.read()] == [0, 1, 0]
    assert (tmp_path / 'history.csv').read_text().count('train_loss') == 1
    learn.fit(1, cbs=[log := CSVLogger()])        # append=False starts afresh
    assert len(log.read()) == 1


def test_csv_append_refuses_other_columns(tmp_path):
    _learner(tmp_path).fit(1, cbs=[CSVLogger()])
    before = (tmp_path / 'history.csv').read_bytes()
    learn = Learner(nn.Linear(2, 2), _dls(), nn.CrossEntropyLoss(), path=tmp_path)   # no accuracy column
    learn.logger = lambda *a: None
    with pytest.raises(ValueError, match="columns.*accuracy.*append=False"):
        learn.fit(1, cbs=[CSVLogger(append=True)])
    assert (tmp_path / 'history.csv').read_bytes() == before
    assert learn.train_iter == 0


def test_csv_append_drops_torn_last_line(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(1, cbs=[CSVLogger()])
    with open(tmp_path / 'history.csv', 'a') as f: f.write('1,0.5')      # a row cut short by a crash
    with pytest.warns(UserWarning, match='incomplete'):
        learn.fit(1, cbs=[log := CSVLogger(append=True)])
    assert [r['epoch'] for r in log.read()] == [0, 0]


def test_csv_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match='fname'): CSVLogger(3)
    with pytest.raises(TypeError, match='append'): CSVLogger(append='yes')
    with pytest.raises(FileNotFoundError, match='no such file'): CSVLogger(tmp_path / 'none.csv').read()
    learn = Learner(nn.Linear(2, 2), _dls(), nn.CrossEntropyLoss(), path=tmp_path, default_cbs=False)
    with pytest.raises(ValueError, match='Recorder'): learn.fit(1, cbs=[CSVLogger()])


needs_tb = pytest.mark.skipif(importlib.util.find_spec('tensorboard') is None,
                              reason='the optional tensorboard extra is not installed (pip install "minilearn[tensorboard]")')


def _events(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(path))
    acc.Reload()
    return acc


@needs_tb
def test_tensorboard_tags_and_steps(tmp_path):
    learn = _learner(tmp_path)
    n_iter = len(learn.dls.train)
    learn.fit(2, cbs=[tb := TensorBoardLogger('runs/a', hparams={'seed': 0})])
    learn.fit(1, cbs=[tb])                          # a second fit continues the run and the step count
    acc = _events(tmp_path / 'runs/a')
    tags = set(acc.Tags()['scalars'])
    assert {'batch/train_loss', 'batch/lr', 'epoch/train_loss', 'epoch/valid_loss', 'epoch/accuracy', 'epoch/time',
            'hparam/valid_loss', 'hparam/accuracy'} <= tags
    assert [e.step for e in acc.Scalars('batch/train_loss')] == list(range(3 * n_iter))
    assert [e.step for e in acc.Scalars('batch/lr')] == list(range(3 * n_iter))
    assert [e.step for e in acc.Scalars('epoch/valid_loss')] == [n_iter, 2 * n_iter, 3 * n_iter]
    losses = [e.value for e in acc.Scalars('batch/train_loss')]
    assert losses == pytest.approx(learn.recorder.losses, rel=1e-6)
    assert acc.Scalars('epoch/accuracy')[-1].value == pytest.approx(learn.recorder.history['accuracy'][-1])
    assert tb.writer is None                        # closed after the fit


@needs_tb
def test_tensorboard_closes_on_exception_and_keeps_epochs(tmp_path):
    class Boom(Callback):
        order = 50
        def after_epoch(self):
            if self.learn.epoch == 1: raise RuntimeError('boom')
    learn = _learner(tmp_path)
    with pytest.raises(RuntimeError, match='boom'):
        learn.fit(5, cbs=[tb := TensorBoardLogger('runs/b'), Boom()])
    assert tb.writer is None
    assert len(_events(tmp_path / 'runs/b').Scalars('epoch/valid_loss')) == 2


@needs_tb
def test_tensorboard_graph_and_bad_hparams(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(1, cbs=[TensorBoardLogger('runs/g', log_graph=True)])
    assert _events(tmp_path / 'runs/g').Graph() is not None
    with pytest.raises(TypeError, match='hparams'): TensorBoardLogger(hparams={'opt': object()})


def test_tensorboard_missing_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'tensorboard' else real(name, *a))
    with pytest.raises(ImportError, match=r'minilearn\[tensorboard\]'): TensorBoardLogger()


def test_show_graph_writes_png(tmp_path):
    learn = _learner(tmp_path)
    n_iter = len(learn.dls.train)
    learn.fit(3, cbs=[sg := ShowGraph('plots/loss.png')])
    assert (tmp_path / 'plots/loss.png').read_bytes().startswith(b'\x89PNG')
    train, valid = sg.fig.axes[0].lines
    assert list(train.get_ydata()) == learn.recorder.losses
    assert list(valid.get_xdata()) == [n_iter, 2 * n_iter, 3 * n_iter]
    assert list(valid.get_ydata()) == learn.recorder.history['valid_loss']
    assert sg.fig.axes[0].get_xlim()[1] == 3 * n_iter      # the whole fit's span from the first epoch


def test_show_graph_redraws_in_place_in_a_notebook(tmp_path, monkeypatch):
    import IPython.display
    import minilearn.loggers as loggers
    shown, updates = [], []
    class Handle:
        def update(self, obj): updates.append(obj)
    def display(obj, display_id=False):
        shown.append((obj, display_id))
        return Handle()
    monkeypatch.setattr(loggers, 'in_notebook', lambda: True)
    monkeypatch.setattr(IPython.display, 'display', display)
    learn = _learner(tmp_path)
    learn.fit(4, cbs=[ShowGraph()])
    assert len(shown) == 1 and shown[0][1] is True and len(updates) == 3
    assert updates[-1].data.startswith(b'\x89PNG')
    assert not (tmp_path / 'loss.png').exists()


# ----- the Logger interface ----------------------------------------------------------------------------------
class Calls(Logger):
    "Records each hook call with what it was given."
    def __init__(self): self.calls = []
    def start(self, params): self.calls.append(('start', self.learn.epoch, len(self.learn.recorder.losses), params['epochs']))
    def log_steps(self, start, values):
        assert len({len(v) for v in values.values()}) == 1                   # one value per step in each list
        self.calls.append(('log_steps', start, values))
    def log_epoch(self, epoch, row, step): self.calls.append(('log_epoch', epoch, row, step))
    def finish(self, stop_reason, error): self.calls.append(('finish', stop_reason, error))


class StopAt(Callback):
    "learn.stop_fit at training step `step` (in after_batch) or after epoch `epoch` (in after_epoch)."
    def __init__(self, step=None, epoch=None, order=200): self.step, self.epoch, self.order = step, epoch, order
    def after_batch(self):
        if self.learn.training and self.learn.train_iter == self.step: self.learn.stop_fit(f'StopAt: step {self.step}')
    def after_epoch(self):
        if self.learn.epoch == self.epoch: self.learn.stop_fit(f'StopAt: epoch {self.epoch}')


def _sent(calls, rec):
    "The steps and rows a logger was sent, checked against the recorder."
    steps = [(s, v) for name, s, v in (c for c in calls if c[0] == 'log_steps')]
    for s, v in steps:
        assert v['train_loss'] == rec.losses[s:s + len(v['train_loss'])] and v['lr'] == rec.lrs[s:s + len(v['lr'])]
    return [s for s, _ in steps], [c[1] for c in calls if c[0] == 'log_epoch']


def test_logger_hooks_in_order_with_their_values(tmp_path):
    learn = _learner(tmp_path)
    n = len(learn.dls.train)
    learn.fit(2, cbs=[log := Calls()])
    h, rec = learn.recorder.history, learn.recorder
    assert [c[0] for c in log.calls] == ['start', 'log_steps', 'log_epoch', 'log_steps', 'log_epoch', 'finish']
    assert log.calls[0] == ('start', 0, 0, 2)
    assert _sent(log.calls, rec) == ([0, n], [0, 1])
    assert log.calls[2][2] == {k: v[0] for k, v in h.items()} and log.calls[2][3] == n
    assert log.calls[4][2] == {k: v[1] for k, v in h.items()} and log.calls[4][3] == 2 * n
    assert log.calls[-1] == ('finish', None, None)


def test_logger_hooks_across_a_cut_fit_and_its_resume(tmp_path):
    n = len(_dls().train)
    learn = _learner(tmp_path)
    learn.fit(4, cbs=[log := Calls(), Checkpoint(every_epochs=2), StopAt(step=2 * n + 3)])
    assert learn.recorder.history['epoch'] == [0, 1, 2]                  # the recorder has the cut epoch's row...
    assert _sent(log.calls, learn.recorder) == ([0, n, 2 * n], [0, 1])    # ...the logger gets its steps, not the row
    assert len(log.calls[-2][2]['train_loss']) == 3
    assert log.calls[-1] == ('finish', f'StopAt: step {2 * n + 3}', None)
    resumed = _learner(tmp_path)
    resumed.fit(4, cbs=[log := Calls(), Checkpoint(every_epochs=2)], resume=True)
    assert log.calls[0] == ('start', 2, 2 * n, 4)                         # after the resume loaded the state
    assert _sent(log.calls, resumed.recorder) == ([2 * n, 3 * n], [2, 3])
    assert log.calls[-1] == ('finish', None, None)


def test_a_stop_in_after_epoch_by_an_earlier_callback_still_sends_that_epoch(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(4, cbs=[log := Calls(), StopAt(epoch=1, order=0)])         # runs before the logger (order 10)
    assert _sent(log.calls, learn.recorder)[1] == [0, 1]
    assert log.calls[-1] == ('finish', 'StopAt: epoch 1', None)


def test_logger_finish_gets_the_error(tmp_path):
    class Boom(Callback):
        def after_batch(self):
            if self.learn.train_iter == 3: raise KeyboardInterrupt
    learn = _learner(tmp_path)
    with pytest.raises(KeyboardInterrupt): learn.fit(2, cbs=[log := Calls(), Boom()])
    name, reason, error = log.calls[-1]
    assert name == 'finish' and reason is None and isinstance(error, KeyboardInterrupt)
    assert _sent(log.calls, learn.recorder) == ([0], [])                  # the three batches, no row


def test_logger_no_epoch_to_run_and_a_failed_start(tmp_path):
    learn = _learner(tmp_path)
    learn.fit(0, cbs=[log := Calls()])
    assert log.calls == [('start', 0, 0, 0), ('finish', None, None)]
    with pytest.raises(FileNotFoundError): learn.fit(1, cbs=[log := Calls()], resume=True)   # no checkpoint
    assert log.calls == []                                                # failed before its first epoch
    class Cancel(Callback):
        order = -20
        def before_fit(self): raise CancelFitException()
    learn.fit(1, cbs=[log := Calls(), Cancel()])
    assert log.calls == [] and learn.train_iter == 0                      # cancelled before it began


def test_logger_misspelt_hook_and_no_recorder(tmp_path):
    with pytest.raises(TypeError, match='did you mean log_steps'):
        class Typo(Logger):
            def log_step(self, start, values): pass
    learn = Learner(nn.Linear(2, 2), _dls(), nn.CrossEntropyLoss(), path=tmp_path, default_cbs=False)
    with pytest.raises(ValueError, match='Calls logs what the Recorder records'): learn.fit(1, cbs=[Calls()])


def test_lr_find_runs_no_logger(tmp_path):
    import minilearn.schedule   # noqa: F401  (attaches lr_find)
    learn = _learner(tmp_path, cbs=[log := Calls()])
    learn.lr_find(num_it=10, show_plot=False)
    assert log.calls == []
    learn.fit(1)
    assert [c[0] for c in log.calls] == ['start', 'log_steps', 'log_epoch', 'finish']


def test_fit_params(tmp_path):
    second = CSVLogger('b.csv')
    second.name = 'second'                                                # two of one class need two names
    learn = _learner(tmp_path, cbs=[EarlyStopping(patience=4), CSVLogger('a.csv'), second])
    learn.n_epoch = 3
    learn.opt = torch.optim.SGD([{'params': [learn.model.weight], 'lr': 0.1}, {'params': [learn.model.bias], 'lr': 0.01}],
                                momentum=0.9)
    p = fit_params(learn)
    assert all(isinstance(v, (bool, int, float, str)) for v in p.values())
    assert p['opt'] == 'SGD' and p['opt.0.lr'] == 0.1 and p['opt.1.lr'] == 0.01 and p['opt.1.momentum'] == 0.9
    assert 'opt.lr' not in p                                              # the groups differ: one key per group
    assert p['epochs'] == 3 and p['batch_size'] == 32 and p['loss_func'] == 'CrossEntropyLoss'
    assert p['model'] == 'Linear' and p['model.params'] == p['model.trainable_params'] == 6
    assert p['EarlyStopping.patience'] == 4 and p['EarlyStopping.monitor'] == 'valid_loss'
    assert 'EarlyStopping.best' not in p and 'EarlyStopping.wait' not in p   # state, not settings
    assert p['CSVLogger:csv_logger.fname'] == 'a.csv' and p['CSVLogger:second.fname'] == 'b.csv'
    learn.model.bias.requires_grad_(False)
    assert fit_params(learn)['model.trainable_params'] == 4
