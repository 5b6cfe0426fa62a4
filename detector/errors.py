"""Every error of the package's own: the root :class:`DetectorError` and one class per domain, each also the built-in
a caller expects.

The commands print ``error: <message>`` for these (one line that names the file or flag and the fix) and let every
other exception show its traceback: a traceback means a bug. No imports: every layer may use this module; the
domain modules import their class from here (``detector.images.ImageReadError`` is this module's class too).
"""


class DetectorError(Exception):
    """An input the package cannot use (a file, a checkpoint, an image, weights, a device); the message says which
    and what to do."""


class DatasetError(DetectorError, ValueError):
    """A dataset file cannot be used; the message names the file and what is wrong."""


class ImageReadError(DetectorError, OSError):
    """One image file cannot be decoded; the message names the file."""


class CheckpointError(DetectorError, ValueError):
    """A checkpoint that cannot be used, with the file and the reason in the message."""


class WeightsError(DetectorError, RuntimeError):
    """The backbone weights could not be obtained; the message says which other options exist."""


class DemoError(DetectorError, RuntimeError):
    """A demo that cannot start (source, output, display); the message names the culprit."""


class ExportError(DetectorError, OSError):
    """An exported file that cannot be written, or read as one of ours; the message names the file."""


class QuantizationError(DetectorError, RuntimeError):
    """int8 cannot run here (missing onnxruntime, a GPU device, no calibration images); the message says why."""


class DeviceError(DetectorError, ValueError):
    """A torch device that is not there (or not a device); the message names the flag or argument and the fix."""


class OptionError(DetectorError, ValueError):
    """A command-line option the command refuses; the message names it and the option to use instead."""
