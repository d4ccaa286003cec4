"Checkpoint and resume in one process: exactness (schedules, mid-epoch, accumulation), interrupts, refused files."
import os, signal, threading

import pytest
import torch
from torch import nn

from minilearn.core import Callback, CancelStepException
from minilearn.data import DataLoaders
from minilearn.learner import Learner, atomic_save, check_state_dict, safe_load
import minilearn.schedule                       # attaches fit_one_cycle
from minilearn.stopping import Budget, EarlyStopping
from minilearn.checkpoint import Checkpoint, newest_checkpoint, training_state
import _resume_script as S
from _resume_script import assert_same_fit



NB = S.N_BATCHES


def ckpt_of(tmp_path):
    return tmp_path / 'models' / 'checkpoint.pth'


class Counter(Callback):
    "State that before_fit does not reset, so a refused resume must leave it as it was."
    run_valid = False
    def __init__(self): self.n = 0
    def after_batch(self): self.n += 1
    def state_dict(self): return {'n': self.n}
    def load_state_dict(self, state): self.n = state['n']


class SendSignal(Callback):
    "Sends `sig` to this process after optimizer step `at` (or in the first validation batch of epoch `valid_epoch`)."
    order = 50
    def __init__(self, sig, at=None, valid_epoch=None, times=1): self.sig, self.at, self.ve, self.times = sig, at, valid_epoch, times
    def after_step(self):
        if self.learn.train_iter == self.at:
            for _ in range(self.times): signal.raise_signal(self.sig)
    def before_batch(self):
        if not self.learn.training and self.learn.epoch == self.ve and self.learn.iter == 0: signal.raise_signal(self.sig)


# ----- what is written ----------------------------------------------------------------------------------
def test_checkpoint_file_holds_the_whole_state(tmp_path):
    learn = S.make_learner(tmp_path)
    cb = Checkpoint()
    learn.fit(2, cbs=[cb])
    assert cb.last_path == ckpt_of(tmp_path) and sorted(os.listdir(tmp_path / 'models')) == ['checkpoint.pth']
    st = safe_load(cb.last_path)
    assert (st['epoch'], st['iter'], st['train_iter'], st['n_epoch'], st['n_iter']) == (1, None, 2 * NB, 2, NB)
    assert st['opt_class'] == 'Adam' and set(st['opt']['state'][0]) == {'step', 'exp_avg', 'exp_avg_sq'}
    assert st['callbacks']['recorder']['history']['epoch'] == [0, 1] and st['callback_classes']['jitter'] == 'Jitter'
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in st['model'].items())   # buffers too
    assert set(st['rng']) >= {'torch', 'python', 'numpy'} and st['loader']['pos'] == 0 and st['grads'] == {}
    with pytest.raises(ValueError, match='inside a training pass'): training_state(learn, mid_epoch=True)


def test_every_steps_and_keep_last_number_the_files_and_resume_true_takes_the_newest(tmp_path):
    learn = S.make_learner(tmp_path)
    learn.fit(1, cbs=[Checkpoint(every_epochs=None, every_steps=2, keep_last=3)])
    names = sorted(os.listdir(tmp_path / 'models'))
    assert names == ['checkpoint-000004.pth', 'checkpoint-000005.pth', 'checkpoint-000006.pth']   # 6 written, 3 kept
    newest = newest_checkpoint(tmp_path / 'models')
    assert newest.name == 'checkpoint-000006.pth' and safe_load(newest)['train_iter'] == NB
    assert [safe_load(tmp_path / 'models' / n)['iter'] for n in names] == [7, 9, 11]
    logs = []
    again = S.make_learner(tmp_path, seed=1)
    again.logger = logs.append
    again.fit(2, resume=True)
    assert str(newest) in logs[0] and again.train_iter == 2 * NB


def test_every_seconds_writes_mid_epoch(tmp_path, monkeypatch):
    import time, types
    import minilearn.checkpoint as ck
    clock = iter(range(0, 10**6, 7))                         # a fake clock for the callback: 7 s pass per reading
    monkeypatch.setattr(ck, 'time', types.SimpleNamespace(monotonic=lambda: next(clock), perf_counter=time.perf_counter))
    learn = S.make_learner(tmp_path)
    learn.fit(1, cbs=[Checkpoint(every_epochs=None, every_seconds=20, keep_last=9)])
    written = [safe_load(p) for p in sorted((tmp_path / 'models').iterdir())]
    # a reading per batch, one more per write: 21 s have passed at every third batch after a write
    assert [(st['iter'], st['train_iter']) for st in written] == [(2, 3), (5, 6), (8, 9), (11, 12)]


def test_stale_temporary_files_are_removed_at_the_start(tmp_path):
    (tmp_path / 'models').mkdir()
    stale = [tmp_path / 'models' / '.checkpoint.pth.abc123.tmp', tmp_path / 'models' / '.checkpoint-000002.pth.x.tmp']
    other = tmp_path / 'models' / '.other.pth.abc.tmp'
    for p in stale + [other]: p.write_bytes(b'partial')
    S.make_learner(tmp_path).fit(1, cbs=[Checkpoint()])
    assert not any(p.exists() for p in stale) and other.exists()


# ----- exact resume ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('mid', [False, True], ids=['whole-epoch', 'mid-epoch'])
def test_one_cycle_schedule_resumes_exactly(tmp_path, mid):
    straight = S.make_learner(tmp_path / 'straight')
    straight.fit_one_cycle(4, 1e-2)
    first = S.make_learner(tmp_path)
    cbs = [Checkpoint(every_epochs=None, every_steps=5), S.StopAt(steps=31)] if mid else [Checkpoint(), S.StopAt(epochs=2)]
    first.fit_one_cycle(4, 1e-2, cbs=cbs)
    resumed = S.make_learner(tmp_path, seed=1)
    resumed.fit_one_cycle(4, 1e-2, resume=True)
    assert_same_fit(S.summary(straight), S.summary(resumed))
    assert straight.recorder.hps == resumed.recorder.hps and len(resumed.recorder.hps['mom']) == 4 * NB
    assert len(set(resumed.recorder.lrs)) > 40                          # the lr did vary: a schedule was followed


def test_whole_epoch_resume_with_a_plain_torch_dataloader(tmp_path):
    # its shuffling draws from the global torch generator, which the checkpoint restores
    def make(path, seed=0):
        learn = S.make_learner(path, seed)
        ds = torch.utils.data.TensorDataset(torch.randn(64, 6, generator=torch.Generator().manual_seed(1)),
                                            torch.arange(64) % 3)
        learn.dls = DataLoaders(torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True))
        return learn
    straight = make(tmp_path / 'straight')
    straight.fit(3)
    make(tmp_path).fit(3, cbs=[Checkpoint(), S.StopAt(epochs=1)])
    resumed = make(tmp_path, seed=1)
    resumed.fit(3, resume=True)
    assert_same_fit(S.summary(straight), S.summary(resumed))


class Accumulate(Callback):
    "Gradient accumulation: step only every second batch."
    def before_step(self):
        if self.learn.iter % 2 == 0: raise CancelStepException()


class StopAfterBatches(Callback):
    "Cancels the fit after `n` training batches."
    order, run_valid = 200, False
    def __init__(self, n): self.n, self.seen = n, 0
    def after_batch(self):
        self.seen += 1
        if self.seen == self.n:
            from minilearn.core import CancelFitException
            raise CancelFitException()


def test_checkpoint_between_two_accumulated_steps_keeps_the_gradients(tmp_path):
    straight = S.make_learner(tmp_path / 'straight', cbs=[Accumulate()])
    straight.fit(2)
    first = S.make_learner(tmp_path, cbs=[Accumulate()])
    cb = Checkpoint(every_epochs=None, every_seconds=1e-9)           # a write after every batch
    first.fit(2, cbs=[cb, StopAfterBatches(NB + 5)])                 # the last batch's step was skipped
    st = safe_load(cb.last_path)
    assert (st['epoch'], st['iter']) == (1, 4) and len(st['grads']) == 6
    resumed = S.make_learner(tmp_path, seed=1, cbs=[Accumulate()])
    resumed.fit(2, resume=True)
    assert_same_fit(S.summary(straight), S.summary(resumed))
    assert resumed.train_iter == NB                                   # one step per two batches


def test_budget_split_25_plus_resume_stops_at_40_steps(tmp_path):
    straight = S.make_learner(tmp_path / 'straight', cbs=[Budget(max_steps=40)])
    straight.fit(10)
    assert straight.train_iter == 40
    first = S.make_learner(tmp_path, cbs=[Budget(max_steps=40)])
    first.fit(10, cbs=[Checkpoint(every_epochs=None, every_steps=25), S.StopAt(steps=25)])
    assert first.train_iter == 25 and first.budget.steps == 25
    resumed = S.make_learner(tmp_path, seed=1, cbs=[Budget(max_steps=40)])
    resumed.fit(10, resume=True)
    assert resumed.train_iter == 40 and resumed.budget.steps == 40 and 'max_steps 40 reached' in resumed.stop_reason
    assert resumed.stop_reason == straight.stop_reason
    assert_same_fit(S.summary(straight), S.summary(resumed))


def test_early_stopping_state_survives_the_resume(tmp_path):
    es = lambda: EarlyStopping(patience=3, min_delta=10.)            # only the first epoch counts as an improvement
    straight = S.make_learner(tmp_path / 'straight', cbs=[es()])
    straight.fit(8)
    assert straight.recorder.history['epoch'] == [0, 1, 2, 3]           # stopped after 3 epochs without improvement
    first = S.make_learner(tmp_path, cbs=[es()])
    first.fit(8, cbs=[Checkpoint(), S.StopAt(epochs=2)])
    assert first.early_stopping.wait == 1
    resumed = S.make_learner(tmp_path, seed=1, cbs=[es()])
    resumed.fit(8, resume=True)
    assert resumed.stop_reason == straight.stop_reason and 'did not improve for 3 epochs' in resumed.stop_reason
    assert resumed.early_stopping.state_dict() == straight.early_stopping.state_dict()
    assert_same_fit(S.summary(straight), S.summary(resumed))


def test_resume_forms_and_the_end_of_a_fit(tmp_path):
    learn = S.make_learner(tmp_path)
    learn.fit(2, cbs=[Checkpoint()])
    w = {k: v.clone() for k, v in learn.model.state_dict().items()}
    for form in ('checkpoint', 'checkpoint.pth', ckpt_of(tmp_path), str(ckpt_of(tmp_path)), True):
        logs = []
        again = S.make_learner(tmp_path, seed=1)
        again.logger = logs.append
        again.fit(2, resume=form)                                      # the checkpoint is the end of this fit
        assert again.train_iter == 2 * NB and 'nothing left to train' in logs[-1]
        assert all(torch.equal(w[k], v) for k, v in again.model.state_dict().items())
    logs = []
    longer = S.make_learner(tmp_path, seed=1)
    longer.logger = logs.append
    longer.fit(3, resume=True)
    assert longer.train_iter == 3 * NB and any('2-epoch fit, this fit has 3' in m for m in logs)
    fresh = S.make_learner(tmp_path / 'fresh')
    fresh.fit(1, resume=False)                                         # False: no resume
    assert fresh.train_iter == NB
    with pytest.raises(TypeError, match='resume must be True'): fresh.fit(1, resume=3)
    with pytest.raises(FileNotFoundError, match=r'found no checkpoint \(checkpoint.pth\)'): fresh.fit(1, resume=True)


# ----- interrupts ------------------------------------------------------------------------------------------
pytestmark_main = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                     reason='signal handlers need the main thread')


@pytestmark_main
def test_ctrl_c_finishes_the_batch_writes_a_checkpoint_and_reraises(tmp_path):
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    straight = S.make_learner(tmp_path / 'straight')
    straight.fit(3)
    first = S.make_learner(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        first.fit(3, cbs=[Checkpoint(every_epochs=None), SendSignal(signal.SIGINT, at=NB + 3)])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == old     # handlers put back
    assert 'SIGINT received' in first.stop_reason and isinstance(first.fit_exception, KeyboardInterrupt)
    st = safe_load(ckpt_of(tmp_path))
    assert (st['epoch'], st['iter'], st['train_iter']) == (1, 2, NB + 3)
    resumed = S.make_learner(tmp_path, seed=1)
    resumed.fit(3, resume=True)
    assert_same_fit(S.summary(straight), S.summary(resumed))


@pytestmark_main
def test_sigterm_during_validation_checkpoints_the_whole_epoch_and_exits_143(tmp_path):
    old = signal.getsignal(signal.SIGTERM)
    straight = S.make_learner(tmp_path / 'straight')
    straight.fit(3)
    first = S.make_learner(tmp_path)
    with pytest.raises(SystemExit) as e:
        first.fit(3, cbs=[Checkpoint(every_epochs=None), SendSignal(signal.SIGTERM, valid_epoch=1)])
    assert e.value.code == 143 and signal.getsignal(signal.SIGTERM) == old
    st = safe_load(ckpt_of(tmp_path))
    assert (st['epoch'], st['iter'], st['train_iter']) == (1, None, 2 * NB)
    assert st['callbacks']['recorder']['history']['epoch'] == [0, 1]     # the epoch's validation was finished
    resumed = S.make_learner(tmp_path, seed=1)
    resumed.fit(3, resume=True)
    assert_same_fit(S.summary(straight), S.summary(resumed))


@pytestmark_main
def test_ctrl_c_mid_epoch_with_a_plain_dataloader_stops_without_a_new_checkpoint(tmp_path):
    learn = S.make_learner(tmp_path)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 6), torch.arange(64) % 3)
    learn.dls = DataLoaders(torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True))   # 4 batches
    with pytest.raises(KeyboardInterrupt):
        learn.fit(3, cbs=[Checkpoint(), SendSignal(signal.SIGINT, at=6)])
    assert learn.train_iter == 6 and 'no checkpoint was written; the last one is' in learn.stop_reason
    assert safe_load(ckpt_of(tmp_path))['train_iter'] == 4                   # the one after epoch 0 is kept


@pytestmark_main
def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path):
    old = signal.getsignal(signal.SIGINT)
    learn = S.make_learner(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        learn.fit(2, cbs=[Checkpoint(every_epochs=None), SendSignal(signal.SIGINT, at=3, times=2)])
    assert not (tmp_path / 'models').exists() and learn.stop_reason is None and learn.train_iter == 3
    assert signal.getsignal(signal.SIGINT) == old


@pytestmark_main
def test_on_interrupt_false_leaves_the_handlers_alone(tmp_path):
    seen = []
    class Look(Callback):
        def after_batch(self): seen.append(signal.getsignal(signal.SIGTERM))
    old = signal.getsignal(signal.SIGTERM)
    S.make_learner(tmp_path).fit(1, cbs=[Checkpoint(on_interrupt=False), Look()])
    assert set(seen) == {old}
    seen.clear()
    S.make_learner(tmp_path).fit(1, cbs=[Checkpoint(), Look()])
    assert len(set(seen)) == 1 and seen[0] != old


def test_no_host_sync_per_batch(tmp_path, monkeypatch):
    calls = []
    for name in ('item', '__float__', '__bool__', 'cpu', 'tolist', '__int__', '__index__'):
        orig = getattr(torch.Tensor, name)
        def counting(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)
    class Window(Callback):
        order = 99                                                     # just before Checkpoint's after_batch
        def after_batch(self): calls.clear()
    class Check(Callback):
        order = 101
        def after_batch(self): assert not calls, calls
    learn = S.make_learner(tmp_path)
    learn.fit(1, cbs=[Window(), Checkpoint(), Check()])
    assert ckpt_of(tmp_path).exists()


# ----- refused: bad arguments -------------------------------------------------------------------------------
def test_bad_arguments(tmp_path):
    for kw, match in [(dict(every_epochs=0), 'every_epochs'), (dict(every_steps=1.5), 'every_steps'),
                      (dict(every_seconds=-1), 'every_seconds'), (dict(keep_last=0), 'keep_last'),
                      (dict(fname=''), 'fname'), (dict(every_steps=True), 'every_steps')]:
        with pytest.raises(ValueError, match=match): Checkpoint(**kw)
    learn = S.make_learner(tmp_path)
    ds = torch.utils.data.TensorDataset(torch.randn(32, 6), torch.arange(32) % 3)
    learn.dls = DataLoaders(torch.utils.data.DataLoader(ds, batch_size=8))
    with pytest.raises(ValueError, match='skip to a batch'): learn.fit(1, cbs=[Checkpoint(every_steps=2)])
    assert learn.train_iter == 0


# ----- refused: bad files; nothing changes --------------------------------------------------------------------
def _hostile(tmp_path, good):
    class Evil:
        def __reduce__(self): return (open, (str(tmp_path / 'marker'), 'w'))
    torch.save({'format': 'minilearn.checkpoint', 'model': Evil()}, tmp_path / 'bad.pth')

def _other_architecture(tmp_path, good):
    learn = Learner(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), S.make_learner(tmp_path).dls,
                    nn.CrossEntropyLoss(), path=tmp_path / 'other')
    learn.logger = lambda *a, **k: None
    learn.fit(1, cbs=[Checkpoint()])
    (tmp_path / 'other' / 'models' / 'checkpoint.pth').rename(tmp_path / 'bad.pth')

def _edit(**changes):
    def make(tmp_path, good):
        st = torch.load(good, weights_only=True)
        for k, v in changes.items():
            if v is KeyError: del st[k]
            elif callable(v): v(st)
            else: st[k] = v
        torch.save(st, tmp_path / 'bad.pth')
    return make

def _write(data):
    def make(tmp_path, good):
        (tmp_path / 'bad.pth').write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2] if data == 'half' else data)
    return make

FILE_CASES = {   # refused by resume AND by Learner.load
    'hostile pickle': (_hostile, ValueError, 'could run code'),
    'other architecture': (_other_architecture, ValueError,
                           r"shape mismatches: 0.weight: file \(8, 6\) vs model \(24, 6\)(.|\n)*missing in the file: \['1.weight'"),
    'truncated': (_write('half'), ValueError, 'truncated or corrupt'),
    'random bytes': (_write(os.urandom(3000)), ValueError, 'truncated or corrupt'),
    'empty': (_write(b''), ValueError, 'empty'),
    'missing path': (lambda tmp_path, good: None, FileNotFoundError, 'no such file'),
    'directory': (lambda tmp_path, good: (tmp_path / 'bad.pth').mkdir(), IsADirectoryError, 'is a directory'),
}
RESUME_CASES = {  # refused by resume only (Learner.load reads only the weights and optimizer)
    'a Learner.save file': (lambda tmp_path, good: torch.save({'model': {}}, tmp_path / 'bad.pth'), ValueError,
                            'learn.load'),
    'incomplete': (_edit(rng=KeyError), ValueError, r'incomplete checkpoint \(no rng\)'),
    'newer format': (_edit(version=99), ValueError, 'format version 99'),
    'other optimizer': (_edit(opt_class='SGD'), ValueError, 'the optimizer is Adam but the checkpoint was written with SGD'),
    'callback missing here': (_edit(callbacks=lambda st: st['callbacks'].update(budget={'steps': 3}),
                                    callback_classes=lambda st: st['callback_classes'].update(budget='Budget')),
                              ValueError, r'callbacks this fit lacks: budget \(Budget\)'),
    'callback not in the checkpoint': (_edit(callbacks=lambda st: st['callbacks'].pop('counter')), ValueError,
                                       "callback 'counter' \\(Counter\\) has state but was not in the checkpointed fit"),
    'other loader length': (_edit(iter=3, n_iter=99), ValueError, 'the training loader has 12 batches'),
    'non-tensor weight': (_edit(model=lambda st: st['model'].update({'4.bias': 'zeros'})), ValueError,
                          r"not tensors: \['4.bias'\]"),
    'bad rng': (_edit(rng={'torch': torch.zeros(3)}), ValueError, 'random generator states are malformed'),
}


@pytest.fixture
def good_checkpoint(tmp_path):
    src = S.make_learner(tmp_path / 'src', cbs=[Counter()])
    src.fit(2, cbs=[Checkpoint()])
    return ckpt_of(tmp_path / 'src')


def _victim(tmp_path):
    learn = S.make_learner(tmp_path / 'victim', seed=5, cbs=[Counter()])
    learn.fit(1)
    return learn

def _snapshot(learn):
    return ({k: v.clone() for k, v in learn.model.state_dict().items()},
            {i: {k: v.clone() for k, v in s.items()} for i, s in learn.opt.state_dict()['state'].items()},
            learn.opt.param_groups[0]['lr'], learn.counter.n)

def _unchanged(learn, snap):
    model, opt, lr, n = snap
    assert all(torch.equal(model[k], v) for k, v in learn.model.state_dict().items())
    assert all(torch.equal(opt[i][k], v) for i, s in learn.opt.state_dict()['state'].items() for k, v in s.items())
    assert learn.opt.param_groups[0]['lr'] == lr and learn.counter.n == n and learn.train_iter == 0


@pytest.mark.parametrize('case', list(FILE_CASES) + list(RESUME_CASES))
def test_refused_resume_changes_nothing(tmp_path, good_checkpoint, case):
    make, exc, match = {**FILE_CASES, **RESUME_CASES}[case]
    make(tmp_path, good_checkpoint)
    learn = _victim(tmp_path)
    snap = _snapshot(learn)
    with pytest.raises(exc, match=match):
        learn.fit(1, resume=tmp_path / 'bad.pth')
    _unchanged(learn, snap)
    assert not (tmp_path / 'marker').exists()
    learn.fit(1, resume=good_checkpoint)                                # and the good one is taken
    assert learn.counter.n == 2 * NB and learn.train_iter == 2 * NB


@pytest.mark.parametrize('case', list(FILE_CASES))
def test_refused_learner_load_changes_nothing(tmp_path, good_checkpoint, case):
    make, exc, match = FILE_CASES[case]
    make(tmp_path, good_checkpoint)
    learn = _victim(tmp_path)
    snap = _snapshot(learn)
    learn.train_iter = 0
    with pytest.raises(exc, match=match):
        learn.load(tmp_path / 'bad.pth')
    _unchanged(learn, snap)
    assert not (tmp_path / 'marker').exists()
    learn.load(good_checkpoint)                                         # a checkpoint holds what load reads
    assert all(torch.equal(v, safe_load(good_checkpoint)['model'][k]) for k, v in learn.model.state_dict().items())


def test_a_callback_refusing_its_state_rolls_back_the_others(tmp_path, good_checkpoint):
    class Picky(Callback):
        order = 10                                                     # loaded after Counter (order 0)
        def state_dict(self): return {'v': 1}
        def load_state_dict(self, state): raise ValueError('Picky: unsupported state')
    st = torch.load(good_checkpoint, weights_only=True)
    st['callbacks']['picky'], st['callback_classes']['picky'] = {'v': 2}, 'Picky'
    st['callbacks']['counter'] = {'n': 999}
    torch.save(st, tmp_path / 'bad.pth')
    learn = _victim(tmp_path)
    learn.add_cb(Picky())
    snap = _snapshot(learn)
    with pytest.raises(ValueError, match='Picky: unsupported state'):
        learn.fit(1, resume=tmp_path / 'bad.pth')
    _unchanged(learn, snap)


# ----- Learner.load: a refused load changes nothing ------------------------------------------------------------

def test_learner_load_refuses_a_non_tensor_weight_and_changes_nothing(tmp_path):
    learn = S.make_learner(tmp_path)
    sd = {k: v + 1 for k, v in learn.model.state_dict().items()}
    sd['4.bias'] = 'zeros'
    w = learn.model[0].weight.detach().clone()
    with pytest.raises(ValueError, match='not tensors'): check_state_dict(learn.model, sd)
    atomic_save({'model': sd}, tmp_path / 'models' / 'odd.pth')
    with pytest.raises(ValueError, match="not tensors: \\['4.bias'\\]"): learn.load('odd')
    assert torch.equal(learn.model[0].weight, w)


def test_learner_load_refusing_the_optimizer_state_creates_no_optimizer(tmp_path):
    src = S.make_learner(tmp_path)
    src.opt = torch.optim.Adam([{'params': list(src.model.parameters())[:2]}, {'params': list(src.model.parameters())[2:]}])
    src.save('two_groups')
    learn = S.make_learner(tmp_path)
    with pytest.raises(ValueError, match='parameter groups'): learn.load('two_groups')
    assert learn.opt is None
