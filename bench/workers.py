"""Loading in worker processes (issue 18): an I/O-bound dataset read by `DataLoaders.from_dsets` and by torch's DataLoader.

python bench/workers.py            # 5 interleaved repeats; prints seconds per epoch and the ratios

The dataset sleeps 0.5 ms per item (a disk or network read) and returns a small tensor; 4,096 items in
batches of 64. One epoch is one full iteration of the training loader (no model: the loading is what is
measured), in this process, after one warm-up epoch that starts the workers. minilearn's loader with
`num_workers=4` is compared with itself at `num_workers=0` and with `torch.utils.data.DataLoader(...,
num_workers=4, shuffle=True)` over the same dataset; persistent workers in both.
"""
import json, statistics, sys, time

import torch

from minilearn.data import DataLoaders

N, BS, SLEEP = 4096, 64, 0.0005


class Slow(torch.utils.data.Dataset):
    def __len__(self): return N
    def __getitem__(self, i):
        time.sleep(SLEEP)
        return torch.full((8,), float(i)), i % 10


def loaders():
    ml0 = DataLoaders.from_dsets(Slow(), bs=BS, seed=0).train
    ml4 = DataLoaders.from_dsets(Slow(), bs=BS, seed=0, num_workers=4, persistent_workers=True).train
    th4 = torch.utils.data.DataLoader(Slow(), batch_size=BS, shuffle=True, num_workers=4, persistent_workers=True,
                                      generator=torch.Generator().manual_seed(0))
    return {'minilearn, 0 workers': ml0, 'minilearn, 4 workers': ml4, 'torch DataLoader, 4 workers': th4}


def epoch(dl) -> float:
    t = time.perf_counter()
    n = sum(len(b[0]) for b in dl)
    assert n == N
    return time.perf_counter() - t


def main(repeats: int = 5) -> int:
    torch.set_num_threads(1)
    dls = loaders()
    for dl in dls.values(): epoch(dl)                 # warm-up: starts the workers
    times = {k: [] for k in dls}
    for r in range(repeats):
        names = list(dls) if r % 2 == 0 else list(dls)[::-1]
        for k in names: times[k].append(epoch(dls[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items(): print(f'{k:30s} {med[k]:.3f} s per epoch  [{min(v):.3f}-{max(v):.3f}]')
    speedup = med['minilearn, 0 workers'] / med['minilearn, 4 workers']
    vs_torch = med['minilearn, 4 workers'] / med['torch DataLoader, 4 workers']
    print(f'4 workers vs 0: {speedup:.2f}x faster (target >= 2.5x: {"met" if speedup >= 2.5 else "NOT met"})')
    print(f'minilearn vs torch DataLoader, 4 workers each: {vs_torch:.3f} (target 0.9-1.1: '
          f'{"met" if vs_torch <= 1.1 else "NOT met"})')
    print(json.dumps({'times': times, 'speedup': speedup, 'vs_torch': vs_torch}))
    return 0


if __name__ == '__main__':
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
