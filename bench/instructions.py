"""Instructions per batch, counted by valgrind: the benchmark's comparison without the machine's noise.

python bench/instructions.py                       # tiny and small: raw, learner, floor, tensors (~5 min per setting)
python bench/instructions.py --settings medium --impls raw,learner --epochs 1
python bench/instructions.py --keep /tmp/cg        # keep the callgrind files (callgrind_annotate FILE shows functions)

On a shared machine the wall-clock ratio of two fits moves by ±10 % from run to run (bench/RESULTS.md),
more than the few percent the targets are about. The number of machine instructions a fit executes
hardly moves at all. This script runs `bench.py`'s fits (the same data, models, loops, loaders and
agreement check) in one process under `valgrind --tool=callgrind`, after a warm-up fit of each, and
counts the instructions of each timed fit alone: `Clock` calls `os.getppid()` just before the fit
starts and just after it ends, and `--dump-before=os_getppid` makes callgrind write a count at each
call. Instructions are not time (a cache miss costs more than an add), so this complements the timed
benchmark; it does not replace it. Needs valgrind (`apt-get install valgrind`); about 50x slower than
a plain run, most of it the `import torch` under the simulator.
"""
from __future__ import annotations
import argparse, glob, json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def inner(setting: str, impls: list[str], epochs: int | None):
    "Under valgrind: warm every impl up, then run each timed fit between two dump marks; print the results."
    import torch
    import bench as B
    torch.set_num_threads(1)
    if any(i in ('learner', 'tensors') for i in impls): import minilearn  # noqa: F401
    for impl in impls: B.run_once(setting, impl, None, 1)
    s = B.SETTINGS[setting]
    n_train = -(-round(s.n * (1 - B.VALID_PCT)) // s.bs)
    n_valid = -(-round(s.n * B.VALID_PCT) // s.bs)
    epochs = epochs or s.epochs
    for impl in impls:
        _, _, vl, wsum = B.run_once(setting, impl, None, epochs, clock=B.Clock(mark=os.getppid))
        print(json.dumps(dict(setting=setting, impl=impl, epochs=epochs, valid_loss=vl, wsum=wsum,
                              n_batches=epochs * (n_train + n_valid))), flush=True)


def count(out_prefix: str) -> list[int]:
    "The instruction count of each dumped part, in order."
    parts = sorted(glob.glob(out_prefix + '.*'), key=lambda f: int(f.rsplit('.', 1)[1]))
    counts = []
    for f in parts:
        m = re.search(r'^(?:summary|totals): (\d+)', Path(f).read_text(errors='replace'), re.M)
        counts.append(int(m.group(1)) if m else 0)
    return counts


def measure(setting: str, impls: list[str], epochs: int | None, keep: str | None) -> list[dict]:
    "Run `inner` under callgrind; the fits are parts 2, 4, 6, ... (part 1: imports and warm-up)."
    tmp = tempfile.mkdtemp(prefix='minilearn-cg-')
    prefix = os.path.join(tmp, f'callgrind.{setting}')
    cmd = ['valgrind', '--tool=callgrind', '--dump-before=os_getppid', f'--callgrind-out-file={prefix}',
           sys.executable, __file__, '--inner', '--settings', setting, '--impls', ','.join(impls)]
    if epochs: cmd += ['--epochs', str(epochs)]
    env = dict(os.environ, PYTHONHASHSEED='0', OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1')
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0: raise RuntimeError(f'valgrind run failed (exit {p.returncode}):\n{p.stderr[-3000:]}')
    results = [json.loads(l) for l in p.stdout.splitlines() if l.startswith('{')]
    counts = count(prefix)
    fits = counts[1::2][:len(results)]
    if len(fits) != len(results): raise RuntimeError(f'expected {len(results)} fit parts, found {len(counts)} parts')
    for r, n in zip(results, fits): r['instructions'] = n
    if keep:
        os.makedirs(keep, exist_ok=True)
        for i, f in enumerate(sorted(glob.glob(prefix + '.*'), key=lambda f: int(f.rsplit('.', 1)[1]))):
            if i % 2 == 1 and i // 2 < len(results):
                shutil.copy(f, os.path.join(keep, f'callgrind.{setting}.{results[i // 2]["impl"]}'))
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def table(results: list[dict]) -> str:
    "Markdown: instructions per batch, the ratio to the reference, and the extra instructions per batch."
    import bench as B
    by = {(r['setting'], r['impl']): r for r in results}
    lines = ['| setting | impl | ref | instructions per batch | ratio to ref | extra per batch | same weights as ref |',
             '|---|---|---|---|---|---|---|']
    for (setting, impl), r in by.items():
        per = r['instructions'] / r['n_batches']
        ref = by.get((setting, B.REFERENCE[impl]))
        if ref is None or ref is r:
            lines.append(f'| {setting} | {impl} | — | {per:,.0f} | — | — | — |')
            continue
        rper = ref['instructions'] / ref['n_batches']
        partner = by.get((setting, B.AGREES_WITH.get(impl, '')))
        same = '—' if partner is None else ('yes' if B.agree(r, partner) else 'NO')
        lines.append(f'| {setting} | {impl} | {B.REFERENCE[impl]} | {per:,.0f} | {per / rper:.4f} | '
                     f'{per - rper:+,.0f} | {same} |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--settings', default='tiny,small')
    ap.add_argument('--impls', default='raw,learner,floor,tensors')
    ap.add_argument('--epochs', type=int, help='override the epochs of every setting (fewer: faster)')
    ap.add_argument('--keep', help='copy each fit\'s callgrind file into this folder')
    ap.add_argument('--json', help='also write the results as JSON lines to this file')
    ap.add_argument('--inner', action='store_true', help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    impls = args.impls.split(',')
    if args.inner: return inner(args.settings, impls, args.epochs) or 0
    if shutil.which('valgrind') is None:
        print('valgrind is not installed (apt-get install valgrind): nothing measured', file=sys.stderr)
        return 2
    results = []
    for setting in args.settings.split(','):
        res = measure(setting, impls, args.epochs, args.keep)
        for r in res: print(f"  {setting:6s} {r['impl']:8s} {r['instructions'] / r['n_batches']:12,.0f} instructions per batch", flush=True)
        results += res
    if args.json:
        with open(args.json, 'w') as f:
            for r in results: f.write(json.dumps(r) + '\n')
    print()
    print(table(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
