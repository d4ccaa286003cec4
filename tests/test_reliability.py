"Checkpoints across processes: exact resume in a new process, SIGTERM, and SIGKILL at random moments."
import json, os, signal, subprocess, sys
from pathlib import Path

import pytest
import torch

from minilearn.checkpoint import Checkpoint, newest_checkpoint
from minilearn.learner import safe_load
import _resume_script as S
from _resume_script import assert_same_fit

SCRIPT = Path(__file__).with_name('_resume_script.py')




def run_script(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_resume_in_a_new_process_equals_the_straight_fit(tmp_path):
    # whole-epoch: a plain fit cut after 2 of 4 epochs; mid-epoch: a one-cycle fit cut after step 31 of 48, with a
    # checkpoint every 5 steps (the newest at step 30, batch 5 of epoch 2). One new process resumes both.
    import minilearn.schedule                                      # attaches fit_one_cycle
    runs = {'whole': (lambda l, **kw: l.fit(4, **kw), [Checkpoint(), S.StopAt(epochs=2)], (1, None, 2 * S.N_BATCHES)),
            'mid': (lambda l, **kw: l.fit_one_cycle(4, 1e-2, **kw),
                    [Checkpoint(every_epochs=None, every_steps=5), S.StopAt(steps=2 * S.N_BATCHES + 7)], (2, 5, 30))}
    straight = {}
    for name, (fit, cbs, where) in runs.items():
        straight[name] = S.make_learner(tmp_path / name / 'straight')
        fit(straight[name])
        first = S.make_learner(tmp_path / name)
        fit(first, cbs=cbs)
        st = safe_load(tmp_path / name / 'models' / 'checkpoint.pth')
        assert (st['epoch'], st['iter'], st['train_iter']) == where
        assert not any(torch.equal(p, q) for p, q in zip(first.model.parameters(), straight[name].model.parameters()))

    r = run_script('resume', 4, f'{tmp_path / "whole"}=fit', f'{tmp_path / "mid"}=one_cycle')
    assert r.returncode == 0, r.stderr
    for name in runs:
        resumed = torch.load(tmp_path / name / 'resumed.pth', weights_only=True)
        assert_same_fit(S.summary(straight[name]), resumed)
        assert resumed['history']['epoch'] == [0, 1, 2, 3] and resumed['train_iter'] == 4 * S.N_BATCHES
    assert len(set(straight['mid'].recorder.lrs)) > 40                # the one-cycle schedule did vary the lr


@pytest.mark.skipif(sys.platform == 'win32', reason='POSIX signals')
def test_sigterm_writes_a_checkpoint_exits_143_and_the_fit_resumes(tmp_path):
    p = subprocess.Popen([sys.executable, str(SCRIPT), 'sigterm', str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'READY', p.stderr.read()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 143, err
    assert 'SIGTERM received' in err and 'Traceback' not in err
    st = safe_load(tmp_path / 'models' / 'checkpoint.pth')
    assert (st['epoch'], st['iter'], st['train_iter']) == (0, 4, 5)   # the batch it came in was finished first
    assert not list((tmp_path / 'models').glob('.*.tmp'))

    n_epoch = st['epoch'] + 2                                     # finish the epoch it was in, and one more
    resumed = S.make_learner(tmp_path, seed=1)
    resumed.fit(n_epoch, resume=True)
    straight = S.make_learner(tmp_path / 'straight')
    straight.fit(n_epoch)
    assert resumed.train_iter == n_epoch * S.N_BATCHES
    assert_same_fit(S.summary(straight), S.summary(resumed))


@pytest.mark.skipif(not hasattr(os, 'fork') or sys.platform != 'linux', reason='forks the fits (Linux)')
def test_sigkill_at_random_moments_always_leaves_a_checkpoint_that_resumes(tmp_path):
    # 15 fits, each resuming the newest checkpoint, each killed with SIGKILL 0.05-0.5 s after it started;
    # a checkpoint is written after every step, so most kills land in the middle of a write.
    r = run_script('killloop', tmp_path, 15, 0, timeout=100)
    assert r.returncode == 0, r.stderr
    kills = json.loads(r.stdout)
    assert len(kills) == 15
    assert all(k['killed'] for k in kills), (kills, r.stderr)   # none died of an error or ended by itself
    steps = [k['train_iter'] for k in kills if k['train_iter'] is not None]
    assert steps == sorted(steps) and steps[-1] >= 10          # never went back; real progress over the kills

    # the checkpoint that remains resumes, and ends where an uninterrupted fit ends
    stop = steps[-1] + S.N_BATCHES + 3
    resumed = S.make_learner(tmp_path, seed=1)
    resumed.fit(10**5, cbs=[S.StopAt(steps=stop)], resume=newest_checkpoint(tmp_path / 'models'))
    straight = S.make_learner(tmp_path / 'straight')
    straight.fit(10**5, cbs=[S.StopAt(steps=stop)])
    assert resumed.train_iter == stop
    assert_same_fit(S.summary(straight), S.summary(resumed))
