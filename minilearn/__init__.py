__version__ = "0.1.0"

# Import every module so that methods attached to Learner (lr_find, fit_one_cycle, resume_from) always exist.
from . import core, data, metrics, recorder, progress, distributed, learner, schedule, stopping, checkpoint, precision, loggers, interpret, profile  # noqa: E402,F401
