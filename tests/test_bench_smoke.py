"The CI smoke run of bench/bench.py: it runs, and the hand-written loops and the Learner train the same weights."
import json, subprocess, sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / 'bench' / 'bench.py'


def _run(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)


def test_smoke_agrees():
    p = _run('--smoke')
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {line.split('|')[2].strip(): line for line in p.stdout.splitlines() if line.startswith('| tiny |')}
    assert set(rows) == {'raw', 'learner', 'floor', 'tensors'}
    assert '| raw: yes |' in rows['learner'] and '| floor: yes |' in rows['tensors']
    assert 'agree: every implementation trained the same weights' in p.stdout


def test_smoke_catches_a_different_fit():
    # a 1% higher learning rate in the Learner must be reported and fail the run
    p = _run('--smoke', '--impls', 'raw,learner', '--epochs', '1', '--perturb')
    assert p.returncode == 1, p.stdout + p.stderr
    assert 'DISAGREE' in p.stdout and 'tiny/learner repeat 0' in p.stdout


def test_epoch_interleaving_takes_turns(tmp_path):
    # the default measurement: the workers of a setting run one epoch each in turn (A B, B A, ...), never at once,
    # and the time a worker waits for its turn is not part of its fit time
    out = tmp_path / 'runs.jsonl'
    p = _run('--settings', 'tiny', '--impls', 'raw,learner', '-r', '1', '--epochs', '3', '--no-warmup',
             '--json', str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    raw, learner = [json.loads(line) for line in out.read_text().splitlines()]
    assert raw['interleave'] == learner['interleave'] == 'epoch'
    spans = sorted([(a, b, 'raw') for a, b in raw['spans']] + [(a, b, 'learner') for a, b in learner['spans']])
    # set-up segments (fit start -> first epoch) one after another as the workers start, then the epochs in turn
    assert [who for *_, who in spans] == ['raw', 'learner'] + ['raw', 'learner', 'learner', 'raw', 'raw', 'learner']
    assert all(b1 <= a2 for (_, b1, _), (a2, _, _) in zip(spans, spans[1:]))          # no two segments overlap
    for r in (raw, learner):
        assert len(r['epoch_s']) == 3 + 1                                            # set-up, then 3 epochs
        assert abs(sum(r['epoch_s']) - r['fit_s']) < 1e-3 * r['fit_s'] + 1e-4          # waits left out
