"The Learner as users call it: fitting, the hand-loop oracle, metrics, no host sync, files, bad input."
import math, os, sys

import pytest
import torch
from torch import nn

from minilearn.core import Callback
from minilearn.data import DataLoaders, TensorLoader
from minilearn.learner import Learner
from minilearn.metrics import accuracy, error_rate, mae, mse, rmse
from conftest import blobs, regression_data, silent


# ----- the oracle: Learner == the hand-written seven-step loop -------------------------------------
@pytest.mark.parametrize('opt_func', [torch.optim.SGD, torch.optim.Adam])
def test_learner_matches_hand_written_loop(opt_func):
    x, y = regression_data(50)
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    hand = nn.Linear(1, 1)
    hand.load_state_dict(model.state_dict())

    # the hand-written loop, over the same batches in the same order
    dl = TensorLoader(x, y, bs=8, shuffle=True, seed=3)
    opt = opt_func(hand.parameters(), lr=0.05)
    for epoch in range(3):
        for xb, yb in dl:
            loss = nn.functional.mse_loss(hand(xb), yb)    # predict, measure
            loss.backward()                                # gradients
            opt.step()                                     # step
            opt.zero_grad()                                # zero

    dls = DataLoaders(TensorLoader(x, y, bs=8, shuffle=True, seed=3))
    learn = silent(Learner(model, dls, nn.MSELoss(), opt_func=opt_func, lr=0.05))
    learn.fit(3)
    for p, q in zip(model.parameters(), hand.parameters()):
        assert torch.allclose(p, q, atol=1e-6), (p, q)
    assert learn.train_iter == 3 * 7


def test_loss_goes_down(clf_dls):
    torch.manual_seed(0)
    learn = silent(Learner(nn.Linear(2, 2), clf_dls, nn.CrossEntropyLoss(), lr=1e-2, metrics=[accuracy]))
    learn.fit(4)
    h = learn.recorder.history
    assert h['train_loss'][-1] < h['train_loss'][0] and h['valid_loss'][-1] < h['valid_loss'][0]
    assert h['epoch'] == [0, 1, 2, 3] and all(isinstance(t, float) and t > 0 for t in h['time'])
    assert len(learn.recorder.losses) == len(learn.recorder.lrs) == 4 * len(clf_dls.train)


# ----- metrics: sample-weighted over a short last batch -------------------------------------------
def test_metrics_equal_hand_computation_with_short_last_batch():
    x, y = blobs(25)                                          # 50 samples
    dls = DataLoaders(TensorLoader(x, y, bs=16), TensorLoader(x, y, bs=16))   # valid batches 16,16,16,2
    torch.manual_seed(1)
    model = nn.Linear(2, 2)
    learn = silent(Learner(model, dls, nn.CrossEntropyLoss(), metrics=[accuracy, error_rate]))
    res = learn.validate()
    with torch.no_grad():
        pred = model(x)
    assert math.isclose(res['valid_loss'], nn.functional.cross_entropy(pred, y).item(), rel_tol=1e-6)
    assert math.isclose(res['accuracy'], (pred.argmax(1) == y).float().mean().item(), rel_tol=1e-6)
    assert math.isclose(res['error_rate'], 1 - res['accuracy'], rel_tol=1e-6)


def test_regression_metrics_rmse_is_root_of_epoch_mse():
    x, y = regression_data(37)
    dls = DataLoaders(TensorLoader(x, y, bs=10), TensorLoader(x, y, bs=10))
    model = nn.Linear(1, 1)
    learn = silent(Learner(model, dls, nn.MSELoss(), metrics=[mse, mae, rmse]))
    res = learn.validate()
    with torch.no_grad(): err = model(x) - y
    assert math.isclose(res['mse'], err.pow(2).mean().item(), rel_tol=1e-5)
    assert math.isclose(res['mae'], err.abs().mean().item(), rel_tol=1e-5)
    assert math.isclose(res['rmse'], err.pow(2).mean().sqrt().item(), rel_tol=1e-5)


# ----- the hot path: no host sync in training batches ---------------------------------------------
def test_no_host_sync_during_training_batches(monkeypatch, clf_dls):
    counts = {'n': 0}
    state = {'in_batch': False}
    class Window(Callback):
        order = -100
        def before_batch(self): state['in_batch'] = self.learn.training
        def after_batch(self): pass
    class WindowEnd(Callback):
        order = 100
        def after_batch(self): state['in_batch'] = False
    for name in ('item', '__float__', '__bool__', 'cpu', 'tolist', '__int__', '__index__'):
        orig = getattr(torch.Tensor, name)
        def counting(self, *a, _orig=orig, **k):
            # torch's own Adam reads its step counter, a CPU tensor even on CUDA: not ours, not a device sync
            if state['in_batch'] and 'torch/optim' not in sys._getframe(1).f_code.co_filename: counts['n'] += 1
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)
    learn = silent(Learner(nn.Linear(2, 2), clf_dls, nn.CrossEntropyLoss(), metrics=[accuracy],
                           cbs=[Window(), WindowEnd()]))
    learn.fit(2)
    assert counts['n'] == 0
    assert len(learn.recorder.history['accuracy']) == 2     # and the values were still produced


# ----- optimizer, lr and device ---------------------------------------------------------------------
def test_optimizer_created_once_and_lr_applied(reg_dls):
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss(), lr=1e-2))
    assert learn.opt is None
    learn.fit(1)
    opt = learn.opt
    assert opt.param_groups[0]['lr'] == 1e-2 and opt.state
    learn.fit(1, lr=3e-3)
    assert learn.opt is opt and opt.param_groups[0]['lr'] == 3e-3 and learn.recorder.lrs[-1] == 3e-3


def test_batches_moved_to_the_model_device(reg_dls):
    seen = []
    class Where(Callback):
        def before_batch(self): seen.append((self.learn.xb.device.type, self.learn.yb.device.type))
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss(), device='cpu', cbs=[Where()]))
    learn.fit(1)
    assert set(seen) == {('cpu', 'cpu')} and learn.device == torch.device('cpu')


def test_loader_that_declares_its_device_is_not_moved(monkeypatch):
    # TensorLoader.device says where its batches are; on the learner's device the loop skips to_device.
    # A loader without `device` (torch's DataLoader) is moved when the first batch of a pass is not on the
    # learner's device, and then every batch of the pass is (on the device already: none is)
    import minilearn.learner as L
    calls = []
    real = L.to_device
    monkeypatch.setattr(L, 'to_device', lambda b, d: calls.append(d) or real(b, d))
    x, y = regression_data(64)
    dls = DataLoaders.from_tensors(x, y, bs=16)
    assert dls.train.device == torch.device('cpu') and dls.valid.device == torch.device('cpu')
    silent(Learner(nn.Linear(1, 1), dls, nn.MSELoss())).fit(1)
    assert calls == []
    plain = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    silent(Learner(nn.Linear(1, 1), DataLoaders(plain, plain), nn.MSELoss())).fit(1)
    assert calls == []                                         # the first batch of each pass was on the device
    monkeypatch.setattr(L, 'on_device', lambda b, d: False)    # as if the loader served them from elsewhere
    silent(Learner(nn.Linear(1, 1), DataLoaders(plain, plain), nn.MSELoss())).fit(1)
    assert len(calls) == 8                                     # the whole batch at once: 4 training + 4 validation batches
    assert TensorLoader(x, y.to('meta'), bs=16).device is None     # x and y on different devices: nothing declared


def test_nested_batches_and_plain_torch_dataloader():
    x, y = regression_data(32)
    class TwoInputs(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(2, 1)
        def forward(self, xs): return self.lin(torch.cat([xs['a'], xs['b']], 1))
    class DictDS(torch.utils.data.Dataset):
        def __len__(self): return 32
        def __getitem__(self, i): return {'a': x[i], 'b': x[i] * 2}, y[i]
    dl = torch.utils.data.DataLoader(DictDS(), batch_size=8)
    learn = silent(Learner(TwoInputs(), DataLoaders(dl, dl), nn.MSELoss()))
    learn.fit(2)
    assert len(learn.recorder.history['valid_loss']) == 2 and learn.train_iter == 8


# ----- inference ---------------------------------------------------------------------------------------
def test_validate_get_preds_predict(clf_dls):
    model = nn.Linear(2, 2)
    learn = silent(Learner(model, clf_dls, nn.CrossEntropyLoss(), metrics=[accuracy]))
    learn.fit(1)
    model.train()
    preds, targs = learn.get_preds()
    assert preds.shape == (40, 2) and targs.shape == (40,) and not preds.requires_grad
    assert model.training                                  # the mode is restored
    res = learn.validate()
    assert math.isclose(res['accuracy'], accuracy(preds, targs).item(), rel_tol=1e-6)
    x = torch.randn(5, 2)
    out = learn.predict(x)
    assert torch.equal(out, model(x).detach()) and not out.requires_grad and model.training
    assert len(learn.recorder.history['epoch']) == 1       # validate/get_preds don't touch history


def test_validate_without_recorder(clf_dls):
    learn = Learner(nn.Linear(2, 2), clf_dls, nn.CrossEntropyLoss(), metrics=[accuracy], default_cbs=False)
    assert set(learn.validate()) == {'valid_loss', 'accuracy'}


# ----- save / load ---------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, reg_dls):
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss(), path=tmp_path))
    learn.fit(1)
    p = learn.save('m')
    assert p == tmp_path / 'models' / 'm.pth' and p.exists()
    assert [f.name for f in p.parent.iterdir()] == ['m.pth']        # no temporary file left behind
    w = learn.model.weight.detach().clone()
    step = learn.opt.state_dict()['state'][0]['step'].clone()
    with torch.no_grad(): learn.model.weight.zero_()
    learn.fit(1)
    learn.load('m')
    assert torch.equal(learn.model.weight, w)
    assert torch.equal(learn.opt.state_dict()['state'][0]['step'], step)


def test_load_refuses_other_architecture_and_changes_nothing(tmp_path, reg_dls):
    other = silent(Learner(nn.Linear(1, 3), reg_dls, nn.MSELoss(), path=tmp_path))
    other.save('other')
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss(), path=tmp_path))
    w = learn.model.weight.detach().clone()
    with pytest.raises(ValueError, match=r'shape mismatches: weight: file \(3, 1\) vs model \(1, 1\)'):
        learn.load('other')
    assert torch.equal(learn.model.weight, w) and learn.opt is None


@pytest.mark.parametrize('content,match', [(None, 'no such file'), (b'', 'empty'), (b'\x00garbage' * 20, 'not a readable'),
                                           ('dir', 'is a directory')])
def test_load_bad_files(tmp_path, reg_dls, content, match):
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss(), path=tmp_path))
    target = tmp_path / 'models' / 'bad.pth'
    target.parent.mkdir()
    if content == 'dir': target.mkdir()
    elif content is not None: target.write_bytes(content)
    w = learn.model.weight.detach().clone()
    with pytest.raises((ValueError, FileNotFoundError, IsADirectoryError), match=match):
        learn.load('bad')
    assert torch.equal(learn.model.weight, w)


def test_load_refuses_hostile_pickle(tmp_path, reg_dls):
    marker = tmp_path / 'pwned'
    class Evil:
        def __reduce__(self): return (open, (str(marker), 'w'))
    (tmp_path / 'models').mkdir()
    torch.save({'model': Evil()}, tmp_path / 'models' / 'evil.pth')
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss(), path=tmp_path))
    with pytest.raises(ValueError, match='refuses'):
        learn.load('evil')
    assert not marker.exists()


# ----- printing and plots ----------------------------------------------------------------------------
def test_one_line_per_epoch_in_a_log(capsys, clf_dls, monkeypatch):
    monkeypatch.setenv('CI', '1')
    learn = Learner(nn.Linear(2, 2), clf_dls, nn.CrossEntropyLoss(), metrics=[accuracy])
    learn.fit(3)
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0].split() == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time']
    assert len(lines) == 4 and [l.split()[0] for l in lines[1:]] == ['0', '1', '2']
    assert '\r' not in out.out + out.err
    with learn.no_logging():
        learn.fit(1)
    assert capsys.readouterr().out == ''


def test_bar_drawn_when_asked(capsys, clf_dls):
    from minilearn.progress import ProgressCallback
    learn = Learner(nn.Linear(2, 2), clf_dls, nn.CrossEntropyLoss(), cbs=[], default_cbs=False)
    learn.add_cb(ProgressCallback(show_bar=True))
    learn.fit(1)
    assert 'epoch 1/1 train' in capsys.readouterr().err
    with learn.no_bar():
        learn.fit(1)
    assert 'train' not in capsys.readouterr().err


def test_plots_return_figures(clf_dls):
    learn = silent(Learner(nn.Linear(2, 2), clf_dls, nn.CrossEntropyLoss()))
    learn.fit(2)
    fig = learn.recorder.plot_loss()
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and len(lines[0].get_xdata()) == 2 * len(clf_dls.train)
    fig = learn.recorder.plot_sched()
    assert fig.axes[0].get_ylabel() == 'lr'


# ----- bad input: refused before any state changes ---------------------------------------------------
def test_bad_constructor_arguments(reg_dls):
    ok = dict(model=nn.Linear(1, 1), dls=reg_dls, loss_func=nn.MSELoss())
    cases = [({'model': lambda x: x}, TypeError, 'nn.Module'),
             ({'dls': [1, 2]}, TypeError, 'train'),
             ({'dls': DataLoaders([])}, ValueError, 'empty'),
             ({'loss_func': 'mse'}, TypeError, 'loss_func must be callable'),
             ({'metrics': ['accuracy']}, TypeError, 'not callable'),
             ({'lr': 0}, ValueError, 'positive finite'),
             ({'lr': float('nan')}, ValueError, 'positive finite'),
             ({'lr': -1e-3}, ValueError, 'positive finite')]
    for change, exc, match in cases:
        with pytest.raises(exc, match=match):
            Learner(**{**ok, **change})


@pytest.mark.parametrize('n_epoch', [-1, 1.5, '2', True])
def test_bad_n_epoch(reg_dls, n_epoch):
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss()))
    with pytest.raises(ValueError, match='non-negative int'):
        learn.fit(n_epoch)
    assert learn.opt is None


def test_bad_fit_lr_changes_nothing(reg_dls):
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss(), lr=1e-2))
    learn.fit(1)
    with pytest.raises(ValueError, match='positive finite'):
        learn.fit(1, lr=float('inf'))
    assert learn.opt.param_groups[0]['lr'] == 1e-2 and learn.lr == 1e-2


def test_empty_training_loader_at_fit(reg_dls):
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss()))
    learn.dls = DataLoaders(TensorLoader(torch.zeros(0, 1), torch.zeros(0, 1)))
    with pytest.raises(ValueError, match='empty'):
        learn.fit(1)


def test_shape_mismatch_names_step_and_shapes(reg_dls):
    # a model whose output size is wrong for its input
    learn = silent(Learner(nn.Linear(3, 1), reg_dls, nn.MSELoss()))
    with pytest.raises(RuntimeError) as info:
        learn.fit(1)
    note = ' '.join(info.value.__notes__)
    assert 'the model failed' in note and 'xb (16, 1)' in note

    # a target torch would silently broadcast: (16, 1) predictions against (16,) targets
    x, y = regression_data(64)
    dls = DataLoaders.from_tensors(x, y.squeeze(1), bs=16)
    learn = silent(Learner(nn.Linear(1, 1), dls, nn.MSELoss()))
    w = learn.model.weight.detach().clone()
    with pytest.raises(ValueError, match='broadcast') as info:
        learn.fit(1)
    assert 'pred (16, 1)' in ' '.join(info.value.__notes__) and 'yb (16,)' in ' '.join(info.value.__notes__)
    assert torch.equal(learn.model.weight, w)

    # class labels of the wrong kind for CrossEntropyLoss
    x, y = blobs(20)
    dls = DataLoaders.from_tensors(x, y.float().unsqueeze(1), bs=8)
    learn = silent(Learner(nn.Linear(2, 2), dls, nn.CrossEntropyLoss()))
    with pytest.raises(Exception) as info:
        learn.fit(1)
    assert 'the loss function failed' in ' '.join(info.value.__notes__)


def test_bad_callbacks(reg_dls):
    learn = silent(Learner(nn.Linear(1, 1), reg_dls, nn.MSELoss()))
    with pytest.raises(TypeError, match='not a Callback'):
        learn.fit(1, cbs=[object()])
    assert learn.opt is None


def test_compile_keeps_plain_model(reg_dls):
    model = nn.Linear(1, 1)
    learn = Learner(model, reg_dls, nn.MSELoss())
    learn.compile(backend='eager')
    assert learn.model is model and learn.fwd is not model
    assert not any(k.startswith('_orig_mod') for k in learn.model.state_dict())


# ----- public steps, loss_grad, and the error chain --------------------------------------------------
def test_overriding_one_public_step_matches_a_hand_written_loop():
    "miniai's momentum learner: gradients decay by `mom` instead of being zeroed; only zero_grad is overridden."
    class MomentumLearner(Learner):
        def zero_grad(self):
            with torch.no_grad():
                for p in self.model.parameters(): p.grad *= 0.8
    x, y = regression_data(50)
    torch.manual_seed(0)
    model, hand = nn.Linear(1, 1), nn.Linear(1, 1)
    hand.load_state_dict(model.state_dict())
    opt, dl = torch.optim.SGD(hand.parameters(), lr=0.02), TensorLoader(x, y, bs=8, shuffle=True, seed=3)
    for _ in range(3):
        for xb, yb in dl:
            nn.functional.mse_loss(hand(xb), yb).backward()
            opt.step()
            with torch.no_grad():
                for p in hand.parameters(): p.grad *= 0.8
    learn = silent(MomentumLearner(model, DataLoaders(TensorLoader(x, y, bs=8, shuffle=True, seed=3)), nn.MSELoss(),
                                   opt_func=torch.optim.SGD, lr=0.02))
    learn.fit(3)
    for p, q in zip(model.parameters(), hand.parameters()): assert torch.allclose(p, q, atol=1e-6), (p, q)
    assert all(p.grad is not None for p in learn.model.parameters())   # never zeroed: the override ran


def test_each_step_is_a_method_the_loop_calls():
    calls = []
    class Traced(Learner):
        def forward(self): calls.append('forward'); return super().forward()
        def get_loss(self): calls.append('get_loss'); return super().get_loss()
        def backward(self): calls.append('backward'); super().backward()
        def step(self): calls.append('step'); super().step()
        def zero_grad(self): calls.append('zero_grad'); super().zero_grad()
    x, y = regression_data(8)
    learn = silent(Traced(nn.Linear(1, 1), DataLoaders.from_tensors(x, y, valid_pct=0.5, bs=4), nn.MSELoss()))
    learn.fit(1)
    assert calls == ['forward', 'get_loss', 'backward', 'step', 'zero_grad', 'forward', 'get_loss']   # train, valid


def test_scaling_loss_grad_leaves_the_recorded_loss_alone():
    class Half(Callback):
        def before_backward(self): self.learn.loss_grad = self.learn.loss_grad * 0.5
    x, y = regression_data(32)
    losses = {}
    for cbs in ([], [Half()]):
        torch.manual_seed(0)
        learn = silent(Learner(nn.Linear(1, 1), DataLoaders(TensorLoader(x, y, bs=8)), nn.MSELoss(),
                               opt_func=torch.optim.SGD, lr=0.1, cbs=cbs))
        learn.fit(1)
        losses[len(cbs)] = (learn.recorder.losses, learn.model.weight.detach().clone())
    assert losses[0][0][0] == losses[1][0][0]                      # the first batch's recorded loss: unscaled
    assert not torch.equal(losses[0][1], losses[1][1])             # but the step was half as big


def test_an_error_in_the_loss_keeps_the_exception_it_was_handling():
    def picky_loss(pred, targ):
        try: return {}['class_weights']
        except KeyError: raise RuntimeError('picky_loss: no class weights')
    x, y = regression_data(16)
    learn = silent(Learner(nn.Linear(1, 1), DataLoaders(TensorLoader(x, y, bs=8)), picky_loss))
    with pytest.raises(RuntimeError, match='no class weights') as info: learn.fit(1)
    e = info.value
    assert isinstance(e.__context__, KeyError) and not e.__suppress_context__   # the inner KeyError is still there
    assert any('the loss function failed' in n for n in e.__notes__)
    import traceback
    text = ''.join(traceback.format_exception(e))
    assert "KeyError: 'class_weights'" in text and 'During handling of the above exception' in text


def test_an_error_raised_from_a_cause_in_the_model_keeps_its_cause():
    class Bad(nn.Linear):
        def forward(self, x):
            try: int('x')
            except ValueError as inner: raise TypeError('bad input') from inner
    x, y = regression_data(8)
    learn = silent(Learner(Bad(1, 1), DataLoaders(TensorLoader(x, y, bs=8)), nn.MSELoss()))
    with pytest.raises(TypeError) as info: learn.fit(1)
    assert isinstance(info.value.__cause__, ValueError) and 'the model failed' in info.value.__notes__[0]
