"""A fit logged to MLflow and killed with SIGKILL, run in a fresh process (the leading underscore keeps pytest away).

    python tests/_mlflow_resume_script.py DIR STORE EXPERIMENT

fits `_resume_script.make_learner(DIR)` for 6 epochs with an MLflowLogger (SQLite file STORE, EXPERIMENT) and a
Checkpoint every 30 steps (in the middle of epoch 2, at the end of epoch 4), prints the run's id, and kills itself
with SIGKILL after step 40 (epoch 3, batch 3): by then the logger has logged epochs 0-2 and steps 0-35, past the
checkpoint at step 30. tests/test_mlflow.py resumes it.
"""
import os, signal, sys

import torch

from minilearn.core import Callback
from minilearn.checkpoint import Checkpoint
from minilearn.loggers import MLflowLogger
from _resume_script import make_learner

KILL_AT, EVERY = 40, 30


class Kill(Callback):
    "SIGKILL: no after_fit, no finish, no checkpoint on the way out."
    order = 200
    def after_batch(self):
        if self.learn.train_iter == KILL_AT:
            print(self.learn.mlflow_logger.run_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def logged_learner(folder, store, experiment, seed=0, kill=False):
    "The learner of both sides: the same logger and checkpoints (and on the first side the kill)."
    cbs = [MLflowLogger(store, experiment=experiment), Checkpoint(every_epochs=None, every_steps=EVERY)]
    return make_learner(folder, seed=seed, cbs=cbs + ([Kill()] if kill else []))


if __name__ == '__main__':
    torch.set_num_threads(1)
    folder, store, experiment = sys.argv[1:4]
    logged_learner(folder, store, experiment, kill=True).fit(6)
    sys.exit('the fit ended by itself: it should have been killed')
