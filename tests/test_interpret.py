"Tests of minilearn.interpret: per-sample losses, top losses, confusion matrix, plots."
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilearn.data import DataLoaders, TensorLoader
from minilearn.learner import Learner
from minilearn.interpret import ClassificationInterpretation, Interpretation, per_sample_loss


def _classifier(n=300, c=4, epochs=1):
    torch.manual_seed(0)
    x = torch.randn(n, 6)
    y = (x[:, :c].argmax(1) + (torch.rand(n) < 0.3).long()) % c      # learnable, with label noise
    learn = Learner(nn.Linear(6, c), DataLoaders.from_tensors(x, y, valid_pct=0.3, bs=32), nn.CrossEntropyLoss(),
                    lr=1e-2, default_cbs=False)
    learn.fit(epochs)
    return learn


def test_confusion_matrix_equals_hand_computation():
    learn = _classifier()
    interp = ClassificationInterpretation.from_learner(learn)
    preds, targs = learn.get_preds()
    hand = [[0] * 4 for _ in range(4)]
    for p, t in zip(preds.argmax(1).tolist(), targs.tolist()): hand[t][p] += 1
    assert interp.confusion_matrix().tolist() == hand
    assert interp.confusion_matrix().dtype == torch.int64


def test_most_confused_ordering():
    # actual->predicted counts: 2->1 x3, 0->2 x2, 1->0 x2, 3->0 x1; one correct of each class
    pairs = [(2, 1)] * 3 + [(1, 0)] * 2 + [(0, 2)] * 2 + [(3, 0)] + [(i, i) for i in range(4)]
    targs = torch.tensor([a for a, _ in pairs])
    preds = F.one_hot(torch.tensor([p for _, p in pairs]), 4).float() * 5
    ci = ClassificationInterpretation(None, None, None, preds, targs, per_sample_loss(nn.CrossEntropyLoss(), preds, targs))
    assert ci.most_confused() == [(2, 1, 3), (0, 2, 2), (1, 0, 2), (3, 0, 1)]     # ties: by actual class
    assert ci.most_confused(min_val=2) == [(2, 1, 3), (0, 2, 2), (1, 0, 2)]
    named = ClassificationInterpretation(None, None, None, preds, targs, ci.losses, vocab='abcd')
    assert named.most_confused(3) == [('c', 'b', 3)]
    with pytest.raises(ValueError, match='min_val'): ci.most_confused(0)


def test_per_sample_losses_leave_the_loss_alone():
    preds, targs = torch.randn(10, 3), torch.randint(0, 3, (10,))
    lf = nn.CrossEntropyLoss()
    got = per_sample_loss(lf, preds, targs)
    assert torch.allclose(got, F.cross_entropy(preds, targs, reduction='none'))
    assert lf.reduction == 'mean'                                                 # a copy was changed
    assert torch.allclose(per_sample_loss(F.cross_entropy, preds, targs), got)     # a plain function (vmap)
    def with_item(p, t):                                                          # cannot be vmapped: per-sample loop
        assert p.shape[0] == 1 and F.mse_loss(p, t).item() >= 0
        return F.mse_loss(p, t)
    p, t = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.allclose(per_sample_loss(with_item, p, t), ((p - t) ** 2).mean(1))
    assert torch.allclose(per_sample_loss(nn.MSELoss(), p, t), ((p - t) ** 2).mean(1))


def test_top_losses_and_bad_k():
    learn = _classifier()
    interp = Interpretation.from_learner(learn)
    preds, targs = learn.get_preds()
    want = F.cross_entropy(preds, targs, reduction='none')
    losses, idxs = interp.top_losses(5)
    assert torch.allclose(losses, want.topk(5).values) and torch.equal(idxs, want.topk(5).indices)
    assert len(interp.top_losses()[0]) == len(targs) == len(interp)
    small, _ = interp.top_losses(3, largest=False)
    assert torch.allclose(small, want.topk(3, largest=False).values)
    with pytest.raises(ValueError, match=f'only {len(targs)} samples'): interp.top_losses(len(targs) + 1)
    with pytest.raises(ValueError, match='positive int'): interp.top_losses(0)


def test_from_learner_inputs_train_dl_and_no_valid():
    learn = _classifier()
    interp = Interpretation.from_learner(learn, dl=learn.dls.train)
    assert interp.inputs.shape == (210, 6) and interp.preds.shape == (210, 4)
    assert Interpretation.from_learner(learn, keep_inputs=False).inputs is None
    x, y = torch.randn(20, 6), torch.randint(0, 4, (20,))
    nov = Learner(nn.Linear(6, 4), DataLoaders(TensorLoader(x, y)), nn.CrossEntropyLoss(), default_cbs=False)
    with pytest.raises(ValueError, match='no validation loader'): Interpretation.from_learner(nov)
    assert nov.model.training                              # the pass restores the training mode


def test_binary_single_logit():
    torch.manual_seed(0)
    x = torch.randn(100, 3); y = (x[:, :1] > 0).float()
    learn = Learner(nn.Linear(3, 1), DataLoaders.from_tensors(x, y, bs=16), nn.BCEWithLogitsLoss(), lr=0.1,
                    default_cbs=False)
    learn.fit(3)
    ci = ClassificationInterpretation.from_learner(learn)
    preds, targs = learn.get_preds()
    hand = torch.zeros(2, 2, dtype=torch.long)
    for p, t in zip((preds[:, 0] > 0).long().tolist(), targs[:, 0].long().tolist()): hand[t, p] += 1
    assert torch.equal(ci.confusion_matrix(), hand)
    assert torch.allclose(ci.losses, F.binary_cross_entropy_with_logits(preds, targs, reduction='none')[:, 0])


def test_bad_targets_and_vocab():
    preds = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r'class indices in \[0, 3\)'):
        ClassificationInterpretation(None, None, None, preds, torch.tensor([0, 1, 2, 3]), torch.zeros(4))
    with pytest.raises(ValueError, match='vocab has 2 names for 3 classes'):
        ClassificationInterpretation(None, None, None, preds, torch.tensor([0, 1, 2, 2]), torch.zeros(4), vocab='ab')


def test_plots():
    learn = _classifier()
    ci = ClassificationInterpretation.from_learner(learn)
    fig = ci.plot_confusion_matrix(normalize=True)
    from matplotlib.figure import Figure
    assert isinstance(fig, Figure) and fig._repr_png_().startswith(b'\x89PNG')   # a notebook shows it once
    img = fig.axes[0].images[0].get_array()
    cm = ci.confusion_matrix().double()
    assert torch.allclose(torch.as_tensor(img), cm / cm.sum(1, keepdim=True))
    fig = ci.plot_top_losses(4)                            # tabular inputs: a table
    table = fig.axes[0].tables[0]
    _, idxs = ci.top_losses(4)
    assert table[1, 0].get_text().get_text() == str(idxs[0].item())
    # 28x28 inputs: images, titled actual/predicted
    torch.manual_seed(0)
    x, y = torch.rand(40, 28, 28), torch.randint(0, 10, (40,))
    il = Learner(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), DataLoaders.from_tensors(x, y, bs=8),
                 nn.CrossEntropyLoss(), default_cbs=False)
    ii = ClassificationInterpretation.from_learner(il)
    fig = ii.plot_top_losses(6, ncols=3)
    assert len(fig.axes) == 6 and all(len(ax.images) == 1 for ax in fig.axes)
    _, idxs = ii.top_losses(6)
    i = idxs[0].item()
    assert fig.axes[0].get_title().startswith(f'{ii.actual[i].item()}/{ii.decoded[i].item()}')
