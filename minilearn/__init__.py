__version__ = "0.1.0"

# Import every module so that methods attached to Learner (lr_find, fit_one_cycle, to_bf16, export) always exist.
from . import core, files, data, metrics, recorder, progress, state, params, distributed, learner, schedule, stopping, checkpoint, precision, loggers, interpret, profile, use  # noqa: E402,F401

__all__ = ['core', 'files', 'data', 'metrics', 'recorder', 'progress', 'state', 'params', 'distributed', 'learner', 'schedule',
           'stopping', 'checkpoint', 'precision', 'loggers', 'interpret', 'profile', 'use']
