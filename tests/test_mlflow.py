"Tests of minilearn.loggers.MLflowLogger, each run read back with MLflow's own MlflowClient from a local store."
import importlib.util, subprocess, sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip('mlflow', reason='the optional mlflow extra is not installed (pip install "minilearn[mlflow]")')
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from minilearn.core import Callback
from minilearn.data import DataLoaders
from minilearn.learner import Learner
from minilearn.loggers import MLflowLogger
from minilearn.metrics import accuracy
from minilearn.checkpoint import Checkpoint
from minilearn.stopping import EarlyStopping, SaveBestModel
import minilearn.schedule   # noqa: F401  (attaches lr_find and fit_one_cycle)
from conftest import blobs, silent

HERE = Path(__file__).parent


@pytest.fixture(scope='module')
def store(tmp_path_factory) -> Path:
    "One SQLite store for the module (creating its tables takes seconds); each test logs to its own experiment."
    path = tmp_path_factory.mktemp('mlflow') / 'mlflow.db'
    MlflowClient(f'sqlite:///{path}').search_experiments()
    return path


@pytest.fixture(autouse=True)
def no_env_store(monkeypatch):
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)


@pytest.fixture
def exp(request) -> str:
    return request.node.name


def client_of(store: Path) -> MlflowClient:
    return MlflowClient(f'sqlite:///{store}')


def learner(path, cbs=(), **kwargs):
    torch.manual_seed(0)
    x, y = blobs()
    dls = DataLoaders.from_tensors(x, y, valid_pct=0.2, bs=32, seed=0)      # 5 training batches, 1 validation batch
    return silent(Learner(nn.Linear(2, 2), dls, nn.CrossEntropyLoss(), lr=1e-2, metrics=[accuracy], path=path,
                          cbs=list(cbs), **kwargs))


def series(client, run_id, key) -> tuple[list[int], list[float]]:
    "A metric's steps and values, by step."
    ms = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in ms], [m.value for m in ms]


def runs_of(client, experiment) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def assert_run_equals_recorder(client, run_id, learn, epochs=None, resumed=False):
    "Every history column is a metric equal to the history (step = epoch); the batch series equal the recorder's."
    h, rec = learn.recorder.history, learn.recorder
    epochs = h['epoch'] if epochs is None else epochs
    for k in h:
        if k == 'epoch': continue
        steps, values = series(client, run_id, k)
        assert steps == epochs, k
        if k == 'time' and resumed:      # wall-clock seconds: an epoch the killed fit logged keeps its own time
            assert len(values) == len(epochs) and values[-1] == h[k][-1]
        else: assert values == h[k][:len(epochs)], k
    n = len(rec.losses)
    assert series(client, run_id, 'batch/train_loss') == (list(range(n)), rec.losses)
    assert series(client, run_id, 'batch/lr') == (list(range(n)), rec.lrs)


def test_params_tags_and_series(store, exp, tmp_path):
    learn = learner(tmp_path, cbs=[EarlyStopping(patience=5)])
    ml = MLflowLogger(store, experiment=exp, run_name='first', tags={'team': 'blue'}, params={'seed': 0})
    learn.fit(3, cbs=[ml])
    client = client_of(store)
    [run] = runs_of(client, exp)
    assert run.info.run_id == ml.run_id and run.info.status == 'FINISHED'
    p = run.data.params
    assert {k: p[k] for k in ['opt', 'opt.lr', 'batch_size', 'epochs', 'model', 'model.params', 'loss_func', 'seed',
                              'EarlyStopping.patience', 'MLflowLogger.experiment']} == {
        'opt': 'Adam', 'opt.lr': '0.01', 'batch_size': '32', 'epochs': '3', 'model': 'Linear', 'model.params': '6',
        'loss_func': 'CrossEntropyLoss', 'seed': '0', 'EarlyStopping.patience': '5', 'MLflowLogger.experiment': exp}
    assert run.data.tags['team'] == 'blue' and run.data.tags['mlflow.runName'] == 'first'
    assert 'stop_reason' not in run.data.tags
    assert set(run.data.metrics) == {'train_loss', 'valid_loss', 'accuracy', 'time', 'batch/train_loss', 'batch/lr'}
    assert_run_equals_recorder(client, ml.run_id, learn)
    assert len(learn.recorder.losses) == 15


def test_a_scheduled_hyper_parameter_is_a_batch_series(store, exp, tmp_path):
    learn = learner(tmp_path)
    learn.fit_one_cycle(2, 1e-2, cbs=[ml := MLflowLogger(store, experiment=exp)])
    mom = learn.recorder.hps['mom']
    assert series(client_of(store), ml.run_id, 'batch/mom') == (list(range(len(mom))), mom) and len(set(mom)) > 2


def test_each_fit_is_a_new_run(store, exp, tmp_path):
    learn = learner(tmp_path, cbs=[ml := MLflowLogger(store, experiment=exp)])
    learn.fit(2)
    first = ml.run_id
    learn.fit(1)
    client = client_of(store)
    assert ml.run_id != first and {r.info.run_id for r in runs_of(client, exp)} == {first, ml.run_id}
    n = len(learn.recorder.losses)
    assert series(client, first, 'batch/train_loss')[0] == list(range(n - 5))   # steps count the learner's batches
    assert series(client, ml.run_id, 'batch/train_loss') == (list(range(n - 5, n)), learn.recorder.losses[-5:])
    assert series(client, ml.run_id, 'valid_loss') == ([0], learn.recorder.history['valid_loss'])


class StopAt(Callback):
    "learn.stop_fit at training step `step` (after_batch) or after epoch `epoch` (after_epoch)."
    def __init__(self, step=None, epoch=None, order=200): self.step, self.epoch, self.order = step, epoch, order
    def after_batch(self):
        if self.learn.training and self.learn.train_iter == self.step: self.learn.stop_fit(f'StopAt: step {self.step}')
    def after_epoch(self):
        if self.learn.epoch == self.epoch: self.learn.stop_fit(f'StopAt: epoch {self.epoch}')


@pytest.mark.parametrize('stopper, reason, epochs', [
    (lambda: EarlyStopping(target=100.), 'EarlyStopping: valid_loss reached the target 100', [0]),
    (lambda: StopAt(epoch=1, order=0), 'StopAt: epoch 1', [0, 1]),      # stops before the logger's after_epoch
    (lambda: StopAt(step=8), 'StopAt: step 8', [0]),                     # in epoch 1: its row is not a metric
])
def test_stop_reason_and_only_finished_epochs(store, exp, tmp_path, stopper, reason, epochs):
    learn = learner(tmp_path)
    learn.fit(4, cbs=[ml := MLflowLogger(store, experiment=exp), stopper()])
    run = client_of(store).get_run(ml.run_id)
    assert run.info.status == 'FINISHED' and run.data.tags['stop_reason'].startswith(reason)
    assert_run_equals_recorder(client_of(store), ml.run_id, learn, epochs)
    if reason == 'StopAt: step 8':
        assert learn.recorder.history['epoch'] == [0, 1] and len(learn.recorder.losses) == 8   # the cut epoch: 3 batches


@pytest.mark.parametrize('error, status', [(RuntimeError, 'FAILED'), (KeyboardInterrupt, 'KILLED')])
def test_status_of_a_fit_that_raised(store, exp, tmp_path, error, status):
    class Boom(Callback):
        def after_batch(self):
            if self.learn.train_iter == 7: raise error('boom')
    learn = learner(tmp_path)
    with pytest.raises(error, match='boom'): learn.fit(3, cbs=[ml := MLflowLogger(store, experiment=exp), Boom()])
    run = client_of(store).get_run(ml.run_id)
    assert run.info.status == status and 'stop_reason' not in run.data.tags
    assert_run_equals_recorder(client_of(store), ml.run_id, learn, [0])


def test_default_store_and_model_artifacts(tmp_path, capfd):
    learn = learner(tmp_path)
    capfd.readouterr()
    learn.fit(3, cbs=[ml := MLflowLogger(log_model='best'), SaveBestModel()])
    assert 'mlflow' not in capfd.readouterr().err.lower()                  # a new store sets itself up quietly
    assert ml.uri == f'sqlite:///{tmp_path / "mlflow.db"}'                 # learn.path/mlflow.db
    client = MlflowClient(ml.uri)
    assert [a.path for a in client.list_artifacts(ml.run_id, 'model')] == ['model/best.pth']
    got = Path(client.download_artifacts(ml.run_id, 'model/best.pth', str(tmp_path / 'down')))
    assert got.read_bytes() == (tmp_path / 'models/best.pth').read_bytes()
    assert (tmp_path / 'mlartifacts').is_dir()                              # artifacts beside the store
    learn.fit(2, cbs=[ml := MLflowLogger(log_model='checkpoint'), Checkpoint(keep_last=2)])
    assert [a.path for a in client.list_artifacts(ml.run_id, 'model')] == ['model/checkpoint-000002.pth']


def test_log_model_without_its_callback_is_refused(store, exp, tmp_path):
    learn = learner(tmp_path)
    with pytest.raises(ValueError, match=r'log_model=.best.*SaveBestModel.*add SaveBestModel\(\)'):
        learn.fit(1, cbs=[MLflowLogger(store, experiment=exp, log_model='best')])
    with pytest.raises(ValueError, match=r'Checkpoint\(\)'):
        learn.fit(1, cbs=[MLflowLogger(store, experiment=exp, log_model='checkpoint')])
    assert learn.train_iter == 0 and runs_of(client_of(store), exp) == []


def test_bad_arguments():
    with pytest.raises(ValueError, match='log_model'): MLflowLogger(log_model='last')
    with pytest.raises(TypeError, match='params and tags'): MLflowLogger(params={'model': nn.Linear(1, 1)})
    with pytest.raises(TypeError, match='experiment'): MLflowLogger(experiment='')


def test_folder_store(tmp_path, monkeypatch):
    monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')       # MLflow 3 refuses a folder store without it
    learn = learner(tmp_path)
    learn.fit(2, cbs=[ml := MLflowLogger('runs/mlflow', experiment='folder')])
    folder = tmp_path / 'runs/mlflow'
    assert ml.uri == folder.as_uri() and folder.is_dir()
    client = MlflowClient(folder.as_uri())
    [run] = runs_of(client, 'folder')
    assert run.info.run_id == ml.run_id and run.info.status == 'FINISHED'
    assert_run_equals_recorder(client, ml.run_id, learn)


def test_the_environment_variable_names_the_default_store(store, exp, tmp_path, monkeypatch):
    monkeypatch.setenv('MLFLOW_TRACKING_URI', f'sqlite:///{store}')
    learn = learner(tmp_path)
    learn.fit(1, cbs=[ml := MLflowLogger(experiment=exp)])
    assert ml.uri == f'sqlite:///{store}' and [r.info.run_id for r in runs_of(client_of(store), exp)] == [ml.run_id]
    assert not (tmp_path / 'mlflow.db').exists()


def test_missing_mlflow_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'mlflow' else real(name, *a))
    with pytest.raises(ImportError, match=r'pip install "minilearn\[mlflow\]"'): MLflowLogger()


def test_lr_find_logs_nothing(tmp_path):
    learn = learner(tmp_path, cbs=[ml := MLflowLogger('finder.db')])
    learn.lr_find(num_it=10, show_plot=False)
    assert ml.run_id is None and not (tmp_path / 'finder.db').exists()     # not even a store was opened


def test_a_killed_fit_continues_its_run_when_resumed(store, exp, tmp_path):
    sys.path.insert(0, str(HERE))
    try: from _mlflow_resume_script import logged_learner, KILL_AT, EVERY
    finally: sys.path.remove(str(HERE))
    r = subprocess.run([sys.executable, str(HERE / '_mlflow_resume_script.py'), str(tmp_path), str(store), exp],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    killed = r.stdout.split()[-1]
    client = client_of(store)
    run = client.get_run(killed)
    nb = 12                                                   # batches per epoch
    assert run.info.status == 'RUNNING'                       # SIGKILL: nothing ended it
    assert series(client, killed, 'batch/train_loss')[0] == list(range(3 * nb))     # epochs 0-2: past the checkpoint
    assert series(client, killed, 'valid_loss')[0] == [0, 1, 2] and EVERY < 3 * nb < KILL_AT

    learn = logged_learner(tmp_path, store, exp, seed=1)      # other initial weights: the checkpoint replaces them
    learn.fit(6, resume=True)
    assert learn.mlflow_logger.run_id == killed and [r.info.run_id for r in runs_of(client, exp)] == [killed]
    run = client.get_run(killed)
    assert run.info.status == 'FINISHED'
    for key in run.data.metrics:                              # no step logged twice
        steps = [m.step for m in client.get_metric_history(killed, key)]
        assert len(steps) == len(set(steps)), key
    assert_run_equals_recorder(client, killed, learn, resumed=True)   # the killed fit's values and the resumed ones: exact
    assert len(learn.recorder.losses) == 6 * nb and learn.recorder.history['epoch'] == list(range(6))


def test_resume_against_another_store_names_the_problem(store, exp, tmp_path):
    learner(tmp_path).fit(1, cbs=[MLflowLogger(store, experiment=exp), Checkpoint()])
    learn = learner(tmp_path, cbs=[ml := MLflowLogger('other.db', experiment=exp)])
    with pytest.raises(MlflowException, match='not found') as e: learn.fit(2, cbs=[Checkpoint()], resume=True)
    notes = getattr(e.value, '__notes__', [])
    assert any('resume with the tracking_uri' in n for n in notes)
    assert not any('cleaning up' in n for n in notes)                     # start failed: finish was not called
    assert runs_of(MlflowClient(ml.uri), exp) == []                       # nothing was started there


def test_loggers_share_an_experiment_by_name_and_keep_their_runs_apart(store, exp, tmp_path):
    "Ported from Lightning's test_mlflow_logger_exists: same name, same experiment, other runs; another name, another one."
    a, b, c = MLflowLogger(store, experiment=exp), MLflowLogger(store, experiment=exp), MLflowLogger(store, experiment=exp + '-other')
    for ml in (a, b, c): learner(tmp_path / ml.experiment.replace('/', '_'), cbs=[ml]).fit(1)
    client = client_of(store)
    ids = {ml: client.get_run(ml.run_id).info.experiment_id for ml in (a, b, c)}
    assert ids[a] == ids[b] != ids[c] and len({a.run_id, b.run_id, c.run_id}) == 3
