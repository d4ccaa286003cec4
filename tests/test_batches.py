"Any batch (issue 18): several inputs, dict batches, the model's own loss, unlabelled data, structured predictions."
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from minilearn.data import DataLoaders, TensorLoader
from minilearn.learner import Learner
from minilearn.metrics import accuracy
from conftest import silent


# ----- several inputs ----------------------------------------------------------------------------------
class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(2, 4)
    def forward(self, x1, x2): return self.a(x1) + self.b(x2)


def test_a_two_input_model_matches_a_hand_written_loop():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(64, 3, generator=g), torch.randn(64, 2, generator=g)
    y = torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(0)
    model, hand = TwoInputs(), TwoInputs()
    hand.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(hand.parameters(), lr=0.1)
    dl = TensorLoader((x1, x2), y, bs=16, shuffle=True, seed=1)
    for _ in range(3):
        for a, b, t in dl:
            F.cross_entropy(hand(a, b), t).backward()
            opt.step()
            opt.zero_grad()
    learn = silent(Learner(model, DataLoaders(TensorLoader((x1, x2), y, bs=16, shuffle=True, seed=1)), nn.CrossEntropyLoss(),
                           opt_func=torch.optim.SGD, lr=0.1, n_inp=2))
    learn.fit(3)
    for p, q in zip(model.parameters(), hand.parameters()): assert torch.allclose(p, q, atol=1e-6)
    assert isinstance(learn.xb, tuple) and len(learn.xb) == 2 and learn.yb.shape == (16,)


def test_from_tensors_with_a_tuple_of_inputs_and_two_targets():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(40, 3, generator=g), torch.randn(40, 2, generator=g)
    y = torch.randint(0, 4, (40,), generator=g)
    dls = DataLoaders.from_tensors((x1, x2), y, bs=8)
    seen = []
    def loss2(pred, t1, t2):                                  # (x, y, w): two targets
        seen.append(t2.shape)
        return (F.cross_entropy(pred, t1, reduction='none') * t2).mean()
    x = torch.cat([x1, x2], 1)
    w = torch.ones(40)
    learn = silent(Learner(nn.Linear(5, 4), DataLoaders(TensorLoader((x, y, w), None, bs=8),
                                                        TensorLoader((x[:16], y[:16], w[:16]), None, bs=8)),
                           loss2, metrics=[lambda_free_accuracy]))
    learn.fit(1)
    assert seen and seen[0] == (8,) and isinstance(learn.yb, tuple) and learn.n_targ == 2
    assert len(dls.train) == 4 and len(next(iter(dls.train))) == 3
    assert 0 <= learn.recorder.history['lambda_free_accuracy'][0] <= 1


def lambda_free_accuracy(pred, t1, t2): return accuracy(pred, t1)


# ----- dict batches ----------------------------------------------------------------------------------------
class Pool(nn.Module):
    "A tiny embedding + masked mean-pool classifier; with labels it also returns its loss (HuggingFace style)."
    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(20, 8), nn.Linear(8, 3)
    def forward(self, input_ids, attention_mask, labels=None):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)
        logits = self.head(h.sum(1) / attention_mask.sum(1, keepdim=True))
        return logits if labels is None else {'logits': logits, 'loss': F.cross_entropy(logits, labels)}


def dict_batches(n=6, bs=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = (torch.rand(bs, 5, generator=g) > 0.3).float()
        mask[:, 0] = 1
        out.append({'input_ids': torch.randint(0, 20, (bs, 5), generator=g), 'attention_mask': mask,
                    'labels': torch.randint(0, 3, (bs,), generator=g)})
    return out


@pytest.mark.parametrize('own_loss', [False, True])
def test_a_dict_batch_model_matches_a_hand_written_loop(own_loss):
    batches = dict_batches()
    torch.manual_seed(0)
    model, hand = Pool(), Pool()
    hand.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(hand.parameters(), lr=0.5)
    for _ in range(2):
        for b in batches:
            inputs = {k: v for k, v in b.items() if k != 'labels'}
            F.cross_entropy(hand(**inputs), b['labels']).backward()
            opt.step()
            opt.zero_grad()
    learn = silent(Learner(model, DataLoaders(batches, batches[:2]), None if own_loss else nn.CrossEntropyLoss(),
                           opt_func=torch.optim.SGD, lr=0.5))
    learn.fit(2)
    for p, q in zip(model.parameters(), hand.parameters()): assert torch.allclose(p, q, atol=1e-6)
    assert set(learn.xb) == ({'input_ids', 'attention_mask', 'labels'} if own_loss else {'input_ids', 'attention_mask'})
    assert torch.equal(learn.yb, batches[1]['labels'])


# ----- unlabelled data, get_preds options ---------------------------------------------------------------------
def test_get_preds_on_an_unlabelled_test_dl():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 3, generator=g), torch.randint(0, 4, (50,), generator=g)
    learn = silent(Learner(nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 4)),
                           DataLoaders.from_tensors(x, y, bs=8), nn.CrossEntropyLoss()))
    learn.fit(1)
    test = torch.randn(13, 3, generator=g)
    preds, targs = learn.get_preds(learn.dls.test_dl(test))
    learn.model.eval()
    with torch.no_grad(): assert torch.allclose(preds, learn.model(test), atol=1e-6)
    assert targs is None
    assert torch.allclose(learn.predict(test), preds, atol=1e-6)
    ds_preds, _ = learn.get_preds(learn.dls.test_dl(torch.utils.data.TensorDataset(test)))   # a dataset of (x,) items
    assert torch.allclose(ds_preds, preds, atol=1e-6)


def test_get_preds_with_act_with_loss_and_with_input():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, generator=g), torch.randint(0, 4, (40,), generator=g)
    learn = silent(Learner(nn.Linear(3, 4), DataLoaders.from_tensors(x, y, bs=8), nn.CrossEntropyLoss()))
    learn.fit(1)
    inputs, probs, targs, losses = learn.get_preds(with_input=True, with_loss=True, act=lambda p: p.softmax(-1))
    with torch.no_grad(): logits = learn.model(inputs)
    assert torch.allclose(probs, logits.softmax(-1), atol=1e-6)
    assert torch.allclose(losses, F.cross_entropy(logits, targs, reduction='none'), atol=1e-6)
    assert torch.allclose(inputs, learn.dls.valid.x[learn.dls.valid.idxs])
    with pytest.raises(ValueError, match='no targets'): learn.get_preds(learn.dls.test_dl(x[:5]), with_loss=True)


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
    def forward(self, x): return self.lin(x), x.sum(1)


class DictOut(TupleOut):
    def forward(self, x): return {'logits': self.lin(x), 'aux': x.sum(1)}


@pytest.mark.parametrize('model, logits', [(TupleOut, lambda o: o[0]), (DictOut, lambda o: o['logits'])])
def test_structured_predictions_work_with_the_recorder_metrics_and_get_preds(model, logits):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(48, 3, generator=g), torch.randint(0, 4, (48,), generator=g)
    def loss(out, t): return F.cross_entropy(logits(out), t)
    def acc(out, t): return accuracy(logits(out), t)
    learn = silent(Learner(model(), DataLoaders.from_tensors(x, y, bs=8), loss, metrics=[acc]))
    learn.fit(2)
    assert len(learn.recorder.history['acc']) == 2 and 0 <= learn.recorder.history['acc'][-1] <= 1
    preds, targs = learn.get_preds()
    with torch.no_grad(): want = learn.model(learn.dls.valid.x[learn.dls.valid.idxs])
    assert torch.allclose(logits(preds), logits(want), atol=1e-6) and type(preds) is type(want)
    assert targs.shape == (len(learn.dls.valid.idxs),)


# ----- clear errors at the first batch -----------------------------------------------------------------------
def test_structures_that_cannot_work_are_refused_at_the_first_batch():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, generator=g), torch.randint(0, 4, (32,), generator=g)
    dls = DataLoaders.from_tensors(x, y, bs=8)
    learn = silent(Learner(nn.Linear(3, 4), dls, nn.CrossEntropyLoss(), n_inp=3))
    w = learn.model.weight.detach().clone()
    with pytest.raises(ValueError, match='n_inp=3'): learn.fit(1)
    assert torch.equal(learn.model.weight, w)
    batches = [{'labels': torch.zeros(4, dtype=torch.long)}]
    with pytest.raises(ValueError, match='no model inputs'):
        silent(Learner(nn.Linear(3, 4), DataLoaders(batches), nn.CrossEntropyLoss())).fit(1)
    with pytest.raises(ValueError, match='only inputs'):
        silent(Learner(nn.Linear(3, 4), DataLoaders(TensorLoader(x, None, bs=8)), nn.CrossEntropyLoss())).fit(1)
    class Nothing(nn.Linear):
        def forward(self, x): return None
    with pytest.raises(TypeError, match='returned None'):
        silent(Learner(Nothing(3, 4), dls, nn.CrossEntropyLoss())).fit(1)
    class NoLoss(nn.Linear):                                              # given the targets too, returns no loss
        def forward(self, x, y=None): return super().forward(x)
    with pytest.raises(ValueError, match='without one'):
        silent(Learner(NoLoss(3, 4), dls, None)).fit(1)


# ----- worker processes, resumed exactly -----------------------------------------------------------------------
import signal, subprocess, sys
from pathlib import Path
SCRIPT = Path(__file__).parent / '_workers_script.py'

def run(mode, folder, workers):
    return subprocess.run([sys.executable, str(SCRIPT), mode, str(folder), str(workers)], capture_output=True, text=True,
                          timeout=300, env={**__import__('os').environ, 'OMP_NUM_THREADS': '1'})

def test_a_killed_two_worker_fit_resumes_exactly_and_equals_the_one_process_fit(tmp_path):
    straight, part = tmp_path / 'straight', tmp_path / 'part'
    assert run('straight', straight, 2).returncode == 0
    killed = run('killed', part, 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]   # killed in the middle of epoch 0 (6 batches)
    assert not (part / 'final.pt').exists()
    r = run('resume', part, 2)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = torch.load(straight / 'final.pt'), torch.load(part / 'final.pt')
    assert all(torch.equal(a[k], b[k]) for k in a)
    single = tmp_path / 'single'
    assert run('straight', single, 0).returncode == 0
    c = torch.load(single / 'final.pt')
    assert all(torch.equal(a[k], c[k]) for k in a)       # no result depends on which process loaded an item
