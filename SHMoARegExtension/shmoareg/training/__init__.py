"""Training, evaluation and the ``train`` / ``evaluate`` commands (see :mod:`shmoareg.training.trainer`)."""
