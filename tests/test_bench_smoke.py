"The CI smoke run of bench/bench.py: it runs, and the hand-written loops and the Learner train the same weights."
import subprocess, sys
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
