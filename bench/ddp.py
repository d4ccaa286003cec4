"""Per-batch cost of data-parallel training on 2 CPU processes against 1, for the benchmark's `medium` setting.

python bench/ddp.py            # 3 repeats; run alone on the machine

Each run trains the `medium` MLP (256→1024→1024→10, Adam, one thread per process) for 2 epochs with a
Learner and reports the wall time per training batch of the second epoch (the first includes start-up). Two
layouts: 1 process × batch 256, and 2 processes × batch 256 each (the same per-process work; what the
second adds is DistributedDataParallel's gradient all-reduce, the sharding and the agreement on stops).
The processes get torchrun's environment variables directly (no elastic agent), as tests/test_distributed.py does.
"""
import json, os, socket, statistics, subprocess, sys, time
from pathlib import Path

N, BS = 8192, 256

def worker(out: str):
    import torch
    from torch import nn
    from minilearn.core import Callback
    from minilearn.data import DataLoaders
    from minilearn.learner import Learner
    from minilearn.metrics import accuracy
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N, 256, generator=g)
    y = (x @ torch.randn(256, 10, generator=g)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    class Times(Callback):
        def before_train(self): self.t0 = time.perf_counter()
        def after_train(self): self.dt, self.n = time.perf_counter() - self.t0, self.learn.n_iter
    t = Times()
    learn = Learner(model, DataLoaders.from_tensors(x, y, bs=BS, seed=0), nn.CrossEntropyLoss(), metrics=[accuracy], cbs=[t])
    with learn.no_logging(): learn.fit(2)
    if int(os.environ.get('RANK', '0')) == 0:
        Path(out).write_text(json.dumps({'s_per_batch': t.dt / t.n, 'batches': t.n}))

def run(world: int) -> float:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    out = f'/tmp/minilearn-ddp-{os.getpid()}.json'
    procs = []
    for rank in range(world):
        env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)}
        if world > 1: env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, __file__, '--worker', out], env=env))
    assert all(p.wait() == 0 for p in procs)
    return json.loads(Path(out).read_text())['s_per_batch']

if __name__ == '__main__':
    if sys.argv[1:2] == ['--worker']: worker(sys.argv[2]); sys.exit()
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    one, two = [], []
    for i in range(repeats):
        for world in ((1, 2) if i % 2 == 0 else (2, 1)):
            (one if world == 1 else two).append(run(world))
    m1, m2 = statistics.median(one), statistics.median(two)
    print(f'1 process x batch 256: {m1 * 1e3:.1f} ms per training batch (median of {repeats}; {min(one)*1e3:.1f}–{max(one)*1e3:.1f})')
    print(f'2 processes x batch 256: {m2 * 1e3:.1f} ms per training batch (median of {repeats}; {min(two)*1e3:.1f}–{max(two)*1e3:.1f})')
    print(f'2 ranks vs 1: {m2 / m1:.3f}x the time per batch for 2x the samples per step: '
          f'{(m2 - m1) * 1e3:.1f} ms per batch of overhead, {2 * m1 / m2:.2f}x the throughput')
