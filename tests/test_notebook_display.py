"""A fit, the LR finder and every plot, run in a real Jupyter kernel (nbclient + ipykernel) as a notebook user runs them.

The kernel gets the environment of a plain Jupyter install: no `MPLBACKEND` (so the inline backend is on), no `CI`.
Each case runs twice: with ipywidgets importable, and with the import made to fail, as on an install without it.
"""
import re

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

SETUP = '''
import torch
from torch import nn
from minilearn.all import *
torch.manual_seed(0)
x, y = mnist_3_7()
dls = DataLoaders.from_tensors(x.flatten(1), y, valid_pct=0.2, bs=64, seed=0)
learn = Learner(nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 2)), dls, nn.CrossEntropyLoss(),
                lr=1e-3, metrics=[accuracy])
'''

CELLS = {   # name: source; the checks below refer to the names
    'fit': 'learn.fit(3)',
    'lr_find': 'learn.lr_find(num_it=30)',                         # after a fit: the case that printed tracebacks
    'plot_loss': 'learn.recorder.plot_loss()',
    'plot_sched': 'learn.recorder.plot_sched()',
    'plot_lr_find': 'learn.recorder.plot_lr_find()',
    'assigned_then_shown': 'fig = learn.recorder.plot_loss()\nfig',   # shown by the method, not again as the value
    'two_in_one_cell': 'learn.recorder.plot_loss()\nlearn.recorder.plot_sched()',
    'later_cell': 'fig',                                           # a figure from an earlier cell shows again
    'interp': 'interp = ClassificationInterpretation.from_learner(learn)\ninterp.plot_confusion_matrix()',
    'top_losses': 'interp.plot_top_losses(4, ncols=2)',
    'fit_one_cycle': 'learn.fit_one_cycle(2, 1e-2)',
    'validate': 'learn.validate()',
    'get_preds': 'preds, targs = learn.get_preds()',
    'summary': 'learn.summary()',
    'fine_tune': 'learn.fine_tune(1, 1e-3, freeze_epochs=1)',
}


def run_notebook(tmp_path, monkeypatch, widgets: bool):
    monkeypatch.delenv('MPLBACKEND', raising=False)   # a plain Jupyter: ipykernel picks the inline backend
    for var in ('CI', 'TQDM_DISABLE'): monkeypatch.delenv(var, raising=False)
    first = ('import ipywidgets' if widgets else
             "import sys\nsys.modules['ipywidgets'] = None   # as if not installed: importing it raises ImportError")
    cells = [nbformat.v4.new_code_cell(first), nbformat.v4.new_code_cell(SETUP)]
    cells += [nbformat.v4.new_code_cell(src, metadata={'name': name}) for name, src in CELLS.items()]
    nb = nbformat.v4.new_notebook(cells=cells)
    nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}}).execute()
    return {c.metadata['name']: c.outputs for c in nb.cells if 'name' in c.metadata}, nb


def html_of(outputs) -> list[str]:
    return [o['data']['text/html'] for o in outputs if 'text/html' in o.get('data', {})]

def n_images(outputs) -> int:
    return sum('image/png' in o.get('data', {}) for o in outputs)


@pytest.mark.parametrize('widgets', [True, False], ids=['with_ipywidgets', 'without_ipywidgets'])
def test_notebook_display(tmp_path, monkeypatch, widgets):
    if widgets: pytest.importorskip('ipywidgets')
    out, nb = run_notebook(tmp_path, monkeypatch, widgets)

    stderr = [(i, o.get('text', '')) for i, c in enumerate(nb.cells) for o in c.get('outputs', [])
              if o.get('output_type') == 'stream' and o.get('name') == 'stderr']
    assert stderr == [], f'stderr output in a notebook: {stderr}'
    assert not [o for c in nb.cells for o in c.get('outputs', []) if o.get('output_type') == 'error']

    # the fit: one HTML table with a row per epoch (times as mm:ss), and an HTML progress bar; no printed lines
    tables = [h for h in html_of(out['fit']) if '<table' in h]
    assert len(tables) == 1, html_of(out['fit'])
    body = tables[0].split('<tbody>')[1]
    assert body.count('<tr>') == 3
    assert re.search(r'<td>\d\d:\d\d</td>', body)
    bars = [h for h in html_of(out['fit']) if '<progress' in h]
    assert len(bars) == 1 and 'epochs 3/3 [' in bars[0], bars   # updated in place; it ends as the fit's bar
    vbars = [h for h in html_of(out['validate']) if '<progress' in h]   # a pass after the fit: a bar of its own,
    assert len(vbars) == 1 and '> valid ' in vbars[0], vbars           # the fit's (checked above) left as it ended
    assert not [o for o in out['fit'] if o.get('output_type') == 'stream'], 'the table replaces printed lines'
    assert len([h for h in html_of(out['fit_one_cycle']) if '<table' in h]) == 1   # one table per fit
    assert tables[0] not in html_of(out['fit_one_cycle'])
    assert len([h for h in html_of(out['fine_tune']) if '<table' in h]) == 2   # its two fits

    # every plot exactly once, wherever it is in the cell
    assert n_images(out['lr_find']) == 1            # show_plot=True
    for name in ('plot_loss', 'plot_sched', 'plot_lr_find', 'assigned_then_shown', 'later_cell', 'interp', 'top_losses'):
        assert n_images(out[name]) == 1, (name, [list(o.get('data', {})) for o in out[name]])
    assert n_images(out['two_in_one_cell']) == 2
    # and none of them as a text repr (`<Figure size ...>`) beside the image
    assert not any('Figure size' in o.get('data', {}).get('text/plain', '') for outs in out.values() for o in outs)
