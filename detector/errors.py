"""The root of the package's own errors, so a command can tell bad input from a bug.

Each domain keeps its own class beside its code, subclassing :class:`DetectorError` and the built-in a caller
expects: ``DatasetError(ValueError)``, ``ImageReadError(OSError)``, ``CheckpointError(ValueError)``,
``WeightsError(RuntimeError)``, ``DemoError(RuntimeError)``, ``ExportError(OSError)``. The commands print
``error: <message>`` for these and let every other exception show its traceback. No imports: every layer may use it.
"""


class DetectorError(Exception):
    """An input the package cannot use (a file, a checkpoint, an image, weights, a device); the message says which
    and what to do."""
