"""The log filter: Lightning's messages that bury ours, dropped while a run (training or evaluation) goes on."""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

# Lightning's messages that bury ours: its advertising tips, the checkpoint it loads (we say which), accelerators
# this machine has none of. Matched at the start of the message.
LIGHTNING_NOISE = ("💡 Tip:", "Restoring states from the checkpoint", "Loaded model weights from the checkpoint",
                   "Restored all states from the checkpoint", "TPU available:", "HPU available:")
# The module's per-epoch line, dropped where there is no epoch: a checkpoint's evaluation (the table follows).
EPOCH_LINE = ("epoch ",)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


@contextmanager
def quiet_lightning(prefixes: tuple[str, ...] = ()):
    """Drop :data:`LIGHTNING_NOISE` (and messages starting with ``prefixes``) from Lightning's info log, and its
    deprecation warning about its own pytree use, while the block runs."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")  # rank_zero_info's, ours included
    drop = _DropMessages(LIGHTNING_NOISE + tuple(prefixes))
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")
            yield
    finally:
        logger.removeFilter(drop)
