"""Draw the epoch table a notebook saved (its HTML output) as a PNG, for the README.

    python tools/table_image.py nbs/12_digit_classifier.ipynb nbs/images/epoch_table.png [--which N]

The table is the one `ProgressCallback` displays in a Jupyter kernel; the notebook must have been executed
(`python tools/run_nbs.py NOTEBOOK`). This machine has no browser to screenshot the page, so the cells are
drawn with matplotlib in the look of Jupyter's HTML tables: bold header, striped rows.
"""
import argparse
import json
from html.parser import HTMLParser


class _Cells(HTMLParser):
    "Collects the text of each `<th>`/`<td>` per `<tr>`."
    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None
    def handle_starttag(self, tag, attrs):
        if tag == 'tr': self.rows.append([])
        elif tag in ('th', 'td'): self._cell = ''
    def handle_endtag(self, tag):
        if tag in ('th', 'td') and self._cell is not None: self.rows[-1].append(self._cell); self._cell = None
    def handle_data(self, data):
        if self._cell is not None: self._cell += data


def tables(nb_path: str) -> list[str]:
    "Every HTML epoch table in the notebook's outputs, in order."
    nb = json.load(open(nb_path))
    out = []
    for cell in nb['cells']:
        for o in cell.get('outputs', []):
            h = o.get('data', {}).get('text/html')
            h = ''.join(h) if isinstance(h, list) else h
            if h and '<table' in h and '<th>epoch</th>' in h: out.append(h)
    return out


def draw(table_html: str, dest: str):
    "Draw the table's cells as a PNG at `dest`."
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    p = _Cells(); p.feed(table_html)
    header, *rows = p.rows
    fig = Figure(figsize=(1.25 * len(header), 0.32 * (len(rows) + 1) + 0.1))
    ax = fig.add_subplot(); ax.axis('off')
    t = ax.table(cellText=rows, colLabels=header, loc='center', cellLoc='right', colLoc='right')
    t.auto_set_font_size(False); t.set_fontsize(10); t.scale(1, 1.4)
    for (r, _), c in t.get_celld().items():
        c.set_edgecolor('white')
        if r == 0: c.set_text_props(weight='bold'); c.set_facecolor('white')
        else: c.set_facecolor('#f5f5f5' if r % 2 else 'white')
    fig.savefig(dest, dpi=110, bbox_inches='tight', facecolor='white')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebook'); ap.add_argument('dest')
    ap.add_argument('--which', type=int, default=0, help='which table of the notebook (0: the first)')
    a = ap.parse_args()
    found = tables(a.notebook)
    if not found: raise SystemExit(f'{a.notebook} has no saved epoch table: run python tools/run_nbs.py {a.notebook} first')
    draw(found[a.which], a.dest)
    print(f'{a.dest}: table {a.which} of {len(found)}')
