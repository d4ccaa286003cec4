"""The benchmark's pairs measured inside one process: raw loop and Learner alternate, so per-process speed differences cancel.

python bench/inprocess.py                   # tiny and small, 11 interleaved pairs each
python bench/inprocess.py medium 5          # one setting, 5 pairs

On this project's shared 2-core machines a fresh process can run the same code 10-30 % faster or slower than
the one before it (bench/RESULTS.md shows single repeats of one pair from 0.74 to 1.6), which hides a
framework cost of a few percent. `bench.py` measures as the issue asks, one process per measurement; this
script adds the same comparison with both loops in one warmed-up process (A B B A ... order, one thread),
where that variation cancels. It reuses `bench.py`'s data, models, loops and checks. Besides the median of the
per-pair ratios it prints the ratio of the fastest runs (`min impl / min ref`, CPU time), the estimator `timeit`
uses: noise only ever adds time, so the fastest run of each is the closest to its true cost.
"""
import statistics, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch

from bench import AGREES_WITH, REFERENCE, SETTINGS, run_once

def pairs(setting: str, n: int) -> dict:
    "Ratios (wall and CPU time) of each impl to its reference over `n` interleaved pairs in this process."
    s = SETTINGS[setting]
    out = {}
    for impl in ('learner', 'tensors'):
        ref = REFERENCE[impl]
        run_once(setting, ref, None, 1)
        run_once(setting, impl, None, 1)                       # warm both up
        wall, cpu, fastest = [], [], {ref: [], impl: []}
        for i in range(n):
            order = (ref, impl) if i % 2 == 0 else (impl, ref)
            res = {name: run_once(setting, name, None, s.epochs) for name in order}
            assert abs(res[impl][2] - res[ref][2]) <= 1e-5 * abs(res[ref][2]), f'{impl} trained other weights than {ref}'
            wall.append(res[impl][0] / res[ref][0])
            cpu.append(res[impl][1] / res[ref][1])
            for name in order: fastest[name].append(res[name][1])
        out[impl] = (ref, wall, cpu, min(fastest[impl]) / min(fastest[ref]))
    return out

def main(argv):
    settings = argv[0].split(',') if argv else ['tiny', 'small']
    n = int(argv[1]) if len(argv) > 1 else 11
    torch.set_num_threads(1)
    print(f'{n} interleaved pairs per row, one process, torch {torch.__version__}, 1 thread')
    print('| setting | impl | ref | wall-time ratio, median [min–max] | CPU-time ratio, median [min–max] | fastest / fastest |')
    print('|---|---|---|---|---|---|')
    for setting in settings:
        for impl, (ref, wall, cpu, best) in pairs(setting, n).items():
            f = lambda xs: f'{statistics.median(xs):.3f} [{min(xs):.3f}–{max(xs):.3f}]'
            print(f'| {setting} | {impl} | {ref} | {f(wall)} | {f(cpu)} | {best:.3f} |', flush=True)

if __name__ == '__main__': main(sys.argv[1:])
