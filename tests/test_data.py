"DataLoaders: splits, whole-batch loaders, resumable position, bundled data sets."
import pytest
import torch

from minilearn.data import DataLoaders, DatasetLoader, TensorLoader, mnist_3_7, mnist_digits, thermometer


def test_from_tensors_split_is_seeded_disjoint_and_copies_nothing():
    x, y = torch.randn(103, 4), torch.arange(103)
    a = DataLoaders.from_tensors(x, y, valid_pct=0.2, bs=10, seed=5)
    b = DataLoaders.from_tensors(x, y, valid_pct=0.2, bs=10, seed=5)
    assert torch.equal(a.train.idxs, b.train.idxs)
    assert a.train.x is x and a.valid.x is x
    served = torch.cat([yb for _, yb in a.train] + [yb for _, yb in a.valid])
    assert sorted(served.tolist()) == list(range(103))
    assert [len(yb) for _, yb in a.train][-1] == 82 % 10    # 21 valid, 82 train: short last batch kept


def test_shuffle_changes_each_epoch_and_is_seeded():
    x, y = torch.randn(40, 1), torch.arange(40)
    dl = TensorLoader(x, y, bs=40, shuffle=True, seed=0)
    e1, e2 = next(iter(dl))[1], next(iter(dl))[1]
    assert not torch.equal(e1, e2)
    assert torch.equal(e1, next(iter(TensorLoader(x, y, bs=40, shuffle=True, seed=0)))[1])


@pytest.mark.parametrize('make', [lambda x, y: TensorLoader(x, y, bs=3, shuffle=True, seed=1),
                                  lambda x, y: DatasetLoader(torch.utils.data.TensorDataset(x, y), bs=3, shuffle=True, seed=1)])
def test_position_state_resumes_mid_epoch(make):
    x, y = torch.randn(11, 2), torch.arange(11)
    dl = make(x, y)
    next(iter(dl))                                    # one full epoch... not consumed: a fresh iterator below
    it = iter(dl)
    [next(it) for _ in range(2)]
    state = dl.state_dict()
    rest = [yb for _, yb in it] + [yb for _, yb in dl]
    dl2 = make(x, y)
    dl2.load_state_dict(state)
    rest2 = [yb for _, yb in dl2] + [yb for _, yb in dl2]
    assert len(rest) == len(rest2) and all(torch.equal(a, b) for a, b in zip(rest, rest2))


def test_bad_inputs():
    with pytest.raises(ValueError, match='same length'):
        DataLoaders.from_tensors(torch.zeros(3, 1), torch.zeros(4))
    with pytest.raises(ValueError, match='empty'):
        DataLoaders.from_tensors(torch.zeros(0, 1), torch.zeros(0))
    with pytest.raises(TypeError, match='must be tensors'):
        DataLoaders.from_tensors([[1.]], [1.])
    with pytest.raises(ValueError, match='valid_pct'):
        DataLoaders.from_tensors(torch.zeros(3, 1), torch.zeros(3), valid_pct=1.5)
    with pytest.raises(ValueError, match='bs must be a positive int'):
        TensorLoader(torch.zeros(3, 1), torch.zeros(3), bs=0)


def test_bundled_data():
    t_u, t_c = thermometer()
    assert t_u.shape == (11,) and t_c[0] == 0.5
    x, y = mnist_3_7()
    assert x.shape == (1000, 28, 28) and set(y.tolist()) == {0, 1}
    x, y = mnist_digits()
    assert x.shape == (5000, 28, 28) and torch.equal(y.bincount(), torch.full((10,), 500))
