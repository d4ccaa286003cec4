"""Benchmark minilearn's `Learner` against the hand-written PyTorch loop (see bench/README.md).

python bench/bench.py                      # every setting, 5 interleaved repeats, prints the tables
python bench/bench.py --settings tiny -r 7 # one setting, more repeats
python bench/bench.py --variants clip,bf16 # add rows for the issue-10 tools (skipped if minilearn.precision is missing)
python bench/bench.py --smoke              # CI: one repeat of `tiny` (2 epochs); exit 1 if the loops disagree

Every measurement is a separate process (`--worker`), with `torch.set_num_threads(1)`; only `--smoke` runs in one.
"""
from __future__ import annotations
import argparse, gc, json, math, os, platform, resource, statistics, subprocess, sys, time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))

# ----- settings --------------------------------------------------------------------------------------
@dataclass
class Setting:
    n: int              # rows in the data set (20% of them validate, the same split `from_tensors` makes)
    n_in: int
    hidden: tuple
    n_out: int
    task: str           # 'regression' (MSE, metric mae) or 'classification' (cross-entropy, metric accuracy)
    bs: int
    epochs: int
    lr: float = 1e-3

SETTINGS = {
    'tiny':   Setting(4096, 8, (), 1, 'regression', bs=16, epochs=10),
    'small':  Setting(8192, 32, (64,), 10, 'classification', bs=64, epochs=8),
    'medium': Setting(8192, 256, (1024, 1024), 10, 'classification', bs=256, epochs=3),
}
VALID_PCT, SEED = 0.2, 0

# impl: (loader, loop). The ratio of each impl is taken to its reference in the same repeat.
IMPLS = {
    'raw':     'hand-written loop, torch DataLoader(TensorDataset, shuffle=True)',
    'learner': 'Learner, the same torch DataLoaders',
    'floor':   'hand-written loop that indexes whole batches itself',
    'tensors': 'Learner, DataLoaders.from_tensors',
}
REFERENCE = {'raw': 'raw', 'learner': 'raw', 'floor': 'raw', 'tensors': 'floor'}
AGREES_WITH = {'learner': 'raw', 'tensors': 'floor'}   # same data order, so the same weights (variants: raw)

# Variants (issue 10): the same pair (raw loop / Learner, torch DataLoaders), each with one tool switched on.
VARIANTS = {
    'clip':    'GradientClip(max_norm=1.0)  vs  clip_grad_norm_ after backward',
    'accum':   'GradientAccumulation(n_batches=2)  vs  a step every 2 batches',
    'bf16':    'MixedPrecision(bf16)  vs  torch.autocast(cpu, bfloat16) around model + loss',
    'compile': 'Learner(compile=True)  vs  torch.compile(model) (compile time included)',
}

# ----- the worker: one measurement in this process -----------------------------------------------------
def _metric_mae(pred, targ):
    return (pred - targ).abs().mean()

def _metric_accuracy(pred, targ):
    return (pred.argmax(dim=-1) == targ).float().mean()

def make_data(s: Setting, seed: int = SEED):
    "Synthetic data for `s` and the train/valid split of `DataLoaders.from_tensors(valid_pct=0.2, seed)`."
    import torch
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(s.n, s.n_in, generator=g)
    w = torch.randn(s.n_in, s.n_out, generator=g)
    if s.task == 'regression': y = x @ w + 0.1 * torch.randn(s.n, s.n_out, generator=g)
    else: y = (x @ w + 0.5 * torch.randn(s.n, s.n_out, generator=g)).argmax(dim=1)
    perm = torch.randperm(s.n, generator=torch.Generator().manual_seed(seed))
    n_valid = round(s.n * VALID_PCT)
    return x, y, perm[n_valid:], perm[:n_valid].sort().values

def make_model(s: Setting, seed: int = SEED):
    import torch
    from torch import nn
    torch.manual_seed(seed)
    sizes = (s.n_in, *s.hidden, s.n_out)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i: layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)

def loss_and_metric(s: Setting):
    import torch.nn.functional as F
    return (F.mse_loss, _metric_mae) if s.task == 'regression' else (F.cross_entropy, _metric_accuracy)

def torch_loaders(s: Setting, x, y, tidx, vidx, seed: int = SEED):
    "(a)/(b): torch DataLoaders over TensorDatasets, the training one shuffled by a seeded generator."
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    train = DataLoader(TensorDataset(x[tidx], y[tidx]), batch_size=s.bs, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    valid = DataLoader(TensorDataset(x[vidx], y[vidx]), batch_size=s.bs, shuffle=False)
    return train, valid

def _valid_loss(losses, sizes):
    "The sample-weighted mean of per-batch losses: one host sync per epoch."
    import torch
    w = torch.tensor(sizes, dtype=torch.float32)
    return ((torch.stack(losses).float() * w).sum() / w.sum()).item()

def valid_pass(model, batches, loss_func, metric) -> float:
    "The hand-written loops' validation: loss and metric per batch on the device, one read at the end."
    import torch
    model.eval()
    losses, metrics, sizes = [], [], []
    with torch.no_grad():
        for xb, yb in batches:
            pred = model(xb)
            losses.append(loss_func(pred, yb))
            metrics.append(metric(pred, yb))
            sizes.append(len(yb))
    return _valid_loss(losses, sizes)

def _no_turn(): pass

def raw_fit(model, train_dl, valid_dl, loss_func, metric, epochs, lr, turn=_no_turn):
    "(a) The hand-written loop: the seven steps, then a validation pass per epoch (loss and metric)."
    import torch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        turn()
        model.train()
        for xb, yb in train_dl:
            loss = loss_func(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        valid_loss = valid_pass(model, valid_dl, loss_func, metric)
    return valid_loss

def floor_fit(model, x, y, tidx, vidx, bs, loss_func, metric, epochs, lr, seed=SEED, turn=_no_turn):
    "(c) floor: the hand-written loop that cuts each batch by indexing the whole tensors (`x[idx]`)."
    import torch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        turn()
        model.train()
        for b in tidx[torch.randperm(len(tidx), generator=g)].split(bs):
            loss = loss_func(model(x[b]), y[b])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        valid_loss = valid_pass(model, ((x[b], y[b]) for b in vidx.split(bs)), loss_func, metric)
    return valid_loss

def raw_variant_fit(variant, model, train_dl, valid_dl, loss_func, metric, epochs, lr, n_accum=2, turn=_no_turn):
    "The hand-written loop with one issue-10 tool written by hand (what the callback must match)."
    import contextlib, torch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    params = list(model.parameters())
    fwd = torch.compile(model) if variant == 'compile' else model
    cast = (lambda: torch.autocast('cpu', dtype=torch.bfloat16)) if variant == 'bf16' else contextlib.nullcontext
    accum = n_accum if variant == 'accum' else 1
    n = len(train_dl)
    for epoch in range(epochs):
        turn()
        model.train()
        group = []   # accum: batch sizes of the current group, so its step is the mean over its samples
        for i, (xb, yb) in enumerate(train_dl):
            with cast():
                loss = loss_func(fwd(xb), yb)
            if accum > 1:
                first, end = i - i % accum, min(i - i % accum + accum, n)
                if i == first: planned = len(yb) * (end - first)   # assumes full batches; fixed at the step
                group.append(len(yb))
                loss = loss * (len(yb) / planned)
            loss.backward()
            if accum > 1 and i + 1 < end: continue
            if accum > 1 and sum(group) != planned:   # a short last batch: reweight to the true size
                for p in params:
                    if p.grad is not None: p.grad.mul_(planned / sum(group))
            group = []
            if variant == 'clip': torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        losses, metrics, sizes = [], [], []
        with torch.no_grad():
            for xb, yb in valid_dl:
                with cast():
                    pred = fwd(xb)
                    losses.append(loss_func(pred, yb))
                metrics.append(metric(pred, yb))
                sizes.append(len(yb))
        valid_loss = _valid_loss(losses, sizes)
    return valid_loss

def variant_cbs(variant):
    "The Learner's callbacks (and keyword arguments) for `variant`, from minilearn.precision."
    import torch
    from minilearn import precision as P
    if variant == 'clip': return [P.GradientClip(max_norm=1.0)], {}
    if variant == 'accum': return [P.GradientAccumulation(n_batches=2)], {}
    if variant == 'bf16': return [P.MixedPrecision(torch.bfloat16)], {}
    if variant == 'compile': return [], {'compile': True}
    raise ValueError(f'unknown variant {variant!r}; known: {", ".join(VARIANTS)}')

def learner_fit(model, dls, loss_func, metric, epochs, lr, cbs=(), turn=_no_turn, **kwargs):
    "(b)/(c): a Learner with its default callbacks (Recorder, ProgressCallback), a metric, nothing printed."
    from minilearn.core import Callback
    from minilearn.learner import Learner
    class Turn(Callback):     # the bench's hook, not part of what is measured: first at every epoch's start
        order = -10**9
        def before_epoch(self): turn()
    learn = Learner(model, dls, loss_func, lr=lr, metrics=[metric], cbs=list(cbs) + [Turn()], **kwargs)
    learn.progress.show_bar = False
    with learn.no_logging(): learn.fit(epochs)
    return learn.recorder.history['valid_loss'][-1]

class Clock:
    """Times one fit, epoch by epoch, leaving out the time spent waiting for its turn.

    `turn()` is called at the start of every epoch. With `wait` (epoch-level interleaving) it blocks there
    until the driver says go; the wait is subtracted from the wall and CPU times, so `fit_s` is the fit's
    own time. `epoch_s` holds the time of each segment between turns (the first: from the start of the fit)."""
    def __init__(self, wait=None, mark=None):
        self.wait, self.waited, self.waited_cpu, self.epoch_s = wait, 0., 0., []
        self.spans = []         # (start, end) of each segment, perf_counter (system-wide on Linux)
        self.mark = mark        # called just before the fit starts and just after it ends (bench/instructions.py)
        self._last = None

    def start(self):
        if self.mark: self.mark()
        self.t0 = self._last = time.perf_counter()
        self.c0 = time.process_time()

    def turn(self):
        t = time.perf_counter()
        self.epoch_s.append(t - self._last)
        self.spans.append((self._last, t))
        if self.wait is not None:
            c = time.process_time()
            self.wait()
            self.waited_cpu += time.process_time() - c
            self.waited += time.perf_counter() - t
        self._last = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        if self.mark: self.mark()
        self.epoch_s.append(t - self._last)
        self.spans.append((self._last, t))
        return t - self.t0 - self.waited, c - self.c0 - self.waited_cpu

def run_once(setting: str, impl: str, variant: str | None, epochs: int, perturb: bool = False, clock=None):
    "Build fresh data, model and loaders, then time one fit; returns (wall s, CPU s, valid_loss, weight checksum)."
    import torch
    s = SETTINGS[setting]
    x, y, tidx, vidx = make_data(s)
    model = make_model(s)
    loss_func, metric = loss_and_metric(s)
    lr = s.lr * (1.01 if perturb and impl in ('learner', 'tensors') else 1)
    if impl in ('raw', 'learner'):
        train_dl, valid_dl = torch_loaders(s, x, y, tidx, vidx)
    if impl == 'tensors':
        from minilearn.data import DataLoaders
        dls = DataLoaders.from_tensors(x, y, valid_pct=VALID_PCT, bs=s.bs, seed=SEED)
    elif impl == 'learner':
        from minilearn.data import DataLoaders
        dls = DataLoaders(train_dl, valid_dl)
    if variant and impl == 'learner': cbs, kwargs = variant_cbs(variant)
    gc.collect()
    clock = clock or Clock()
    turn = clock.turn
    clock.start()
    if impl == 'raw' and variant:
        vl = raw_variant_fit(variant, model, train_dl, valid_dl, loss_func, metric, epochs, lr, turn=turn)
    elif impl == 'raw': vl = raw_fit(model, train_dl, valid_dl, loss_func, metric, epochs, lr, turn=turn)
    elif impl == 'floor': vl = floor_fit(model, x, y, tidx, vidx, s.bs, loss_func, metric, epochs, lr, turn=turn)
    elif impl == 'learner' and variant:
        vl = learner_fit(model, dls, loss_func, metric, epochs, lr, cbs, turn=turn, **kwargs)
    else: vl = learner_fit(model, dls, loss_func, metric, epochs, lr, turn=turn)
    dt, cpu = clock.stop()
    wsum = sum(p.detach().double().abs().sum().item() for p in model.parameters())
    return dt, cpu, float(vl), wsum

def measure_here(setting, impl, variant=None, epochs=None, no_warmup=False, perturb=False, wait=None) -> dict:
    "One measurement in this process: import times, a cold first fit (1 epoch), then the timed fit."
    t0 = time.perf_counter()
    import torch
    import_torch_s = time.perf_counter() - t0
    torch.set_num_threads(1)
    import_minilearn_s = None
    if impl in ('learner', 'tensors'):
        t0 = time.perf_counter()
        import minilearn  # noqa: F401  (what `import minilearn` costs after torch, in a fresh process)
        import_minilearn_s = time.perf_counter() - t0
    s = SETTINGS[setting]
    epochs = epochs or s.epochs
    first_fit_s = None
    if not no_warmup:   # the first fit in a fresh process: lazy imports, first allocations, compilation
        first_fit_s, _, _, _ = run_once(setting, impl, variant, 1)
    clock = Clock(wait)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fit_s, cpu_s, valid_loss, wsum = run_once(setting, impl, variant, epochs, perturb, clock)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    n_train = math.ceil(round(s.n * (1 - VALID_PCT)) / s.bs)
    n_valid = math.ceil(round(s.n * VALID_PCT) / s.bs)
    return dict(setting=setting, impl=impl, variant=variant, epochs=epochs,
                fit_s=fit_s, cpu_s=cpu_s, epoch_s=clock.epoch_s, spans=clock.spans, first_fit_s=first_fit_s,
                import_torch_s=import_torch_s, import_minilearn_s=import_minilearn_s,
                n_batches=epochs * (n_train + n_valid),
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, page_faults=faults,
                valid_loss=valid_loss, wsum=wsum, interleave='epoch' if wait else 'process')

def _wait_for_go():
    "Epoch-level interleaving, worker side: tell the driver this epoch is about to start; block until it says go."
    print('wait', flush=True)
    if sys.stdin.readline().strip() != 'go': sys.exit('bench worker: the driver went away')

def worker(args):
    "The `--worker` process: one measurement, printed as one JSON line (the last line of its output)."
    wait = _wait_for_go if args.lockstep else None
    print(json.dumps(measure_here(args.setting, args.impl, args.variant, args.epochs, args.no_warmup, args.perturb, wait)),
          flush=True)
    if args.lockstep: sys.stdin.readline()   # exit only when all have finished: an exiting process slows the others

# ----- the driver: interleaved repeats, one process per measurement -----------------------------------
WORKER_ENV = dict(TQDM_DISABLE='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')

def _worker_cmd(setting, impl, variant=None, epochs=None, no_warmup=False, perturb=False) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', '--setting', setting, '--impl', impl]
    if variant: cmd += ['--variant-one', variant]
    if epochs: cmd += ['--epochs', str(epochs)]
    if no_warmup: cmd.append('--no-warmup')
    if perturb: cmd.append('--perturb')
    return cmd

def measure(setting, impl, variant=None, epochs=None, no_warmup=False, perturb=False) -> dict:
    "Process-level interleaving: one worker process runs its whole fit alone."
    p = subprocess.run(_worker_cmd(setting, impl, variant, epochs, no_warmup, perturb), capture_output=True,
                       text=True, env=dict(os.environ, **WORKER_ENV))
    if p.returncode != 0:
        raise RuntimeError(f'worker {setting}/{impl}/{variant} failed (exit {p.returncode}):\n{p.stderr[-3000:]}')
    return json.loads(p.stdout.strip().splitlines()[-1])

def measure_together(cells, epochs=None, no_warmup=False, perturb=False) -> list[dict]:
    """Epoch-level interleaving: one worker process per cell, taking turns epoch by epoch.

    The workers start one after another (imports and first fits never overlap) and each stops at the start
    of its timed fit's first epoch. Then every round lets each run one epoch, alone, in the order
    A B C, then C B A, ...: a burst of load on the machine, which lasts from a fraction of a second to a
    few seconds here, lands on all of them alike instead of on whichever process happened to be running."""
    import tempfile
    procs, errs, results = [], [], {}
    def fail(i, why):
        errs[i].seek(0)
        raise RuntimeError(f'worker {cells[i]} {why}:\n{errs[i].read()[-3000:]}')
    def step(i) -> bool:
        "Let worker i run one epoch; True when it has finished its fit (its result read)."
        p = procs[i]
        p.stdin.write('go\n'); p.stdin.flush()
        line = p.stdout.readline()
        if line.strip() == 'wait': return False
        if not line: fail(i, f'failed (exit {p.wait()})')
        results[i] = json.loads(line)
        return True
    try:
        for i, cell in enumerate(cells):
            errs.append(tempfile.TemporaryFile('w+'))
            procs.append(subprocess.Popen(_worker_cmd(*cell, epochs, no_warmup, perturb) + ['--lockstep'],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errs[i], text=True,
                                          env=dict(os.environ, **WORKER_ENV)))
            if procs[i].stdout.readline().strip() != 'wait': fail(i, 'did not reach its first epoch')
        active, r = list(range(len(cells))), 0
        while active:
            active = [i for i in (active if r % 2 == 0 else active[::-1]) if not step(i)]
            if r % 2: active.reverse()
            r += 1
        for p in procs: p.stdin.close()     # now they may all exit
        for p in procs: p.wait()
    finally:
        for p in procs:
            if p.poll() is None: p.kill()
        for e in errs: e.close()
    return [results[i] for i in range(len(cells))]

def precision_available() -> bool:
    import importlib.util
    return importlib.util.find_spec('minilearn.precision') is not None

def plan(settings, impls, variants, variant_settings, repeats):
    "The runs of each repeat: every (setting, impl, variant) cell, the order reversed on odd repeats (A B ... B A)."
    cells = [(s, i, None) for s in settings for i in impls]
    cells += [(s, i, v) for v in variants for s in variant_settings for i in ('raw', 'learner')]
    return [cells if r % 2 == 0 else cells[::-1] for r in range(repeats)]

def agree(a: dict, b: dict, rtol: float = 1e-5) -> bool:
    "Same trained result: the final validation loss (and the weights' checksum) agree."
    close = lambda u, v: abs(u - v) <= rtol * max(abs(u), abs(v), 1e-12)
    return close(a['valid_loss'], b['valid_loss']) and close(a['wsum'], b['wsum'])

def _fmt_range(xs, f='{:.3f}'):
    return f'{f.format(statistics.median(xs))} [{f.format(min(xs))}–{f.format(max(xs))}]'

TARGETS = {('tiny', 'learner'): 1.05, ('small', 'learner'): 1.03, ('medium', 'learner'): 1.01,
           ('tiny', 'tensors'): 1.05}
TARGET_TO_RAW = {('tiny', 'tensors'): 0.75}

def _partner(impl, variant):
    "The run that must have trained the same weights: same loader, same order (variants: their raw loop)."
    return AGREES_WITH.get(impl) if variant is None else ('raw' if impl != 'raw' else None)

def summarise(results: list[dict]) -> str:
    "Markdown table from the runs: per-repeat ratios, overhead per batch, first fit, RSS, agreement; import time."
    by = {}
    for r in results: by.setdefault((r['setting'], r['impl'], r['variant']), []).append(r)
    lines = ['| setting | impl | ref | fit s | ratio to ref | target | CPU-time ratio to ref | ratio to raw '
             '| overhead µs/batch | first fit s | peak RSS MB | valid loss | same weights as |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for (setting, impl, variant), rs in by.items():
        ref = REFERENCE[impl] if variant is None else 'raw'
        refs, raws = by.get((setting, ref, variant), []), by.get((setting, 'raw', variant), [])
        is_ref = ref == impl
        ratio = [r['fit_s'] / q['fit_s'] for r, q in zip(rs, refs)]
        cpu = [r['cpu_s'] / q['cpu_s'] for r, q in zip(rs, refs)]
        to_raw = [r['fit_s'] / q['fit_s'] for r, q in zip(rs, raws)]
        over = [(r['fit_s'] - q['fit_s']) / r['n_batches'] * 1e6 for r, q in zip(rs, refs)]
        target = TARGETS.get((setting, impl)) if variant is None else None
        t2 = TARGET_TO_RAW.get((setting, impl)) if variant is None else None
        tcol = '' if target is None else f'≤ {target}' + (' ✓' if statistics.median(ratio) <= target else ' ✗')
        rawcol = '—' if impl == 'raw' or not to_raw else _fmt_range(to_raw)
        if t2 is not None and to_raw: rawcol += f' (≤ {t2}' + (' ✓)' if statistics.median(to_raw) <= t2 else ' ✗)')
        partner = _partner(impl, variant)
        pairs = list(zip(rs, by.get((setting, partner, variant), []))) if partner else []
        agrees = '—' if not pairs else f"{partner}: {'yes' if all(agree(r, q) for r, q in pairs) else 'NO'}"
        first = [r['first_fit_s'] for r in rs if r['first_fit_s'] is not None]
        name = impl if variant is None else f'{impl}+{variant}'
        cells = [setting, name, '—' if is_ref else ref, _fmt_range([r['fit_s'] for r in rs]),
                 '—' if is_ref else _fmt_range(ratio), tcol, '—' if is_ref else _fmt_range(cpu), rawcol,
                 '—' if is_ref else f'{statistics.median(over):.1f}',
                 f'{statistics.median(first):.3f}' if first else '—',
                 f"{statistics.median([r['peak_rss_mb'] for r in rs]):.0f}",
                 f"{statistics.median([r['valid_loss'] for r in rs]):.6f}", agrees]
        lines.append('| ' + ' | '.join(cells) + ' |')
    imp = [r['import_minilearn_s'] for r in results if r['import_minilearn_s'] is not None]
    imp_t = [r['import_torch_s'] for r in results]
    lines.append('')
    if imp:
        lines.append(f'`import minilearn` after torch: median {statistics.median(imp):.3f} s '
                     f'[{min(imp):.3f}–{max(imp):.3f}] over {len(imp)} processes (target ≤ 0.25 s'
                     + (' ✓)' if statistics.median(imp) <= 0.25 else ' ✗)'))
    lines.append(f'`import torch`: median {statistics.median(imp_t):.2f} s [{min(imp_t):.2f}–{max(imp_t):.2f}] '
                 f'over {len(imp_t)} processes')
    return '\n'.join(lines)

def machine() -> str:
    import torch
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    return (f'{time.strftime("%Y-%m-%d %H:%M %Z")}; nproc {os.cpu_count()}; CPU {cpu}; Python {platform.python_version()}; '
            f'torch {torch.__version__}; loadavg {" ".join(f"{v:.2f}" for v in os.getloadavg())}')

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--settings', default='tiny,small,medium', help='comma-separated: ' + ', '.join(SETTINGS))
    ap.add_argument('--impls', default=','.join(IMPLS), help='comma-separated: ' + ', '.join(IMPLS))
    ap.add_argument('--variants', '--variant', default='', help='comma-separated: ' + ', '.join(VARIANTS))
    ap.add_argument('--variant-settings', default='tiny,medium', help='the settings the variants run on')
    ap.add_argument('-r', '--repeats', type=int, default=5)
    ap.add_argument('--smoke', action='store_true',
                    help='CI: one repeat of tiny (2 epochs, in this process, no timing); exit 1 if the results disagree')
    ap.add_argument('--json', help='also write every run as JSON lines to this file')
    ap.add_argument('--interleave', choices=('epoch', 'process'), default='epoch',
                    help='epoch (default): the processes of a repeat take turns epoch by epoch; '
                         'process: each process runs its whole fit alone, one after another')
    ap.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--lockstep', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--setting', help=argparse.SUPPRESS)
    ap.add_argument('--impl', help=argparse.SUPPRESS)
    ap.add_argument('--variant-one', dest='variant', help=argparse.SUPPRESS)
    ap.add_argument('--epochs', type=int, help='override the epochs of every setting')
    ap.add_argument('--no-warmup', action='store_true', help='skip the cold 1-epoch first fit')
    ap.add_argument('--perturb', action='store_true', help='(tests) a 1%% higher lr in the Learner: must disagree')
    ap.add_argument('--summarise', nargs='+', metavar='JSONL', help='print the table of runs saved with --json, no new runs')
    args = ap.parse_args(argv)
    if args.worker: return worker(args)
    if args.summarise:
        print(summarise([json.loads(l) for f in args.summarise for l in open(f) if l.strip()]))
        return 0
    settings, impls = args.settings.split(','), args.impls.split(',')
    variants = [v for v in args.variants.split(',') if v]
    variant_settings = args.variant_settings.split(',')
    settings = [s for s in settings if s]
    for name, known in ((settings, SETTINGS), (impls, IMPLS), (variants, VARIANTS), (variant_settings, SETTINGS)):
        bad = [v for v in name if v not in known]
        if bad: ap.error(f'unknown {bad}; known: {", ".join(known)}')
    if args.smoke: settings, args.repeats, args.no_warmup, args.epochs = ['tiny'], 1, True, args.epochs or 2
    notes = []
    if variants and not precision_available():
        notes.append(f'variants {", ".join(variants)} skipped: minilearn.precision is not installed')
        variants = []
    for lib in ('fastai', 'lightning'):
        import importlib.util
        if importlib.util.find_spec(lib) is None: notes.append(f'{lib} is not installed: no {lib} row')
    print(machine() + f'; interleave {"none (smoke)" if args.smoke else args.interleave}', flush=True)
    results = []
    for r, cells in enumerate(plan(settings, impls, variants, variant_settings, args.repeats)):
        # a smoke run reads no timing, so it fits in this process: one torch import instead of four
        if args.smoke or args.interleave == 'process':
            run = measure_here if args.smoke else measure
            runs = [run(*cell, args.epochs, args.no_warmup, args.perturb) for cell in cells]
        else:   # the cells of one setting (and variant) take turns epoch by epoch
            groups = {}
            for cell in cells: groups.setdefault((cell[0], cell[2]), []).append(cell)
            done = {}
            for group in groups.values():
                done.update(zip(group, measure_together(group, args.epochs, args.no_warmup, args.perturb)))
            runs = [done[cell] for cell in cells]
        for (setting, impl, variant), res in zip(cells, runs):
            res['repeat'] = r
            results.append(res)
            print(f"  repeat {r} {setting:6s} {impl + ('+' + variant if variant else ''):16s} "
                  f"{res['fit_s']:.3f} s  valid_loss {res['valid_loss']:.6f}", flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            for res in results: f.write(json.dumps(res) + '\n')
    print()
    print(summarise(results))
    if args.smoke: print('note: a smoke run checks agreement only; its times (one process, no warm-up) are no measurement')
    for n in notes: print(f'note: {n}')
    print(f'after: loadavg {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    bad = []
    by = {(r['setting'], r['impl'], r['variant'], r['repeat']): r for r in results}
    for (setting, impl, variant, rep), res in by.items():
        ref = by.get((setting, _partner(impl, variant), variant, rep))
        if ref is not None and not agree(res, ref):
            bad.append(f'{setting}/{impl}{"+" + variant if variant else ""} repeat {rep}: valid_loss '
                       f'{res["valid_loss"]!r} vs {ref["valid_loss"]!r}, weights {res["wsum"]!r} vs {ref["wsum"]!r}')
    if bad:
        print('DISAGREE: the implementations did not train the same weights:\n  ' + '\n  '.join(bad))
        return 1
    print('agree: every implementation trained the same weights as its reference')
    return 0

if __name__ == '__main__':
    sys.exit(main())
