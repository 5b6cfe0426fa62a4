"""Training: the LightningModule and the runs that need Lightning (``run.train``, ``evaluate.evaluate``).

One file per concept: ``module`` (the LightningModule), ``schedule`` (the learning-rate schedule), ``callbacks``,
``run`` (LightningCLI and resume), ``naming`` (a run's folder name), ``configs`` (the packaged config lookup),
``quiet`` (Lightning's log filter) and ``evaluate`` (a checkpoint's evaluation run). Imports nothing by itself.
"""
