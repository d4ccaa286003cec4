"Data-parallel training on 2 CPU processes (gloo), launched the way torchrun launches them."
import os, socket, subprocess, sys
from pathlib import Path

import pytest
import torch

from minilearn.distributed import ShardSampler, launch_env, shard_loader

SCRIPT = Path(__file__).with_name('_ddp_script.py')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(scenario: str, out: Path, world: int = 2, timeout: float = 120):
    "Start `world` processes with torchrun's environment variables; return [(returncode, stdout, stderr)]."
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, 'RANK': str(rank), 'WORLD_SIZE': str(world), 'LOCAL_RANK': str(rank),
               'LOCAL_WORLD_SIZE': str(world), 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port),
               'OMP_NUM_THREADS': '1', 'CI': '1'}
        if world == 1:
            for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE'): env.pop(k)
        procs.append(subprocess.Popen([sys.executable, str(SCRIPT), scenario, str(out)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=timeout)
            results.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None: p.kill()
    return results


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "One process, batch 32, SGD: the fit that two ranks of batch 16 must reproduce."
    out = tmp_path_factory.mktemp('reference')
    ref = launch('reference', out, world=1)
    assert ref[0][0] == 0, ref[0][2]
    return torch.load(out / 'reference.pt')


def test_two_ranks_equal_one_process_with_the_double_batch(tmp_path, reference):
    res = launch('weights', tmp_path)
    assert all(r[0] == 0 for r in res), [r[2][-2000:] for r in res]
    for rank in range(2):
        got = torch.load(tmp_path / f'rank{rank}.pt')
        for k, v in reference['model'].items():
            assert torch.allclose(got['model'][k], v, atol=1e-5), k
        assert got['train_iter'] == reference['train_iter'] == 3 * 8
        for col in ('train_loss', 'valid_loss', 'accuracy'):      # reduced across ranks: the single-process values
            assert got['history'][col] == pytest.approx(reference['history'][col], abs=1e-5), col
    assert got['suggested'] == torch.load(tmp_path / 'rank0.pt')['suggested']   # lr_find: one suggestion for all
    # one voice: rank 0 printed the epoch table, rank 1 printed nothing
    assert 'valid_loss' in res[0][1] and len(res[0][1].strip().splitlines()) == 4
    assert res[1][1] == ''
    assert len((tmp_path / 'files0' / 'history.csv').read_text().splitlines()) == 4
    assert not (tmp_path / 'files1').exists() or not any((tmp_path / 'files1').iterdir())


def test_two_ranks_with_worker_processes_equal_one_process(tmp_path, reference):
    res = launch('workers', tmp_path)
    assert all(r[0] == 0 for r in res), [r[2][-2000:] for r in res]
    for rank in range(2):
        got = torch.load(tmp_path / f'rank{rank}.pt')
        for k, v in reference['model'].items(): assert torch.allclose(got['model'][k], v, atol=1e-5), k
        assert got['history']['valid_loss'] == pytest.approx(reference['history']['valid_loss'], abs=1e-5)


def test_gradient_accumulation_syncs_only_on_steps(tmp_path, reference):
    res = launch('accumulate', tmp_path)
    assert all(r[0] == 0 for r in res), [r[2][-2000:] for r in res]
    for rank in range(2):
        got = torch.load(tmp_path / f'rank{rank}.pt')
        assert got['train_iter'] == reference['train_iter'] == 24
        assert got['syncs'] == 24                   # one all-reduce per step, none on the 24 accumulating batches
        for k, v in reference['model'].items():
            assert torch.allclose(got['model'][k], v, atol=1e-5), k


def test_stops_are_agreed_by_all_ranks(tmp_path):
    res = launch('stops', tmp_path)
    assert all(r[0] == 0 for r in res), [r[2][-2000:] for r in res]
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt') for r in range(2))
    assert r0['budget'] == r1['budget'] and r0['budget'][0] == 7 and 'max_steps' in r0['budget'][1]
    assert r0['rank1'] == r1['rank1'] and r0['rank1'][1] == 'rank 1 said stop'
    assert r0['rank1'][0] >= 8 + 3        # stopped in epoch 1, at or after the batch rank 1 asked
    assert r0['early'] == r1['early'] and 'target' in r0['early'][1]
    steps, reason, finite = r0['nan']
    assert r0['nan'] == r1['nan'] and steps == 3 and 'TerminateOnNaN' in reason and finite   # no rank stepped on NaN
    assert all(torch.equal(r0['model'][k], r1['model'][k]) for k in r0['model'])


def test_a_two_rank_checkpoint_resumes_bit_identical(tmp_path):
    res = launch('checkpoint', tmp_path)
    assert all(r[0] == 0 for r in res), [r[2][-2000:] for r in res]
    for rank in range(2):
        got = torch.load(tmp_path / f'rank{rank}.pt')
        straight, resumed = got['straight'], got['resumed']
        assert straight['train_iter'] == resumed['train_iter'] == 32
        assert all(torch.equal(straight['model'][k], resumed['model'][k]) for k in straight['model'])
        assert got['opt_equal']
        without_time = lambda h: {k: v for k, v in h.items() if k != 'time'}
        assert without_time(straight['history']) == without_time(resumed['history'])
        assert got['files'] == ['checkpoint.pth']            # one file, written by rank 0 (atomically: no .tmp left)
    assert 'after epoch 1, batch 6' in res[0][1] and res[1][1] == ''
    # the same checkpoint in a single process: refused, with what to do
    from minilearn.data import DataLoaders
    from minilearn.learner import Learner
    import minilearn.checkpoint  # noqa: F401 (resume_from)
    x, y = torch.randn(320, 4), torch.randint(0, 3, (320,))
    learn = Learner(torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(4, 3)),
                    DataLoaders.from_tensors(x, y, bs=16), torch.nn.CrossEntropyLoss(), opt_func=torch.optim.SGD,
                    path=tmp_path)
    w = learn.model[1].weight.detach().clone()
    with pytest.raises(ValueError, match='nproc_per_node=2'):
        learn.fit(4, resume=True)
    assert torch.equal(learn.model[1].weight, w)


def test_an_error_on_one_rank_ends_both(tmp_path):
    res = launch('error', tmp_path, timeout=90)
    assert all(r[0] != 0 for r in res)
    assert 'rank 1 failed' in res[1][2]


def test_shard_helpers_without_a_launcher():
    assert launch_env() is None
    ds = torch.utils.data.TensorDataset(torch.arange(7.))
    dl = shard_loader(torch.utils.data.DataLoader(ds, batch_size=2), 1, 2, training=False)
    assert isinstance(dl.sampler, ShardSampler) and [b[0].tolist() for b in dl] == [[1., 3.], [5.]]
    with pytest.raises(TypeError, match='cannot shard'):
        shard_loader([1, 2, 3], 0, 2, training=True)
