"Mixed precision, gradient accumulation, gradient clipping and torch.compile (minilearn.precision)."
import math, sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilearn.core import Callback, CancelBatchException, CancelFitException, CancelTrainException
from minilearn.data import DataLoaders, TensorLoader, mnist_digits
from minilearn.learner import Learner, atomic_save, safe_load
from minilearn.metrics import accuracy
from minilearn.recorder import Recorder
from minilearn.precision import GradientAccumulation, GradientClip, MixedPrecision




def reg_data(n=100, seed=0):
    "n samples of 8 features and a noisy linear target (n, 1)."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)


def make(data=None, bs=8, cbs=(), opt_func=torch.optim.SGD, lr=0.05, shuffle=False, dl=None, **kwargs):
    "A seeded MLP 8-16-1 on `data` in batches of `bs`, with a Recorder and `cbs` (no printing)."
    x, y = reg_data() if data is None else data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    dls = DataLoaders(dl if dl is not None else TensorLoader(x, y, bs=bs, shuffle=shuffle, seed=0))
    return Learner(model, dls, F.mse_loss, opt_func=opt_func, lr=lr, default_cbs=False,
                   cbs=[Recorder(), *cbs], **kwargs)


def max_diff(a: Learner, b: Learner) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.model.parameters(), b.model.parameters()))


class NoLen:
    "A loader without a length: the learner cannot know where an epoch ends."
    def __init__(self, dl): self.dl = dl
    def __iter__(self): return iter(self.dl)


class Poison(Callback):
    "Makes training batch `at` (of every epoch) produce inf/NaN, and notes whether its step moved the weights."
    def __init__(self, at): self.at, self.moved = at, None
    def before_batch(self):
        if self.learn.training and self.learn.iter == self.at: self.learn.xb = self.learn.xb * math.inf
    def before_step(self): self._w = [p.detach().clone() for p in self.learn.model.parameters()]
    def after_step(self):
        if self.learn.iter == self.at:
            self.moved = not all(torch.equal(a, p) for a, p in zip(self._w, self.learn.model.parameters()))


class LossAtAfterLoss(Callback):
    "Records the loss the loss function returned (before any callback scales it)."
    order = 100
    def before_fit(self): self.losses = []
    def after_loss(self):
        if self.learn.training: self.losses.append(self.learn.loss.detach().clone())


# ----- mixed precision -------------------------------------------------------------------------------
def test_bf16_on_cpu_trains_digits_within_1pct_of_float32():
    x, y = mnist_digits()
    x = x.flatten(1)
    def fit(cbs):
        torch.manual_seed(0)
        dls = DataLoaders.from_tensors(x, y, valid_pct=0.2, bs=64, seed=0)
        model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
        learn = Learner(model, dls, F.cross_entropy, lr=1e-2, metrics=[accuracy], default_cbs=False,
                        cbs=[Recorder(), *cbs])
        learn.fit(3)
        return learn.recorder.history['accuracy'][-1]
    base, bf16 = fit([]), fit([MixedPrecision(torch.bfloat16)])
    assert base > 0.9
    assert abs(bf16 - base) <= 0.01, (base, bf16)


def test_bf16_autocasts_forward_and_loss_only():
    seen = {}
    class Probe(Callback):
        order = 50
        def after_pred(self): seen.setdefault('pred', set()).add(self.learn.pred.dtype)
        def after_loss(self): seen.setdefault('in_loss', set()).add(torch.is_autocast_enabled('cpu'))
        def before_backward(self): seen.setdefault('backward', set()).add(torch.is_autocast_enabled('cpu'))
    learn = make(cbs=[MixedPrecision(), Probe()])
    learn.fit(1)
    assert seen['pred'] == {torch.bfloat16}
    assert seen['backward'] == {False}          # autocast left before the backward pass
    assert not torch.is_autocast_enabled('cpu')
    res = learn.validate(learn.dls.train)           # validation batches are autocast too, and left again
    assert math.isfinite(res['valid_loss']) and not torch.is_autocast_enabled('cpu')


@pytest.mark.parametrize('native', [True, False])
def test_bf16_warns_on_a_cpu_without_bfloat16_instructions(monkeypatch, recwarn, native):
    import minilearn.precision as precision
    monkeypatch.setattr(precision, '_cpu_has_bf16', lambda: native)
    make(cbs=[MixedPrecision()]).fit(1)
    slow = [w for w in recwarn if 'no bfloat16 instructions' in str(w.message)]
    assert len(slow) == (0 if native else 1)


def test_validate_before_any_fit_with_mixed_precision():
    learn = make(cbs=[MixedPrecision()])
    assert math.isfinite(learn.validate(learn.dls.train)['valid_loss'])
    assert not torch.is_autocast_enabled('cpu')


@pytest.mark.parametrize('where', ['exception', 'cancel_train', 'cancel_batch'])
def test_autocast_is_left_on_every_early_exit(where):
    class Stop(Callback):
        order = -50                 # its after_train runs before MixedPrecision's
        def after_pred(self):
            if self.learn.iter != 2: return
            if where == 'exception': raise RuntimeError('boom')
            raise CancelTrainException() if where == 'cancel_train' else CancelBatchException()
        def after_train(self): self.in_after_train = torch.is_autocast_enabled('cpu')
    learn = make(cbs=[MixedPrecision(), Stop()])
    if where == 'exception':
        with pytest.raises(RuntimeError, match='boom'): learn.fit(1)
    else:
        learn.fit(1)
        assert learn.stop.in_after_train is False
    assert not torch.is_autocast_enabled('cpu')


def test_float16_on_cpu_is_a_clear_error_and_to_fp16_changes_nothing():
    learn = make()
    with pytest.raises(ValueError, match='bfloat16'): learn.fit(1, cbs=[MixedPrecision(torch.float16)])
    learn.to_bf16()
    with pytest.raises(ValueError, match='CUDA'): learn.to_fp16()
    assert learn.mixed_precision.dtype == torch.bfloat16


def test_to_bf16_to_fp32_shortcuts():
    learn = make()
    assert learn.to_bf16() is learn and learn.to_bf16() is learn
    mps = [c for c in learn.cbs if isinstance(c, MixedPrecision)]
    assert len(mps) == 1 and mps[0].dtype == torch.bfloat16 and learn.mixed_precision is mps[0]
    assert learn.to_fp32() is learn
    assert not any(isinstance(c, MixedPrecision) for c in learn.cbs) and not hasattr(learn, 'mixed_precision')


def test_float16_scaler_skips_the_step_on_inf_and_records_real_losses():
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**10, growth_interval=1000)
    learn = make(cbs=[MixedPrecision(torch.float16, scaler), Poison(3), LossAtAfterLoss()])
    learn.fit(1)
    n = len(learn.dls.train)
    assert learn.poison.moved is False                 # the poisoned step did not move the weights
    assert learn.train_iter == n - 1                   # and was not counted
    assert scaler.get_scale() == 2.**9                 # the scaler backed off once
    rec = torch.tensor(learn.recorder.losses)
    real = torch.stack(learn.loss_at_after_loss.losses)
    assert torch.equal(rec.isfinite(), real.isfinite()) and not rec[3].isfinite()
    ok = rec.isfinite()
    assert torch.equal(rec[ok], real[ok].float())      # the real loss, not loss * 1024
    assert all(p.isfinite().all() for p in learn.model.parameters())


def test_float16_scaler_state_survives_a_checkpoint_round_trip(tmp_path):
    def fp16(scaler): return MixedPrecision(torch.float16, scaler)
    learn = make(cbs=[fp16(torch.amp.GradScaler('cpu', init_scale=2.**10, growth_interval=3)), Poison(2)])
    learn.fit(1)
    sd = learn.mixed_precision.state_dict()
    # 13 batches: 2 finite steps, one skip (scale 512), 10 finite steps (3 growths: 4096, tracker 1)
    assert sd['scaler']['scale'] == 2.**12 and sd['scaler']['_growth_tracker'] == 1
    path = atomic_save({'model': learn.model.state_dict(), 'opt': learn.opt.state_dict(),
                        'callbacks': {'mixed_precision': sd}}, tmp_path / 'ck.pth')
    state = safe_load(path)
    # into a callback whose scaler exists, and into one whose scaler the fit will create (kept until then)
    fresh = fp16(torch.amp.GradScaler('cpu'))
    fresh.load_state_dict(state['callbacks']['mixed_precision'])
    assert fresh.scaler.state_dict() == sd['scaler']
    later = MixedPrecision(torch.float16)
    later.load_state_dict(state['callbacks']['mixed_precision'])
    assert later.state_dict() == sd
    # a learner resumed from the file goes on exactly as the original does
    learn.remove_cb(learn.poison)
    resumed = make(cbs=[fresh]).load(path)
    learn.fit(1); resumed.fit(1)
    assert learn.mixed_precision.state_dict() == resumed.mixed_precision.state_dict()
    assert max_diff(learn, resumed) == 0


# ----- gradient accumulation -------------------------------------------------------------------------
@pytest.mark.parametrize('opt_func', [torch.optim.SGD, torch.optim.Adam], ids=['SGD', 'Adam'])
@pytest.mark.parametrize('n', [100, 85, 96], ids=['last-group-one-short-batch', 'last-group-short-and-last-batch-short', 'exact'])
def test_accumulating_4_batches_of_8_equals_batches_of_32(opt_func, n):
    data = reg_data(n)
    big = make(data, bs=32, opt_func=opt_func, shuffle=True)
    big.fit(3)
    acc = make(data, bs=8, opt_func=opt_func, shuffle=True, cbs=[GradientAccumulation(4)])
    acc.fit(3)
    assert acc.train_iter == big.train_iter == 3 * math.ceil(n / 32)
    assert max_diff(acc, big) < 1e-5
    assert len(acc.recorder.losses) == 3 * math.ceil(n / 8)


def test_accumulation_with_a_loader_without_length():
    data = reg_data(85)
    big = make(data, bs=32, opt_func=torch.optim.Adam)
    big.fit(2)
    acc = make(data, opt_func=torch.optim.Adam, dl=NoLen(TensorLoader(*data, bs=8)), cbs=[GradientAccumulation(4)])
    acc.fit(2)
    assert acc.train_iter == big.train_iter == 6 and max_diff(acc, big) < 1e-5


def test_accumulation_records_unweighted_losses():
    x, y = reg_data()
    acc = make(cbs=[GradientAccumulation(4), LossAtAfterLoss()])
    acc.fit(1)
    model0 = make().model                 # the same initial weights: the first group's batches all see them
    with torch.no_grad(): first = torch.stack([F.mse_loss(model0(x[i:i + 8]), y[i:i + 8]) for i in range(0, 32, 8)])
    assert torch.allclose(torch.tensor(acc.recorder.losses[:4]), first, rtol=1e-6)
    assert torch.equal(torch.tensor(acc.recorder.losses), torch.stack(acc.loss_at_after_loss.losses))


def test_accumulation_and_float16_scaler_both_restore_the_loss():
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**10)
    learn = make(cbs=[GradientAccumulation(4), MixedPrecision(torch.float16, scaler), LossAtAfterLoss()])
    learn.fit(1)
    assert learn.train_iter == 4
    assert torch.equal(torch.tensor(learn.recorder.losses), torch.stack(learn.loss_at_after_loss.losses).float())


def test_accumulation_drops_an_unfinished_group_when_the_fit_is_cancelled():
    class StopAt(Callback):
        def after_batch(self):
            if self.learn.iter == 5: raise CancelFitException()
    learn = make(cbs=[GradientAccumulation(4), StopAt()])
    learn.fit(2)
    assert learn.train_iter == 1                                   # batches 0-3 stepped, 4 and 5 pending
    assert all(p.grad is None for p in learn.model.parameters())   # batches 4 and 5 don't leak into a later fit


class StopAfterSteps(Callback):
    "Counts training batches and cancels the fit after the batch where `n` optimizer steps were reached."
    def __init__(self, n): self.n, self.batches = n, 0
    def after_batch(self):
        if not self.learn.training: return
        self.batches += 1
        if self.learn.train_iter >= self.n: raise CancelFitException()


def test_accumulation_counts_optimizer_steps():
    learn = make(reg_data(128), cbs=[GradientAccumulation(4), StopAfterSteps(10)])   # 16 batches, 4 steps an epoch
    learn.fit(5)
    assert learn.train_iter == 10 and learn.stop_after_steps.batches == 40


def test_budget_max_steps_counts_accumulated_steps():
    from minilearn.stopping import Budget
    learn = make(reg_data(128), cbs=[GradientAccumulation(4), Budget(max_steps=10)])
    learn.fit(5)
    assert learn.train_iter == 10
    assert len(learn.recorder.losses) == 40          # 10 steps of 4 batches
    assert 'max_steps' in learn.stop_reason


# ----- gradient clipping -----------------------------------------------------------------------------
class NormAfterClip(Callback):
    "Measures, after GradientClip (order 15), the gradient norm the optimizer will use."
    order = 16
    def __init__(self, norm_type=2.0): self.norm_type, self.norms = norm_type, []
    def before_step(self):
        grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
        self.norms.append(torch.nn.utils.get_total_norm(grads, self.norm_type).item())


@pytest.mark.parametrize('norm_type', [2.0, math.inf, 1.0])
def test_gradient_clip_leaves_no_norm_above_max_norm(norm_type):
    learn = make(cbs=[GradientClip(0.5, norm_type), NormAfterClip(norm_type)], lr=0.01)
    learn.fit(2)
    assert max(learn.norm_after_clip.norms) <= 0.5 * (1 + 1e-5)
    norms = learn.gradient_clip.norms                     # before clipping, one per step
    assert len(norms) == learn.train_iter == 26
    assert sum(v > 0.5 for v in norms) >= 5              # it had something to clip
    for before, after in zip(norms, learn.norm_after_clip.norms):
        assert math.isclose(after, min(before, 0.5), rel_tol=1e-4)   # scaled down to max_norm, or untouched


def test_gradient_clip_sees_unscaled_float16_gradients_and_only_stepping_batches():
    plain = make(cbs=[GradientClip(0.5)], lr=0.01)
    plain.fit(1)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.**10)
    mixed = make(cbs=[GradientAccumulation(2), MixedPrecision(torch.float16, scaler), GradientClip(0.5),
                      NormAfterClip()], lr=0.01)
    mixed.fit(1)
    assert len(mixed.gradient_clip.norms) == mixed.train_iter == 7          # steps, not batches
    assert max(mixed.norm_after_clip.norms) <= 0.5 * (1 + 1e-3)
    # the first clip saw unscaled gradients: of the size of the float32 ones (not 1024 times larger)
    assert 0.5 < mixed.gradient_clip.norms[0] / plain.gradient_clip.norms[0] < 2


# ----- torch.compile ---------------------------------------------------------------------------------
def test_compiled_learner_matches_eager_and_saves_plain_names(tmp_path):
    data = reg_data(96)
    eager = make(data, bs=32, opt_func=torch.optim.Adam, lr=1e-2)
    eager.fit(2)
    compiled = make(data, bs=32, opt_func=torch.optim.Adam, lr=1e-2, compile={'dynamic': False}, path=tmp_path)
    assert compiled.fwd is not compiled.model and isinstance(compiled.model, nn.Sequential)
    compiled.fit(2)
    assert len(compiled.recorder.losses) == len(eager.recorder.losses) == 6
    assert max(abs(a - b) for a, b in zip(eager.recorder.losses, compiled.recorder.losses)) < 1e-4
    assert max_diff(eager, compiled) < 1e-4
    path = compiled.save('c')
    keys = list(safe_load(path)['model'])
    assert keys == list(eager.model.state_dict()) and not any('_orig_mod' in k for k in keys)
    eager.load(path)                               # a compiled learner's file loads into an eager one
    assert max_diff(eager, compiled) == 0


# ----- the hot path ----------------------------------------------------------------------------------
def test_no_host_sync_in_training_batches_with_all_four(monkeypatch):
    counts, state = {'n': 0, 'where': []}, {'on': False}
    class Open(Callback):
        order, run_valid = -1000, False
        def before_batch(self): state['on'] = True
    class Close(Callback):
        order, run_valid = 1000, False
        def after_batch(self): state['on'] = False
    learn = make(reg_data(96), bs=8, opt_func=torch.optim.Adam, compile={'dynamic': False},
                 cbs=[MixedPrecision(), GradientAccumulation(3), GradientClip(0.5), Open(), Close()])
    learn.fit(1)                                 # compiles outside the counted fit
    for name in ('item', '__float__', '__bool__', 'cpu', 'tolist', '__int__', '__index__'):
        orig = getattr(torch.Tensor, name)
        def counting(self, *a, _orig=orig, _name=name, **k):
            # torch's own Adam reads its step counter, a CPU tensor even on CUDA: not ours, not a device sync
            if state['on'] and 'torch/optim' not in sys._getframe(1).f_code.co_filename:
                counts['n'] += 1
                counts['where'].append((_name, sys._getframe(1).f_code.co_filename, sys._getframe(1).f_lineno))
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)
    learn.fit(2)
    assert learn.train_iter == 8 and len(learn.gradient_clip.norms) == 12
    assert counts['n'] == 0, counts['where'][:5]


# ----- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize('make_bad, err, match', [
    (lambda: GradientAccumulation(0), ValueError, 'n_batches'),
    (lambda: GradientAccumulation(-2), ValueError, 'n_batches'),
    (lambda: GradientAccumulation(2.5), ValueError, 'n_batches'),
    (lambda: GradientAccumulation(True), ValueError, 'n_batches'),
    (lambda: GradientClip(0), ValueError, 'max_norm'),
    (lambda: GradientClip(-1.0), ValueError, 'max_norm'),
    (lambda: GradientClip(math.nan), ValueError, 'max_norm'),
    (lambda: GradientClip(math.inf), ValueError, 'max_norm'),
    (lambda: GradientClip('1'), ValueError, 'max_norm'),
    (lambda: GradientClip(1.0, norm_type=0), ValueError, 'norm_type'),
    (lambda: MixedPrecision(torch.float32), ValueError, 'torch.bfloat16 or torch.float16'),
    (lambda: MixedPrecision('bf16'), ValueError, 'torch.bfloat16 or torch.float16'),
    (lambda: MixedPrecision(torch.bfloat16, scaler=torch.amp.GradScaler('cpu')), ValueError, 'only for float16'),
    (lambda: MixedPrecision(torch.float16, scaler=object()), TypeError, 'GradScaler'),
])
def test_bad_inputs_are_refused_clearly(make_bad, err, match):
    with pytest.raises(err, match=match): make_bad()
