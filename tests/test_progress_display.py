"""The notebook display of `ProgressCallback` (`notebook=True`) on the edge paths, with IPython's display recorded.

tests/test_notebook_display.py runs the display in a real kernel; here the display calls are recorded in-process,
so stops, resumes and logger settings can be checked cheaply.
"""
import pytest
import torch
from torch import nn

pytest.importorskip('IPython')
import IPython.display  # noqa: E402

from minilearn.checkpoint import Checkpoint  # noqa: E402
from minilearn.core import Callback, CancelFitException  # noqa: E402
from minilearn.data import DataLoaders  # noqa: E402
from minilearn.learner import Learner  # noqa: E402
from minilearn.progress import ProgressCallback  # noqa: E402


class Handle:
    "Stands in for IPython's DisplayHandle: keeps the last HTML it was given."
    def __init__(self, obj): self.html, self.updates = obj.data, 0
    def update(self, obj): self.html, self.updates = obj.data, self.updates + 1


@pytest.fixture
def shown(monkeypatch):
    "Every display the callback opens, in order."
    handles = []
    def display(obj, display_id=None):
        assert display_id is True, 'the display must be updatable in place'
        handles.append(Handle(obj))
        return handles[-1]
    monkeypatch.setattr(IPython.display, 'display', display)
    return handles


def learner(tmp_path, **kw):
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    learn = Learner(nn.Linear(2, 1), DataLoaders.from_tensors(x, x.sum(1, keepdim=True), bs=8, seed=0), nn.MSELoss(),
                    path=tmp_path, **kw)
    learn.progress.notebook, learn.progress.show_bar = True, True
    return learn


def tables(handles): return [h for h in handles if '<table' in h.html]
def bars(handles): return [h for h in handles if '<progress' in h.html]


def test_one_table_and_one_bar_per_fit_updated_in_place(tmp_path, shown, capsys):
    learn = learner(tmp_path)
    learn.fit(3)
    assert capsys.readouterr().out == ''                         # the table replaces the printed lines
    (t,), (b,) = tables(shown), bars(shown)
    assert t.html.split('<tbody>')[1].count('<tr>') == 3 and t.updates == 2
    assert 'epochs 3/3 [' in b.html and b.updates > 6           # every pass redrew the one bar
    learn.fit(1)
    assert len(tables(shown)) == 2 and len(bars(shown)) == 2     # a new fit: a new table and bar


def test_an_epoch_cut_short_is_a_row_and_the_bar_says_how_far(tmp_path, shown):
    class StopInEpoch1(Callback):
        order = -20                                              # before the Recorder
        def before_batch(self):
            if self.learn.epoch == 1 and self.learn.iter == 3: raise CancelFitException()
    learn = learner(tmp_path, cbs=[StopInEpoch1()])
    learn.fit(3)
    (t,), (b,) = tables(shown), bars(shown)
    rows = t.html.split('<tbody>')[1].split('<tr>')[1:]
    assert len(rows) == 2 == len(learn.recorder.history['epoch'])
    assert '<td>nan</td>' in rows[1]                             # nothing was validated in the cut epoch
    assert 'epochs 1/3 [' in b.html                              # one whole epoch done


def test_a_resumed_fit_counts_the_epochs_before_it(tmp_path, shown):
    learn = learner(tmp_path)
    learn.fit(2, cbs=[Checkpoint()])
    learn = learner(tmp_path)
    learn.fit(4, cbs=[Checkpoint()], resume=True)
    assert 'epochs 4/4 [' in bars(shown)[-1].html
    assert tables(shown)[-1].html.split('<tbody>')[1].count('<tr>') == 2   # this fit's epochs: 2 and 3


def test_another_logger_gets_its_lines_and_no_logging_silences_the_table(tmp_path, shown):
    learn = learner(tmp_path)
    lines = []
    learn.logger = lines.append
    learn.fit(2)
    assert tables(shown) == [] and len(lines) == 3               # a header and two rows, as in a terminal
    learn.logger = print
    with learn.no_logging(): learn.fit(1)
    assert tables(shown) == []


def test_a_pass_after_the_fit_has_its_own_bar(tmp_path, shown):
    learn = learner(tmp_path)
    learn.fit(1)
    fit_bar = bars(shown)[0].html
    learn.validate()
    assert bars(shown)[0].html == fit_bar and len(bars(shown)) == 2
    n = len(learn.dls.valid)
    assert f'> valid {n}/{n} [' in bars(shown)[1].html                # not the fit's stale 'epoch 1/1 valid'
